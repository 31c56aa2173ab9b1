package backend

import (
	"encoding/json"
	"fmt"
	"github.com/docker/docker/api/types/filters"
	"strings"

	"github.com/bot-bottle/bot-bottle/sdk"
)

// Labels of this backend, next to the shared sdk.Label* ones.
const (
	// LabelKind says what an image is for: one of the Kind* values.
	LabelKind = "dev.bot-bottle.kind"
	// LabelDigest is the content digest of an agent image's Dockerfile and
	// context: the image cache key.
	LabelDigest = "dev.bot-bottle.digest"
	// LabelLaunch marks what one Launch call created, so that a failed
	// launch removes its own leftovers and nothing of another launch.
	LabelLaunch = "dev.bot-bottle.launch"
	// LabelImage names the image a bottle's container runs (the container
	// itself pins the image ID), for List.
	LabelImage = "dev.bot-bottle.image"
	// LabelRole tells a bottle's egress proxy container (RoleProxy) from
	// the agent's own.
	LabelRole = "dev.bot-bottle.role"
)

// RoleProxy is the LabelRole of a bottle's egress proxy container.
const RoleProxy = "egress-proxy"

// Image kinds.
const (
	KindAgent     = "agent"        // cached build of an agent or per-bottle Dockerfile
	KindDerived   = "derived"      // per-bottle layer with a copied project; removed by Stop
	KindSnapshot  = "snapshot"     // a Commit; never removed by Stop
	KindCommitTmp = "commit-tmp"   // raw commit before its config is cleaned; removed at once
	KindProxy     = "egress-proxy" // the egress proxy binary FROM scratch; cached like agent images
)

// checkIdentity keeps anything but a valid identity (sdk.ValidIdentity) from
// reaching a resource name or a label filter.
func checkIdentity(id string) error {
	if !sdk.ValidIdentity(id) {
		return fmt.Errorf("invalid bottle identity %q: want lower-case letters, digits and dashes", id)
	}
	return nil
}

// resourceName names a bottle's container and network (the internal one
// when the bottle has egress).
func resourceName(identity string) string { return "bot-bottle-" + identity }

// proxyName names a bottle's egress proxy container and its rules volume,
// as a plugin before the shared proxy made them.
func proxyName(identity string) string { return resourceName(identity) + "-egress" }

// outboundName names the network a bottle's egress proxy reaches out on.
func outboundName(identity string) string { return resourceName(identity) + "-out" }

// repoComponent makes s usable as one path component of an image
// repository name.
func repoComponent(s string) string {
	var b strings.Builder
	dash := false
	for _, r := range strings.ToLower(s) {
		if r >= 'a' && r <= 'z' || r >= '0' && r <= '9' {
			b.WriteRune(r)
			dash = false
		} else if !dash && b.Len() > 0 {
			b.WriteByte('-')
			dash = true
		}
	}
	out := strings.TrimRight(b.String(), "-")
	if out == "" {
		return "agent"
	}
	return out
}

// handleData is what a Handle carries between plugin processes. It holds no
// secret: env values never go in.
type handleData struct {
	Container   string            `json:"container"`
	Name        string            `json:"name"`
	Network     string            `json:"network,omitempty"`
	NetworkName string            `json:"network_name,omitempty"`
	Agent       string            `json:"agent,omitempty"`
	Images      []string          `json:"images,omitempty"` // per-bottle derived images
	Labels      map[string]string `json:"labels,omitempty"` // extra labels from the plugin config

	// Egress control, for a bottle launched with an allowlist: Network is
	// then its internal network, and these are its proxy's.
	Outbound     string `json:"outbound,omitempty"`
	OutboundName string `json:"outbound_name,omitempty"`
	Proxy        string `json:"proxy,omitempty"`
	ProxyName    string `json:"proxy_name,omitempty"`
	ProxyAddr    string `json:"proxy_addr,omitempty"` // ip:port on the internal network
	// Volume holds the rules file of a per-bottle proxy (a plugin before
	// the shared proxy launched the bottle).
	Volume string `json:"volume,omitempty"`
	// Shared: Proxy is the home's shared proxy (shared.go), not the
	// bottle's own; Outbound and Volume are then empty.
	Shared bool `json:"shared_proxy,omitempty"`
}

func encodeHandle(identity string, d handleData) (sdk.Handle, error) {
	b, err := json.Marshal(d)
	if err != nil {
		return sdk.Handle{}, fmt.Errorf("encode handle: %w", err)
	}
	return sdk.Handle{Version: HandleVersion, Backend: Name, Identity: identity, Data: b}, nil
}

func decodeHandle(h sdk.Handle) (handleData, error) {
	var d handleData
	if h.Backend != "" && h.Backend != Name {
		return d, fmt.Errorf("handle belongs to backend %q, not %q", h.Backend, Name)
	}
	if h.Version != HandleVersion {
		return d, fmt.Errorf("handle version %d is not supported (want %d)", h.Version, HandleVersion)
	}
	if err := json.Unmarshal(h.Data, &d); err != nil {
		return d, fmt.Errorf("decode handle of %s: %w", h.Identity, err)
	}
	if d.Container == "" {
		return d, fmt.Errorf("handle of %s names no container", h.Identity)
	}
	return d, nil
}

// labelsFor are the labels of every per-bottle resource.
func labelsFor(identity, agent, launch string, extra map[string]string) map[string]string {
	l := map[string]string{}
	for k, v := range extra {
		l[k] = v
	}
	l[sdk.LabelManaged] = "true"
	l[sdk.LabelIdentity] = identity
	l[sdk.LabelAgent] = agent
	if home := sdk.HomeID(); home != "" {
		l[sdk.LabelHome] = home
	}
	if launch != "" {
		l[LabelLaunch] = launch
	}
	return l
}

// homeFilter narrows a label filter to the caller's bot-bottle home, so that
// bottles of another home on the same engine are never listed or pruned.
func homeFilter(f filters.Args) filters.Args {
	if home := sdk.HomeID(); home != "" {
		f.Add("label", sdk.LabelHome+"="+home)
	}
	return f
}
