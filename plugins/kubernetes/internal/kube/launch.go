package kube

import (
	"bytes"
	"context"
	"fmt"
	"net/netip"
	"path"
	"sort"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/apimachinery/pkg/util/validation"
	"k8s.io/apimachinery/pkg/watch"

	"github.com/bot-bottle/bot-bottle/plugins/internal/tarball"
	"github.com/bot-bottle/bot-bottle/sdk"
)

// startTimeout bounds how long a pod may take to come up.
const startTimeout = 3 * time.Minute

// Launch creates the bottle's Secret, volume claim and Pod, waits until the
// agent's container is up behind its gate, copies the project in, and with
// spec.Detach opens the gate. Stop by identity removes whatever a launch
// abandoned midway left.
func (b *Backend) Launch(ctx context.Context, spec sdk.Spec, _ sdk.Plan, progress func(sdk.Progress)) (sdk.Handle, error) {
	id := spec.Identity
	if err := checkIdentity(id); err != nil {
		return sdk.Handle{}, err
	}
	if err := b.refuse(spec); err != nil {
		return sdk.Handle{}, err
	}
	if err := checkEgress(spec); err != nil {
		return sdk.Handle{}, err
	}
	if len(spec.Command) == 0 {
		return sdk.Handle{}, fmt.Errorf("kubernetes: %s: no command to run", id)
	}
	cl, err := b.connect("")
	if err != nil {
		return sdk.Handle{}, err
	}
	initImg, err := b.initImage(ctx, spec.HelperBinary, progress)
	if err != nil {
		return sdk.Handle{}, err
	}
	labels := b.labels(id, spec.Agent.Name)
	if len(spec.Egress) > 0 {
		// The proxy first: the agent pod's lockdown needs its address.
		if err := prepareEgressLog(spec.EgressLog); err != nil {
			return sdk.Handle{}, err
		}
		if err := b.createProxy(ctx, cl, spec, labels, initImg, progress); err != nil {
			return sdk.Handle{}, err
		}
		if err := b.addNetworkPolicy(ctx, cl, id, labels, progress); err != nil {
			return sdk.Handle{}, err
		}
	}
	img, err := b.agentImage(ctx, spec, progress)
	if err != nil {
		return sdk.Handle{}, err
	}
	pods := cl.cs.CoreV1().Pods(cl.namespace)

	var envs []corev1.EnvVar
	if len(spec.Env) > 0 {
		sec := &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: secretName(id), Labels: labels}, Type: corev1.SecretTypeOpaque, Data: map[string][]byte{}}
		names := make([]string, 0, len(spec.Env))
		for k, v := range spec.Env {
			if len(validation.IsEnvVarName(k)) > 0 {
				return sdk.Handle{}, fmt.Errorf("kubernetes: %q is not an environment variable name a pod can have", k)
			}
			sec.Data[k] = []byte(v)
			names = append(names, k)
		}
		sort.Strings(names)
		for _, k := range names {
			envs = append(envs, corev1.EnvVar{Name: k, ValueFrom: &corev1.EnvVarSource{SecretKeyRef: &corev1.SecretKeySelector{
				LocalObjectReference: corev1.LocalObjectReference{Name: sec.Name}, Key: k}}})
		}
		if _, err := cl.cs.CoreV1().Secrets(cl.namespace).Create(ctx, sec, metav1.CreateOptions{}); err != nil {
			return sdk.Handle{}, apiErr("kubernetes: create the bottle's secret", err)
		}
	}
	var proxyIP netip.Addr
	if len(spec.Egress) > 0 {
		if proxyIP, err = b.waitProxy(ctx, cl, id); err != nil {
			return sdk.Handle{}, err
		}
		envs = agentEgressEnv(envs, proxyIP)
	} else {
		envs = append(envs, corev1.EnvVar{Name: sdk.EnvEgress, Value: sdk.EgressOff})
	}
	envs = append(envs, corev1.EnvVar{Name: sdk.EnvIdentity, Value: id})
	if spec.TTY {
		envs = append(envs, corev1.EnvVar{Name: "TERM", Value: "xterm"})
	}

	wd := workdir(spec)
	// A kept claim (a resumed bottle's) already holds the project.
	copyProject := spec.Cwd != ""
	if spec.Cwd != "" {
		kept, err := b.ensureClaim(ctx, cl, id, labels, spec.Resume)
		if err != nil {
			return sdk.Handle{}, err
		}
		copyProject = !kept
	}

	pod := b.podSpec(spec, labels, initImg, img, envs, wd, proxyIP)
	pod.Annotations = map[string]string{annContext: cl.context}
	progress(sdk.Progress{Stage: "pod", Message: "creating pod " + pod.Name})
	if _, err := pods.Create(ctx, pod, metav1.CreateOptions{}); err != nil {
		return sdk.Handle{}, apiErr("kubernetes: create pod "+pod.Name, err)
	}
	hd := handleData{Context: cl.context, Namespace: cl.namespace, Pod: pod.Name, TTY: spec.TTY}
	running, err := b.waitAgent(ctx, cl, pod.Name)
	if err != nil {
		return sdk.Handle{}, err
	}
	if proxyIP.IsValid() {
		// The agent waits behind its gate: the proxy answers it, and only
		// it, before it runs.
		if err := b.setupProxy(ctx, cl, id, running.Status.PodIP, spec.Egress); err != nil {
			return sdk.Handle{}, err
		}
		hd.ProxyIP, hd.EgressLog = proxyIP.String(), spec.EgressLog
		progress(sdk.Progress{Stage: "egress", Message: "egress proxy " + proxyPodName(id) + " at " + proxyIP.String() + " answers this bottle only; allowed: " + strings.Join(spec.Egress, ", ")})
	}
	if copyProject {
		progress(sdk.Progress{Stage: "project", Message: "copying " + spec.Cwd + " into the bottle"})
		var project bytes.Buffer
		if err := tarball.WriteDir(&project, spec.Cwd); err != nil {
			return sdk.Handle{}, fmt.Errorf("kubernetes: copy the project: %w", err)
		}
		res, err := b.exec(ctx, cl, pod.Name, []string{helperPath, "untar", wd}, project.Bytes())
		if err != nil {
			return sdk.Handle{}, fmt.Errorf("kubernetes: copy the project: %w", err)
		}
		if res.ExitCode != 0 {
			return sdk.Handle{}, fmt.Errorf("kubernetes: copy the project into %s: %s", wd, strings.TrimSpace(string(res.Stderr)))
		}
	}
	if spec.Detach {
		if err := b.openGate(ctx, cl, pod.Name, hd.TTY); err != nil {
			return sdk.Handle{}, err
		}
	}
	return encodeHandle(id, hd), nil
}

