#!/usr/bin/env bash
# base-image.sh provides the base image of the built-in shell agent,
# debian:bookworm-slim, to the local Docker Engine when it is not there yet.
#
# On a machine with a registry `docker build` would simply pull it; machines
# without one (CI here among them) get it from Debian's packages instead: a
# bookworm root filesystem made with debootstrap (minbase plus the tools the
# shell agent promises) and `docker import`ed under the same name.
#
# The Debian mirror is taken from this machine's apt configuration at run time
# (or $BOT_BOTTLE_DEBIAN_MIRROR), never written into the repository; with none
# found debootstrap's own default is used.
#
# Usage: scripts/base-image.sh            (idempotent; exits at once when present)
#        BOT_BOTTLE_BASE_IMAGE=name:tag scripts/base-image.sh
set -euo pipefail

IMAGE="${BOT_BOTTLE_BASE_IMAGE:-debian:bookworm-slim}"
SUITE="bookworm"
# Extra packages on top of minbase (which already has bash, coreutils, grep,
# sed, findutils, tar, gzip, util-linux, ncurses-bin, mawk and passwd).
# git is there so that an agent can commit in a --review bottle's clone.
INCLUDE="bash,procps,less,ncurses-bin,ca-certificates,netbase,wget,iproute2,xz-utils,bzip2,file,psmisc,git"
# The label's value is the version of INCLUDE: an image this script made with
# an older list (version 1 had no git) is made again. An image it did not make
# (no label: a registry's) is left alone.
BASE_VERSION="2"
LABEL="dev.bot-bottle.base=$BASE_VERSION"

say() { printf 'base-image: %s\n' "$*" >&2; }
die() {
	printf 'base-image: error: %s\n' "$*" >&2
	exit 1
}

command -v docker >/dev/null 2>&1 || die "the docker CLI is not installed"
docker version --format '{{.Server.Version}}' >/dev/null 2>&1 ||
	die "cannot reach the Docker Engine (is dockerd running and DOCKER_HOST right?)"

# current prints nothing when $IMAGE is missing, "yes" when it is ours and up
# to date or not ours, and the old version when this script made it earlier.
current() {
	local v
	v="$(docker image inspect --format '{{index .Config.Labels "dev.bot-bottle.base"}}' "$IMAGE" 2>/dev/null)" || return 0
	if [ -z "$v" ] || [ "$v" = "<no value>" ] || [ "$v" = "$BASE_VERSION" ]; then
		echo yes
	else
		echo "$v"
	fi
}

old=""
case "$(current)" in
"") ;;
yes)
	say "$IMAGE is already present; nothing to do"
	exit 0
	;;
*)
	old="$(docker image inspect --format '{{.Id}}' "$IMAGE")"
	say "$IMAGE was made by an older version of this script (without git); making it again"
	;;
esac

[ "$(id -u)" -eq 0 ] || die "debootstrap needs root; run this script as root (e.g. with sudo)"

# Two concurrent runs would both spend minutes and race on the tag.
lockfile="${TMPDIR:-/tmp}/bot-bottle-base-image.lock"
exec 9>"$lockfile"
if ! flock -n 9; then
	say "another base-image run holds $lockfile; waiting for it"
	flock 9
fi
if [ "$(current)" = yes ]; then
	say "$IMAGE was made by a concurrent run; nothing to do"
	exit 0
fi

# debian_mirror prints the URI of the first enabled "deb" source for
# $SUITE/main in the apt configuration, or nothing.
debian_mirror() {
	local f
	shopt -s nullglob
	for f in /etc/apt/sources.list /etc/apt/sources.list.d/*.list; do
		[ -r "$f" ] || continue
		# One-line format: deb [options] URI suite component...
		awk -v suite="$SUITE" '
			{ sub(/#.*/, "") }
			$1 != "deb" { next }
			{
				i = 2
				if ($i ~ /^\[/) { while (i <= NF && $i !~ /\]$/) i++; i++ }
				uri = $i; s = $(i + 1)
				if (s != suite) next
				for (j = i + 2; j <= NF; j++) if ($j == "main") { print uri; exit }
			}' "$f"
	done
	for f in /etc/apt/sources.list.d/*.sources; do
		[ -r "$f" ] || continue
		# deb822 format: stanzas of "Field: value" lines separated by blank lines.
		awk -v suite="$SUITE" '
			function has(list, word,   n, a, k) {
				n = split(list, a, /[ \t]+/)
				for (k = 1; k <= n; k++) if (a[k] == word) return 1
				return 0
			}
			function flush() {
				if (has(types, "deb") && has(suites, suite) && has(comps, "main") && tolower(enabled) != "no") {
					split(uris, u, /[ \t]+/); print u[1]; found = 1
				}
				types = uris = suites = comps = enabled = ""
			}
			/^[ \t]*#/ { next }
			/^[ \t]*$/ { flush(); if (found) exit; next }
			{
				field = tolower($0); sub(/:.*/, "", field)
				value = $0; sub(/^[^:]*:[ \t]*/, "", value); sub(/[ \t]+$/, "", value)
				if (field == "types") types = value
				else if (field == "uris") uris = value
				else if (field == "suites") suites = value
				else if (field == "components") comps = value
				else if (field == "enabled") enabled = value
			}
			END { if (!found) flush() }' "$f"
	done
}

