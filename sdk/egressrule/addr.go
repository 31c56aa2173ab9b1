package egressrule

import (
	"fmt"
	"net/netip"
)

// Cloud metadata services. They answer on addresses an allowed name can be
// made to resolve to and hand out credentials, so they are refused even where
// their range is not otherwise special.
var metadataAddrs = map[netip.Addr]string{
	netip.MustParseAddr("169.254.169.254"): "cloud metadata", // AWS, GCP, Azure, Oracle, DigitalOcean…
	netip.MustParseAddr("169.254.170.2"):   "cloud metadata", // AWS ECS task metadata
	netip.MustParseAddr("fd00:ec2::254"):   "cloud metadata", // AWS IMDS over IPv6
	netip.MustParseAddr("100.100.100.200"): "cloud metadata", // Alibaba Cloud
	netip.MustParseAddr("168.63.129.16"):   "cloud metadata", // Azure WireServer
}

var (
	nat64Prefix = netip.MustParsePrefix("64:ff9b::/96")
	sixTo4      = netip.MustParsePrefix("2002::/16")
	thisNetwork = netip.MustParsePrefix("0.0.0.0/8")
	broadcast   = netip.MustParseAddr("255.255.255.255")
)

// Unsafe reports whether a is an address an allowed name must not lead to,
// and which kind it is: loopback, link-local, cloud metadata, unspecified,
// multicast, broadcast, 0.0.0.0/8, and IPv6 forms that embed one of those
// IPv4 addresses (IPv4-mapped, IPv4-compatible, NAT64, 6to4). Private ranges
// (10/8, 192.168/16, fc00::/7) are not refused: a company's own services live
// there and an operator names them on purpose.
func Unsafe(a netip.Addr) (kind string, unsafe bool) {
	a = a.WithZone("").Unmap()
	if !a.IsValid() {
		return "invalid", true
	}
	if k, ok := metadataAddrs[a]; ok {
		return k, true
	}
	switch {
	case a.IsUnspecified():
		return "unspecified", true
	case a.IsLoopback():
		return "loopback", true
	case a.IsLinkLocalUnicast():
		return "link-local", true
	case a.IsMulticast():
		return "multicast", true
	case a == broadcast:
		return "broadcast", true
	case thisNetwork.Contains(a):
		// Linux connects 0.0.0.0 (and friends) to the local host.
		return "this-host (0.0.0.0/8)", true
	}
	if a.Is6() {
		if v4, how := embeddedIPv4(a); how != "" {
			if k, bad := Unsafe(v4); bad {
				return fmt.Sprintf("%s of %s, a %s address", how, v4, k), true
			}
		}
	}
	return "", false
}

// embeddedIPv4 returns the IPv4 address inside an IPv6 address of a form
// that a translator or the kernel may turn into that IPv4 address.
func embeddedIPv4(a netip.Addr) (netip.Addr, string) {
	b := a.As16()
	var v4 [4]byte
	switch {
	case [12]byte(b[:12]) == [12]byte{}:
		copy(v4[:], b[12:])
		return netip.AddrFrom4(v4), "IPv4-compatible form"
	case nat64Prefix.Contains(a):
		copy(v4[:], b[12:])
		return netip.AddrFrom4(v4), "NAT64 form"
	case sixTo4.Contains(a):
		copy(v4[:], b[2:6])
		return netip.AddrFrom4(v4), "6to4 form"
	}
	return netip.Addr{}, ""
}