// ensureClaim creates the project's volume claim, or with resume finds the
// kept one; it reports whether the claim was kept (holds the project).
func (b *Backend) ensureClaim(ctx context.Context, cl *cluster, id string, labels map[string]string, resume bool) (bool, error) {
	claims := cl.cs.CoreV1().PersistentVolumeClaims(cl.namespace)
	if resume {
		c, err := claims.Get(ctx, claimName(id), metav1.GetOptions{})
		if err == nil && c.DeletionTimestamp == nil {
			return true, nil
		}
		if err != nil && !apierrors.IsNotFound(err) {
			return false, apiErr("kubernetes: find the kept volume claim", err)
		}
	}
	pvc := &corev1.PersistentVolumeClaim{
		ObjectMeta: metav1.ObjectMeta{Name: claimName(id), Labels: labels},
		Spec: corev1.PersistentVolumeClaimSpec{
			AccessModes: []corev1.PersistentVolumeAccessMode{corev1.ReadWriteOnce},
			Resources:   corev1.VolumeResourceRequirements{Requests: corev1.ResourceList{corev1.ResourceStorage: b.cfg.volume}},
		},
	}
	if b.cfg.StorageClass != "" {
		pvc.Spec.StorageClassName = &b.cfg.StorageClass
	}
	if _, err := claims.Create(ctx, pvc, metav1.CreateOptions{}); err != nil {
		return false, apiErr("kubernetes: create the project's volume claim", err)
	}
	return false, nil
}

