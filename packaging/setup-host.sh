#!/usr/bin/env bash
# Installs what Sluice needs on a Debian/Ubuntu node and prepares the kernel
# side. Idempotent: run it as often as you like (make setup does).
#
#   - Debian packages: bcc (python3-bpfcc), libbpf1 (the kernel BTF lookups,
#     sensor/kernel/btf.py), docker.io (tests and container
#     metadata), busybox-static, iperf3, openssl, iproute2, bpftool, venv,
#     prometheus (its server and promtool check the packaged alert rules and
#     dashboard in the tests), tmux (a real terminal for the CLI view tests)
#   - a kernel build tree at /lib/modules/$(uname -r)/build: bcc compiles the
#     BPF programs at load time. When no headers package matches the running
#     kernel, the distribution's newest headers are linked instead; that is
#     safe because Sluice's BPF code reads no kernel-internal struct.
#   - tracefs mounted at /sys/kernel/tracing
set -euo pipefail

log() { printf 'setup: %s\n' "$*" >&2; }
die() { printf 'setup: error: %s\n' "$*" >&2; exit 1; }

[ "$(id -u)" -eq 0 ] || die "must run as root (sudo make setup): it installs packages and mounts tracefs"
command -v apt-get >/dev/null || die "apt-get not found: install python3-bpfcc, kernel headers, docker.io, busybox-static, iperf3, openssl, iproute2 and bpftool with your package manager"

export DEBIAN_FRONTEND=noninteractive
krel=$(uname -r)
arch=$(dpkg --print-architecture)

want=(python3-bpfcc libbpf1 python3-venv docker.io busybox-static iperf3 openssl curl iproute2 bpftool bpftrace gcc libc6-dev rsyslog prometheus tmux)
missing=()
for p in "${want[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done

build="/lib/modules/$krel/build"
need_headers=0
[ -e "$build/Makefile" ] || need_headers=1

updated=0
apt_update() { [ $updated -eq 1 ] || { log "apt-get update"; apt-get update -q >/dev/null; updated=1; }; }

if [ ${#missing[@]} -gt 0 ]; then
  apt_update
  log "installing ${missing[*]}"
  apt-get install -y -q --no-install-recommends "${missing[@]}" >/dev/null
fi

if [ $need_headers -eq 1 ]; then
  apt_update
  if apt-cache show "linux-headers-$krel" >/dev/null 2>&1; then
    log "installing linux-headers-$krel"
    apt-get install -y -q "linux-headers-$krel" >/dev/null
  fi
  if [ ! -e "$build/Makefile" ]; then
    log "no headers package matches kernel $krel: linking the distribution's newest ($arch)"
    apt-get install -y -q "linux-headers-$arch" >/dev/null
    hdr=$(ls -d /usr/src/linux-headers-*-"$arch" 2>/dev/null | sort -V | tail -n 1)
    [ -n "$hdr" ] || die "linux-headers-$arch installed no /usr/src/linux-headers-*-$arch"
    common="${hdr%-"$arch"}-common"
    mkdir -p "/lib/modules/$krel"
    ln -sfn "$hdr" "$build"
    [ -d "$common" ] && ln -sfn "$common" "/lib/modules/$krel/source"
    log "linked $build -> $hdr"
  fi
fi

if [ ! -d /sys/kernel/tracing/events ] && [ ! -d /sys/kernel/debug/tracing/events ]; then
  log "mounting tracefs at /sys/kernel/tracing"
  mount -t tracefs nodev /sys/kernel/tracing || die "cannot mount tracefs (is CONFIG_TRACING on?)"
fi
log "host ready (kernel $krel, build tree $(readlink -f "$build"))"
