package kube

import (
	"context"
	"fmt"
	"sort"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/bot-bottle/bot-bottle/sdk"
)

// goneTimeout bounds the wait for deleted objects to be gone.
const goneTimeout = 90 * time.Second

// Stop removes the bottle's pod and secret, and its project's volume claim
// too when RemoveSnapshots says the bottle goes for good: without it the
// claim is the kept state a resume starts from. Objects are found by the
// identity's labels (in this home), so that it works without a handle; it
// waits until they are gone, so that nothing of the bottle is left when it
// returns.
func (b *Backend) Stop(ctx context.Context, req sdk.StopRequest) ([]string, error) {
	id := req.Identity
	ctxName, ns, logPath := "", "", ""
	if req.Handle != nil {
		if id == "" {
			id = req.Handle.Identity
		}
		if hd, err := decodeHandle(*req.Handle); err == nil {
			ctxName, ns, logPath = hd.Context, hd.Namespace, hd.EgressLog
		}
	}
	if err := checkIdentity(id); err != nil {
		return nil, err
	}
	cl, err := b.connect(ctxName)
	if err != nil {
		return nil, err
	}
	cl = cl.in(ns)
	sel := metav1.ListOptions{LabelSelector: b.selector(id)}
	core := cl.cs.CoreV1()
	var removed []string
	grace := int64(1)
	pods, err := core.Pods(cl.namespace).List(ctx, sel)
	if err != nil {
		return nil, apiErr("kubernetes: stop "+id+": list pods", err)
	}
	// The agent goes first, then its proxy's last events are collected,
	// then the proxy goes: no connection is left out of the audit.
	var proxies []corev1.Pod
	for _, p := range pods.Items {
		if isProxyPod(&p) {
			proxies = append(proxies, p)
			continue
		}
		if err := core.Pods(cl.namespace).Delete(ctx, p.Name, metav1.DeleteOptions{GracePeriodSeconds: &grace}); err != nil && !apierrors.IsNotFound(err) {
			return removed, apiErr("kubernetes: stop "+id+": delete pod "+p.Name, err)
		}
		removed = append(removed, "pod "+p.Name)
	}
	if len(proxies) > 0 {
		agents := metav1.ListOptions{LabelSelector: sel.LabelSelector + "," + labelRole + "!=" + roleProxy}
		if err := b.awaitGone(ctx, cl, agents, false); err != nil {
			return removed, fmt.Errorf("kubernetes: stop %s: %w", id, err)
		}
	}
	for i := range proxies {
		p := &proxies[i]
		if err := b.collectPod(ctx, cl, p, logPath); err != nil {
			return removed, fmt.Errorf("kubernetes: stop %s: collect its egress audit before its proxy goes (the proxy pod %s is kept; stop again to retry): %w", id, p.Name, err)
		}
		if err := core.Pods(cl.namespace).Delete(ctx, p.Name, metav1.DeleteOptions{GracePeriodSeconds: &grace}); err != nil && !apierrors.IsNotFound(err) {
			return removed, apiErr("kubernetes: stop "+id+": delete pod "+p.Name, err)
		}
		removed = append(removed, "pod "+p.Name)
	}
	nps, err := b.dropNetworkPolicies(ctx, cl, sel)
	removed = append(removed, nps...)
	if err != nil {
		return removed, fmt.Errorf("kubernetes: stop %s: %w", id, err)
	}
	secrets, err := core.Secrets(cl.namespace).List(ctx, sel)
	if err != nil {
		return removed, apiErr("kubernetes: stop "+id+": list secrets", err)
	}
	for _, s := range secrets.Items {
		if err := core.Secrets(cl.namespace).Delete(ctx, s.Name, metav1.DeleteOptions{}); err != nil && !apierrors.IsNotFound(err) {
			return removed, apiErr("kubernetes: stop "+id+": delete secret "+s.Name, err)
		}
		removed = append(removed, "secret "+s.Name)
	}
	var claims []string
	if req.RemoveSnapshots {
		list, err := core.PersistentVolumeClaims(cl.namespace).List(ctx, sel)
		if err != nil {
			return removed, apiErr("kubernetes: stop "+id+": list volume claims", err)
		}
		for _, c := range list.Items {
			if err := core.PersistentVolumeClaims(cl.namespace).Delete(ctx, c.Name, metav1.DeleteOptions{}); err != nil && !apierrors.IsNotFound(err) {
				return removed, apiErr("kubernetes: stop "+id+": delete volume claim "+c.Name, err)
			}
			removed = append(removed, "volume claim "+c.Name)
			claims = append(claims, c.Name)
		}
	}
	if err := b.awaitGone(ctx, cl, sel, len(claims) > 0); err != nil {
		return removed, fmt.Errorf("kubernetes: stop %s: %w", id, err)
	}
	sort.Strings(removed)
	return removed, nil
}

// awaitGone waits until no pod (and, with claims, no claim) of the
// selector is left; a pod the kubelet does not let go of in time is
// removed by force.
func (b *Backend) awaitGone(ctx context.Context, cl *cluster, sel metav1.ListOptions, claims bool) error {
	core := cl.cs.CoreV1()
	deadline := time.Now().Add(goneTimeout)
	forced := false
	for {
		pods, err := core.Pods(cl.namespace).List(ctx, sel)
		if err != nil {
			return apiErr("list pods", err)
		}
		left := len(pods.Items)
		if claims {
			list, err := core.PersistentVolumeClaims(cl.namespace).List(ctx, sel)
			if err != nil {
				return apiErr("list volume claims", err)
			}
			left += len(list.Items)
		}
		if left == 0 {
			return nil
		}
		if time.Now().After(deadline) {
			if forced {
				return fmt.Errorf("%d objects are still being deleted after %v", left, goneTimeout)
			}
			forced = true
			zero := int64(0)
			for _, p := range pods.Items {
				_ = core.Pods(cl.namespace).Delete(ctx, p.Name, metav1.DeleteOptions{GracePeriodSeconds: &zero})
			}
			deadline = time.Now().Add(goneTimeout / 3)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(150 * time.Millisecond):
		}
	}
}

