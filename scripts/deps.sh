#!/usr/bin/env bash
# deps.sh installs the Debian packages the tests use when they are missing:
# busybox-static (test images are built FROM scratch around it),
# debootstrap (scripts/base-image.sh) and tcpdump (the egress tests capture
# DNS on the engine host to show that none leaves a bottle) and
# protobuf-compiler (the protoc that `make proto` and the SDK's
# generated-code test pin), etcd-server and containernetworking-plugins
# (scripts/test-cluster.sh runs a single-node Kubernetes cluster on them;
# containerd comes with docker.io). It does nothing
# when all are present, so it is safe to run before every test run.
set -euo pipefail

need=()
[ -x /bin/busybox ] || need+=(busybox-static)
command -v debootstrap >/dev/null 2>&1 || need+=(debootstrap)
command -v tcpdump >/dev/null 2>&1 || [ -x /usr/bin/tcpdump ] || [ -x /usr/sbin/tcpdump ] || need+=(tcpdump)
command -v protoc >/dev/null 2>&1 || need+=(protobuf-compiler)
command -v etcd >/dev/null 2>&1 || need+=(etcd-server)
[ -x /usr/lib/cni/bridge ] || need+=(containernetworking-plugins)

if [ ${#need[@]} -eq 0 ]; then
	exit 0
fi
if [ "$(id -u)" -ne 0 ]; then
	echo "deps: missing Debian packages: ${need[*]}; install them (sudo apt-get install ${need[*]}) and re-run" >&2
	exit 1
fi
echo "deps: installing ${need[*]}" >&2
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq "${need[@]}" >/dev/null
