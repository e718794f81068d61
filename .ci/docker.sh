#!/usr/bin/env bash
# Make a Docker engine available and build the sidecar images; safe to run again and again.
#
# Steps, each skipped when already done: install docker.io, start dockerd without a bridge network
# (tests use --network none|host|container:X only), build a Debian base image with debootstrap (no
# registry is reachable, so nothing is pulled; the tarball is cached), then build the images.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
CACHE_DIR="${SIDECARS_CACHE_DIR:-/var/cache/sidecars}"
BASE_IMAGE="${SIDECARS_BASE_IMAGE:-sidecars-base-os:bookworm}"
SUITE="bookworm"

log() { printf '[docker.sh] %s\n' "$*" >&2; }

ensure_engine() {
  if ! command -v docker >/dev/null 2>&1 || ! command -v dockerd >/dev/null 2>&1; then
    log "installing docker.io"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq docker.io >/dev/null
  fi
  if docker info >/dev/null 2>&1; then
    return
  fi
  log "starting dockerd (no bridge, no iptables)"
  nohup dockerd --bridge=none --iptables=false >/var/log/dockerd.log 2>&1 &
  for _ in $(seq 1 60); do
    if docker info >/dev/null 2>&1; then
      return
    fi
    sleep 1
  done
  log "dockerd did not come up; last lines of /var/log/dockerd.log:"
  tail -n 20 /var/log/dockerd.log >&2 || true
  exit 1
}

# The Debian mirror this machine already uses (deb822 or one-line sources); never hard-coded.
apt_mirror() {
  local mirror=""
  if compgen -G "/etc/apt/sources.list.d/*.sources" >/dev/null; then
    mirror="$(awk '
      /^URIs:/ { uri = $2 }
      /^Suites:/ { for (i = 2; i <= NF; i++) if ($i == "'"$SUITE"'") { print uri; exit } }
    ' /etc/apt/sources.list.d/*.sources)"
  fi
  if [[ -z "$mirror" ]]; then
    mirror="$(cat /etc/apt/sources.list /etc/apt/sources.list.d/*.list 2>/dev/null |
      awk '$1 == "deb" && $3 == "'"$SUITE"'" { print $2; exit }')"
  fi
  [[ -n "$mirror" ]] || { log "no apt source for $SUITE found"; exit 1; }
  printf '%s\n' "$mirror"
}

ensure_base_image() {
  if docker image inspect "$BASE_IMAGE" >/dev/null 2>&1; then
    return
  fi
  local tarball="$CACHE_DIR/base-os-$SUITE.tar"
  if [[ ! -s "$tarball" ]]; then
    command -v debootstrap >/dev/null 2>&1 || {
      apt-get update -qq
      DEBIAN_FRONTEND=noninteractive apt-get install -y -qq debootstrap >/dev/null
    }
    local mirror rootfs
    mirror="$(apt_mirror)"
    rootfs="$(mktemp -d)"
    log "debootstrap $SUITE (minbase + python3) into $rootfs"
    debootstrap --variant=minbase --include=python3,python3-venv,ca-certificates \
      "$SUITE" "$rootfs" "$mirror" >/dev/null
    # The machine's CA bundle, so pip inside image builds trusts the same roots as the host.
    cp /etc/ssl/certs/ca-certificates.crt "$rootfs/etc/ssl/certs/ca-certificates.crt"
    rm -rf "$rootfs"/var/cache/apt/archives/*.deb "$rootfs"/var/lib/apt/lists/*
    mkdir -p "$CACHE_DIR"
    tar -C "$rootfs" -c . >"$tarball.tmp"
    mv "$tarball.tmp" "$tarball"
    rm -rf "$rootfs"
  fi
  log "importing $tarball as $BASE_IMAGE"
  docker import "$tarball" "$BASE_IMAGE" >/dev/null
}

ensure_engine
ensure_base_image
BASE_IMAGE="$BASE_IMAGE" "$ROOT/images/build.sh"
