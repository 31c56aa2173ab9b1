//go:build linux

// Package podnet locks a bottle's pod network namespace down to one peer,
// its egress proxy, with nothing but the kernel's own routing and neighbour
// tables: it needs NET_ADMIN once (the pod's init container) and no
// netfilter, so it holds whatever the cluster's CNI enforces or not, and the
// agent (no capabilities) cannot undo it.
//
// What is left on the pod's interface:
//
//   - one route, a host route to the proxy (on-link when the pod reached it
//     on-link, else via the gateway it was reached through, with onlink and
//     no route to the gateway itself): every other destination is
//     unreachable;
//   - one neighbour, the next hop's, permanent; ARP never solicits anything
//     else (app, unicast and multicast probes 0), so a socket bound to the
//     device (SO_BINDTODEVICE and IP_UNICAST_IF need no privilege, and make
//     the kernel take a destination without a route as on-link) finds no
//     link-layer address for any other host;
//   - strict reverse-path filtering, so an ARP request or a packet from
//     anyone but the proxy is dropped and teaches the pod no neighbour;
//   - no IPv6 (addresses, routes and address generation off) and no
//     broadcast routes; other interfaces but loopback are removed.
package podnet

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"time"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netlink/nl"
	"golang.org/x/sys/unix"
)

// Neighbour table parameters (linux/neighbour.h, NDTPA_*) and the IPv4
// devconf index of rp_filter (linux/ip.h): x/sys has neither.
const (
	ndtaName          = 1
	ndtaParms         = 6
	ndtpaIfindex      = 1
	ndtpaAppProbes    = 9
	ndtpaUcastProbes  = 10
	ndtpaMcastProbes  = 11
	ndtpaMcastReprobe = 17
	devconfRPFilter   = 8
	addrGenModeNone   = 1
)

// resolveWait bounds the wait for the next hop's link-layer address.
const resolveWait = 5 * time.Second

// Result says what RestrictTo left.
type Result struct {
	Link    string
	Proxy   netip.Addr
	Gateway netip.Addr // set when the proxy is reached through the gateway
	MAC     net.HardwareAddr
}

// RestrictTo leaves the namespace one way out, to proxy, as the package
// says.
func RestrictTo(proxy netip.Addr) (Result, error) {
	var res Result
	if !proxy.Is4() {
		return res, fmt.Errorf("the proxy's address %s is not IPv4", proxy)
	}
	res.Proxy = proxy
	link, gw, onLink, err := uplink(proxy)
	if err != nil {
		return res, err
	}
	res.Link = link.Attrs().Name
	idx := link.Attrs().Index
	if err := removeOtherLinks(idx); err != nil {
		return res, err
	}
	next := proxy
	if !onLink {
		next, res.Gateway = gw, gw
	}
	// The next hop's address is learnt while ARP still works.
	mac, err := resolve(link, next)
	if err != nil {
		return res, err
	}
	res.MAC = mac
	if err := noSolicit(idx); err != nil {
		return res, fmt.Errorf("turn ARP solicitation off on %s: %w", res.Link, err)
	}
	if err := strictRPFilter(idx); err != nil {
		return res, fmt.Errorf("turn reverse-path filtering on for %s: %w", res.Link, err)
	}
	if err := flushRoutes(); err != nil {
		return res, err
	}
	if err := flushNeighbours(idx); err != nil {
		return res, err
	}
	if err := netlink.NeighSet(&netlink.Neigh{LinkIndex: idx, Family: unix.AF_INET, State: netlink.NUD_PERMANENT,
		IP: net.IP(next.AsSlice()), HardwareAddr: mac}); err != nil {
		return res, fmt.Errorf("pin the next hop's address: %w", err)
	}
	host := &net.IPNet{IP: net.IP(proxy.AsSlice()), Mask: net.CIDRMask(32, 32)}
	r := &netlink.Route{LinkIndex: idx, Dst: host, Scope: netlink.SCOPE_LINK}
	if !onLink {
		r = &netlink.Route{LinkIndex: idx, Dst: host, Gw: net.IP(gw.AsSlice()), Flags: int(netlink.FLAG_ONLINK), Scope: netlink.SCOPE_UNIVERSE}
	}
	if err := netlink.RouteAdd(r); err != nil {
		return res, fmt.Errorf("add the route to the proxy: %w", err)
	}
	if err := ipv6Off(link); err != nil {
		return res, err
	}
	return res, nil
}

