#!/usr/bin/env bash
# Build the container images a real-node testenv imports into each node's containerd, as
# OCI image-layout tars, without a registry or a container engine (run as root: debootstrap
# and chroot):
#   pause.tar      registry.k8s.io/pause:3.10                     the static pause from tools/node
#   agnhost.tar    registry.k8s.io/e2e-test-images/agnhost:2.53   agnhost from tools/node
#   labelwall.tar  docker.io/library/labelwall:dev                this checkout, as the Dockerfile
#                                                                 describes (see tools/images/README.md)
# and images.json ({"pause": {"name", "tar"}, ...}). Each is rebuilt only when its inputs
# change: pause/agnhost by the binary's hash, the labelwall base by the hash of its Debian
# package list, the labelwall app layer by the hash of the wheels' contents.
#
# Usage: tools/images/build.sh              build or reuse; prints the image directory last
#        tools/images/build.sh --print-dir  print the image directory without building
#
# Environment:
#   LABELWALL_IMAGES_CACHE  image directory (default ~/.cache/labelwall/images)
#   LABELWALL_NODE_CACHE    where tools/node/build.sh put pause and agnhost (its default)
#   DEBIAN_MIRROR           mirror for debootstrap (default: the first deb.debian.org-style
#                           URI this machine's apt uses, else http://deb.debian.org/debian)
#   PYTHON                  python with pip for `pip wheel` (default .venv/bin/python, else python3)
set -euo pipefail

HERE="$(cd "$(dirname "$0")" && pwd)"
REPO="$(cd "$HERE/../.." && pwd)"
OUT="${LABELWALL_IMAGES_CACHE:-$HOME/.cache/labelwall/images}"
PAUSE_NAME="registry.k8s.io/pause:3.10"
AGNHOST_NAME="registry.k8s.io/e2e-test-images/agnhost:2.53"
LABELWALL_NAME="docker.io/library/labelwall:dev"
SUITE=bookworm
# The Dockerfile's runtime packages (iproute2 bpftool libbpf-dev clang llvm libc6-dev) plus
# what python:3.11-slim-bookworm brings there: python3 (bookworm's 3.11, the venv's minor)
# with venv, mount (the chart's mount-bpffs init container; util-linux's stat is essential).
# pylibbpf's wheel bundles libelf/zstd/lzma/bz2 and needs libstdc++6, libgcc-s1, zlib1g;
# labelwall's ctypes fallback loads libbpf.so.1 (libbpf1). nftables: `nft list ruleset`
# next to kube-proxy's nftables tables when debugging a node, like bpftool for BPF.
BASE_PKGS=(python3 python3-venv libstdc++6 libgcc-s1 zlib1g libbpf1 iproute2 nftables mount
  bpftool libbpf-dev clang llvm libc6-dev)
# Files never depend on the build time.
export SOURCE_DATE_EPOCH=0

if [[ "${1:-}" == "--print-dir" ]]; then
  echo "$OUT"
  exit 0
