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
func ownHostDialer(allow bool, reserved func(netip.Addr) (string, bool)) func(ctx context.Context, network, addr string) (net.Conn, error) {
	d := &net.Dialer{}
	if !allow || reserved != nil {
		d.Control = func(_, address string, _ syscall.RawConn) error {
			ap, err := netip.ParseAddrPort(address)
			if err != nil {
				return fmt.Errorf("egress proxy: refusing to dial %q: not an address", address)
			}
			if why, own := forbidden(allow, reserved, ap.Addr()); own {
				return fmt.Errorf("egress proxy: refusing to dial %s: %s", ap, why)
			}
			return nil
		}
	}
	return d.DialContext
}

// forbidden reports why no rule may reach a: the proxy's own host (unless
// allowed) or an address Config.Reserved names.
func forbidden(allowOwnHost bool, reserved func(netip.Addr) (string, bool), a netip.Addr) (string, bool) {
	if !allowOwnHost {
		if why, own := ownHost(a); own {
			return why, true
		}
	}
	if reserved != nil {
		return reserved(a.WithZone("").Unmap())
	}
	return "", false
}

func (p *Proxy) forbidden(a netip.Addr) (string, bool) {
	return forbidden(p.allowOwnHost, p.reserved, a)
}

// Forget drops what the proxy keeps in memory of its bottle (its recent
// refusals), for a proxy that serves several bottles and lets one go.
func (p *Proxy) Forget() { p.refusals.forget(p.identity) }
