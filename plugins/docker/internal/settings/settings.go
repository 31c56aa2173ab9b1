// Package settings reads the docker plugin's `config {}` block from
// plugins.hcl (handed over as JSON) into validated launch settings: memory,
// pids_limit, cpus, labels, and for bottles with egress subnet_pool (where
// their /29 networks come from), egress_networks (existing networks their
// proxies join) and keep_egress_proxy.
package settings

import (
	"bytes"
	"encoding/json"
	"fmt"
	"math"
	"net/netip"
	"regexp"
	"strings"

	"github.com/docker/go-units"
)

// Defaults used when plugins.hcl does not say otherwise.
const (
	DefaultMemory    = "4g"
	DefaultPidsLimit = 512
	// DefaultSubnetPool is where a bottle's two egress networks get their
	// /29 subnets. 198.18.0.0/15 is set aside for benchmarking (RFC 2544):
	// LANs and public services do not use it, and carving small subnets
	// here leaves Docker's own address pools (about 30 networks) alone.
	DefaultSubnetPool = "198.18.0.0/15"
)

// SubnetBits is the size of each egress network: room for the gateway, the
// proxy and the agent.
const SubnetBits = 29

// reservedLabelPrefix is owned by the backend itself; a user label there
// could make one bottle's resources look like another's.
const reservedLabelPrefix = "dev.bot-bottle."

// allowedUserLabels are the keys under reservedLabelPrefix that a config may
// still set, because they mark resources rather than identify them.
var allowedUserLabels = map[string]bool{"dev.bot-bottle.test": true}

// Settings are the effective limits and extras for one launch.
type Settings struct {
	MemoryBytes int64
	Memory      string
	PidsLimit   int64
	NanoCPUs    int64
	CPUs        float64
	// Labels go on every resource the plugin creates, next to its own.
	Labels map[string]string
	// SubnetPool is where the per-bottle egress networks are carved from.
	SubnetPool netip.Prefix
	// EgressNetworks are existing Docker networks the egress proxy joins as
	// well, so that bottles can reach services there (by name, through the
	// proxy and its allowlist).
	EgressNetworks []string
	// AllowDangerousCaps are the dangerous capabilities (DangerousCaps) the
	// operator allowed agents to add; upper case, without "CAP_".
	AllowDangerousCaps []string
	// Runtime is the OCI runtime the agent's container runs under (e.g.
	// "runsc"), or "" for the engine's default.
	Runtime string
	// TestUpstreamCA is for tests only: a host path of PEM certificates
	// that the egress proxy trusts, instead of the system's roots, for the
	// upstreams of the connections it terminates (a test's HTTPS upstream
	// has a CA the test made). Never set it for real bottles.
	TestUpstreamCA string
	// KeepEgressProxy keeps the home's shared egress proxy (with its
	// networks) after the last bottle it serves stops, so that the next
	// egress start finds it running; list shows it idle, prune removes it.
	// On unless the config says keep_egress_proxy = false: most bottles
	// have egress, and a start that makes the proxy costs about twice one
	// that finds it.
	KeepEgressProxy bool
}

type raw struct {
	Memory    *string           `json:"memory"`
	PidsLimit *float64          `json:"pids_limit"`
	CPUs      *float64          `json:"cpus"`
	Labels    map[string]string `json:"labels"`
	// SubnetPool and EgressNetworks: see Settings.
	SubnetPool     *string  `json:"subnet_pool"`
	EgressNetworks []string `json:"egress_networks"`
	// AllowDangerousCaps and Runtime: see Settings.
	AllowDangerousCaps []string `json:"allow_dangerous_caps"`
	Runtime            *string  `json:"runtime"`
	// TestUpstreamCA: see Settings.
	TestUpstreamCA *string `json:"test_upstream_ca"`
	// KeepEgressProxy: see Settings.
	KeepEgressProxy *bool `json:"keep_egress_proxy"`
}

// networkNameRe is what the engine accepts as a network name.
var networkNameRe = regexp.MustCompile(`^[a-zA-Z0-9][a-zA-Z0-9_.-]*$`)

