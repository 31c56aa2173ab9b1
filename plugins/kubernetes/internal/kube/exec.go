package kube

import (
	"context"
	"fmt"
	"path"
	"strings"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/bot-bottle/bot-bottle/sdk"
)

// exitNotFound is kube-init tar's exit code for a missing path.
const exitNotFound = 44

// running returns the bottle's cluster and pod when its agent runs:
// sdk.ErrNotFound when the pod is gone, an error when the agent is not
// running.
func (b *Backend) running(ctx context.Context, h sdk.Handle) (*cluster, string, error) {
	hd, err := decodeHandle(h)
	if err != nil {
		return nil, "", err
	}
	cl, err := b.connect(hd.Context)
	if err != nil {
		return nil, "", err
	}
	cl = cl.in(hd.Namespace)
	p, err := cl.cs.CoreV1().Pods(cl.namespace).Get(ctx, hd.Pod, metav1.GetOptions{})
	if err != nil {
		return nil, "", apiErr("kubernetes: bottle "+h.Identity, err)
	}
	if s := agentStatus(p); s == nil || s.State.Running == nil || p.DeletionTimestamp != nil {
		return nil, "", fmt.Errorf("kubernetes: the agent of %s is not running", h.Identity)
	}
	return cl, hd.Pod, nil
}

// Exec runs a command beside the agent. A pod's exec has no working
// directory or user of its own: kube-init changes directory, and another
// user than the agent's is refused.
func (b *Backend) Exec(ctx context.Context, req sdk.ExecRequest) (sdk.ExecResult, error) {
	if len(req.Command) == 0 {
		return sdk.ExecResult{}, fmt.Errorf("kubernetes: exec: no command")
	}
	if req.User != "" {
		return sdk.ExecResult{}, fmt.Errorf("kubernetes: exec as user %s: %w (a pod's exec runs as the agent's user)", req.User, sdk.ErrNotSupported)
	}
	cl, pod, err := b.running(ctx, req.Handle)
	if err != nil {
		return sdk.ExecResult{}, err
	}
	argv := req.Command
	if req.Workdir != "" {
		argv = append([]string{helperPath, "run", req.Workdir, "--"}, argv...)
	}
	return b.exec(ctx, cl, pod, argv, req.Stdin)
}

// CopyIn extracts a tar into dir in the bottle, as the agent's user.
func (b *Backend) CopyIn(ctx context.Context, h sdk.Handle, dir string, tarball []byte) error {
	if !path.IsAbs(dir) {
		return fmt.Errorf("kubernetes: copy in: %q is not an absolute path", dir)
	}
	cl, pod, err := b.running(ctx, h)
	if err != nil {
		return err
	}
	res, err := b.exec(ctx, cl, pod, []string{helperPath, "untar", dir}, tarball)
	if err != nil {
		return err
	}
	if res.ExitCode != 0 {
		return fmt.Errorf("kubernetes: copy into %s: %s", dir, strings.TrimSpace(string(res.Stderr)))
	}
	return nil
}

// CopyOut returns p (a file or a tree) from the bottle as a tar.
func (b *Backend) CopyOut(ctx context.Context, h sdk.Handle, p string) ([]byte, error) {
	if !path.IsAbs(p) {
		return nil, fmt.Errorf("kubernetes: copy out: %q is not an absolute path", p)
	}
	cl, pod, err := b.running(ctx, h)
	if err != nil {
		return nil, err
	}
	res, err := b.exec(ctx, cl, pod, []string{helperPath, "tar", p}, nil)
	if err != nil {
		return nil, err
	}
	switch res.ExitCode {
	case 0:
		return res.Stdout, nil
	case exitNotFound:
		return nil, fmt.Errorf("kubernetes: copy out %s: %w", p, sdk.ErrNotFound)
	default:
		return nil, fmt.Errorf("kubernetes: copy out %s: %s", p, strings.TrimSpace(string(res.Stderr)))
	}
}
