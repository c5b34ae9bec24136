#!/usr/bin/env bash
# Issue 17's check: on stock Debian 12 (/usr/bin/python3, no pyenv, no CUDA toolkit, no
# pre-existing venv) the README's two set-up commands succeed. Builds a minimal bookworm chroot
# (debootstrap --variant=minbase, plus git: the one thing the README expects beforehand), clones
# the committed HEAD of this repository into it (as CI does) and runs there, as a new user would:
#     cd /root/bnb && scripts/setup.sh          then          CI=true scripts/test.sh
# Everything else (compilers, cmake, python3-venv, torch, ...) must be installed by the scripts.
#
# Usage (as root, on a Debian/Ubuntu host with debootstrap: apt-get install debootstrap):
#   scripts/check_debian12.sh [--setup-only]
# Environment:
#   CHROOT  the chroot (default /srv/deb12); made by debootstrap when it has no /etc/debian_version,
#           reused otherwise (so a second run skips debootstrap but still clones afresh)
#   MIRROR  Debian mirror (default: the first URIs/deb line of the host's apt sources, else
#           http://deb.debian.org/debian)
#   LOGDIR  where the logs go (default $CHROOT/root/logs-<date>); setup.log, test.log, summary.txt
#   NICE    niceness of the two commands (default 15)
#   REPO    repository to clone (default: this one)
# Network set-up copied from the host so the chroot reaches the same mirror and PyPI the same way:
# /etc/resolv.conf, the host's apt proxy/options (/etc/apt/apt.conf.d/*proxy*, 99artifact-registry,
# 99farm-no-dep11 if present), /etc/pip.conf, PIP_CERT/PIP_INDEX_URL/PIP_DEFAULT_TIMEOUT/
# http(s)_proxy from the environment, and any CA certificate the host trusts beyond Debian's
# ca-certificates (a TLS-intercepting egress proxy's CA), put in /usr/local/share/ca-certificates.
# PIP_FIND_LINKS and other host-local paths are not passed on.
# The clone goes to $CHROOT/root/bnb (a previous clone there is moved aside to bnb.old-<date>).
# /proc, /sys, /dev, /dev/pts and a tmpfs /dev/shm are mounted into the chroot and unmounted on
# exit (trap), also after a failure or Ctrl-C. Exit status: 0 when both commands succeed.
# The whole script is one { } block, read before it runs: editing the file mid-run is harmless.
{
set -euo pipefail

CHROOT=${CHROOT:-/srv/deb12}
NICE=${NICE:-15}
REPO=${REPO:-$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)}
SETUP_ONLY=0
case "${1:-}" in
  --setup-only) SETUP_ONLY=1 ;;
  "") ;;
  *) echo "usage: $0 [--setup-only]" >&2; exit 2 ;;
esac
[ "$(id -u)" -eq 0 ] || { echo "$0: run as root (debootstrap, mount, chroot)" >&2; exit 1; }
command -v debootstrap >/dev/null || { echo "$0: apt-get install debootstrap" >&2; exit 1; }
STAMP=$(date -u +%Y%m%dT%H%M%SZ)
LOGDIR=${LOGDIR:-$CHROOT/root/logs-$STAMP}

