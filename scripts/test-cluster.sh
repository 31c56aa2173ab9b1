#!/usr/bin/env bash
# test-cluster.sh runs a real single-node Kubernetes cluster on this machine
# for the kubernetes backend's tests, and takes it down again, leaving the
# host as it found it.
#
#   scripts/test-cluster.sh build            build (or find) the cached binaries
#   scripts/test-cluster.sh up               start it; prints the kubeconfig path
#   scripts/test-cluster.sh down             stop it and restore the host
#   scripts/test-cluster.sh run -- CMD...    up, CMD with KUBECONFIG set, down (also on failure)
#   scripts/test-cluster.sh kubeconfig       print the kubeconfig path
#   scripts/test-cluster.sh import < TAR     import an image archive into the cluster's containerd
#
# Parts: Debian's etcd-server and containerd (a separate instance with its own
# socket, root and state, so Docker's is never touched), the CNI bridge and
# host-local plugins on a bridge and subnet of its own (BB_K8S_BRIDGE,
# 10.244.0.0/24: not Docker's 172.17/16 nor the 172.18+/192.168 networks
# tests create), a pause image built here FROM scratch, and kube-apiserver,
# kubelet, kube-controller-manager and kubectl built from k8s.io/kubernetes
# at the version scripts/k8s-tools/go.mod pins. The binaries are cached by
# version outside the clone (${XDG_CACHE_HOME:-~/.cache}/bot-bottle/k8s/),
# so a cold machine builds them once (about 900 CPU-seconds) and `up` takes
# seconds after that. The API server listens on loopback only; the kubelet
# on the bridge's address (it refuses a loopback node address), which is
# local to this host. PersistentVolumeClaims bind through the
# controller-manager's hostPath provisioner (a default StorageClass), whose
# volumes live under /tmp/hostpath_pv and go with their claims.
#
# What the kubelet changes on the host is recorded at `up` and put back at
# `down`: the sysctls it rewrites, the mounts, network namespaces and cgroups
# its pods made, the bridge, and the one FORWARD rule added so that pods on
# the bridge reach each other past Docker's DROP policy.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
TOOLS="$ROOT/scripts/k8s-tools"
K8S_VERSION="$(awk '$1=="require" && $2=="k8s.io/kubernetes" {print $3} $1=="k8s.io/kubernetes" && $2 ~ /^v/ {print $2}' "$TOOLS/go.mod")"
[ -n "$K8S_VERSION" ] || { echo "test-cluster: no k8s.io/kubernetes version in $TOOLS/go.mod" >&2; exit 1; }
CACHE="${BB_K8S_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/bot-bottle/k8s}"
BIN="$CACHE/$K8S_VERSION"
D="${BB_K8S_DIR:-/var/lib/bot-bottle-test-cluster}"
RUN="${BB_K8S_RUN:-/run/bot-bottle-test-cluster}"
BRIDGE="${BB_K8S_BRIDGE:-bbk8s0}"
NODE_IP=10.244.0.1
SUBNET=10.244.0.0/24
NODE_NAME=bb-test-node
API_PORT="${BB_K8S_API_PORT:-16443}"
ETCD_PORT=23790
ETCD_PEER=23800
PAUSE_IMAGE=bb-test-cluster.local/pause:1
SOCK="$RUN/containerd.sock"
SYSCTLS="vm.overcommit_memory vm.panic_on_oom kernel.panic kernel.panic_on_oops kernel.keys.root_maxkeys kernel.keys.root_maxbytes net.ipv4.ip_forward"
COMPONENTS="etcd containerd kube-apiserver kube-controller-manager kubelet"

log() { echo "test-cluster: $*" >&2; }
die() { log "$*"; exit 1; }

[ "$(id -u)" -eq 0 ] || die "must run as root (it runs containerd and a kubelet)"