if ! command -v debootstrap >/dev/null 2>&1 || [ ! -r /usr/share/keyrings/debian-archive-keyring.gpg ]; then
	command -v apt-get >/dev/null 2>&1 ||
		die "debootstrap is missing and there is no apt-get to install it; install debootstrap and debian-archive-keyring"
	say "installing debootstrap and debian-archive-keyring with apt-get"
	apt-get update -qq || die "apt-get update failed"
	DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends debootstrap debian-archive-keyring ||
		die "apt-get install debootstrap failed"
fi

mirror="${BOT_BOTTLE_DEBIAN_MIRROR:-}"
if [ -n "$mirror" ]; then
	say "using the Debian mirror from BOT_BOTTLE_DEBIAN_MIRROR: $mirror"
elif mirror="$(debian_mirror | grep -E '^(https?|file|ftp)://' | head -n 1 || true)" && [ -n "$mirror" ]; then
	say "using the Debian mirror from this machine's apt configuration: $mirror"
else
	say "no $SUITE main source in the apt configuration; using debootstrap's default mirror"
fi

arch="$(dpkg --print-architecture 2>/dev/null || true)"
[ -n "$arch" ] || arch="$(case "$(uname -m)" in x86_64) echo amd64 ;; aarch64) echo arm64 ;; *) uname -m ;; esac)"

workdir="$(mktemp -d "${TMPDIR:-/tmp}/bot-bottle-base-image.XXXXXX")"
rootfs="$workdir/rootfs"

# cleanup unmounts whatever a failed debootstrap left mounted inside the
# rootfs before deleting it, so rm never walks into the host's /proc or /sys.
cleanup() {
	local m
	if [ -d "$rootfs" ]; then
		awk -v r="$rootfs" '$2 == r || index($2, r "/") == 1 { print $2 }' /proc/mounts | sort -r |
			while read -r m; do umount -l "$m" 2>/dev/null || true; done
	fi
	rm -rf --one-file-system "$workdir"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

start=$(date +%s)
say "building a $SUITE ($arch) root filesystem with debootstrap in $rootfs; this takes a minute or more"
debootstrap_args=(--variant=minbase --arch="$arch" --include="$INCLUDE"
	--keyring=/usr/share/keyrings/debian-archive-keyring.gpg "$SUITE" "$rootfs")
[ -n "$mirror" ] && debootstrap_args+=("$mirror")
if ! debootstrap "${debootstrap_args[@]}" 2>&1 | sed -u 's/^/base-image: debootstrap: /' >&2; then
	[ -f "$rootfs/debootstrap/debootstrap.log" ] &&
		tail -n 20 "$rootfs/debootstrap/debootstrap.log" | sed 's/^/base-image: log: /' >&2
	die "debootstrap of $SUITE failed (see the lines above); check the network and the mirror"
fi

say "trimming caches, docs and package lists"
rm -rf "$rootfs"/var/cache/apt/archives/*.deb "$rootfs"/var/cache/apt/*.bin \
	"$rootfs"/var/lib/apt/lists/* "$rootfs"/var/log/*.log "$rootfs"/var/log/apt/* \
	"$rootfs"/usr/share/man/* "$rootfs"/usr/share/info/* \
	"$rootfs"/tmp/* "$rootfs"/var/tmp/*
find "$rootfs/usr/share/doc" -mindepth 1 ! -type d ! -name copyright -delete
find "$rootfs/usr/share/doc" -mindepth 1 -type d -empty -delete
# Like the official slim image: keep later apt-get installs from putting the docs back.
mkdir -p "$rootfs/etc/dpkg/dpkg.cfg.d"
cat >"$rootfs/etc/dpkg/dpkg.cfg.d/bot-bottle-slim" <<'EOF'
path-exclude /usr/share/doc/*
path-include /usr/share/doc/*/copyright
path-exclude /usr/share/man/*
path-exclude /usr/share/info/*
EOF
# A container gets its own hostname and resolver from the engine.
: >"$rootfs/etc/hostname"
: >"$rootfs/etc/resolv.conf"

say "importing the root filesystem as $IMAGE"
id="$(tar --numeric-owner --xattrs -C "$rootfs" -c . |
	docker import \
		--change "LABEL $LABEL" \
		--change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
		--change 'CMD ["bash"]' \
		--message "debootstrap --variant=minbase $SUITE by bot-bottle scripts/base-image.sh" \
		- "$IMAGE")" || die "docker import of the root filesystem failed"

# The old image goes unless something still uses it (the engine refuses then).
[ -n "$old" ] && docker image rm "$old" >/dev/null 2>&1 || true
size="$(docker image inspect --format '{{.Size}}' "$IMAGE" 2>/dev/null || echo '?')"
say "done: $IMAGE ($id, $size bytes) in $(($(date +%s) - start))s"