fi
if [[ $# -gt 0 ]]; then
  echo "tools/images/build.sh: unknown argument '$1' (only --print-dir)" >&2
  exit 2
fi
if [[ "$(id -u)" != 0 ]]; then
  echo "tools/images/build.sh: run as root (debootstrap and chroot build the labelwall image)" >&2
  exit 2
fi
if [[ -z "${PYTHON:-}" ]]; then
  if [[ -x "$REPO/.venv/bin/python" ]]; then PYTHON="$REPO/.venv/bin/python"; else PYTHON=python3; fi
fi
OCI=(python3 "$HERE/oci.py")

mkdir -p "$OUT"
exec 9>"$OUT/.lock"
flock 9
start_all=$SECONDS
TIMEFORMAT="%R s wall, %U+%S CPU-s"
# Scratch space of this run, removed at exit; a killed earlier run's is removed here (the
# lock is held, so no other build is using it).
rm -rf "$OUT"/.work-*
RUN_TMP="$(mktemp -d "$OUT/.work-XXXXXX")"
trap 'rm -rf "$RUN_TMP"' EXIT
trap "exit 143" TERM
trap "exit 130" INT
# new_work NAME: a scratch directory for one build step.
new_work() { mktemp -d "$RUN_TMP/$1.XXXXXX"; }
sha() { sha256sum "$@" | cut -d' ' -f1; }
stamp_ok() { [[ -f "$OUT/$1" && -f "$OUT/.$1.stamp" && "$(cat "$OUT/.$1.stamp")" == "$2" ]]; }

NODE_DIR="$(bash "$REPO/tools/node/build.sh" --print-dir)"
for b in pause agnhost; do
  if [[ ! -x "$NODE_DIR/$b" ]]; then
    echo "tools/images/build.sh: $NODE_DIR/$b is missing: run tools/node/build.sh (make node-tools)" >&2
    exit 2
  fi
done
OCI_HASH="$(sha "$HERE/oci.py" | cut -c1-16)"

# --- pause: as upstream's build/pause/Dockerfile (ADD pause /pause, USER 65535, ENTRYPOINT)
want="$PAUSE_NAME pause=$(sha "$NODE_DIR/pause") oci=$OCI_HASH"
if stamp_ok pause.tar "$want"; then
  echo "reused pause.tar ($PAUSE_NAME)"
else
  w="$(new_work pause)"
  "${OCI[@]}" files --out "$w/layer.tar" --file "$NODE_DIR/pause:pause:0755"
  "${OCI[@]}" image --out "$OUT/pause.tar" --name "$PAUSE_NAME" --layer "$w/layer.tar" \
    --entrypoint '["/pause"]' --user 65535:65535
  echo "$want" > "$OUT/.pause.tar.stamp"
fi

# --- agnhost: as test/images/agnhost/Dockerfile, minus its Alpine userland (the Netpol specs
# exec only `/agnhost connect`; the servers are `/agnhost porter|serve-hostname`): /agnhost,
# the agnhost-2 link, /uploads, porter's localhost.crt/key, the users it defines, /tmp.
KDIR="$(cd "$OUT" && GOTOOLCHAIN=local "${GO:-/usr/local/go/bin/go}" mod download -json \
  "k8s.io/kubernetes@$(basename "$NODE_DIR")" | sed -n 's/^[[:space:]]*"Dir": "\(.*\)",$/\1/p')"
want="$AGNHOST_NAME agnhost=$(sha "$NODE_DIR/agnhost") oci=$OCI_HASH v2"
if stamp_ok agnhost.tar "$want"; then
  echo "reused agnhost.tar ($AGNHOST_NAME)"
else
  w="$(new_work agnhost)"
  printf 'root:x:0:0:root:/root:/bin/sh\nuser-defined-in-image:x:1000:1000::/home/user-defined-in-image:/bin/sh\nnobody:x:65534:65534:nobody:/:/sbin/nologin\n' > "$w/passwd"
  printf 'root:x:0:\nuser-defined-in-image:x:1000:\ngroup-defined-in-image:x:50000:user-defined-in-image\nnogroup:x:65534:\n' > "$w/group"
  "${OCI[@]}" files --out "$w/layer.tar" \
    --file "$NODE_DIR/agnhost:agnhost:0755" --symlink agnhost-2:agnhost \
    --file "$KDIR/test/images/agnhost/porter/localhost.crt:localhost.crt:0644" \
    --file "$KDIR/test/images/agnhost/porter/localhost.key:localhost.key:0644" \
    --file "$w/passwd:etc/passwd:0644" --file "$w/group:etc/group:0644" \
    --dir uploads --dir tmp
  "${OCI[@]}" image --out "$OUT/agnhost.tar" --name "$AGNHOST_NAME" --layer "$w/layer.tar" \
    --entrypoint '["/agnhost"]' --cmd '["pause"]' \
    --port 80/tcp --port 8080/tcp --port 8081/tcp --port 9376/tcp --port 5000/tcp
  echo "$want" > "$OUT/.agnhost.tar.stamp"
fi

# --- labelwall base: debootstrap minbase of Debian bookworm, cached by its package list ---
if [[ -z "${DEBIAN_MIRROR:-}" ]]; then
  DEBIAN_MIRROR="$(grep -rhoE 'https?://[^ ]+/debian/?( |$)' /etc/apt/sources.list /etc/apt/sources.list.d/ 2>/dev/null \
    | head -n1 | tr -d ' ' || true)"
  DEBIAN_MIRROR="${DEBIAN_MIRROR:-http://deb.debian.org/debian}"
fi
# BASE_RECIPE: bump when the steps below change what the base holds.
BASE_RECIPE=2
BASE_KEY="$(printf '%s\n' "$SUITE" minbase "${BASE_PKGS[@]}" "recipe=$BASE_RECIPE" "oci=$OCI_HASH" \
  | sha | cut -c1-16)"
BASE="$OUT/base/$BASE_KEY"
if [[ -f "$BASE/layer.tar" && -f "$BASE/.done" ]]; then
  echo "reused labelwall base $BASE_KEY ($SUITE minbase + ${#BASE_PKGS[@]} packages)"
else
  command -v debootstrap >/dev/null || {
    echo "tools/images/build.sh: debootstrap is missing (scripts/install-system-deps.sh)" >&2; exit 2; }
  echo "building labelwall base $BASE_KEY from $DEBIAN_MIRROR ..."
  rm -rf "$BASE"
  mkdir -p "$BASE"
  pkgs="$(IFS=,; echo "${BASE_PKGS[*]}")"
  time nice -n 10 debootstrap --variant=minbase --include="$pkgs" "$SUITE" "$BASE/rootfs" \
    "$DEBIAN_MIRROR" > "$BASE/debootstrap.log" 2>&1 \
    || { echo "debootstrap failed; log: $BASE/debootstrap.log" >&2; tail -n 20 "$BASE/debootstrap.log" >&2; exit 1; }
  # Like the slim images: no package caches or lists, no logs of this build, no man pages,
  # docs (but the copyright files) or translations. Nothing of this machine: debootstrap
  # copies its resolv.conf and hostname (the runtime provides both to a container).
  r="$BASE/rootfs"
  rm -rf "$r/var/cache/apt/"*.bin "$r/var/cache/apt/archives/"*.deb "$r/var/lib/apt/lists/"* \
    "$r/var/log/"*.log "$r/var/log/apt/"* "$r/debootstrap" "$r/usr/share/man/"* \
    "$r/usr/share/info/"* "$r/etc/resolv.conf"
  find "$r/usr/share/doc" -mindepth 1 ! -type d ! -name copyright -delete
  find "$r/usr/share/doc" -mindepth 1 -type d -empty -delete
  find "$r/usr/share/locale" -mindepth 1 -maxdepth 1 ! -name locale.alias -exec rm -rf {} +
  : > "$r/etc/hostname"
  # Mount points for the app build (bind mounts; the base itself stays read-only).
  mkdir -p "$BASE/rootfs/opt/labelwall"
  time "${OCI[@]}" layer --out "$BASE/layer.tar" --root "$BASE/rootfs" \
    --exclude-contents dev --exclude-contents proc --exclude-contents sys \
    --exclude-contents tmp --exclude-contents run
  chroot "$BASE/rootfs" dpkg-query -W -f '${Package} ${Version}\n' > "$BASE/packages.txt"
  touch "$BASE/.done"
  echo "built labelwall base $BASE_KEY ($(du -h "$BASE/layer.tar" | cut -f1))"
fi

# --- labelwall app layer: a venv at /opt/labelwall with labelwall's wheel and its deps -----
w="$(new_work wheels)"
echo "building wheels (pip wheel: labelwall from $REPO and its dependencies) ..."
# The wheel holds the BPF object, which setup.py builds from bpf_src with clang.
time "$PYTHON" -m pip wheel -q --wheel-dir "$w/wheels" "$REPO"
# The key: every file inside every wheel (zip timestamps and the wheel build's temp paths
# do not matter), the base, and the sources copied next to the venv.
WHEEL_KEY="$("$PYTHON" - "$w/wheels" <<'EOF'
import hashlib, sys, zipfile
from pathlib import Path
h = hashlib.sha256()
for whl in sorted(Path(sys.argv[1]).glob("*.whl")):
    h.update(whl.name.encode())
    with zipfile.ZipFile(whl) as z:
        for name in sorted(z.namelist()):
            if name.endswith(".dist-info/RECORD"):
                continue
            h.update(name.encode() + b"\0" + hashlib.sha256(z.read(name)).digest())
print(h.hexdigest())
EOF
)"
BPF_SRC_KEY="$(cd "$REPO" && find bpf_src -type f ! -name '*.o' ! -path '*/__pycache__/*' | sort \
  | xargs sha256sum | sha)"
APP_KEY="$(printf '%s\n' "$BASE_KEY" "$WHEEL_KEY" "$BPF_SRC_KEY" "oci=$OCI_HASH" | sha | cut -c1-16)"
APP="$OUT/app/$APP_KEY"
if [[ -f "$APP/layer.tar" && -f "$APP/.done" ]]; then
  echo "reused labelwall app layer $APP_KEY"
else
  echo "building labelwall app layer $APP_KEY ..."
  rm -rf "$APP"
  mkdir -p "$APP/root/opt/labelwall" "$APP/root/etc" "$w/tmp"
  cp -a "$w/wheels" "$w/tmp/wheels"
  # A private mount namespace: the base read-only, the venv directory and /tmp bound over
  # it, a proc of its own; everything is gone when the namespace ends.
  time unshare --mount --propagation private env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin \
    BASE="$BASE/rootfs" APPROOT="$APP/root" TMPD="$w/tmp" sh -ec '
      mount --bind "$BASE" "$BASE"
      mount -o remount,bind,ro "$BASE"
      mount --bind "$APPROOT/opt/labelwall" "$BASE/opt/labelwall"
      mount --bind "$TMPD" "$BASE/tmp"
      mount -t proc proc "$BASE/proc"
      export HOME=/tmp PYTHONDONTWRITEBYTECODE=1 PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
      chroot "$BASE" python3 -m venv /opt/labelwall
      chroot "$BASE" /opt/labelwall/bin/pip install -q --no-index --find-links /tmp/wheels labelwall
      chroot "$BASE" /opt/labelwall/bin/labelwall --help >/dev/null'
  # Sources for the agent's runtime rebuild with non-default mapSizes (LABELWALL_BPF_SRC).
  tar -C "$REPO" --exclude='*.o' --exclude=__pycache__ --owner=0 --group=0 -cf - bpf_src \
    | tar -C "$APP/root/opt/labelwall" -xf -
  # The operator's unprivileged user, as the Dockerfile's groupadd/useradd.
  cp "$BASE/rootfs/etc/passwd" "$BASE/rootfs/etc/group" "$APP/root/etc/"
  echo "labelwall:x:65532:65532::/nonexistent:/usr/sbin/nologin" >> "$APP/root/etc/passwd"
  echo "labelwall:x:65532:" >> "$APP/root/etc/group"
  chmod 0755 "$APP/root" "$APP/root/opt" "$APP/root/etc"
  "${OCI[@]}" layer --out "$APP/layer.tar" --root "$APP/root"
  rm -rf "$APP/root"
  touch "$APP/.done"
  echo "built labelwall app layer $APP_KEY ($(du -h "$APP/layer.tar" | cut -f1))"
fi

want="$LABELWALL_NAME base=$BASE_KEY app=$APP_KEY oci=$OCI_HASH"
if stamp_ok labelwall.tar "$want"; then
  echo "reused labelwall.tar ($LABELWALL_NAME)"
else
  # The Dockerfile's ENV, USER and CMD; the venv's bin first on PATH (`labelwall ...`).
  "${OCI[@]}" image --out "$OUT/labelwall.tar" --name "$LABELWALL_NAME" \
    --layer "$BASE/layer.tar" --layer "$APP/layer.tar" \
    --env PATH=/opt/labelwall/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
    --env PYTHONDONTWRITEBYTECODE=1 --env PYTHONUNBUFFERED=1 \
    --env LABELWALL_BPF_SRC=/opt/labelwall/bpf_src \
    --user 65532:65532 --cmd '["labelwall", "--help"]'
  echo "$want" > "$OUT/.labelwall.tar.stamp"
fi
# Old layers: keep the newest few app layers (one per wheel set) and bases (package lists).
ls -1dt "$OUT/app/"*/ 2>/dev/null | tail -n +4 | xargs -r rm -rf
ls -1dt "$OUT/base/"*/ 2>/dev/null | tail -n +3 | xargs -r rm -rf

python3 - "$OUT" "$PAUSE_NAME" "$AGNHOST_NAME" "$LABELWALL_NAME" <<'EOF'
import json, sys
from pathlib import Path
out = Path(sys.argv[1])
names = dict(zip(["pause", "agnhost", "labelwall"], sys.argv[2:]))
doc = {k: {"name": v, "tar": str(out / f"{k}.tar")} for k, v in names.items()}
(out / "images.json").write_text(json.dumps(doc, indent=2) + "\n")
EOF
echo "done in $((SECONDS - start_all))s; $(du -ch "$OUT"/*.tar | tail -n1 | cut -f1) of image tars"
echo "$OUT"