# build puts the Kubernetes binaries in $BIN, once per version: a lock keeps
# two concurrent callers from building twice, and the binaries appear only
# when all are built.
build() {
	if [ -x "$BIN/kubelet" ] && [ -x "$BIN/kube-apiserver" ] && [ -x "$BIN/kube-controller-manager" ] && [ -x "$BIN/kubectl" ]; then
		return 0
	fi
	mkdir -p "$CACHE"
	exec 9>"$CACHE/.build.lock"
	flock 9
	if [ -x "$BIN/kubectl" ]; then
		exec 9>&-
		return 0
	fi
	local tmp="$BIN.tmp.$$" minor
	minor="$(echo "$K8S_VERSION" | cut -d. -f2)"
	rm -rf "$tmp"
	mkdir -p "$tmp"
	log "building Kubernetes $K8S_VERSION binaries into $BIN (once per version; about 900 CPU-seconds; log: $CACHE/build.log)"
	local start=$SECONDS
	if ! (cd "$TOOLS" && CGO_ENABLED=0 nice go build -trimpath \
		-ldflags "-s -w -X k8s.io/component-base/version.gitVersion=$K8S_VERSION -X k8s.io/component-base/version.gitMajor=1 -X k8s.io/component-base/version.gitMinor=$minor -X k8s.io/component-base/version.gitTreeState=clean" \
		-o "$tmp/" k8s.io/kubernetes/cmd/kube-apiserver k8s.io/kubernetes/cmd/kubelet \
		k8s.io/kubernetes/cmd/kube-controller-manager k8s.io/kubernetes/cmd/kubectl) >"$CACHE/build.log" 2>&1; then
		rm -rf "$tmp"
		tail -20 "$CACHE/build.log" >&2
		die "building the Kubernetes binaries failed (see $CACHE/build.log)"
	fi
	rm -rf "$BIN"
	mv "$tmp" "$BIN"
	log "built in $((SECONDS - start)) s"
	exec 9>&-
}

pidfile() { echo "$RUN/$1.pid"; }
alive() { local p; p="$(cat "$(pidfile "$1")" 2>/dev/null)" && [ -n "$p" ] && kill -0 "$p" 2>/dev/null; }

# start runs a component in the background with its log in $D/logs.
start() {
	local name=$1
	shift
	setsid "$@" >"$D/logs/$name.log" 2>&1 </dev/null &
	echo $! >"$(pidfile "$name")"
}

wait_for() {
	local what=$1 tries=$2
	shift 2
	for _ in $(seq "$tries"); do
		if "$@" >/dev/null 2>&1; then return 0; fi
		sleep 0.2
	done
	die "$what did not come up (logs in $D/logs)"
}

kctl() { "$BIN/kubectl" --kubeconfig "$D/admin.kubeconfig" "$@"; }

kubeconfig() { # file user token
	cat >"$1" <<EOF
apiVersion: v1
kind: Config
clusters:
- name: bb-test
  cluster:
    server: https://127.0.0.1:$API_PORT
    certificate-authority: $D/pki/ca.crt
users:
- name: $2
  user:
    token: $3
contexts:
- name: bb-test
  context: {cluster: bb-test, user: $2, namespace: default}
current-context: bb-test
EOF
	chmod 0600 "$1"
}

