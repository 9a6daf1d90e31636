#!/usr/bin/env bash
# Build everything a real Kubernetes node needs (kubelet, kube-proxy, kube-scheduler,
# kube-controller-manager, containerd + ctr + shim, runc, the CNI plugins ptp/host-local/
# loopback, a static pause) and the upstream e2e runner (e2e.test, agnhost, ginkgo) from
# source through the Go module proxy, once per pinned version, into a cache that later runs
# reuse. The list, versions and build times are in tools/node/README.md.
#
# Usage: tools/node/build.sh             build or reuse; prints the binary directory last
#        tools/node/build.sh --print-dir print the binary directory without building
#
# Environment:
#   K8S_VERSION            k8s.io/kubernetes release (default below; same as tools/k8s)
#   CONTAINERD_VERSION     github.com/containerd/containerd/v2 release
#   RUNC_VERSION           github.com/opencontainers/runc release
#   CNI_PLUGINS_VERSION    github.com/containernetworking/plugins release
#   LABELWALL_NODE_CACHE   cache root (default ~/.cache/labelwall/node); binaries land in
#                          $LABELWALL_NODE_CACHE/$K8S_VERSION/
#   LABELWALL_NODE_SKIP    space-separated binary names not to build this run (e.g.
#                          "e2e.test" for a quick node-only build); the default builds all
#   GO                     go binary (default /usr/local/go/bin/go, else `go` on PATH)
#
# Never downloads prebuilt binaries: only Go module sources via GOPROXY, and gcc (Debian)
# for runc's C part (libseccomp-dev) and the static pause.
set -euo pipefail

K8S_VERSION="${K8S_VERSION:-v1.33.13}"
# containerd v2.4 (CRI config version 3); v2.4.2's go.mod asks for go 1.26.6, which the
# installed Go 1.26 satisfies. No replace directives in its go.mod, nor in runc's or the
# CNI plugins', so a throwaway main module that requires them builds the same code.
CONTAINERD_VERSION="${CONTAINERD_VERSION:-v2.4.2}"
RUNC_VERSION="${RUNC_VERSION:-v1.5.3}"
CNI_PLUGINS_VERSION="${CNI_PLUGINS_VERSION:-v1.10.0}"
# Only the aggregator e2e test imports k8s.io/sample-apiserver, and the proxy refuses its
# v0.33.10..13 ("403 Forbidden - This module version is not available"); v0.33.5 is the
# newest v0.33 it serves.
SAMPLE_APISERVER_VERSION="${SAMPLE_APISERVER_VERSION:-v0.33.5}"
CACHE_ROOT="${LABELWALL_NODE_CACHE:-$HOME/.cache/labelwall/node}"
OUT="$CACHE_ROOT/$K8S_VERSION"
SKIP=" ${LABELWALL_NODE_SKIP:-} "

if [[ "${1:-}" == "--print-dir" ]]; then
  echo "$OUT"
  exit 0
