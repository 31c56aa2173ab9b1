package kube

import (
	"bytes"
	"context"
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
	res, err := b.execIn(ctx, cl, pod, queueContainer, []string{"/kube-init", "queue", "take", inbox}, nil)
	if err != nil {
		return err
	}
	if res.ExitCode != 0 {
		return fmt.Errorf("kubernetes: sync queue of %s: take requests: %s", h.Identity, strings.TrimSpace(string(res.Stderr)))
	}
	have, err := podqueue.Merge(bytes.NewReader(res.Stdout), queueDir)
	if err != nil {
		return fmt.Errorf("kubernetes: sync queue of %s: %w", h.Identity, err)
	}
	if len(have) > 0 {
		res, err := b.execIn(ctx, cl, pod, queueContainer, append([]string{"/kube-init", "queue", "drop", inbox}, have...), nil)
		if err != nil {
			return err
		}
		if res.ExitCode != 0 {
			return fmt.Errorf("kubernetes: sync queue of %s: drop requests: %s", h.Identity, strings.TrimSpace(string(res.Stderr)))
		}
	}
	receipts, n, err := podqueue.Outbox(filepath.Join(queueDir, "outbox"))
	if err != nil {
		return fmt.Errorf("kubernetes: sync queue of %s: %w", h.Identity, err)
	}
	if n == 0 {
		return nil
	}
	res, err = b.execIn(ctx, cl, pod, queueContainer, []string{"/kube-init", "queue", "put", outbox}, receipts)
	if err != nil {
		return err
	}
	if res.ExitCode != 0 {
		return fmt.Errorf("kubernetes: sync queue of %s: put receipts: %s", h.Identity, strings.TrimSpace(string(res.Stderr)))
	}
	return nil
}