pki() {
	mkdir -p "$D/pki"
	cd "$D/pki"
	openssl req -x509 -newkey rsa:2048 -nodes -keyout ca.key -out ca.crt -days 30 -subj /CN=bb-test-ca 2>/dev/null
	openssl req -newkey rsa:2048 -nodes -keyout apiserver.key -out apiserver.csr -subj /CN=kube-apiserver 2>/dev/null
	printf 'subjectAltName=IP:127.0.0.1,IP:10.96.0.1,IP:%s,DNS:localhost,DNS:kubernetes.default.svc\n' "$NODE_IP" >san.ext
	openssl x509 -req -in apiserver.csr -CA ca.crt -CAkey ca.key -CAcreateserial -out apiserver.crt -days 30 -extfile san.ext 2>/dev/null
	openssl genrsa -out sa.key 2048 2>/dev/null
	openssl rsa -in sa.key -pubout -out sa.pub 2>/dev/null
	chmod 0600 ./*.key
	cd - >/dev/null
}

record_host() {
	: >"$D/host.sysctl"
	for s in $SYSCTLS; do
		echo "$s=$(sysctl -n "$s")" >>"$D/host.sysctl"
	done
	ls /var/run/netns 2>/dev/null | sort >"$D/host.netns" || true
	chains | sort >"$D/host.chains"
}

# drop_chain removes the jumps to a chain (the kubelet's KUBE-FIREWALL is
# jumped to from INPUT and OUTPUT), then the chain.
drop_chain() {
	local x=$1 t=$2 c=$3 rule
	$x -t "$t" -S 2>/dev/null | grep -- "-j $c\( \|$\)" | grep '^-A ' | while read -r rule; do
		eval "$x -t $t -D ${rule#-A }" 2>/dev/null || true
	done
	$x -t "$t" -F "$c" 2>/dev/null || true
	$x -t "$t" -X "$c" 2>/dev/null || true
}

# chains lists the iptables and ip6tables chains as "TOOL TABLE CHAIN".
chains() {
	for x in iptables ip6tables; do
		for t in filter nat mangle; do
			$x -t $t -S 2>/dev/null | awk -v x=$x -v t=$t '$1=="-N" {print x, t, $2}'
		done
	done
}

up() {
	build
	if alive kube-apiserver && alive kubelet && [ -f "$D/admin.kubeconfig" ] && kctl get --raw /readyz >/dev/null 2>&1; then
		echo "$D/admin.kubeconfig"
		return 0
	fi
	# Whatever a crashed run left goes first.
	down_quiet
	ports_free
	local t0=$SECONDS
	up_runtime
	up_kube "$t0"
}

# ports_free refuses to start over daemons that down did not know of (left
# by a run whose pid files another run overwrote): a kubelet that cannot
# bind its ports would only say, ten minutes later, that the node never
# came up. It names what holds each port.
ports_free() {
	local port holder busy=""
	for port in "$ETCD_PORT" "$ETCD_PEER" "$API_PORT" 10250 10248; do
		holder="$(ss -Hltnp "sport = :$port" 2>/dev/null | grep -o 'users:(([^)]*))' | head -n1)"
		[ -n "$holder" ] && busy="$busy port $port: $holder;"
	done
	[ -z "$busy" ] || die "the test cluster's ports are taken (a cluster left by another run?):$busy stop those processes and try again"
}

# up_runtime starts what runs pods on this host: the bridge, etcd and the
# cluster's own containerd with its pause image.
up_runtime() {
	mkdir -p "$D/logs" "$RUN" "$D/cni/net.d" "$D/cni/ipam" "$D/kubelet" "$D/pod-logs"
	record_host

	ip link add "$BRIDGE" type bridge
	ip addr add "$NODE_IP/24" dev "$BRIDGE"
	ip link set "$BRIDGE" up
	iptables -I FORWARD 1 -i "$BRIDGE" -o "$BRIDGE" -m comment --comment bot-bottle-test-cluster -j ACCEPT

	pki
	local admin node kcm
	admin="$(openssl rand -hex 16)"
	node="$(openssl rand -hex 16)"
	kcm="$(openssl rand -hex 16)"
	printf '%s,admin,admin,system:masters\n%s,system:node:%s,node,system:nodes\n%s,system:kube-controller-manager,kcm\n' \
		"$admin" "$node" "$NODE_NAME" "$kcm" >"$D/pki/tokens.csv"
	chmod 0600 "$D/pki/tokens.csv"
	kubeconfig "$D/admin.kubeconfig" admin "$admin"
	kubeconfig "$D/kubelet.kubeconfig" node "$node"
	kubeconfig "$D/kcm.kubeconfig" kcm "$kcm"

	start etcd etcd --name bb-test --data-dir "$D/etcd" \
		--listen-client-urls "http://127.0.0.1:$ETCD_PORT" --advertise-client-urls "http://127.0.0.1:$ETCD_PORT" \
		--listen-peer-urls "http://127.0.0.1:$ETCD_PEER" --initial-advertise-peer-urls "http://127.0.0.1:$ETCD_PEER" \
		--initial-cluster "bb-test=http://127.0.0.1:$ETCD_PEER" --listen-metrics-urls "" --log-level warn

	cat >"$D/containerd.toml" <<EOF
version = 2
root = "$D/containerd"
state = "$RUN/containerd"
[grpc]
  address = "$SOCK"
[ttrpc]
  address = "$SOCK.ttrpc"
[debug]
  address = ""
[metrics]
  address = ""
[plugins."io.containerd.internal.v1.opt"]
  path = "$D/opt"
[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "$PAUSE_IMAGE"
  restrict_oom_score_adj = true
  disable_apparmor = true
  stream_server_address = "127.0.0.1"
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "/usr/lib/cni"
    conf_dir = "$D/cni/net.d"
EOF
	cat >"$D/cni/net.d/10-bb-test.conflist" <<EOF
{"cniVersion": "0.4.0", "name": "bb-test", "plugins": [
  {"type": "bridge", "bridge": "$BRIDGE", "isGateway": true, "ipMasq": false, "hairpinMode": true,
   "ipam": {"type": "host-local", "dataDir": "$D/cni/ipam",
            "ranges": [[{"subnet": "$SUBNET", "rangeStart": "10.244.0.10", "gateway": "$NODE_IP"}]]}}
]}
EOF
	start containerd containerd --config "$D/containerd.toml"
	wait_for containerd 100 ctr -a "$SOCK" version

	pause_image
}

# up_kube starts the API server, the controller-manager and the kubelet.
up_kube() {
	local t0=$1
	start kube-apiserver "$BIN/kube-apiserver" --etcd-servers "http://127.0.0.1:$ETCD_PORT" \
		--bind-address 127.0.0.1 --secure-port "$API_PORT" --advertise-address "$NODE_IP" \
		--tls-cert-file "$D/pki/apiserver.crt" --tls-private-key-file "$D/pki/apiserver.key" \
		--client-ca-file "$D/pki/ca.crt" --token-auth-file "$D/pki/tokens.csv" --authorization-mode AlwaysAllow \
		--service-cluster-ip-range 10.96.0.0/24 --service-account-issuer https://kubernetes.default.svc \
		--service-account-key-file "$D/pki/sa.pub" --service-account-signing-key-file "$D/pki/sa.key" \
		--allow-privileged=true --kubelet-preferred-address-types InternalIP --cert-dir "$D/pki/apiserver" \
		--enable-priority-and-fairness=false --profiling=false
	wait_for kube-apiserver 300 kctl get --raw /readyz
	log "apiserver ready after $((SECONDS - t0)) s"

	start kube-controller-manager "$BIN/kube-controller-manager" --kubeconfig "$D/kcm.kubeconfig" \
		--leader-elect=false --bind-address 127.0.0.1 --secure-port 0 \
		--service-account-private-key-file "$D/pki/sa.key" --root-ca-file "$D/pki/ca.crt" \
		--enable-hostpath-provisioner=true --controllers '*,-nodeipam,-nodelifecycle,-ttl,-bootstrapsigner,-tokencleaner' \
		--profiling=false

	cat >"$D/kubelet.yaml" <<EOF
apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
address: $NODE_IP
port: 10250
readOnlyPort: 0
healthzBindAddress: 127.0.0.1
healthzPort: 10248
authentication:
  anonymous: {enabled: true}
  webhook: {enabled: false}
authorization: {mode: AlwaysAllow}
cgroupDriver: cgroupfs
failCgroupV1: false
failSwapOn: false
containerRuntimeEndpoint: unix://$SOCK
imageServiceEndpoint: unix://$SOCK
podLogsDir: $D/pod-logs
resolvConf: /etc/resolv.conf
imageGCHighThresholdPercent: 100
imageGCLowThresholdPercent: 99
evictionHard: {memory.available: "1Mi", nodefs.available: "1%", imagefs.available: "1%"}
serializeImagePulls: false
maxPods: 110
registerNode: true
EOF
	start kubelet "$BIN/kubelet" --config "$D/kubelet.yaml" --kubeconfig "$D/kubelet.kubeconfig" \
		--hostname-override "$NODE_NAME" --node-ip "$NODE_IP" --root-dir "$D/kubelet" --cert-dir "$D/kubelet/pki"
	local t1=$SECONDS
	wait_for "node $NODE_NAME" 600 sh -c "'$BIN/kubectl' --kubeconfig '$D/admin.kubeconfig' get node $NODE_NAME -o jsonpath='{.status.conditions[?(@.type==\"Ready\")].status}' | grep -qx True"
	log "node ready $((SECONDS - t1)) s after the kubelet"
	kctl apply -f - >/dev/null <<EOF
apiVersion: storage.k8s.io/v1
kind: StorageClass
metadata:
  name: bb-hostpath
  annotations: {storageclass.kubernetes.io/is-default-class: "true"}
provisioner: kubernetes.io/host-path
reclaimPolicy: Delete
volumeBindingMode: Immediate
EOF
	wait_for "the default service account" 300 kctl get serviceaccount default -n default
	log "cluster up in $((SECONDS - t0)) s (kubeconfig: $D/admin.kubeconfig)"
	echo "$D/admin.kubeconfig"
}

# pause_image builds the sandbox image from a static binary FROM scratch with
# the local Docker engine, imports it, and removes the engine's copy.
pause_image() {
	if ctr -a "$SOCK" -n k8s.io images ls -q | grep -qx "$PAUSE_IMAGE"; then return 0; fi
	local ctx
	ctx="$(mktemp -d)"
	(cd "$TOOLS" && CGO_ENABLED=0 go build -trimpath -ldflags '-s -w' -o "$ctx/pause" ./pause)
	printf 'FROM scratch\nCOPY pause /pause\nENTRYPOINT ["/pause"]\n' >"$ctx/Dockerfile"
	docker build -q --label dev.bot-bottle.test-cluster=1 -t "$PAUSE_IMAGE" "$ctx" >/dev/null 2>&1
	docker save "$PAUSE_IMAGE" | ctr -a "$SOCK" -n k8s.io images import - >/dev/null
	docker rmi -f "$PAUSE_IMAGE" >/dev/null
	rm -rf "$ctx"
}

stop_component() {
	local name=$1 p
	p="$(cat "$(pidfile "$name")" 2>/dev/null)" || return 0
	if [ -n "$p" ] && kill -0 "$p" 2>/dev/null; then
		kill "$p" 2>/dev/null || true
		for _ in $(seq 50); do kill -0 "$p" 2>/dev/null || break; sleep 0.1; done
		kill -9 "$p" 2>/dev/null || true
	fi
	rm -f "$(pidfile "$name")"
}

down_quiet() { down >/dev/null 2>&1 || true; }

down() {
	# A teardown goes on past whatever fails: each step restores what it can.
	set +e +o pipefail
	local t0=$SECONDS
	# Pods first, through the API, so that the kubelet tears their sandboxes
	# down the proper way (CNI DEL, unmounts).
	if alive kube-apiserver && alive kubelet && [ -f "$D/admin.kubeconfig" ]; then
		kctl delete pods --all --all-namespaces --grace-period=0 --force --wait=false >/dev/null 2>&1 || true
		for _ in $(seq 100); do
			[ -z "$(kctl get pods -A -o name 2>/dev/null)" ] && break
			sleep 0.2
		done
	fi
	stop_component kubelet
	stop_component kube-controller-manager
	stop_component kube-apiserver
	# What is left in containerd (a kubelet that died): kill the tasks and the
	# shims that serve this containerd only.
	if alive containerd; then
		for c in $(ctr -a "$SOCK" -n k8s.io tasks ls -q 2>/dev/null); do
			ctr -a "$SOCK" -n k8s.io tasks kill -s SIGKILL "$c" >/dev/null 2>&1 || true
		done
		sleep 0.5
		for c in $(ctr -a "$SOCK" -n k8s.io tasks ls -q 2>/dev/null); do
			ctr -a "$SOCK" -n k8s.io tasks delete -f "$c" >/dev/null 2>&1 || true
		done
		for c in $(ctr -a "$SOCK" -n k8s.io containers ls -q 2>/dev/null); do
			ctr -a "$SOCK" -n k8s.io containers delete "$c" >/dev/null 2>&1 || true
		done
	fi
	stop_component containerd
	for p in $(pgrep -f containerd-shim 2>/dev/null); do
		if tr '\0' ' ' <"/proc/$p/cmdline" 2>/dev/null | grep -q -- "-address $SOCK"; then kill -9 "$p" 2>/dev/null || true; fi
	done
	stop_component etcd

	# Mounts under the cluster's directories, deepest first.
	for m in $(awk -v d="$D" -v r="$RUN" 'index($2, d"/")==1 || index($2, r"/")==1 {print $2}' /proc/self/mounts | sort -r); do
		umount "$m" 2>/dev/null || umount -l "$m" 2>/dev/null || true
	done
	# Network namespaces the pods' sandboxes made and did not remove.
	if [ -f "$D/host.netns" ]; then
		for n in $(ls /var/run/netns 2>/dev/null | sort | comm -13 "$D/host.netns" -); do
			case $n in cni-*) umount "/var/run/netns/$n" 2>/dev/null || true; rm -f "/var/run/netns/$n" ;; esac
		done
	fi
	ip link del "$BRIDGE" 2>/dev/null || true
	for v in $(ip -o link show master "$BRIDGE" 2>/dev/null | awk -F': ' '{print $2}' | cut -d@ -f1); do ip link del "$v" 2>/dev/null || true; done
	while iptables -D FORWARD -i "$BRIDGE" -o "$BRIDGE" -m comment --comment bot-bottle-test-cluster -j ACCEPT 2>/dev/null; do :; done
	# Chains the kubelet made (its iptables canaries, v4 and v6).
	if [ -f "$D/host.chains" ]; then
		chains | sort | comm -13 "$D/host.chains" - | while read -r x t c; do
			case $c in KUBE-*) drop_chain "$x" "$t" "$c" ;; esac
		done
	fi
	# The pods' cgroups, deepest first, in every v1 hierarchy.
	for h in /sys/fs/cgroup/*/; do
		[ -d "$h/kubepods" ] || continue
		find "$h/kubepods" -depth -type d -exec rmdir {} \; 2>/dev/null || true
	done
	# Sysctls as they were.
	if [ -f "$D/host.sysctl" ]; then
		while IFS='=' read -r k v; do sysctl -q -w "$k=$v" >/dev/null 2>&1 || true; done <"$D/host.sysctl"
	fi
	# The hostPath provisioner's volumes of this cluster's claims.
	rm -rf /tmp/hostpath_pv
	rm -rf "$D" "$RUN"
	log "down in $((SECONDS - t0)) s"
}