func (b *Backend) podSpec(spec sdk.Spec, labels map[string]string, initImg, img image, envs []corev1.EnvVar, wd string, proxyIP netip.Addr) *corev1.Pod {
	no := false
	grace := int64(2)
	root := int64(0)
	install := []string{"/kube-init", "install", helperDir, "--net-off"}
	if proxyIP.IsValid() {
		install = []string{"/kube-init", "install", helperDir, "--egress-via", proxyIP.String()}
	}
	helperMount := corev1.VolumeMount{Name: helperVolume, MountPath: helperDir}
	initMounts := []corev1.VolumeMount{helperMount}
	agentMounts := []corev1.VolumeMount{{Name: helperVolume, MountPath: helperDir, ReadOnly: true}}
	volumes := []corev1.Volume{{Name: helperVolume, VolumeSource: corev1.VolumeSource{EmptyDir: &corev1.EmptyDirVolumeSource{}}}}
	if spec.Cwd != "" {
		volumes = append(volumes, corev1.Volume{Name: workVolume, VolumeSource: corev1.VolumeSource{
			PersistentVolumeClaim: &corev1.PersistentVolumeClaimVolumeSource{ClaimName: claimName(spec.Identity)}}})
		initMounts = append(initMounts, corev1.VolumeMount{Name: workVolume, MountPath: "/work"})
		agentMounts = append(agentMounts, corev1.VolumeMount{Name: workVolume, MountPath: wd})
		install = append(install, "--open-dir", "/work")
	}
	// The queue: bounded emptyDirs, the outbox read-only to the agent.
	queueLimit := resource.MustParse("16Mi")
	for _, v := range []string{inboxVolume, outboxVolume} {
		volumes = append(volumes, corev1.Volume{Name: v, VolumeSource: corev1.VolumeSource{EmptyDir: &corev1.EmptyDirVolumeSource{SizeLimit: &queueLimit}}})
	}
	agentMounts = append(agentMounts,
		corev1.VolumeMount{Name: inboxVolume, MountPath: path.Join(sdk.GuestQueueDir, sdk.QueueInbox)},
		corev1.VolumeMount{Name: outboxVolume, MountPath: path.Join(sdk.GuestQueueDir, "outbox"), ReadOnly: true})
	if spec.HelperBinary != "" && b.cfg.InitImage == "" {
		agentMounts = append(agentMounts, corev1.VolumeMount{Name: helperVolume, MountPath: sdk.GuestHelperPath, SubPath: "bottle", ReadOnly: true})
	}
	quid := int64(queueUID)
	yes := true
	queueSide := corev1.Container{
		Name: queueContainer, Image: initImg.ref, ImagePullPolicy: initImg.policy, Command: []string{"/kube-init", "idle"},
		VolumeMounts: []corev1.VolumeMount{
			{Name: inboxVolume, MountPath: path.Join(podQueueDir, sdk.QueueInbox)},
			{Name: outboxVolume, MountPath: path.Join(podQueueDir, "outbox")},
		},
		SecurityContext: &corev1.SecurityContext{
			RunAsUser: &quid, RunAsGroup: &quid, RunAsNonRoot: &yes, AllowPrivilegeEscalation: &no, Privileged: &no,
			ReadOnlyRootFilesystem: &yes,
			Capabilities:           &corev1.Capabilities{Drop: []corev1.Capability{"ALL"}},
			SeccompProfile:         &corev1.SeccompProfile{Type: corev1.SeccompProfileTypeRuntimeDefault},
		},
	}
	var caps []corev1.Capability
	for _, c := range spec.Agent.CapAdd {
		caps = append(caps, corev1.Capability(strings.TrimPrefix(strings.ToUpper(c), "CAP_")))
	}
	p := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: podName(spec.Identity), Labels: labels},
		Spec: corev1.PodSpec{
			RestartPolicy:                 corev1.RestartPolicyNever,
			AutomountServiceAccountToken:  &no,
			EnableServiceLinks:            &no,
			TerminationGracePeriodSeconds: &grace,
			NodeName:                      b.cfg.NodeName,
			NodeSelector:                  b.cfg.NodeSelector,
			Tolerations:                   b.cfg.tolerations(),
			Volumes:                       volumes,
			// No resolver that forwards: only the proxy resolves names.
			DNSPolicy: corev1.DNSNone,
			DNSConfig: &corev1.PodDNSConfig{Nameservers: []string{"127.0.0.1"}},
			InitContainers: []corev1.Container{{
				Name: initContainer, Image: initImg.ref, ImagePullPolicy: initImg.policy, Command: install,
				VolumeMounts: initMounts,
				// Its one-line error is the launch's.
				TerminationMessagePolicy: corev1.TerminationMessageFallbackToLogsOnError,
				SecurityContext: &corev1.SecurityContext{
					RunAsUser: &root, AllowPrivilegeEscalation: &no,
					Capabilities: &corev1.Capabilities{Drop: []corev1.Capability{"ALL"}, Add: []corev1.Capability{"NET_ADMIN"}},
				},
			}},
			Containers: []corev1.Container{{
				Name: agentContainer, Image: img.ref, ImagePullPolicy: img.policy,
				Command:    append([]string{helperPath, "gate", "--"}, spec.Command...),
				WorkingDir: wd, Env: envs, VolumeMounts: agentMounts,
				// Pipes: the first attach's end of input is the agent's.
				// A terminal: a detach must leave the agent's input open.
				Stdin: true, StdinOnce: !spec.TTY, TTY: spec.TTY,
				Resources: b.cfg.resources,
				SecurityContext: &corev1.SecurityContext{
					AllowPrivilegeEscalation: &no, Privileged: &no,
					Capabilities:   &corev1.Capabilities{Drop: []corev1.Capability{"ALL"}, Add: caps},
					SeccompProfile: &corev1.SeccompProfile{Type: corev1.SeccompProfileTypeRuntimeDefault},
				},
			}, queueSide},
		},
	}
	if b.cfg.RuntimeClass != "" {
		p.Spec.RuntimeClassName = &b.cfg.RuntimeClass
	}
	return p
}

