package egress

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"syscall"

	"github.com/bot-bottle/bot-bottle/sdk/egressrule"
)

// ownHost reports why a connection to a would reach the proxy's own host:
// loopback, unspecified and 0.0.0.0/8 addresses (see selfAddr), or an
// address of one of its own interfaces — in a bottle's proxy container,
// the proxy itself, whatever the rules say.
func ownHost(a netip.Addr) (string, bool) {
	a = a.WithZone("").Unmap()
	if egressrule.SelfAddr(a) {
		return "the proxy's own loopback", true
	}
	addrs, err := net.InterfaceAddrs()
	if err != nil {
		// Cannot tell: refuse rather than risk a loop into ourselves.
		return "possibly the proxy's own (its interfaces cannot be read)", true
	}
	for _, ia := range addrs {
		if n, ok := ia.(*net.IPNet); ok {
			if ip, ok := netip.AddrFromSlice(n.IP); ok && ip.Unmap() == a {
				return "an address of the proxy's own", true
			}
		}
	}
	return "", false
}

// ownHostDialer dials only addresses outside the proxy's own host. The
// check runs on the address being connected, after any resolution, so no
// name and no rule can lead there.
func ownHostDialer(allow bool) func(ctx context.Context, network, addr string) (net.Conn, error) {
	d := &net.Dialer{}
	if !allow {
		d.Control = func(_, address string, _ syscall.RawConn) error {
			ap, err := netip.ParseAddrPort(address)
			if err != nil {
				return fmt.Errorf("egress proxy: refusing to dial %q: not an address", address)
			}
			if why, own := ownHost(ap.Addr()); own {
				return fmt.Errorf("egress proxy: refusing to dial %s: %s", ap, why)
			}
			return nil
		}
	}
	return d.DialContext
}