case "${1:-}" in
build) build ;;
up) up ;;
down) down ;;
kubeconfig) echo "$D/admin.kubeconfig" ;;
import) ctr -a "$SOCK" -n k8s.io images import - ;;
run)
	shift
	[ "${1:-}" = "--" ] && shift
	[ $# -gt 0 ] || die "run: no command"
	# One cluster per host: a second run (another clone's make test) waits
	# for the first to take its cluster down, instead of both sharing its
	# bridge, containerd and ports. The lock is the cache's, which every
	# clone on this host shares; the kernel drops it when this script and
	# the daemons it started are gone.
	mkdir -p "$CACHE"
	exec 8>"$CACHE/.run.lock"
	if ! flock -n 8; then
		log "another test cluster runs on this host; waiting for it to go down"
		# Its daemons hold the lock too, so one left by a killed run would
		# hold it for good: bounded, and the way out said.
		flock -w 1800 8 || die "another test cluster has held this host for 30 min; \`$0 down\` stops it"
	fi
	trap 'down' EXIT
	up >/dev/null
	KUBECONFIG="$D/admin.kubeconfig" BB_TEST_KUBECONFIG="$D/admin.kubeconfig" "$@"
	;;
*) die "usage: $0 build|up|down|run -- CMD...|kubeconfig|import" ;;
esac
