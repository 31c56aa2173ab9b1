package kube

// Egress on a cluster. A bottle with an allowlist gets a pod of its own
// for its egress proxy (bb-<identity>-egress: kube-init egress-proxy serve,
// package egressproxy, as nobody with no capabilities), made first; its
// address goes to the agent pod's init container, which leaves the agent's
// network namespace that one peer and nothing else (package podnet: one
// host route, one pinned neighbour, no ARP solicitation, strict
// reverse-path filtering, no IPv6, no resolver), so it holds whatever the
// cluster's CNI does or does not enforce; the agent has no capabilities to
// undo it. Then the plugin tells the proxy the agent pod's address (it
// answers no one else) and the rules (setup, through exec in the proxy's
// pod); an approval is the same exec with new rules (UpdateEgress), applied
// before it returns. The proxy's control socket lives in the proxy pod's
// network namespace only: nothing in the agent's pod can reach it.
//
// The audit: the proxy keeps its events in memory, bounded
// (egressproxy.MaxPending; an allowed connection that does not fit is
// refused), until a plugin process collects them through the API server and
// appends them to the bottle's Spec.EgressLog on the operator's host:
// during an attach, at List (list, the dashboard, supervise), at
// UpdateEgress and at Stop before the proxy pod goes. While no core runs (a
// detached bottle) they wait in the proxy pod. A collector holds an flock on
// the log, appends, fsyncs, and only then acknowledges: a collector killed
// between its write and its ack leaves that batch to be written again
// (at least once, never lost).

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"

	"github.com/bot-bottle/bot-bottle/plugins/internal/egress"
	"github.com/bot-bottle/bot-bottle/plugins/kubernetes/internal/egressproxy"
	"github.com/bot-bottle/bot-bottle/sdk"
	"github.com/bot-bottle/bot-bottle/sdk/egressrule"
)

const (
	proxyContainer = "egress"
	// labelRole tells a bottle's proxy pod from its agent's.
	labelRole = "dev.bot-bottle.role"
	roleProxy = "egress-proxy"
	// annEgressLog records Spec.EgressLog on the proxy pod, so that List,
	// which has no spec, can collect; it is checked before use
	// (egressLogOf).
	annEgressLog = "dev.bot-bottle.egress-log"
	// noProxy is what the agent reaches without the proxy: itself.
	noProxy = "localhost,127.0.0.1,::1"
	// collectEvery is how often an attach collects the audit.
	collectEvery = 2 * time.Second
	// collectTimeout bounds one collection (an exec or two).
	collectTimeout = 20 * time.Second
)

// proxyEnvNames are the variables the agent's proxy settings use; a
// passed-through value of one of them never overrides the bottle's proxy.
var proxyEnvNames = []string{"HTTP_PROXY", "HTTPS_PROXY", "http_proxy", "https_proxy", "NO_PROXY", "no_proxy", "ALL_PROXY", "all_proxy"}

func proxyPodName(id string) string { return "bb-" + id + "-egress" }

func isProxyPod(p *corev1.Pod) bool { return p.Labels[labelRole] == roleProxy }