if [ -z "${MIRROR:-}" ]; then
  MIRROR=$(sed -n 's/^URIs:[[:space:]]*\([^[:space:]]*\).*/\1/p' /etc/apt/sources.list.d/*.sources 2>/dev/null \
           | grep -v security | head -1 || true)
  [ -n "$MIRROR" ] || MIRROR=$(sed -n 's/^deb[[:space:]]\+\(\[[^]]*\][[:space:]]\+\)\?\([^[:space:]]*\).*/\2/p' \
           /etc/apt/sources.list 2>/dev/null | grep -v security | head -1 || true)
  MIRROR=${MIRROR:-http://deb.debian.org/debian}
fi

# ------------------------------------------------------------------ mounts, unmounted on exit
MOUNTED=()
cleanup() {
  local i
  for ((i = ${#MOUNTED[@]} - 1; i >= 0; i--)); do
    umount "${MOUNTED[$i]}" 2>/dev/null || umount -l "${MOUNTED[$i]}" 2>/dev/null || true
  done
  if mount | grep -q " $CHROOT/"; then
    echo "check_debian12: still mounted under $CHROOT:" >&2
    mount | grep " $CHROOT/" >&2
  fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM
mnt() {  # mnt TARGET mount-args...: mount unless something is already mounted there
  local target=$1; shift
  if mountpoint -q "$target"; then return 0; fi
  mkdir -p "$target"
  mount "$@" "$target"
  MOUNTED+=("$target")
}

# ------------------------------------------------------------------ the chroot
if [ ! -f "$CHROOT/etc/debian_version" ]; then
  echo "== debootstrap bookworm (minbase + git) into $CHROOT from $MIRROR"
  mkdir -p "$CHROOT"
  debootstrap --variant=minbase --include=git bookworm "$CHROOT" "$MIRROR"
fi
echo "== network configuration from the host"
cp -L /etc/resolv.conf "$CHROOT/etc/resolv.conf"
# the host's Debian sources when they name bookworm (other repositories are not copied); they
# replace debootstrap's one-line sources.list
if [ -s /etc/apt/sources.list.d/debian.sources ] && grep -q bookworm /etc/apt/sources.list.d/debian.sources; then
  cp /etc/apt/sources.list.d/debian.sources "$CHROOT/etc/apt/sources.list.d/"
  : > "$CHROOT/etc/apt/sources.list"
elif [ -s /etc/apt/sources.list ] && grep -q '^deb .*bookworm' /etc/apt/sources.list; then
  grep -v '^#' /etc/apt/sources.list | grep bookworm > "$CHROOT/etc/apt/sources.list"
fi
if [ ! -s "$CHROOT/etc/apt/sources.list.d/debian.sources" ] && ! grep -qs '^deb ' "$CHROOT/etc/apt/sources.list"; then
  printf 'deb %s bookworm main\ndeb %s bookworm-updates main\ndeb http://deb.debian.org/debian-security bookworm-security main\n' \
    "$MIRROR" "$MIRROR" > "$CHROOT/etc/apt/sources.list"
fi
for f in /etc/apt/apt.conf.d/*proxy* /etc/apt/apt.conf.d/*Proxy* /etc/apt/apt.conf.d/99artifact-registry \
         /etc/apt/apt.conf.d/99farm-no-dep11; do
  [ -f "$f" ] && cp "$f" "$CHROOT/etc/apt/apt.conf.d/"
done
[ -f /etc/pip.conf ] && cp /etc/pip.conf "$CHROOT/etc/pip.conf"
mkdir -p "$CHROOT/usr/local/share/ca-certificates"
for f in /usr/local/share/ca-certificates/*.crt /etc/ssl/certs/*.pem; do
  # a plain file in /etc/ssl/certs is not one of Debian's (those are links into /usr/share)
  [ -f "$f" ] && [ ! -L "$f" ] || continue
  cp "$f" "$CHROOT/usr/local/share/ca-certificates/$(basename "${f%.*}").crt"
done
if [ -x "$CHROOT/usr/sbin/update-ca-certificates" ]; then
  chroot "$CHROOT" update-ca-certificates >/dev/null
fi
# (without ca-certificates in the chroot, the scripts' apt-get install runs its postinst later,
# which picks up /usr/local/share/ca-certificates)

mnt "$CHROOT/proc" -t proc proc
mnt "$CHROOT/sys" --bind /sys
mnt "$CHROOT/dev" --bind /dev
mount --make-rslave "$CHROOT/dev"
mnt "$CHROOT/dev/pts" --bind /dev/pts
mnt "$CHROOT/dev/shm" -t tmpfs -o mode=1777 shm

# ------------------------------------------------------------------ the clone
if [ -e "$CHROOT/root/bnb" ]; then mv "$CHROOT/root/bnb" "$CHROOT/root/bnb.old-$STAMP"; fi
git clone -q "$REPO" "$CHROOT/root/bnb"
COMMIT=$(git -C "$CHROOT/root/bnb" rev-parse --short HEAD)
mkdir -p "$LOGDIR"

# A new user's login environment: no host PATH (pyenv, cargo, /usr/local/cuda), no host variables.
ENVV=(HOME=/root USER=root LOGNAME=root TERM=dumb LANG=C.UTF-8 SHELL=/bin/bash
      PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin)
for v in PIP_CERT PIP_INDEX_URL PIP_DEFAULT_TIMEOUT http_proxy https_proxy HTTP_PROXY HTTPS_PROXY no_proxy NO_PROXY; do
  if [ -n "${!v:-}" ]; then ENVV+=("$v=${!v}"); fi
done
in_chroot() { chroot "$CHROOT" /usr/bin/env -i "${ENVV[@]}" "$@"; }

{
  echo "date: $(date -u '+%Y-%m-%d %H:%M:%S UTC')"
  echo "commit: $COMMIT"
  echo "debian_version: $(cat "$CHROOT/etc/debian_version")"
  echo "python3 before setup: $(in_chroot bash -c 'command -v python3 && python3 --version' 2>&1 | tr '\n' ' ')"
  echo "nproc: $(in_chroot nproc)"
} | tee "$LOGDIR/summary.txt"

run_step() {  # run_step NAME COMMAND: runs it in the clone, logs, records status and duration
  local name=$1 cmd=$2 rc=0 t0 t1
  echo "== $name: $cmd (log: $LOGDIR/$name.log)"
  t0=$(date +%s)
  in_chroot nice -n "$NICE" bash -c "cd /root/bnb && $cmd" > "$LOGDIR/$name.log" 2>&1 || rc=$?
  t1=$(date +%s)
  echo "$name: '$cmd' exit $rc, $(( (t1 - t0) / 60 )) min $(( (t1 - t0) % 60 )) s" | tee -a "$LOGDIR/summary.txt"
  return "$rc"
}

status=0
run_step setup "scripts/setup.sh" || status=1
echo "python3 after setup: $(in_chroot bash -c 'command -v python3 && python3 --version' 2>&1 | tr '\n' ' ')" \
  | tee -a "$LOGDIR/summary.txt"
if [ "$SETUP_ONLY" = 0 ]; then
  run_step test "CI=true scripts/test.sh" || status=1
  # the closing counts: ctest, gtest, pytest, cargo, go, fuzzing
  grep -E "tests passed|tests failed|^[0-9]+ (passed|failed)|(passed|failed|skipped|error).* in [0-9.]+s|^test result:|^(ok|FAIL|---)[[:space:]]|^== |stat::number_of_executed_units|test_bindings:" \
    "$LOGDIR/test.log" > "$LOGDIR/test_counts.txt" || true
fi
echo "logs: $LOGDIR; exit status $status" | tee -a "$LOGDIR/summary.txt"
exit "$status"
}
