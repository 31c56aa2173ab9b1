#!/usr/bin/env bash
# gen.sh regenerates the Go code of plugin.proto into OUT (default: this
# directory), with exactly the pinned tools: protoc from Debian's
# protobuf-compiler package (the version below, recorded in the generated
# headers) and protoc-gen-go / protoc-gen-go-grpc at the versions in
# tools/go.mod. `make proto` runs it; the sdk's TestGeneratedCodeIsCurrent
# runs it into a temporary directory and fails on any difference.
set -euo pipefail

want_protoc="libprotoc 3.21.12"
here="$(cd "$(dirname "$0")" && pwd)"
out="${1:-$here}"

have="$(protoc --version 2>/dev/null || true)"
if [ "$have" != "$want_protoc" ]; then
	echo "gen.sh: need protoc \"$want_protoc\" (Debian bookworm's protobuf-compiler: apt-get install protobuf-compiler), have \"${have:-none}\"" >&2
	exit 1
fi

bin="$(mktemp -d)"
trap 'rm -rf "$bin"' EXIT
(cd "$here/tools" && GOWORK=off go build -o "$bin/" google.golang.org/protobuf/cmd/protoc-gen-go google.golang.org/grpc/cmd/protoc-gen-go-grpc)

mkdir -p "$out"
cd "$here"
PATH="$bin:$PATH" protoc --go_out="$out" --go_opt=paths=source_relative \
	--go-grpc_out="$out" --go-grpc_opt=paths=source_relative plugin.proto
