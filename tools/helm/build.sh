#!/usr/bin/env bash
# Build the helm v3 CLI from source through the Go module proxy, once per pinned version,
# into a cache that later runs reuse. Never downloads a prebuilt binary.
#
# Usage: tools/helm/build.sh             build or reuse; prints the helm binary path last
#        tools/helm/build.sh --print-path print the helm binary path without building
#
# Environment:
#   HELM_VERSION          helm.sh/helm/v3 release (default below)
#   LABELWALL_HELM_CACHE  cache root (default ~/.cache/labelwall/helm); the binary lands in
#                         $LABELWALL_HELM_CACHE/$HELM_VERSION/helm
#   GO                    go binary (default /usr/local/go/bin/go, else `go` on PATH)
set -euo pipefail

# v3.21.4: the newest v3 patch release whose go.mod (go 1.26.0, no replace directives)
# builds with the installed Go 1.26 through a plain `go install module@version`.
HELM_VERSION="${HELM_VERSION:-v3.21.4}"
CACHE_ROOT="${LABELWALL_HELM_CACHE:-$HOME/.cache/labelwall/helm}"
OUT="$CACHE_ROOT/$HELM_VERSION"
HELM="$OUT/helm"

if [[ "${1:-}" == "--print-path" ]]; then
  echo "$HELM"
  exit 0
fi

# shellcheck source=../lib/go.sh
source "$(dirname "${BASH_SOURCE[0]}")/../lib/go.sh"
lw_find_go tools/helm/build.sh

# Exactly the installed toolchain (never fetch another one); two compile jobs at most so
# the shared 2-core machine stays usable.
export GOTOOLCHAIN=local
export GOFLAGS="-buildvcs=false"
export CGO_ENABLED=0

mkdir -p "$OUT"
# One build at a time per cache root (CI and a developer's pytest may race).
exec 9>"$CACHE_ROOT/.lock"
flock 9

GO_VERSION="$("$GO" env GOVERSION)"
WANT="helm.sh/helm/v3@$HELM_VERSION $GO_VERSION"
if [[ -x "$HELM" && -f "$OUT/.helm.stamp" && "$(cat "$OUT/.helm.stamp")" == "$WANT" ]]; then
  echo "reused helm ($WANT), build time 0s"
  echo "$HELM"
  exit 0
fi

t0=$SECONDS
# helm's Makefile derives the default Kubernetes version (used by `helm template` for
# .Capabilities and by `helm lint` for deprecation checks) from its client-go version;
# we read the same number from the module's go.mod and pass the same -X flags.
GOMOD="$(cd "$OUT" && "$GO" mod download -json "helm.sh/helm/v3@$HELM_VERSION" \
  | sed -n 's/^[[:space:]]*"GoMod": "\(.*\)",$/\1/p')"
CLIENT_GO="$(sed -n 's/^[[:space:]]*k8s.io\/client-go v0\.\([0-9]*\)\..*$/\1/p' "$GOMOD" | head -n1)"
if [[ -z "$CLIENT_GO" ]]; then
  echo "tools/helm/build.sh: cannot read the k8s.io/client-go version from $GOMOD" >&2
  exit 2
fi
LDFLAGS="-s -w \
  -X helm.sh/helm/v3/internal/version.version=$HELM_VERSION \
  -X helm.sh/helm/v3/internal/version.metadata= \
  -X helm.sh/helm/v3/internal/version.gitTreeState=clean \
  -X helm.sh/helm/v3/pkg/lint/rules.k8sVersionMajor=1 \
  -X helm.sh/helm/v3/pkg/lint/rules.k8sVersionMinor=$CLIENT_GO \
  -X helm.sh/helm/v3/pkg/chartutil.k8sVersionMajor=1 \
  -X helm.sh/helm/v3/pkg/chartutil.k8sVersionMinor=$CLIENT_GO"

# `go install module@version` builds with the module's own go.mod and go.sum (checked
# against the checksum database), i.e. exactly the dependency set helm released.
GOBIN="$OUT/.bin.tmp" "$GO" install -p 2 -trimpath -ldflags="$LDFLAGS" \
  "helm.sh/helm/v3/cmd/helm@$HELM_VERSION"
mv -f "$OUT/.bin.tmp/helm" "$HELM"
rmdir "$OUT/.bin.tmp"
echo "$WANT" > "$OUT/.helm.stamp"
echo "built helm ($WANT), build time $((SECONDS - t0))s"
"$HELM" version --short
echo "$HELM"
