#!/usr/bin/env bash
# build-k8s.sh — build the Kubernetes control plane the testbed runs, from the Go module proxy.
#
#   kube-apiserver, kube-controller-manager, kube-scheduler, kubectl, kubelet, kube-proxy
#                                                      <- k8s.io/kubernetes@$K8S_VERSION
#
# `go install k8s.io/kubernetes/cmd/...@vX` is refused because k8s.io/kubernetes' go.mod replaces its
# staging modules with ./staging/...; so we build from a throw-away main module that requires
# k8s.io/kubernetes and replaces every staging module (derived from the real go.mod) with its
# published v0.Y.Z tag, then run ONE `go build` of all six commands (they share most packages).
#
# Output: $FERROLB_TESTBED_CACHE/k8s-$K8S_VERSION/bin/{kube-apiserver,kube-controller-manager,kube-scheduler,kubectl,
#         kubelet,kube-proxy}
# (default cache: /var/cache/ferrolb-testbed). Reused when present; delete the directory to rebuild.
# Prints the bin directory on the last line of stdout.
set -euo pipefail

K8S_VERSION=${K8S_VERSION:-v1.34.4}
CACHE=${FERROLB_TESTBED_CACHE:-/var/cache/ferrolb-testbed}
OUT="$CACHE/k8s-$K8S_VERSION"
BINS=(kube-apiserver kube-controller-manager kube-scheduler kubectl kubelet kube-proxy)

log() { echo "[build-k8s $(date -u +%H:%M:%S)] $*" >&2; }
fail() {
  log "FAILED: $*"
  log "Retry with: bash tests/testbed/build-k8s.sh   (needs Go >= 1.24 and the Go module proxy;"
  log "the module and build caches are kept, so a retry resumes where it stopped)."
  exit 1
}

have_all() { for b in "${BINS[@]}"; do [ -x "$OUT/bin/$b" ] || return 1; done; }

if have_all; then
  log "reusing $OUT/bin ($("$OUT/bin/kube-apiserver" --version 2>/dev/null || echo '?'))"
  echo "$OUT/bin"
  exit 0
fi

command -v go >/dev/null || fail "go is not installed (apt-get install golang, or install Go >= 1.24)"
export GOTOOLCHAIN=local CGO_ENABLED=0 GOFLAGS=-mod=mod
STAGING="v0.${K8S_VERSION#v1.}"            # v1.34.4 -> v0.34.4
MAJOR=1
MINOR=$(echo "$K8S_VERSION" | cut -d. -f2)  # 34

mkdir -p "$CACHE" || fail "cannot create $CACHE (run as root or set FERROLB_TESTBED_CACHE)"
W=$(mktemp -d "$CACHE/build.XXXXXX")
trap 'rm -rf "$W"' EXIT
cd "$W"
start=$(date +%s)

log "step 1/4: go mod init (work dir $W)"
go mod init local/ferrolb-k8s-testbins >/dev/null 2>&1 || fail "go mod init"

log "step 2/4: reading k8s.io/kubernetes@$K8S_VERSION go.mod from the module proxy"
DL=$(go mod download -json "k8s.io/kubernetes@$K8S_VERSION" 2>&1) \
  || fail "go mod download k8s.io/kubernetes@$K8S_VERSION: $(echo "$DL" | grep -m1 -i error | sed 's/^[[:space:]]*//')"
GOMOD=$(echo "$DL" | sed -n 's/^[[:space:]]*"GoMod":[[:space:]]*"\(.*\)",\{0,1\}$/\1/p')
[ -s "$GOMOD" ] || fail "could not find the go.mod of k8s.io/kubernetes@$K8S_VERSION (got '$GOMOD')"
MODS=$(sed -n 's#^[[:space:]]*\(k8s\.io/[^[:space:]]*\)[[:space:]]*=>[[:space:]]*\./staging/.*#\1#p' "$GOMOD")
[ -n "$MODS" ] || fail "no staging replace lines found in $GOMOD"
log "staging modules ($(echo "$MODS" | wc -w)) -> $STAGING: $(echo $MODS)"
for m in $MODS; do go mod edit -replace="$m=$m@$STAGING"; done
# The wrapper module's go line sets GODEBUG defaults; k8s 1.34 is built upstream with go1.24 semantics.
go mod edit -godebug=default=go1.24 2>/dev/null || true

log "step 3/4: resolving dependencies (downloads ~1 GB of modules on a cold cache)"
PKGS=()
for b in "${BINS[@]}"; do PKGS+=("k8s.io/kubernetes/cmd/$b"); done
# A tools file keeps the commands imported by the main module (so their requirements stay pinned).
{
  echo '//go:build tools'
  echo 'package tools'
  echo 'import ('
  for p in "${PKGS[@]}"; do echo "  _ \"$p\""; done
  echo ')'
} > tools.go
GETS=()
for p in "${PKGS[@]}"; do GETS+=("$p@$K8S_VERSION"); done
go get "${GETS[@]}" || fail "go get ${GETS[*]}"
grep -q "k8s.io/kubernetes $K8S_VERSION" go.mod || fail "go.mod does not pin k8s.io/kubernetes $K8S_VERSION: $(grep k8s.io/kubernetes go.mod)"

BD=$(date -u +%Y-%m-%dT%H:%M:%SZ)
LDF="-s -w"
for p in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
  LDF="$LDF -X $p.gitVersion=$K8S_VERSION -X $p.gitMajor=$MAJOR -X $p.gitMinor=$MINOR -X $p.gitTreeState=clean -X $p.buildDate=$BD"
done
mkdir -p "$OUT/bin.tmp"
log "step 4/4: go build ${BINS[*]} (measured: ~6 min cold on 2 cores, ~2 min with a warm Go build cache)"
go build -trimpath -v -ldflags "$LDF" -o "$OUT/bin.tmp/" "${PKGS[@]}" 2>&1 \
  | awk '{n++; if (n % 200 == 0) { printf "[build-k8s] %d packages compiled (last: %s)\n", n, $0; fflush() } }' >&2
[ "${PIPESTATUS[0]}" = 0 ] || fail "go build (see the compiler output above)"
for b in "${BINS[@]}"; do [ -x "$OUT/bin.tmp/$b" ] || fail "go build did not produce $b"; done
rm -rf "$OUT/bin" && mv "$OUT/bin.tmp" "$OUT/bin"
log "built in $(( $(date +%s) - start ))s: $("$OUT/bin/kube-apiserver" --version)"
echo "$OUT/bin"
