package egressrule

import (
	"net/netip"
	"strings"
	"testing"
)

func TestUnsafe(t *testing.T) {
	for _, tc := range []struct {
		addr string
		kind string // "" = safe
	}{
		{"127.0.0.1", "loopback"},
		{"127.255.0.9", "loopback"},
		{"::1", "loopback"},
		{"::ffff:127.0.0.1", "loopback"},
		{"169.254.169.254", "cloud metadata"},
		{"::ffff:169.254.169.254", "cloud metadata"},
		{"fd00:ec2::254", "cloud metadata"},
		{"169.254.170.2", "cloud metadata"},
		{"100.100.100.200", "cloud metadata"},
		{"168.63.129.16", "cloud metadata"},
		{"169.254.1.1", "link-local"},
		{"fe80::1", "link-local"},
		{"fe80::1%eth0", "link-local"},
		{"febf::1", "link-local"},
		{"0.0.0.0", "unspecified"},
		{"::", "unspecified"},
		{"0.1.2.3", "this-host"},
		{"224.0.0.1", "multicast"},
		{"239.1.2.3", "multicast"},
		{"ff02::1", "multicast"},
		{"ff0e::1", "multicast"},
		{"255.255.255.255", "broadcast"},
		{"::7f00:1", "IPv4-compatible form of 127.0.0.1, a loopback"},
		{"64:ff9b::a9fe:a9fe", "NAT64 form of 169.254.169.254, a cloud metadata"},
		{"2002:7f00:1::1", "6to4 form of 127.0.0.1, a loopback"},
		// safe: public, private and documentation ranges
		{"93.184.216.34", ""},
		{"10.0.0.1", ""},
		{"172.17.0.1", ""},
		{"192.168.1.1", ""},
		{"fd12:3456::1", ""},
		{"fd00:ec2::253", ""},
		{"2001:db8::1", ""},
		{"64:ff9b::808:808", ""},
		{"2002:808:808::1", ""},
		{"169.253.255.255", ""},
		{"1.0.0.0", ""},
		{"fec0::1", ""},
	} {
		kind, bad := Unsafe(netip.MustParseAddr(tc.addr))
		if bad != (tc.kind != "") || !strings.HasPrefix(kind, tc.kind) {
			t.Errorf("Unsafe(%s) = %q, %v; want %q", tc.addr, kind, bad, tc.kind)
		}
	}
	if _, bad := Unsafe(netip.Addr{}); !bad {
		t.Error("the zero Addr is safe")
	}
}