// proxyPod is the bottle's egress proxy pod: the kube-init image, run as
// nobody, no capabilities, read-only, answering only after setup.
func (b *Backend) proxyPod(spec sdk.Spec, labels map[string]string, img image) *corev1.Pod {
	no, yes := false, true
	grace := int64(2)
	nobody := int64(65534)
	l := map[string]string{labelRole: roleProxy}
	for k, v := range labels {
		l[k] = v
	}
	ann := map[string]string{}
	cmd := []string{"/kube-init", "egress-proxy", "serve", "--identity", spec.Identity}
	if spec.EgressLog != "" {
		ann[annEgressLog] = spec.EgressLog
		cmd = append(cmd, "--audit")
	}
	p := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: proxyPodName(spec.Identity), Labels: l, Annotations: ann},
		Spec: corev1.PodSpec{
			RestartPolicy:                 corev1.RestartPolicyNever,
			AutomountServiceAccountToken:  &no,
			EnableServiceLinks:            &no,
			TerminationGracePeriodSeconds: &grace,
			NodeName:                      b.cfg.NodeName,
			NodeSelector:                  b.cfg.NodeSelector,
			Tolerations:                   b.cfg.tolerations(),
			SecurityContext:               &corev1.PodSecurityContext{RunAsUser: &nobody, RunAsGroup: &nobody, RunAsNonRoot: &yes},
			Containers: []corev1.Container{{
				Name: proxyContainer, Image: img.ref, ImagePullPolicy: img.policy,
				Command:                  cmd,
				TerminationMessagePolicy: corev1.TerminationMessageFallbackToLogsOnError,
				Ports:                    []corev1.ContainerPort{{Name: "proxy", ContainerPort: egressproxy.Port, Protocol: corev1.ProtocolTCP}},
				Resources: corev1.ResourceRequirements{
					Requests: corev1.ResourceList{corev1.ResourceCPU: resource.MustParse("10m"), corev1.ResourceMemory: resource.MustParse("32Mi")},
					Limits:   corev1.ResourceList{corev1.ResourceMemory: resource.MustParse("256Mi")},
				},
				SecurityContext: &corev1.SecurityContext{
					AllowPrivilegeEscalation: &no, Privileged: &no, ReadOnlyRootFilesystem: &yes,
					Capabilities:   &corev1.Capabilities{Drop: []corev1.Capability{"ALL"}},
					SeccompProfile: &corev1.SeccompProfile{Type: corev1.SeccompProfileTypeRuntimeDefault},
				},
			}},
		},
	}
	return p
}

// createProxy creates the bottle's proxy pod; waitProxy returns its
// address once it runs. Between the two the launch resolves the agent's
// image while the pod starts.
func (b *Backend) createProxy(ctx context.Context, cl *cluster, spec sdk.Spec, labels map[string]string, img image, progress func(sdk.Progress)) error {
	pod := b.proxyPod(spec, labels, img)
	progress(sdk.Progress{Stage: "egress", Message: "creating egress proxy pod " + pod.Name})
	if _, err := cl.cs.CoreV1().Pods(cl.namespace).Create(ctx, pod, metav1.CreateOptions{}); err != nil {
		return apiErr("kubernetes: create the egress proxy pod "+pod.Name, err)
	}
	return nil
}

func (b *Backend) waitProxy(ctx context.Context, cl *cluster, id string) (netip.Addr, error) {
	pod := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: proxyPodName(id)}}
	wctx, cancel := context.WithTimeout(ctx, startTimeout)
	defer cancel()
	p, err := b.waitPod(wctx, cl, pod.Name, func(p *corev1.Pod) (bool, error) {
		if p.Status.Phase == corev1.PodFailed || p.Status.Phase == corev1.PodSucceeded {
			return false, fmt.Errorf("kubernetes: egress proxy pod %s ended: %s", pod.Name, podReason(p))
		}
		for _, s := range p.Status.ContainerStatuses {
			if w := s.State.Waiting; w != nil && stuck(w.Reason) {
				return false, fmt.Errorf("kubernetes: egress proxy pod %s: %s: %s", pod.Name, w.Reason, w.Message)
			}
			if s.State.Running != nil && p.Status.PodIP != "" {
				return true, nil
			}
		}
		return false, nil
	})
	if err != nil {
		return netip.Addr{}, err
	}
	ip, err := netip.ParseAddr(p.Status.PodIP)
	if err != nil || !ip.Is4() {
		return netip.Addr{}, fmt.Errorf("kubernetes: egress proxy pod %s has address %q; the egress lockdown needs an IPv4 pod address", pod.Name, p.Status.PodIP)
	}
	return ip, nil
}