// uplink finds the interface the kernel reaches proxy by now, and its
// gateway when that route has one (else the proxy is on-link).
func uplink(proxy netip.Addr) (netlink.Link, netip.Addr, bool, error) {
	var gw netip.Addr
	routes, err := netlink.RouteGet(net.IP(proxy.AsSlice()))
	if err != nil || len(routes) == 0 {
		return nil, gw, false, fmt.Errorf("the pod has no route to its proxy %s: %v", proxy, err)
	}
	r := routes[0]
	link, err := netlink.LinkByIndex(r.LinkIndex)
	if err != nil {
		return nil, gw, false, fmt.Errorf("the interface towards the proxy: %w", err)
	}
	if link.Attrs().Flags&net.FlagLoopback != 0 {
		return nil, gw, false, fmt.Errorf("the proxy %s is this pod's own address", proxy)
	}
	if a, ok := netip.AddrFromSlice(r.Gw.To4()); ok && !a.IsUnspecified() {
		return link, a, false, nil
	}
	return link, gw, true, nil
}

func removeOtherLinks(keep int) error {
	links, err := netlink.LinkList()
	if err != nil {
		return fmt.Errorf("list interfaces: %w", err)
	}
	for _, l := range links {
		a := l.Attrs()
		if a.Index == keep || a.Flags&net.FlagLoopback != 0 {
			continue
		}
		// ENODEV: it went with its veth peer.
		if err := netlink.LinkDel(l); err != nil && !errors.Is(err, unix.ENODEV) {
			return fmt.Errorf("remove interface %s: %w", a.Name, err)
		}
	}
	return nil
}

// resolve learns next's link-layer address: a datagram to its discard port
// makes the kernel ask.
func resolve(link netlink.Link, next netip.Addr) (net.HardwareAddr, error) {
	idx := link.Attrs().Index
	deadline := time.Now().Add(resolveWait)
	for time.Now().Before(deadline) {
		if c, err := net.Dial("udp4", netip.AddrPortFrom(next, 9).String()); err == nil {
			_, _ = c.Write([]byte{0})
			c.Close()
		}
		time.Sleep(50 * time.Millisecond)
		ns, err := netlink.NeighList(idx, unix.AF_INET)
		if err != nil {
			return nil, fmt.Errorf("list neighbours: %w", err)
		}
		for _, n := range ns {
			if n.IP.Equal(net.IP(next.AsSlice())) && len(n.HardwareAddr) > 0 &&
				n.State&(netlink.NUD_REACHABLE|netlink.NUD_STALE|netlink.NUD_DELAY|netlink.NUD_PROBE|netlink.NUD_PERMANENT) != 0 {
				return n.HardwareAddr, nil
			}
		}
	}
	return nil, fmt.Errorf("%s did not answer ARP on %s within %s", next, link.Attrs().Name, resolveWait)
}

// ndtmsg is struct ndtmsg (a family and padding).
type ndtmsg struct{ family uint8 }

func (m ndtmsg) Len() int           { return 4 }
func (m ndtmsg) Serialize() []byte  { return []byte{m.family, 0, 0, 0} }
func (m ndtmsg) String() string     { return "ndtmsg" }
func (m ndtmsg) Serialized() []byte { return m.Serialize() }

// noSolicit sets the interface's ARP probes to 0: a neighbour that is not
// in the table is never asked for.
func noSolicit(idx int) error {
	req := nl.NewNetlinkRequest(unix.RTM_SETNEIGHTBL, unix.NLM_F_ACK)
	req.AddData(ndtmsg{family: unix.AF_INET})
	req.AddData(nl.NewRtAttr(ndtaName, nl.ZeroTerminated("arp_cache")))
	parms := nl.NewRtAttr(ndtaParms, nil)
	parms.AddRtAttr(ndtpaIfindex, nl.Uint32Attr(uint32(idx)))
	for _, a := range []int{ndtpaAppProbes, ndtpaUcastProbes, ndtpaMcastProbes, ndtpaMcastReprobe} {
		parms.AddRtAttr(a, nl.Uint32Attr(0))
	}
	req.AddData(parms)
	_, err := req.Execute(unix.NETLINK_ROUTE, 0)
	return err
}

