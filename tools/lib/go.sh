# Sourced by the tools/*/build.sh scripts: find the one Go toolchain they build with.
#
# lw_find_go SCRIPT: sets GO (kept if the caller set it; else /usr/local/go/bin/go, else
# `go` on PATH) or exits 2 naming SCRIPT. Exports GOTOOLCHAIN=local so the installed
# toolchain is used exactly as it is and no other one is ever fetched.
lw_find_go() {
  if [[ -n "${GO:-}" ]]; then :
  elif [[ -x /usr/local/go/bin/go ]]; then GO=/usr/local/go/bin/go
  else GO="$(command -v go || true)"; fi
  if [[ -z "$GO" ]]; then
    echo "$1: no Go toolchain found (set GO=/path/to/go)" >&2
    exit 2
  fi
  export GOTOOLCHAIN=local
}