fi
if [[ $# -gt 0 ]]; then
  echo "tools/node/build.sh: unknown argument '$1' (only --print-dir)" >&2
  exit 2
fi

# shellcheck source=../lib/go.sh
source "$(dirname "${BASH_SOURCE[0]}")/../lib/go.sh"
lw_find_go tools/node/build.sh

# Exactly the installed toolchain (never fetch another one); two compile jobs at most and a
# lower priority so the shared 2-core machine stays usable for others.
export GOTOOLCHAIN=local
export GOFLAGS="-buildvcs=false -mod=mod"
BUILD_FLAGS=(-p 2 -trimpath)
NICE=(nice -n 10)
TIMEFORMAT="%R s wall, %U+%S CPU-s"

mkdir -p "$OUT"
# One build at a time per cache root (CI, `make`, and a test's fixture may race).
exec 9>"$CACHE_ROOT/.lock"
flock 9

GO_VERSION="$("$GO" env GOVERSION)"
STAGING_VERSION="v0.${K8S_VERSION#v1.}"   # k8s.io/api etc. are tagged v0.<minor>.<patch>
K8S_MINOR="$(echo "$K8S_VERSION" | cut -d. -f2)"
start_all=$SECONDS
# Scratch space of this run, removed at exit; a killed earlier run's is removed here (the
# lock is held, so no other build is using it).
rm -rf "$CACHE_ROOT"/.work-*
RUN_TMP="$(mktemp -d "$CACHE_ROOT/.work-XXXXXX")"
trap 'rm -rf "$RUN_TMP"' EXIT
trap "exit 143" TERM
trap "exit 130" INT
# stamp_ok NAME WANT: the binary exists and was built from WANT (module@version + Go + how).
stamp_ok() {
  [[ -x "$OUT/$1" && -f "$OUT/.$1.stamp" && "$(cat "$OUT/.$1.stamp")" == "$2" ]]
}
skipped() { [[ "$SKIP" == *" $1 "* ]]; }

# new_work NAME: a scratch directory for one build step.
new_work() { mktemp -d "$RUN_TMP/$1.XXXXXX"; }

# gomod_of MODULE@VERSION: path of that module's go.mod in the module cache (downloads it).
gomod_of() {
  (cd "$CACHE_ROOT" && "$GO" mod download -json "$1" \
    | sed -n 's/^[[:space:]]*"GoMod": "\(.*\)",$/\1/p')
}
moddir_of() {
  (cd "$CACHE_ROOT" && "$GO" mod download -json "$1" \
    | sed -n 's/^[[:space:]]*"Dir": "\(.*\)",$/\1/p')
}

# simple_work NAME MODULE VERSION: a throwaway main module requiring MODULE@VERSION.
simple_work() {
  local w
  w="$(new_work "$1")"
  printf 'module labelwall.local/%sbuild\n\ngo 1.24.0\n\nrequire %s %s\n' \
    "$1" "$2" "$3" > "$w/go.mod"
  echo "$w"
}

# The k8s work module: k8s.io/kubernetes replaces its staging modules with ./staging/...
# paths, which only work inside its repository, so we pin each of them to the matching
# published v0.X.Y module instead (as tools/k8s/build.sh does), plus sample-apiserver.
K8S_WORK=""
k8s_work() {
  if [[ -n "$K8S_WORK" ]]; then return; fi
  K8S_WORK="$(new_work k8s)"
  local kmod
  kmod="$(gomod_of "k8s.io/kubernetes@$K8S_VERSION")"
  {
    echo "module labelwall.local/k8snodebuild"
    echo
    echo "go 1.24.0"
    echo
    echo "require k8s.io/kubernetes $K8S_VERSION"
    echo
    echo "replace ("
    sed -n 's|^[[:space:]]*\(k8s.io/[a-z0-9-]*\) => ./staging/src/k8s.io/.*$|\1|p' "$kmod" \
      | while read -r m; do
          if [[ "$m" == k8s.io/sample-apiserver ]]; then
            echo "	$m => $m $SAMPLE_APISERVER_VERSION"
          else
            echo "	$m => $m $STAGING_VERSION"
          fi
        done
    echo ")"
  } > "$K8S_WORK/go.mod"
}

K8S_LDFLAGS="-s -w \
  -X k8s.io/component-base/version.gitVersion=$K8S_VERSION \
  -X k8s.io/component-base/version.gitMajor=1 \
  -X k8s.io/component-base/version.gitMinor=$K8S_MINOR \
  -X k8s.io/component-base/version.gitTreeState=clean \
  -X k8s.io/client-go/pkg/version.gitVersion=$K8S_VERSION"

# go_build NAME WANT WORKDIR CGO TAGS LDFLAGS PACKAGE [test]: build (or reuse) one binary.
go_build() {
  local name=$1 want=$2 work=$3 cgo=$4 tags=$5 ldflags=$6 pkg=$7 mode=${8:-build}
  if stamp_ok "$name" "$want"; then
    echo "reused $name ($want)"
    return
  fi
  if skipped "$name"; then
    echo "skipped $name (LABELWALL_NODE_SKIP)"
    return
  fi
  echo "building $name ($want) ..."
  local cmd=(build)
  # go test -c runs vet on every package by default: hundreds of CPU-s for nothing here.
  [[ "$mode" == test ]] && cmd=(test -c -vet=off)
  local t0=$SECONDS
  time (cd "$work" && CGO_ENABLED=$cgo "${NICE[@]}" "$GO" "${cmd[@]}" "${BUILD_FLAGS[@]}" \
    -tags "$tags" -ldflags="$ldflags" -o "$OUT/$name.tmp" "$pkg")
  mv -f "$OUT/$name.tmp" "$OUT/$name"
  echo "$want" > "$OUT/.$name.stamp"
  echo "built $name in $((SECONDS - t0))s ($(du -h "$OUT/$name" | cut -f1))"
}

# --- CNI plugins (static) ---------------------------------------------------------------
cni_work=""
for p in main/ptp ipam/host-local main/loopback; do
  name="${p#*/}"
  want="github.com/containernetworking/plugins@$CNI_PLUGINS_VERSION $GO_VERSION"
  if ! stamp_ok "$name" "$want" && [[ -z "$cni_work" ]]; then
    cni_work="$(simple_work cni github.com/containernetworking/plugins "$CNI_PLUGINS_VERSION")"
  fi
  go_build "$name" "$want" "${cni_work:-.}" 0 "" \
    "-s -w -X github.com/containernetworking/plugins/pkg/utils/buildversion.BuildVersion=$CNI_PLUGINS_VERSION" \
    "github.com/containernetworking/plugins/plugins/$p"
done

# --- runc (cgo: nsenter is C; seccomp needs Debian's libseccomp-dev) ---------------------
want="github.com/opencontainers/runc@$RUNC_VERSION $GO_VERSION tags=seccomp"
runc_work="."
if ! stamp_ok runc "$want"; then
  if ! pkg-config --exists libseccomp 2>/dev/null && [[ ! -e /usr/include/seccomp.h ]]; then
    echo "tools/node/build.sh: runc needs libseccomp-dev (scripts/install-system-deps.sh)" >&2
    exit 2
  fi
  runc_work="$(simple_work runc github.com/opencontainers/runc "$RUNC_VERSION")"
fi
go_build runc "$want" "$runc_work" 1 "seccomp urfave_cli_no_docs" \
  "-s -w" github.com/opencontainers/runc

# --- containerd v2, ctr, the runc shim (static) ------------------------------------------
ctd_work=""
for c in containerd ctr containerd-shim-runc-v2; do
  want="github.com/containerd/containerd/v2@$CONTAINERD_VERSION $GO_VERSION tags=no_btrfs"
  if ! stamp_ok "$c" "$want" && [[ -z "$ctd_work" ]]; then
    ctd_work="$(simple_work containerd github.com/containerd/containerd/v2 "$CONTAINERD_VERSION")"
  fi
  go_build "$c" "$want" "${ctd_work:-.}" 0 "no_btrfs" \
    "-s -w -X github.com/containerd/containerd/v2/version.Version=$CONTAINERD_VERSION \
     -X github.com/containerd/containerd/v2/version.Revision=$CONTAINERD_VERSION" \
    "github.com/containerd/containerd/v2/cmd/$c"
done

# --- pause: the C program from the kubernetes module, linked statically ------------------
GCC_VERSION="$(gcc -dumpfullversion 2>/dev/null || gcc -dumpversion)"
want="k8s.io/kubernetes@$K8S_VERSION build/pause/linux/pause.c gcc-$GCC_VERSION -Os -static"
if stamp_ok pause "$want"; then
  echo "reused pause ($want)"
else
  kdir="$(moddir_of "k8s.io/kubernetes@$K8S_VERSION")"
  t0=$SECONDS
  # VERSION is what `pause -v` prints; upstream passes the image tag the same way.
  gcc -Os -Wall -Werror -static -DVERSION=v3.10-labelwall \
    -o "$OUT/pause.tmp" "$kdir/build/pause/linux/pause.c"
  strip "$OUT/pause.tmp"
  mv -f "$OUT/pause.tmp" "$OUT/pause"
  echo "$want" > "$OUT/.pause.stamp"
  echo "built pause in $((SECONDS - t0))s ($(du -h "$OUT/pause" | cut -f1))"
fi

# --- the Kubernetes node and control-plane binaries, agnhost, ginkgo, e2e.test -----------
want="k8s.io/kubernetes@$K8S_VERSION $GO_VERSION"
for b in kubelet kube-proxy kube-scheduler kube-controller-manager; do
  stamp_ok "$b" "$want" || k8s_work
  go_build "$b" "$want" "${K8S_WORK:-.}" 0 "" "$K8S_LDFLAGS" "k8s.io/kubernetes/cmd/$b"
done
# agnhost lives in the main module (test/images/agnhost, VERSION 2.53: the tag
# test/utils/image/manifest.go of this release expects); CGO off makes it static.
stamp_ok agnhost "$want" || k8s_work
go_build agnhost "$want" "${K8S_WORK:-.}" 0 "" "-s -w" \
  "k8s.io/kubernetes/test/images/agnhost"
# ginkgo: the CLI at the exact version kubernetes' go.mod links into e2e.test.
want_g="github.com/onsi/ginkgo/v2 (as required by k8s.io/kubernetes@$K8S_VERSION) $GO_VERSION"
stamp_ok ginkgo "$want_g" || k8s_work
go_build ginkgo "$want_g" "${K8S_WORK:-.}" 0 "" "-s -w" "github.com/onsi/ginkgo/v2/ginkgo"
# e2e.test last: the biggest link (about 264 CPU-s, 1.8 GB peak RSS).
stamp_ok e2e.test "$want" || k8s_work
go_build e2e.test "$want" "${K8S_WORK:-.}" 0 "" "$K8S_LDFLAGS" "k8s.io/kubernetes/test/e2e" test

echo "done in $((SECONDS - start_all))s; cache size $(du -sh "$OUT" | cut -f1)"
echo "$OUT"