// agentEgressEnv is the agent's proxy settings, replacing any passed
// through.
func agentEgressEnv(envs []corev1.EnvVar, proxy netip.Addr) []corev1.EnvVar {
	out := envs[:0]
	for _, e := range envs {
		if !slices.Contains(proxyEnvNames, e.Name) {
			out = append(out, e)
		}
	}
	u := "http://" + netip.AddrPortFrom(proxy, egressproxy.Port).String()
	for _, kv := range [][2]string{{"HTTP_PROXY", u}, {"HTTPS_PROXY", u}, {"http_proxy", u}, {"https_proxy", u},
		{"NO_PROXY", noProxy}, {"no_proxy", noProxy}, {sdk.EnvEgress, sdk.EgressProxy}} {
		out = append(out, corev1.EnvVar{Name: kv[0], Value: kv[1]})
	}
	return out
}

// proxyCall runs `kube-init egress-proxy ARGS` in the bottle's proxy pod.
func (b *Backend) proxyCall(ctx context.Context, cl *cluster, id string, stdin []byte, args ...string) (egressproxy.Reply, error) {
	var rep egressproxy.Reply
	argv := append([]string{"/kube-init", "egress-proxy"}, args...)
	res, err := b.execIn(ctx, cl, proxyPodName(id), proxyContainer, argv, stdin)
	if err != nil {
		return rep, err
	}
	if res.ExitCode != 0 {
		return rep, fmt.Errorf("the egress proxy: %s", strings.TrimSpace(strings.TrimPrefix(strings.TrimSpace(string(res.Stderr)), "kube-init: ")))
	}
	if err := json.Unmarshal(res.Stdout, &rep); err != nil {
		return rep, fmt.Errorf("the egress proxy's answer: %w", err)
	}
	return rep, nil
}

// setupProxy gives the proxy its one peer, the agent pod, and its rules.
func (b *Backend) setupProxy(ctx context.Context, cl *cluster, id string, peer string, rules []string) error {
	data, err := egress.EncodeRulesFile(id, rules)
	if err != nil {
		return err
	}
	if _, err := b.proxyCall(ctx, cl, id, data, "setup", "--peer", peer); err != nil {
		return fmt.Errorf("kubernetes: set up the egress proxy of %s: %w", id, err)
	}
	return nil
}

// UpdateEgress replaces the running proxy's allowlist with rules and
// returns once the proxy applies them: the bottle keeps running. A bottle
// launched with an empty allowlist has no network; its new allowlist
// applies from its next resume.
func (b *Backend) UpdateEgress(ctx context.Context, h sdk.Handle, rules []string) error {
	hd, err := decodeHandle(h)
	if err != nil {
		return fmt.Errorf("update egress: %w", err)
	}
	if hd.ProxyIP == "" {
		return fmt.Errorf("kubernetes: update egress of %s: it was launched with an empty allowlist and has no network at all; the new allowlist applies from its next resume: %w", h.Identity, sdk.ErrNotSupported)
	}
	if err := checkEgress(sdk.Spec{Egress: rules}); err != nil {
		return fmt.Errorf("kubernetes: update egress of %s: %w", h.Identity, err)
	}
	data, err := egress.EncodeRulesFile(h.Identity, rules)
	if err != nil {
		return fmt.Errorf("kubernetes: update egress of %s: %w", h.Identity, err)
	}
	cl, err := b.connect(hd.Context)
	if err != nil {
		return err
	}
	cl = cl.in(hd.Namespace)
	if _, err := b.proxyCall(ctx, cl, h.Identity, data, "rules"); err != nil {
		return fmt.Errorf("kubernetes: update egress of %s: %w", h.Identity, err)
	}
	b.log.Info("egress allowlist updated", "identity", h.Identity, "rules", strings.Join(rules, ", "))
	if hd.EgressLog != "" {
		if err := b.collect(ctx, cl, h.Identity, hd.EgressLog); err != nil {
			b.log.Warn("collect the egress audit", "identity", h.Identity, "error", err)
		}
	}
	return nil
}

