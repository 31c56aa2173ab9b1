// Package kube is bot-bottle's Kubernetes backend: a bottle is a Pod (plus
// a Secret for its passed-through secrets and a PersistentVolumeClaim for
// its project copy), labelled with the SDK's labels and the home, driven
// through the API server alone (attach and exec with client-go's
// remotecommand), so that a handle works from any later plugin process.
package kube

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/util/validation"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"

	"github.com/bot-bottle/bot-bottle/sdk"
)

// Name is the backend's name, as in --backend kubernetes.
const Name = "kubernetes"

// handleVersion is the version of handleData's format.
const handleVersion = 1

// Container and volume names in a bottle's pod, and where the helper is.
const (
	agentContainer = "agent"
	initContainer  = "bb-init"
	helperVolume   = "bb-helper"
	workVolume     = "bb-work"
	helperDir      = "/run/bot-bottle/k8s"
	helperPath     = helperDir + "/kube-init"
	// The queue: bb-queue (kube-init as queueUID, no capabilities) is the
	// only writer of the outbox the agent reads and takes requests out of
	// the inbox the agent writes, both at podQueueDir.
	queueContainer = "bb-queue"
	inboxVolume    = "bb-inbox"
	outboxVolume   = "bb-outbox"
	podQueueDir    = "/q"
	queueUID       = 65532
	// annStarted says the gate is being opened: a later attach must not
	// send its tokens (the agent would read them).
	annStarted = "dev.bot-bottle.started"
	// annContext records the kubeconfig context the bottle was made in.
	annContext = "dev.bot-bottle.context"
)

// handleData is what a handle carries: enough for any plugin process to
// find the bottle on its cluster.
type handleData struct {
	Context   string `json:"context,omitempty"`
	Namespace string `json:"namespace"`
	Pod       string `json:"pod"`
	TTY       bool   `json:"tty"`
	// ProxyIP is the bottle's egress proxy pod's address ("": no egress);
	// EgressLog the audit file its events are collected into.
	ProxyIP   string `json:"proxy_ip,omitempty"`
	EgressLog string `json:"egress_log,omitempty"`
}

// Backend implements sdk.Backend on a Kubernetes cluster.
type Backend struct {
	sdk.UnimplementedBackend
	log     *slog.Logger
	version string
	cfg     *Config
	home    string

	once    sync.Once
	cl      *cluster
	clErr   error
	clients sync.Map // context name -> *cluster, for handles of other contexts
}

// cluster is one API server connection.
type cluster struct {
	context   string
	namespace string
	rest      *rest.Config
	cs        kubernetes.Interface
}

// New returns the backend for cfg.
func New(log *slog.Logger, version string, cfg *Config) *Backend {
	return &Backend{log: log, version: version, cfg: cfg, home: sdk.HomeID()}
}

// connect builds a client for the configured context ("" for the
// configured default) lazily: Info must not need the cluster.
func (b *Backend) connect(ctxName string) (*cluster, error) {
	if ctxName == "" || ctxName == b.cfg.Context {
		b.once.Do(func() { b.cl, b.clErr = b.newCluster(b.cfg.Context) })
		if b.clErr != nil || ctxName == "" || b.cl.context == ctxName {
			return b.cl, b.clErr
		}
	}
	if c, ok := b.clients.Load(ctxName); ok {
		return c.(*cluster), nil
	}
	c, err := b.newCluster(ctxName)
	if err != nil {
		return nil, err
	}
	b.clients.Store(ctxName, c)
	return c, nil
}

