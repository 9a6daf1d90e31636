#!/usr/bin/env bash
# Build kube-apiserver and etcd (and kubectl if the installed one is too old) from source
# through the Go module proxy, once per pinned version, into a cache that later runs reuse.
#
# Usage: tools/k8s/build.sh            build or reuse; prints the binary directory last
#        tools/k8s/build.sh --print-dir print the binary directory without building
#
# Environment:
#   K8S_VERSION          k8s.io/kubernetes release (default below)
#   ETCD_VERSION         go.etcd.io/etcd/server/v3 release (default below)
#   LABELWALL_K8S_CACHE  cache root (default ~/.cache/labelwall/k8s); binaries land in
#                        $LABELWALL_K8S_CACHE/$K8S_VERSION/
#   GO                   go binary (default /usr/local/go/bin/go, else `go` on PATH)
#
# Never downloads prebuilt binaries: only Go module sources, via GOPROXY.
set -euo pipefail

# v1.33: its go.mod (go 1.24) builds with the installed Go 1.26, and the preinstalled
# kubectl v1.32 is within the supported client skew (server minor - 1), so no kubectl build.
K8S_VERSION="${K8S_VERSION:-v1.33.13}"
# The etcd 3.5 line is the one Kubernetes v1.33 is built and tested against.
ETCD_VERSION="${ETCD_VERSION:-v3.5.35}"
CACHE_ROOT="${LABELWALL_K8S_CACHE:-$HOME/.cache/labelwall/k8s}"
OUT="$CACHE_ROOT/$K8S_VERSION"

if [[ "${1:-}" == "--print-dir" ]]; then
  echo "$OUT"
  exit 0
fi

# shellcheck source=../lib/go.sh
source "$(dirname "${BASH_SOURCE[0]}")/../lib/go.sh"
lw_find_go tools/k8s/build.sh

# Use exactly the installed toolchain (never fetch another one), and keep the
# 2-core machine usable for others: two compile jobs at most.
export GOTOOLCHAIN=local
export GOFLAGS="-buildvcs=false -mod=mod"
export CGO_ENABLED=0
BUILD_FLAGS=(-p 2 -trimpath)

mkdir -p "$OUT"
# One build at a time per cache root (CI and a developer's pytest may race).
exec 9>"$CACHE_ROOT/.lock"
flock 9

GO_VERSION="$("$GO" env GOVERSION)"
STAGING_VERSION="v0.${K8S_VERSION#v1.}"   # k8s.io/api etc. are tagged v0.<minor>.<patch>
start_all=$SECONDS

# stamp_ok NAME WANT: the binary exists and was built from WANT (module@version + Go).
stamp_ok() {
  [[ -x "$OUT/$1" && -f "$OUT/.$1.stamp" && "$(cat "$OUT/.$1.stamp")" == "$2" ]]
}

build_k8s_binary() {  # NAME PACKAGE
  local name=$1 pkg=$2 want="k8s.io/kubernetes@$K8S_VERSION $GO_VERSION"
  if stamp_ok "$name" "$want"; then
    echo "reused $name ($want) in $OUT"
    return
  fi
  local t0=$SECONDS work
  work="$(mktemp -d "$CACHE_ROOT/.work-$name.XXXXXX")"
  # A throwaway main module: k8s.io/kubernetes replaces its staging modules with
  # ./staging/... paths, which only work inside its repository, so we pin each of
  # them to the matching published v0.X.Y module instead.
  local kmod
  kmod="$(cd "$work" && "$GO" mod download -json "k8s.io/kubernetes@$K8S_VERSION" \
    | sed -n 's/^[[:space:]]*"GoMod": "\(.*\)",$/\1/p')"
  {
    echo "module labelwall.local/k8sbuild"
    echo
    echo "go 1.24.0"
    echo
    echo "require k8s.io/kubernetes $K8S_VERSION"
    echo
    echo "replace ("
    sed -n 's|^[[:space:]]*\(k8s.io/[a-z0-9-]*\) => ./staging/src/k8s.io/.*$|\1|p' "$kmod" \
      | while read -r m; do echo "	$m => $m $STAGING_VERSION"; done
    echo ")"
  } > "$work/go.mod"
  (cd "$work" && "$GO" build "${BUILD_FLAGS[@]}" \
    -ldflags="-s -w \
      -X k8s.io/component-base/version.gitVersion=$K8S_VERSION \
      -X k8s.io/component-base/version.gitMajor=1 \
      -X k8s.io/component-base/version.gitMinor=$(echo "$K8S_VERSION" | cut -d. -f2) \
      -X k8s.io/component-base/version.gitTreeState=clean \
      -X k8s.io/client-go/pkg/version.gitVersion=$K8S_VERSION" \
    -o "$OUT/$name.tmp" "$pkg")
  mv -f "$OUT/$name.tmp" "$OUT/$name"
  echo "$want" > "$OUT/.$name.stamp"
  rm -rf "$work"
  echo "built $name ($want) in $((SECONDS - t0))s"
}

build_etcd() {
  local want="go.etcd.io/etcd/server/v3@$ETCD_VERSION $GO_VERSION"
  if stamp_ok etcd "$want"; then
    echo "reused etcd ($want) in $OUT"
    return
  fi
  local t0=$SECONDS work
  work="$(mktemp -d "$CACHE_ROOT/.work-etcd.XXXXXX")"
  # The server module's own replace directives point at sibling directories and are
  # ignored for dependencies; its require lines already pin the sibling modules.
  printf 'module labelwall.local/etcdbuild\n\ngo 1.24.0\n\nrequire go.etcd.io/etcd/server/v3 %s\n' \
    "$ETCD_VERSION" > "$work/go.mod"
  (cd "$work" && "$GO" build "${BUILD_FLAGS[@]}" -ldflags="-s -w" \
    -o "$OUT/etcd.tmp" go.etcd.io/etcd/server/v3)
  mv -f "$OUT/etcd.tmp" "$OUT/etcd"
  echo "$want" > "$OUT/.etcd.stamp"
  rm -rf "$work"
  echo "built etcd ($want) in $((SECONDS - t0))s"
}

# kubectl is only built when the installed one is outside the supported skew
# (kubectl may be one minor older than the server).
kubectl_needed() {
  local server_minor client_minor
  server_minor="$(echo "$K8S_VERSION" | cut -d. -f2)"
  if ! command -v kubectl >/dev/null 2>&1; then return 0; fi
  client_minor="$(kubectl version --client -o json 2>/dev/null \
    | sed -n 's/^[[:space:]]*"minor": "\([0-9]*\).*$/\1/p' | head -n1)"
  [[ -z "$client_minor" ]] && return 0
  if (( client_minor >= server_minor - 1 )); then
    echo "kubectl: using $(command -v kubectl) (minor $client_minor, server minor $server_minor)"
    return 1
  fi
  return 0
}

build_k8s_binary kube-apiserver k8s.io/kubernetes/cmd/kube-apiserver
build_etcd
if kubectl_needed; then
  build_k8s_binary kubectl k8s.io/kubernetes/cmd/kubectl
fi

echo "done in $((SECONDS - start_all))s; cache size $(du -sh "$OUT" | cut -f1)"
echo "$OUT"