// List reports this home's bottles: one per pod, and one per kept volume
// claim whose pod is gone (StatusSnapshot: a kept bottle's project copy).
func (b *Backend) List(ctx context.Context) ([]sdk.Bottle, error) {
	cl, err := b.connect("")
	if err != nil {
		return nil, err
	}
	sel := metav1.ListOptions{LabelSelector: b.selector("")}
	pods, err := cl.cs.CoreV1().Pods(cl.namespace).List(ctx, sel)
	if err != nil {
		return nil, apiErr("kubernetes: list pods", err)
	}
	claims, err := cl.cs.CoreV1().PersistentVolumeClaims(cl.namespace).List(ctx, sel)
	if err != nil {
		return nil, apiErr("kubernetes: list volume claims", err)
	}
	byID := map[string]*sdk.Bottle{}
	var order []string
	get := func(id string) *sdk.Bottle {
		if bt, ok := byID[id]; ok {
			return bt
		}
		byID[id] = &sdk.Bottle{Identity: id}
		order = append(order, id)
		return byID[id]
	}
	b.collectAll(ctx, cl, pods.Items)
	for i := range pods.Items {
		p := &pods.Items[i]
		id := p.Labels[sdk.LabelIdentity]
		if !sdk.ValidIdentity(id) {
			continue
		}
		if isProxyPod(p) {
			bt := get(id)
			bt.Resources = append(bt.Resources, "pod "+p.Name)
			continue
		}
		bt := get(id)
		bt.Agent = p.Labels[sdk.LabelAgent]
		bt.Status = podStatus(p)
		bt.StartedAt = p.CreationTimestamp.UTC().Format(time.RFC3339)
		bt.Resources = append(bt.Resources, "pod "+p.Name)
		for _, c := range p.Spec.Containers {
			if c.Name == agentContainer {
				bt.Image = c.Image
			}
		}
		tty := false
		for _, c := range p.Spec.Containers {
			if c.Name == agentContainer {
				tty = c.TTY
			}
		}
		hd := handleData{Context: cl.context, Namespace: cl.namespace, Pod: p.Name, TTY: tty}
		for j := range pods.Items {
			if q := &pods.Items[j]; isProxyPod(q) && q.Name == proxyPodName(id) {
				hd.ProxyIP, hd.EgressLog = q.Status.PodIP, egressLogOf(q, id)
			}
		}
		h := encodeHandle(id, hd)
		bt.Handle = &h
	}
	for _, id := range order {
		// A bottle whose agent pod is gone, with its proxy left (a stop
		// that failed midway): prune's Stop removes it.
		if bt := byID[id]; bt.Status == "" {
			bt.Status = sdk.StatusExited
		}
	}
	// A policy left alone (a stop that failed midway) is a bottle for
	// prune to remove.
	if nps, err := cl.cs.NetworkingV1().NetworkPolicies(cl.namespace).List(ctx, sel); err == nil {
		for _, np := range nps.Items {
			id := np.Labels[sdk.LabelIdentity]
			if !sdk.ValidIdentity(id) {
				continue
			}
			bt := get(id)
			bt.Resources = append(bt.Resources, "network policy "+np.Name)
			if bt.Status == "" {
				bt.Status = sdk.StatusExited
			}
		}
	}
	for _, c := range claims.Items {
		id := c.Labels[sdk.LabelIdentity]
		if !sdk.ValidIdentity(id) {
			continue
		}
		bt := get(id)
		bt.Resources = append(bt.Resources, "volume claim "+c.Name)
		bt.Snapshots = append(bt.Snapshots, "pvc/"+c.Name)
		if bt.Status == "" {
			bt.Status = sdk.StatusSnapshot
			bt.Agent = c.Labels[sdk.LabelAgent]
		}
	}
	out := make([]sdk.Bottle, 0, len(order))
	for _, id := range order {
		out = append(out, *byID[id])
	}
	return out, nil
}

// podStatus maps a pod to the statuses the core knows.
func podStatus(p *corev1.Pod) string {
	s := agentStatus(p)
	switch {
	case p.DeletionTimestamp != nil:
		return "stopping"
	case s != nil && s.State.Terminated != nil, p.Status.Phase == corev1.PodSucceeded, p.Status.Phase == corev1.PodFailed:
		return sdk.StatusExited
	case s != nil && s.State.Running != nil && p.Annotations[annStarted] == "true":
		return sdk.StatusRunning
	default:
		return sdk.StatusCreated
	}
}

// collectAll collects the audit of every running proxy pod among pods, at
// once; a failure is logged and left for the next collector (the events
// wait in the proxy).
func (b *Backend) collectAll(ctx context.Context, cl *cluster, pods []corev1.Pod) {
	var wg sync.WaitGroup
	for i := range pods {
		p := &pods[i]
		if !isProxyPod(p) {
			continue
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := b.collectPod(ctx, cl, p, ""); err != nil {
				b.log.Warn("collect the egress audit", "pod", p.Name, "error", err)
			}
		}()
	}
	wg.Wait()
}