// checkEgress validates an allowlist and its log without side effects.
func checkEgress(spec sdk.Spec) error {
	if len(spec.Egress) == 0 {
		return nil
	}
	rs, err := egressrule.ParseRules(spec.Egress)
	if err == nil {
		err = egressproxy.CheckRules(rs)
	}
	if err != nil {
		return fmt.Errorf("kubernetes: egress allowlist: %w", err)
	}
	if spec.EgressLog != "" {
		if !filepath.IsAbs(spec.EgressLog) || filepath.Clean(spec.EgressLog) != spec.EgressLog {
			return fmt.Errorf("kubernetes: egress log %q is not a clean absolute path", spec.EgressLog)
		}
	}
	return nil
}

// prepareEgressLog makes sure the audit file exists as a regular file of
// this user, so that a later collector (List) can tell it from a path
// someone else put on the pod.
func prepareEgressLog(path string) error {
	if path == "" {
		return nil
	}
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_APPEND|os.O_CREATE|syscall.O_NOFOLLOW, 0o600)
	if err != nil {
		return fmt.Errorf("kubernetes: egress log: %w", err)
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return fmt.Errorf("kubernetes: egress log: %w", err)
	}
	if !st.Mode().IsRegular() {
		return fmt.Errorf("kubernetes: egress log %s is not a regular file", path)
	}
	return nil
}

// egressLogOf returns the audit file recorded on a proxy pod, if it is one
// a collector may append to: a clean absolute path named after the
// bottle, an existing regular file of this user (made at launch). Anything
// else is "" (the pod's annotations are the cluster's, not the core's).
func egressLogOf(p *corev1.Pod, id string) string {
	path := p.Annotations[annEgressLog]
	if path == "" || !filepath.IsAbs(path) || filepath.Clean(path) != path || filepath.Base(path) != id+".jsonl" {
		return ""
	}
	st, err := os.Lstat(path)
	if err != nil || !st.Mode().IsRegular() {
		return ""
	}
	if sys, ok := st.Sys().(*syscall.Stat_t); ok && int(sys.Uid) != os.Getuid() {
		return ""
	}
	return path
}

// collect moves the proxy's pending events into the bottle's audit file:
// under an flock of the file, batch by batch, each written and synced
// before it is acknowledged.
func (b *Backend) collect(ctx context.Context, cl *cluster, id, path string) error {
	ctx, cancel := context.WithTimeout(ctx, collectTimeout)
	defer cancel()
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_APPEND|syscall.O_NOFOLLOW, 0)
	if err != nil {
		return fmt.Errorf("egress log: %w", err)
	}
	defer f.Close()
	if err := flock(ctx, f); err != nil {
		return fmt.Errorf("egress log: %w", err)
	}
	defer syscall.Flock(int(f.Fd()), syscall.LOCK_UN)
	for {
		rep, err := b.proxyCall(ctx, cl, id, nil, "collect")
		if err != nil {
			return err
		}
		if rep.Seq == 0 || rep.Events == "" {
			return nil
		}
		if _, err := f.WriteString(rep.Events); err != nil {
			return fmt.Errorf("egress log: %w", err)
		}
		if err := f.Sync(); err != nil {
			return fmt.Errorf("egress log: %w", err)
		}
		if _, err := b.proxyCall(ctx, cl, id, nil, "ack", strconv.FormatUint(rep.Seq, 10)); err != nil {
			return err
		}
		if rep.Pending == 0 {
			return nil
		}
	}
}

// flock takes an exclusive lock on f, giving up when ctx is done.
func flock(ctx context.Context, f *os.File) error {
	for {
		err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB)
		if err == nil {
			return nil
		}
		if !errors.Is(err, syscall.EWOULDBLOCK) {
			return err
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(20 * time.Millisecond):
		}
	}
}

