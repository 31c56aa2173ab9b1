#!/bin/bash
# Two bottles on links of their own to one shared proxy, each in a network
# namespace of its own (as on Docker, but with no bridge and no netfilter
# between them): usage interfaces.sh PROXY-BINARY BIND(1|0). Prints one
# "<who> -> <addr>: connected|refused" line per attempt.
set -eu
bin=$1
tag=bbt$$
P=${tag}p A=${tag}a B=${tag}b
ctl=@$tag-control
cleanup() {
	kill %1 2>/dev/null || true
	ip netns del $P 2>/dev/null || true
	ip netns del $A 2>/dev/null || true
	ip netns del $B 2>/dev/null || true
}
trap cleanup EXIT
ip netns add $P
ip netns add $A
ip netns add $B
ip link add pa netns $P type veth peer name eth0 netns $A
ip link add pb netns $P type veth peer name eth0 netns $B
for ns in $P $A $B; do ip -n $ns link set lo up; done
# Reverse-path filtering off, so that only the listeners' binding decides.
ip netns exec $P sysctl -qw net.ipv4.conf.all.rp_filter=0 net.ipv4.conf.default.rp_filter=0
ip -n $P addr add 10.77.1.2/29 dev pa
ip -n $P addr add 10.77.2.2/29 dev pb
ip -n $P link set pa up
ip -n $P link set pb up
ip netns exec $P sysctl -qw net.ipv4.conf.pa.rp_filter=0 net.ipv4.conf.pb.rp_filter=0
ip -n $A addr add 10.77.1.3/29 dev eth0
ip -n $B addr add 10.77.2.3/29 dev eth0
ip -n $A link set eth0 up
ip -n $B link set eth0 up
ip netns exec $P setpriv --reuid=65534 --regid=65534 --clear-groups "$bin" egress-proxy serve --control $ctl >/dev/null 2>&1 &
for id in a b; do
	n=1; [ $id = b ] && n=2
	printf '{"identity":"bottle-%s","rules":["example.test:80","10.77.2.3:80","10.77.1.3:80"]}' $id |
		ip netns exec $P "$bin" egress-proxy add --control $ctl --identity bottle-$id --listen 10.77.$n.2:3128 >/dev/null
done
# B aims at A's listener through its own link: a route and a neighbour
# entry of its own making, to the proxy's end of B's link.
mac=$(ip -n $P -o link show pb | sed -n 's/.*link\/ether \([^ ]*\).*/\1/p')
ip -n $B route add 10.77.1.2/32 dev eth0
ip -n $B neigh add 10.77.1.2 lladdr "$mac" dev eth0
try() {
	if ip netns exec $1 timeout 3 bash -c "exec 3<>/dev/tcp/$2/3128" 2>/dev/null; then
		echo "$1 -> $2: connected"
	else
		echo "$1 -> $2: refused"
	fi
}
try $A 10.77.1.2 | sed "s/^$A/a/"
try $B 10.77.2.2 | sed "s/^$B/b/"
try $B 10.77.1.2 | sed "s/^$B/b/"
# A's rules name B's agent (and its own): the proxy, on every bottle's
# network, never leads there.
for dst in 10.77.2.3 10.77.1.3; do
	ip netns exec $A timeout 5 bash -c "exec 3<>/dev/tcp/10.77.1.2/3128; printf 'GET http://$dst/ HTTP/1.0\r\n\r\n' >&3; head -1 <&3" | tr -d '\r' | sed "s/^/a GET $dst: /"
done
# Live rules, then forget: A's listener goes, B's stays.
printf '{"identity":"bottle-b","rules":[]}' | ip netns exec $P "$bin" egress-proxy rules --control $ctl --identity bottle-b
ip netns exec $P "$bin" egress-proxy forget --control $ctl --identity bottle-a | sed 's/^/left: /'
try $A 10.77.1.2 | sed "s/^$A/a/"
try $B 10.77.2.2 | sed "s/^$B/b/"