// strictRPFilter sets the interface's rp_filter to 1 (strict) through
// IFLA_AF_SPEC: /proc/sys is read-only in a container.
func strictRPFilter(idx int) error {
	req := nl.NewNetlinkRequest(unix.RTM_SETLINK, unix.NLM_F_ACK)
	msg := nl.NewIfInfomsg(unix.AF_UNSPEC)
	msg.Index = int32(idx)
	req.AddData(msg)
	spec := nl.NewRtAttr(unix.IFLA_AF_SPEC, nil)
	inet := spec.AddRtAttr(unix.AF_INET, nil)
	conf := inet.AddRtAttr(unix.IFLA_INET_CONF, nil)
	conf.AddRtAttr(devconfRPFilter, nl.Uint32Attr(1))
	req.AddData(spec)
	_, err := req.Execute(unix.NETLINK_ROUTE, 0)
	return err
}

// flushRoutes removes every IPv4 route but the local table's own
// addresses (and loopback's): the subnet, the default and every broadcast
// route go.
func flushRoutes() error {
	routes, err := netlink.RouteListFiltered(unix.AF_INET, &netlink.Route{Table: unix.RT_TABLE_UNSPEC}, netlink.RT_FILTER_TABLE)
	if err != nil {
		return fmt.Errorf("list routes: %w", err)
	}
	for _, r := range routes {
		if r.Table == unix.RT_TABLE_LOCAL && r.Type == unix.RTN_LOCAL {
			continue
		}
		if r.Dst != nil && r.Dst.IP.IsLoopback() {
			continue
		}
		r := r
		if err := netlink.RouteDel(&r); err != nil && !errors.Is(err, unix.ESRCH) {
			return fmt.Errorf("remove route %s: %w", r, err)
		}
	}
	return nil
}

func flushNeighbours(idx int) error {
	ns, err := netlink.NeighList(idx, unix.AF_INET)
	if err != nil {
		return fmt.Errorf("list neighbours: %w", err)
	}
	for _, n := range ns {
		n := n
		if err := netlink.NeighDel(&n); err != nil && !errors.Is(err, unix.ENOENT) {
			return fmt.Errorf("remove neighbour %s: %w", n.IP, err)
		}
	}
	return nil
}

// ipv6Off leaves the interface no IPv6 address or route, and no way to
// make a link-local one again. A kernel without IPv6 has nothing to do.
func ipv6Off(link netlink.Link) error {
	if err := netlink.LinkSetIP6AddrGenMode(link, addrGenModeNone); err != nil && !errors.Is(err, unix.EAFNOSUPPORT) && !errors.Is(err, unix.EOPNOTSUPP) {
		return fmt.Errorf("turn IPv6 address generation off: %w", err)
	}
	addrs, err := netlink.AddrList(link, unix.AF_INET6)
	if err != nil && !errors.Is(err, unix.EAFNOSUPPORT) {
		return fmt.Errorf("list IPv6 addresses: %w", err)
	}
	for _, a := range addrs {
		a := a
		if err := netlink.AddrDel(link, &a); err != nil && !errors.Is(err, unix.EADDRNOTAVAIL) {
			return fmt.Errorf("remove IPv6 address %s: %w", a.IPNet, err)
		}
	}
	routes, err := netlink.RouteListFiltered(unix.AF_INET6, &netlink.Route{Table: unix.RT_TABLE_UNSPEC, LinkIndex: link.Attrs().Index},
		netlink.RT_FILTER_TABLE|netlink.RT_FILTER_OIF)
	if err != nil && !errors.Is(err, unix.EAFNOSUPPORT) {
		return fmt.Errorf("list IPv6 routes: %w", err)
	}
	for _, r := range routes {
		r := r
		if err := netlink.RouteDel(&r); err != nil && !errors.Is(err, unix.ESRCH) {
			return fmt.Errorf("remove IPv6 route %s: %w", r, err)
		}
	}
	return nil
}