func (b *Backend) newCluster(ctxName string) (*cluster, error) {
	rules := clientcmd.NewDefaultClientConfigLoadingRules()
	if b.cfg.Kubeconfig != "" {
		rules.ExplicitPath = b.cfg.Kubeconfig
	}
	cc := clientcmd.NewNonInteractiveDeferredLoadingClientConfig(rules, &clientcmd.ConfigOverrides{CurrentContext: ctxName})
	rc, err := cc.ClientConfig()
	if err != nil {
		return nil, fmt.Errorf("kubernetes: no cluster to talk to: %s", oneLine(err))
	}
	rc.QPS, rc.Burst = 50, 100
	ns := b.cfg.Namespace
	if ns == "" {
		if ns, _, err = cc.Namespace(); err != nil || ns == "" {
			ns = "default"
		}
	}
	name := ctxName
	if raw, err := cc.RawConfig(); err == nil && name == "" {
		name = raw.CurrentContext
	}
	cs, err := kubernetes.NewForConfig(rc)
	if err != nil {
		return nil, fmt.Errorf("kubernetes: %s", oneLine(err))
	}
	return &cluster{context: name, namespace: ns, rest: rc, cs: cs}, nil
}

// Info describes the plugin without touching the cluster.
func (b *Backend) Info(context.Context) (sdk.Info, error) {
	d := map[string]string{}
	if b.cfg.Context != "" {
		d["context"] = b.cfg.Context
	}
	if b.cfg.Namespace != "" {
		d["namespace"] = b.cfg.Namespace
	}
	return sdk.Info{
		Name:         Name,
		Version:      b.version,
		APIVersions:  []string{sdk.APIVersion},
		Capabilities: []sdk.Capability{sdk.CapExec, sdk.CapCopy, sdk.CapLiveEgress, sdk.CapEgressAudit, sdk.CapQueueSync},
		Details:      d,
	}, nil
}

// Object names of a bottle, from its identity.
func podName(id string) string    { return "bb-" + id }
func secretName(id string) string { return "bb-" + id + "-env" }
func claimName(id string) string  { return "bb-" + id + "-work" }

// labels go on every object of a bottle.
func (b *Backend) labels(id, agent string) map[string]string {
	l := map[string]string{sdk.LabelManaged: "true", sdk.LabelIdentity: id}
	if len(validation.IsValidLabelValue(agent)) == 0 && agent != "" {
		l[sdk.LabelAgent] = agent
	}
	if b.home != "" {
		l[sdk.LabelHome] = b.home
	}
	return l
}

// selector finds this home's bottles, or one identity's.
func (b *Backend) selector(id string) string {
	s := []string{sdk.LabelManaged + "=true"}
	if id != "" {
		s = append(s, sdk.LabelIdentity+"="+id)
	}
	if b.home != "" {
		s = append(s, sdk.LabelHome+"="+b.home)
	}
	return strings.Join(s, ",")
}

func checkIdentity(id string) error {
	if !sdk.ValidIdentity(id) {
		return sdk.CheckName("identity", id)
	}
	return nil
}

func encodeHandle(id string, d handleData) sdk.Handle {
	data, _ := json.Marshal(d)
	return sdk.Handle{Version: handleVersion, Backend: Name, Identity: id, Data: data}
}

func decodeHandle(h sdk.Handle) (handleData, error) {
	var d handleData
	if err := checkIdentity(h.Identity); err != nil {
		return d, err
	}
	if h.Version != handleVersion {
		return d, fmt.Errorf("kubernetes: handle version %d is not one this plugin reads (%d)", h.Version, handleVersion)
	}
	if err := json.Unmarshal(h.Data, &d); err != nil {
		return d, fmt.Errorf("kubernetes: bad handle: %v", err)
	}
	if d.Pod != podName(h.Identity) || len(validation.IsDNS1123Label(d.Namespace)) > 0 {
		return d, fmt.Errorf("kubernetes: the handle of %s names another pod or no namespace", h.Identity)
	}
	return d, nil
}

// apiErr turns an API error into a one-line error, wrapping
// sdk.ErrNotFound for objects that do not exist.
func apiErr(what string, err error) error {
	if err == nil {
		return nil
	}
	if apierrors.IsNotFound(err) {
		return fmt.Errorf("%s: %w", what, sdk.ErrNotFound)
	}
	if errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
		return fmt.Errorf("%s: %w", what, err)
	}
	return fmt.Errorf("%s: %s", what, oneLine(err))
}

func oneLine(err error) string {
	return strings.Join(strings.Fields(err.Error()), " ")
}
