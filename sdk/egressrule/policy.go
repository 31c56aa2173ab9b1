package egressrule

import (
	"fmt"
	"net/netip"
	"strings"

	"golang.org/x/net/publicsuffix"
)

// metadataNames are names of cloud metadata services. They resolve only
// inside a cloud, to an address that hands out the machine's credentials.
var metadataNames = map[string]bool{
	"metadata.google.internal":   true,
	"metadata":                   true,
	"instance-data":              true, // AWS, through its resolver
	"instance-data.ec2.internal": true,
}

// LocalOnly reports whether name can only mean this host (RFC 6761:
// "localhost" and everything under it). Such a name never goes to a
// resolver: the host's own would answer with its loopback, or leak the
// lookup.
func LocalOnly(name string) bool {
	n := strings.TrimSuffix(strings.ToLower(name), ".")
	return n == "localhost" || strings.HasSuffix(n, ".localhost")
}

// CheckRequested vets a rule as somebody asks for it — an agent definition's
// egress or a bottle's `bottle request egress` — before it can be approved.
// The proxy enforces its own limits whatever its rules say; this is where a
// human is told, before saying yes, what a rule would open.
//
// A rule with methods or a path is vetted by its host part like any other
// (it opens that host, for some requests); a deny rule ("!") is never
// refused, since it only takes away.
//
// Refused: loopback, unspecified, this-host (0.0.0.0/8), link-local,
// multicast and broadcast addresses, cloud metadata addresses and names,
// names that can only be local (localhost, *.localhost), and wildcards
// over a whole public suffix (*.com, *.co.uk, *.github.io). Warned: every
// other wildcard, since names looked up under it can carry data out in DNS
// queries; its lookups are rate-limited and audited by the proxy.
func CheckRequested(s string) (warning string, err error) {
	r, err := ParseRule(s)
	if err != nil {
		return "", err
	}
	return checkRule(r)
}

func checkRule(r Rule) (string, error) {
	if r.Deny {
		// A deny rule only takes away; it cannot open anything.
		return "", nil
	}
	if r.Addr.IsValid() {
		if kind, bad := Unsafe(r.Addr); bad {
			return "", fmt.Errorf("egress %s is refused: %s is a %s address, which reaches the proxy itself or the host's credentials, never a service", r, r.Addr, kind)
		}
		return "", nil
	}
	switch {
	case LocalOnly(r.Host):
		return "", fmt.Errorf("egress %s is refused: %s can only mean the proxy itself", r, r.Host)
	case metadataNames[r.Host]:
		return "", fmt.Errorf("egress %s is refused: %s is a cloud metadata service, which hands out the host's credentials", r, r.Host)
	case !r.Wildcard:
		return "", nil
	}
	if ps, _ := publicsuffix.PublicSuffix(r.Host); ps == r.Host {
		return "", fmt.Errorf("egress %s is refused: %s is a public suffix, so the wildcard would allow every site registered under it; name the domain (*.example.%s)", r, r.Host, r.Host)
	}
	return fmt.Sprintf("egress %s is a wildcard: every name under %s, and the names a bottle looks up there can carry data out (lookups are rate-limited and audited)", r, r.Host), nil
}

// SelfAddr reports whether a is an address on which a connection from the
// proxy could reach the proxy's own host: loopback, unspecified and
// 0.0.0.0/8 (which Linux connects to the local host), also in their
// IPv4-mapped and other embedded forms.
func SelfAddr(a netip.Addr) bool {
	a = a.WithZone("").Unmap()
	if a.IsLoopback() || a.IsUnspecified() || thisNetwork.Contains(a) {
		return true
	}
	if a.Is6() {
		if v4, how := embeddedIPv4(a); how != "" {
			return SelfAddr(v4)
		}
	}
	return false
}
