#!/usr/bin/env bash
# A Python base image made from a Debian mirror, for hosts that cannot pull from a container registry
# (air-gapped hospital networks; any machine whose only way out is a Debian mirror and a package index).
#
#   images/base/build.sh [IMAGE]          # default IMAGE: radpipe-base:bookworm-py3.11
#   make base-image                       # the same; then: make images BASE_IMAGE=radpipe-base:bookworm-py3.11
#
# What it does: debootstrap a minimal Debian bookworm (the release of the pinned python:3.11 slim image,
# so CPython 3.11 and the same glibc as the image locks were made for), install python3 with venv and pip
# from the mirror, add this host's extra CA certificates (an intercepting proxy or a private package
# index signs with them), and `docker import` the tree. Needs root, debootstrap and a Docker daemon.
#
# Settings (environment):
#   DEBIAN_MIRROR   the mirror to bootstrap from (default: the first deb.debian.org-style URI in
#                   /etc/apt/sources.list*, else http://deb.debian.org/debian)
#   DEBIAN_SUITE    default bookworm
#   EXTRA_CA_DIR    CA certificates (*.crt) to trust inside the image (default /usr/local/share/ca-certificates)
#   ROOTFS_CACHE    keep the bootstrapped tree here and reuse it next time (default: none, a temp dir)
set -euo pipefail

IMAGE="${1:-radpipe-base:bookworm-py3.11}"
SUITE="${DEBIAN_SUITE:-bookworm}"
EXTRA_CA_DIR="${EXTRA_CA_DIR:-/usr/local/share/ca-certificates}"

die() { echo "error: $*" >&2; exit 1; }

[ "$(id -u)" = 0 ] || die "building a base image needs root (debootstrap and chroot); run it with sudo"
command -v debootstrap >/dev/null || die "debootstrap is not installed; apt-get install -y debootstrap"
command -v docker >/dev/null || die "docker is not installed"
docker info >/dev/null 2>&1 || die "no Docker daemon answers; start dockerd (or the docker service) first"

if [ -z "${DEBIAN_MIRROR:-}" ]; then
  DEBIAN_MIRROR="$(grep -hoE '^(URIs:|deb) +https?://[^ ]+' /etc/apt/sources.list /etc/apt/sources.list.d/* 2>/dev/null \
    | awk '{print $2}' | grep -v -- '-security' | head -n1 || true)"
  DEBIAN_MIRROR="${DEBIAN_MIRROR:-http://deb.debian.org/debian}"
fi

work="$(mktemp -d /tmp/radpipe-base.XXXXXX)"
cleanup() {
  for fs in proc sys dev; do umount "$work/rootfs/$fs" 2>/dev/null || true; done
  rm -rf "$work"
}
trap cleanup EXIT
rootfs="$work/rootfs"

if [ -n "${ROOTFS_CACHE:-}" ] && [ -f "$ROOTFS_CACHE/rootfs.tar" ]; then
  echo "== reusing $ROOTFS_CACHE/rootfs.tar"
  mkdir -p "$rootfs" && tar -C "$rootfs" -xf "$ROOTFS_CACHE/rootfs.tar"
else
  echo "== debootstrap $SUITE from $DEBIAN_MIRROR (about a minute)"
  debootstrap --variant=minbase "$SUITE" "$rootfs" "$DEBIAN_MIRROR" >"$work/debootstrap.log" 2>&1 \
    || { tail -n 20 "$work/debootstrap.log" >&2; die "debootstrap from $DEBIAN_MIRROR failed (log above)"; }

  echo "== python3, venv, pip, CA certificates"
  if [ -d "$EXTRA_CA_DIR" ]; then
    mkdir -p "$rootfs/usr/local/share/ca-certificates"
    find "$EXTRA_CA_DIR" -maxdepth 1 -name '*.crt' -exec cp {} "$rootfs/usr/local/share/ca-certificates/" \;
  fi
  echo "deb $DEBIAN_MIRROR $SUITE main" >"$rootfs/etc/apt/sources.list"
  chroot "$rootfs" /bin/sh -ec '
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends python3 python3-venv python3-pip ca-certificates >/dev/null
    update-ca-certificates >/dev/null
    apt-get clean
    rm -rf /var/lib/apt/lists/* /var/cache/apt/*.bin /var/log/apt /var/log/dpkg.log
  ' || die "installing python3 into the base failed"
  if [ -n "${ROOTFS_CACHE:-}" ]; then
    mkdir -p "$ROOTFS_CACHE" && tar -C "$rootfs" -cf "$ROOTFS_CACHE/rootfs.tar" .
  fi
fi

echo "== docker import $IMAGE"
# pip in any virtual environment inside the image trusts the system store, which now holds the extra CAs.
tar -C "$rootfs" -c . | docker import \
  --change 'ENV LANG=C.UTF-8 PIP_CERT=/etc/ssl/certs/ca-certificates.crt' \
  --change 'CMD ["python3"]' \
  --message "radpipe base: Debian $SUITE minbase + python3 from $DEBIAN_MIRROR" \
  - "$IMAGE" >/dev/null
python="$(docker run --rm "$IMAGE" python3 --version)"
echo "built $IMAGE ($python, $(docker image inspect -f '{{.Size}}' "$IMAGE" | awk '{printf "%.0f MB", $1/1e6}'))"
echo "use it: make images BASE_IMAGE=$IMAGE"
