#!/usr/bin/env bash
# Installs what labelwall needs on a fresh Debian machine (run as root): the BPF toolchain,
# netlink/tc tools, the packet-filter baselines the benchmarks compare against, and bpffs;
# libseccomp-dev for runc's seccomp (tools/node/build.sh), debootstrap for the labelwall
# image's Debian base (tools/images/build.sh).
set -euo pipefail
export DEBIAN_FRONTEND=noninteractive
pkgs=(clang llvm libbpf-dev bpftool iproute2 nftables iptables python3-venv make gcc libc6-dev
  libseccomp-dev debootstrap)
missing=()
for p in "${pkgs[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ "${#missing[@]}" -gt 0 ]; then
  echo "installing: ${missing[*]}"
  apt-get update -qq
  apt-get install -y -qq "${missing[@]}" >/dev/null
fi
# The kernel's bpffs: pinned maps and programs live here.
mountpoint -q /sys/fs/bpf || mount -t bpf bpf /sys/fs/bpf
