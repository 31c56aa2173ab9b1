package settings

import (
	"fmt"
	"net/netip"
	"regexp"
	"slices"
	"strings"
)

// Minimums below which a bottle cannot do its job, or an agent could pass
// for limited while it cannot run at all.
const (
	MinMemory    = 64 << 20
	MinPidsLimit = 32
)

// Bounds on subnet_pool: it must have room for two /29 networks (see
// SubnetBits) and is never wider than the widest private range.
const minPoolBits = 8

// poolRanges are where subnet_pool may lie: private (RFC 1918), shared
// address space (RFC 6598) and benchmarking (RFC 2544) ranges. Anywhere else
// a bottle network could shadow a public or corporate address that the host
// routes elsewhere.
var poolRanges = []netip.Prefix{
	netip.MustParsePrefix("10.0.0.0/8"),
	netip.MustParsePrefix("172.16.0.0/12"),
	netip.MustParsePrefix("192.168.0.0/16"),
	netip.MustParsePrefix("100.64.0.0/10"),
	netip.MustParsePrefix("198.18.0.0/15"),
}

func checkPool(p netip.Prefix) error {
	if p.Bits() < minPoolBits {
		return fmt.Errorf("is too large: at most a /%d", minPoolBits)
	}
	for _, r := range poolRanges {
		if r.Bits() <= p.Bits() && r.Contains(p.Addr()) {
			return nil
		}
	}
	var rs []string
	for _, r := range poolRanges {
		rs = append(rs, r.String())
	}
	return fmt.Errorf("is outside the private, shared and benchmarking ranges (%s)", strings.Join(rs, ", "))
}

// refusedNetworks may not be egress networks: each would give the proxy,
// and through it the bottle, a way around the allowlist's network design.
var refusedNetworks = map[string]string{
	"host":   "it is the host's own network stack",
	"none":   "it has no network to reach",
	"bridge": "it is the engine's default bridge, shared with every other container",
}

// runtimeNameRe is what the engine accepts as a runtime name in daemon.json.
var runtimeNameRe = regexp.MustCompile(`^[a-zA-Z0-9][a-zA-Z0-9_.-]{0,63}$`)

// DangerousCaps are capabilities that break the container boundary or the
// host's integrity on their own: reading any host file by handle
// (DAC_READ_SEARCH, open_by_handle_at), mounting and namespace tricks
// (SYS_ADMIN), kernel modules, raw I/O and devices, tracing other
// processes, the network stack, rebooting, and eBPF.
var DangerousCaps = map[string]string{
	"SYS_ADMIN":       "mounts, namespaces and open_by_handle_at reach the host",
	"SYS_MODULE":      "loads kernel modules",
	"SYS_RAWIO":       "raw I/O to devices and memory",
	"SYS_PTRACE":      "traces and reads other processes",
	"DAC_READ_SEARCH": "reads any host file by handle (open_by_handle_at)",
	"DAC_OVERRIDE":    "ignores file permissions",
	"NET_ADMIN":       "reconfigures the network, around the egress proxy",
	"NET_RAW":         "raw sockets: spoofing on the bottle's network",
	"SYS_BOOT":        "reboots",
	"BPF":             "loads eBPF programs into the kernel",
	"PERFMON":         "kernel performance monitoring and its side channels",
	"MKNOD":           "creates device nodes",
	"SYS_TIME":        "sets the host's clock",
	"SYSLOG":          "reads the kernel log",
}

// OptIn is the plugins.hcl setting that allows a dangerous capability.
const OptIn = "allow_dangerous_caps"

func normCap(c string) string {
	return strings.TrimPrefix(strings.ToUpper(strings.TrimSpace(c)), "CAP_")
}

func parseAllowedCaps(in []string) ([]string, error) {
	var out []string
	for _, c := range in {
		n := normCap(c)
		if _, ok := DangerousCaps[n]; !ok {
			return nil, fmt.Errorf("docker plugin config: %s: %q is not one of the dangerous capabilities that need it", OptIn, c)
		}
		if !slices.Contains(out, n) {
			out = append(out, n)
		}
	}
	return out, nil
}

// DangerousAllowed returns the capabilities of capAdd that are dangerous
// and allowed by the operator, and an error naming the first dangerous one
// that is not, with the setting that would allow it.
func (s Settings) DangerousAllowed(capAdd []string) ([]string, error) {
	var weak []string
	for _, c := range capAdd {
		n := normCap(c)
		why, bad := DangerousCaps[n]
		if !bad {
			continue
		}
		if !slices.Contains(s.AllowDangerousCaps, n) {
			return nil, fmt.Errorf("cap_add %s is refused: %s; to allow it, the operator sets %s = [%q] in the config block of plugin \"docker\" in plugins.hcl", n, why, OptIn, n)
		}
		weak = append(weak, n)
	}
	return weak, nil
}