// waitAgent waits until the agent's container runs (behind its gate) or
// has ended, and fails with the pod's reason when it cannot start.
func (b *Backend) waitAgent(ctx context.Context, cl *cluster, name string) (*corev1.Pod, error) {
	ctx, cancel := context.WithTimeout(ctx, startTimeout)
	defer cancel()
	return b.waitPod(ctx, cl, name, func(p *corev1.Pod) (bool, error) {
		if p.Status.Phase == corev1.PodFailed && agentStatus(p) == nil {
			return false, fmt.Errorf("kubernetes: pod %s failed: %s", name, podReason(p))
		}
		for _, s := range p.Status.InitContainerStatuses {
			if t := s.State.Terminated; t != nil && t.ExitCode != 0 {
				return false, fmt.Errorf("kubernetes: pod %s: its setup failed (exit %d): %s", name, t.ExitCode, strings.TrimSpace(t.Message+" "+t.Reason))
			}
			if w := s.State.Waiting; w != nil && stuck(w.Reason) {
				return false, fmt.Errorf("kubernetes: pod %s: %s: %s", name, w.Reason, w.Message)
			}
		}
		s := agentStatus(p)
		if s == nil {
			return false, nil
		}
		if w := s.State.Waiting; w != nil && stuck(w.Reason) {
			return false, fmt.Errorf("kubernetes: pod %s: %s: %s", name, w.Reason, w.Message)
		}
		return s.State.Running != nil || s.State.Terminated != nil, nil
	})
}

// stuck reasons do not go away by waiting.
func stuck(reason string) bool {
	switch reason {
	case "ErrImageNeverPull", "InvalidImageName", "CreateContainerConfigError", "CreateContainerError", "ImagePullBackOff", "ErrImagePull", "RunContainerError":
		return true
	}
	return false
}

func podReason(p *corev1.Pod) string {
	if p.Status.Message != "" {
		return p.Status.Message
	}
	for _, c := range p.Status.Conditions {
		if c.Status != corev1.ConditionTrue && c.Message != "" {
			return c.Message
		}
	}
	return string(p.Status.Phase)
}

func agentStatus(p *corev1.Pod) *corev1.ContainerStatus {
	for i := range p.Status.ContainerStatuses {
		if p.Status.ContainerStatuses[i].Name == agentContainer {
			return &p.Status.ContainerStatuses[i]
		}
	}
	return nil
}

// waitPod watches one pod until done says so; a pod that goes away is
// sdk.ErrNotFound.
func (b *Backend) waitPod(ctx context.Context, cl *cluster, name string, done func(*corev1.Pod) (bool, error)) (*corev1.Pod, error) {
	pods := cl.cs.CoreV1().Pods(cl.namespace)
	for {
		p, err := pods.Get(ctx, name, metav1.GetOptions{})
		if err != nil {
			return nil, apiErr("kubernetes: pod "+name, err)
		}
		if ok, err := done(p); ok || err != nil {
			return p, err
		}
		w, err := pods.Watch(ctx, metav1.ListOptions{FieldSelector: fields.OneTermEqualSelector("metadata.name", name).String(), ResourceVersion: p.ResourceVersion})
		if err != nil {
			return nil, apiErr("kubernetes: watch pod "+name, err)
		}
		p, err = b.drain(ctx, w, done)
		w.Stop()
		if p != nil || err != nil {
			return p, err
		}
		if ctx.Err() != nil {
			return nil, fmt.Errorf("kubernetes: pod %s: %w", name, ctx.Err())
		}
		// The watch ended (a timeout of the server's): look again.
	}
}

func (b *Backend) drain(ctx context.Context, w watch.Interface, done func(*corev1.Pod) (bool, error)) (*corev1.Pod, error) {
	for {
		select {
		case <-ctx.Done():
			return nil, nil
		case ev, ok := <-w.ResultChan():
			if !ok {
				return nil, nil
			}
			switch ev.Type {
			case watch.Deleted:
				p, _ := ev.Object.(*corev1.Pod)
				name := ""
				if p != nil {
					name = p.Name
				}
				return nil, fmt.Errorf("kubernetes: pod %s went away: %w", name, sdk.ErrNotFound)
			case watch.Added, watch.Modified:
				p, ok := ev.Object.(*corev1.Pod)
				if !ok {
					continue
				}
				if ok, err := done(p); ok || err != nil {
					return p, err
				}
			case watch.Error:
				return nil, nil
			}
		}
	}
}