// collectPod collects from a proxy pod found on the cluster (List, Stop),
// when it runs and names an audit file a collector may use.
func (b *Backend) collectPod(ctx context.Context, cl *cluster, p *corev1.Pod, logPath string) error {
	id := p.Labels[sdk.LabelIdentity]
	if !sdk.ValidIdentity(id) || p.Name != proxyPodName(id) || p.DeletionTimestamp != nil || p.Status.Phase != corev1.PodRunning {
		return nil
	}
	if logPath == "" {
		logPath = egressLogOf(p, id)
	}
	if logPath == "" {
		return nil
	}
	return b.collect(ctx, cl, id, logPath)
}

// networkPolicy is the second layer, where the cluster enforces
// NetworkPolicy: the agent's pod may send only to its proxy's port and
// hear only from its proxy. The pod's own lockdown does not depend on it.
func networkPolicy(id string, labels map[string]string) *networkingv1.NetworkPolicy {
	tcp := corev1.ProtocolTCP
	port := intstr.FromInt32(egressproxy.Port)
	proxy := &metav1.LabelSelector{MatchLabels: map[string]string{sdk.LabelIdentity: id, labelRole: roleProxy}}
	return &networkingv1.NetworkPolicy{
		ObjectMeta: metav1.ObjectMeta{Name: proxyPodName(id), Labels: labels},
		Spec: networkingv1.NetworkPolicySpec{
			PodSelector: metav1.LabelSelector{
				MatchLabels:      map[string]string{sdk.LabelIdentity: id},
				MatchExpressions: []metav1.LabelSelectorRequirement{{Key: labelRole, Operator: metav1.LabelSelectorOpDoesNotExist}},
			},
			PolicyTypes: []networkingv1.PolicyType{networkingv1.PolicyTypeIngress, networkingv1.PolicyTypeEgress},
			Egress:      []networkingv1.NetworkPolicyEgressRule{{To: []networkingv1.NetworkPolicyPeer{{PodSelector: proxy}}, Ports: []networkingv1.NetworkPolicyPort{{Protocol: &tcp, Port: &port}}}},
			Ingress:     []networkingv1.NetworkPolicyIngressRule{{From: []networkingv1.NetworkPolicyPeer{{PodSelector: proxy}}}},
		},
	}
}

// addNetworkPolicy creates it; a cluster that refuses (no such API, no
// right to) is told in the progress, and the launch goes on.
func (b *Backend) addNetworkPolicy(ctx context.Context, cl *cluster, id string, labels map[string]string, progress func(sdk.Progress)) error {
	_, err := cl.cs.NetworkingV1().NetworkPolicies(cl.namespace).Create(ctx, networkPolicy(id, labels), metav1.CreateOptions{})
	switch {
	case err == nil:
		return nil
	case apierrors.IsForbidden(err) || apierrors.IsNotFound(err) || apierrors.IsMethodNotSupported(err):
		progress(sdk.Progress{Stage: "egress", Message: "no NetworkPolicy as a second layer (" + oneLine(err) + "); the pod's own lockdown holds alone"})
		return nil
	}
	return apiErr("kubernetes: create the bottle's NetworkPolicy", err)
}

// dropNetworkPolicies removes the bottle's NetworkPolicies; a cluster
// where they cannot be listed has none of ours.
func (b *Backend) dropNetworkPolicies(ctx context.Context, cl *cluster, sel metav1.ListOptions) ([]string, error) {
	nps := cl.cs.NetworkingV1().NetworkPolicies(cl.namespace)
	list, err := nps.List(ctx, sel)
	if apierrors.IsForbidden(err) || apierrors.IsNotFound(err) {
		return nil, nil
	}
	if err != nil {
		return nil, apiErr("list network policies", err)
	}
	var removed []string
	for _, np := range list.Items {
		if err := nps.Delete(ctx, np.Name, metav1.DeleteOptions{}); err != nil && !apierrors.IsNotFound(err) {
			return removed, apiErr("delete network policy "+np.Name, err)
		}
		removed = append(removed, "network policy "+np.Name)
	}
	return removed, nil
}
