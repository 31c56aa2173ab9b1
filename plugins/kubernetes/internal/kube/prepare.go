package kube

import (
	"context"
	"fmt"
	"strings"

	"github.com/bot-bottle/bot-bottle/sdk"
)

// workdir is where the agent starts and, with a project, where its copy is.
func workdir(spec sdk.Spec) string {
	if spec.Agent.Workdir != "" {
		return spec.Agent.Workdir
	}
	if spec.Cwd != "" {
		return "/workspace"
	}
	return ""
}

// Prepare checks what this backend can promise and says what the launch
// will do. It touches nothing on the cluster.
func (b *Backend) Prepare(ctx context.Context, spec sdk.Spec) (sdk.Plan, error) {
	if err := checkIdentity(spec.Identity); err != nil {
		return sdk.Plan{}, err
	}
	if err := b.refuse(spec); err != nil {
		return sdk.Plan{}, err
	}
	if err := checkEgress(spec); err != nil {
		return sdk.Plan{}, err
	}
	cl, err := b.connect("")
	if err != nil {
		return sdk.Plan{}, err
	}
	p := sdk.Plan{Preflight: []sdk.PreflightLine{
		{Key: "cluster", Value: fmt.Sprintf("context %s, namespace %s", orDash(cl.context), cl.namespace)},
		{Key: "pod", Value: podName(spec.Identity)},
	}}
	if len(spec.Egress) > 0 {
		p.Preflight = append(p.Preflight, sdk.PreflightLine{Key: "egress", Value: fmt.Sprintf(
			"through the bottle's own proxy pod %s, allowed: %s; the agent's pod reaches that pod and nothing else (its own routes and neighbours, whatever the cluster's network allows), no DNS",
			proxyPodName(spec.Identity), strings.Join(spec.Egress, ", "))})
	} else {
		p.Preflight = append(p.Preflight, sdk.PreflightLine{Key: "egress", Value: "none: only loopback inside the pod, whatever the cluster's network allows"})
	}
	if spec.Cwd != "" {
		p.Preflight = append(p.Preflight, sdk.PreflightLine{Key: "project",
			Value: fmt.Sprintf("%s is copied into the bottle's volume at %s (a cluster cannot mount this machine's files); changes stay there until copied out", spec.Cwd, workdir(spec))})
	}
	if len(spec.Env) > 0 {
		p.Preflight = append(p.Preflight, sdk.PreflightLine{Key: "secrets",
			Value: fmt.Sprintf("in Secret %s (readable by whoever can read Secrets in %s), removed with the bottle", secretName(spec.Identity), cl.namespace)})
	}
	if spec.QueueDir != "" {
		p.Preflight = append(p.Preflight, sdk.PreflightLine{Key: "requests",
			Value: "wait in the pod until bot-bottle requests, supervise or the dashboard collects them (exec in its bb-queue container)"})
	}
	return p, nil
}

// refuse rejects what this backend cannot do honestly.
func (b *Backend) refuse(spec sdk.Spec) error {
	for _, c := range spec.Agent.CapAdd {
		switch strings.TrimPrefix(strings.ToUpper(c), "CAP_") {
		case "NET_ADMIN", "NET_RAW", "SYS_ADMIN":
			return fmt.Errorf("kubernetes: capability %s would let the agent undo the pod's network lockdown; it is refused on this backend", c)
		}
	}
	return nil
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}
