package kube

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"path"
	"path/filepath"
	"strings"

	"github.com/bot-bottle/bot-bottle/plugins/kubernetes/internal/podqueue"
	"github.com/bot-bottle/bot-bottle/sdk"
)

// SyncQueue moves the bottle's finished requests from its pod's inbox into
// queueDir's, drops from the pod those the host now has, and puts the
// host's receipts into the pod's outbox; all of it by exec in bb-queue, the
// one container that writes there. Each step is idempotent: a sync killed
// midway is finished by the next one.
func (b *Backend) SyncQueue(ctx context.Context, h sdk.Handle, queueDir string) error {
	if !filepath.IsAbs(queueDir) {
		return fmt.Errorf("kubernetes: sync queue: %q is not an absolute path", queueDir)
	}
	cl, pod, err := b.running(ctx, h)
	if err != nil {
		return err
	}
	inbox, outbox := path.Join(podQueueDir, sdk.QueueInbox), path.Join(podQueueDir, "outbox")
	taken, err := b.queueCall(ctx, cl, pod, nil, "take", inbox)
	if err != nil {
		return fmt.Errorf("kubernetes: sync queue of %s: take requests: %w", h.Identity, err)
	}
	have, err := podqueue.Merge(bytes.NewReader(taken), queueDir)
	if err != nil {
		return fmt.Errorf("kubernetes: sync queue of %s: %w", h.Identity, err)
	}
	if len(have) > 0 {
		if _, err := b.queueCall(ctx, cl, pod, nil, append([]string{"drop", inbox}, have...)...); err != nil {
			return fmt.Errorf("kubernetes: sync queue of %s: drop requests: %w", h.Identity, err)
		}
	}
	receipts, n, err := podqueue.Outbox(filepath.Join(queueDir, "outbox"))
	if err != nil {
		return fmt.Errorf("kubernetes: sync queue of %s: %w", h.Identity, err)
	}
	if n == 0 {
		return nil
	}
	if _, err := b.queueCall(ctx, cl, pod, receipts, "put", outbox); err != nil {
		return fmt.Errorf("kubernetes: sync queue of %s: put receipts: %w", h.Identity, err)
	}
	return nil
}

// queueCall runs `kube-init queue ARGS` in the pod's bb-queue container and
// returns its output; a non-zero exit is an error carrying its stderr.
func (b *Backend) queueCall(ctx context.Context, cl *cluster, pod string, stdin []byte, args ...string) ([]byte, error) {
	argv := append([]string{"/kube-init", "queue"}, args...)
	res, err := b.execIn(ctx, cl, pod, queueContainer, argv, stdin)
	if err != nil {
		return nil, err
	}
	if res.ExitCode != 0 {
		if msg := strings.TrimSpace(strings.TrimPrefix(strings.TrimSpace(string(res.Stderr)), "kube-init: ")); msg != "" {
			return nil, errors.New(msg)
		}
		return nil, fmt.Errorf("exit status %d", res.ExitCode)
	}
	return res.Stdout, nil
}