// Parse reads the JSON of the config block. Empty input means all defaults.
// Unknown keys are errors, so that a typo does not silently drop a limit.
func Parse(data []byte) (Settings, error) {
	var r raw
	if len(bytes.TrimSpace(data)) > 0 && !bytes.Equal(bytes.TrimSpace(data), []byte("null")) {
		dec := json.NewDecoder(bytes.NewReader(data))
		dec.DisallowUnknownFields()
		if err := dec.Decode(&r); err != nil {
			return Settings{}, fmt.Errorf("docker plugin config: %w", err)
		}
	}
	s := Settings{Memory: DefaultMemory, PidsLimit: DefaultPidsLimit}
	if r.Memory != nil {
		s.Memory = strings.TrimSpace(*r.Memory)
	}
	mem, err := units.RAMInBytes(s.Memory)
	if err != nil || mem <= 0 {
		return Settings{}, fmt.Errorf("docker plugin config: memory %q is not a size like \"4g\" or \"512m\"", s.Memory)
	}
	if mem < MinMemory {
		// The engine refuses less than 6 MiB, and an agent's runtime does
		// not start in much more; say so before a launch fails.
		return Settings{}, fmt.Errorf("docker plugin config: memory %q is below the minimum of %s", s.Memory, units.BytesSize(MinMemory))
	}
	s.MemoryBytes = mem
	if r.PidsLimit != nil {
		p := *r.PidsLimit
		if p != math.Trunc(p) || p < 1 || p > math.MaxInt32 {
			return Settings{}, fmt.Errorf("docker plugin config: pids_limit %v must be a positive whole number", p)
		}
		if p < MinPidsLimit {
			return Settings{}, fmt.Errorf("docker plugin config: pids_limit %v is below the minimum of %d (a shell and its tools need that many)", p, MinPidsLimit)
		}
		s.PidsLimit = int64(p)
	}
	if r.CPUs != nil {
		c := *r.CPUs
		if c <= 0 || c > 1024 {
			return Settings{}, fmt.Errorf("docker plugin config: cpus %v must be a positive number of CPUs", c)
		}
		s.CPUs = c
		s.NanoCPUs = int64(c * 1e9)
	}
	for k, v := range r.Labels {
		if k == "" {
			return Settings{}, fmt.Errorf("docker plugin config: labels: empty label key")
		}
		if strings.HasPrefix(k, reservedLabelPrefix) && !allowedUserLabels[k] {
			return Settings{}, fmt.Errorf("docker plugin config: labels: %q is reserved for bot-bottle itself", k)
		}
		if s.Labels == nil {
			s.Labels = map[string]string{}
		}
		s.Labels[k] = v
	}
	pool := DefaultSubnetPool
	if r.SubnetPool != nil {
		pool = strings.TrimSpace(*r.SubnetPool)
	}
	p, err := netip.ParsePrefix(pool)
	if err != nil || !p.Addr().Is4() {
		return Settings{}, fmt.Errorf("docker plugin config: subnet_pool %q is not an IPv4 CIDR like %q", pool, DefaultSubnetPool)
	}
	if p.Bits() > SubnetBits-1 {
		return Settings{}, fmt.Errorf("docker plugin config: subnet_pool %q is too small: it needs room for at least two /%d networks", pool, SubnetBits)
	}
	if err := checkPool(p.Masked()); err != nil {
		return Settings{}, fmt.Errorf("docker plugin config: subnet_pool %q %w", pool, err)
	}
	s.SubnetPool = p.Masked()
	seen := map[string]bool{}
	for _, n := range r.EgressNetworks {
		if !networkNameRe.MatchString(n) {
			return Settings{}, fmt.Errorf("docker plugin config: egress_networks: %q is not a Docker network name", n)
		}
		if why, bad := refusedNetworks[n]; bad {
			return Settings{}, fmt.Errorf("docker plugin config: egress_networks: %q is refused: %s", n, why)
		}
		if !seen[n] {
			seen[n] = true
			s.EgressNetworks = append(s.EgressNetworks, n)
		}
	}
	if s.AllowDangerousCaps, err = parseAllowedCaps(r.AllowDangerousCaps); err != nil {
		return Settings{}, err
	}
	s.KeepEgressProxy = r.KeepEgressProxy == nil || *r.KeepEgressProxy
	if r.Runtime != nil {
		s.Runtime = strings.TrimSpace(*r.Runtime)
		if !runtimeNameRe.MatchString(s.Runtime) {
			return Settings{}, fmt.Errorf("docker plugin config: runtime %q is not an OCI runtime name like \"runsc\"", *r.Runtime)
		}
	}
	if r.TestUpstreamCA != nil {
		s.TestUpstreamCA = strings.TrimSpace(*r.TestUpstreamCA)
		if !strings.HasPrefix(s.TestUpstreamCA, "/") {
			return Settings{}, fmt.Errorf("docker plugin config: test_upstream_ca %q is not an absolute path", *r.TestUpstreamCA)
		}
	}
	return s, nil
}
