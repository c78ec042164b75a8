#!/usr/bin/env bash
# build-olm.sh — build the OLM tools FerroLB's bundle is checked and installed with, from the Go
# module proxy, at pinned versions:
#
#   opm           <- github.com/operator-framework/operator-registry@$OPM_VERSION (cmd/opm)
#   operator-sdk  <- github.com/operator-framework/operator-sdk@$OPERATOR_SDK_VERSION (cmd/operator-sdk,
#                    and images/scorecard-test: the runner of the scorecard's basic and OLM suites,
#                    which images.sh puts in an image FROM scratch for the testbed's kubelets)
#   olm, catalog  <- github.com/operator-framework/operator-lifecycle-manager@$OLM_VERSION (OLM v0),
#                    with that module's CRDs (deploy/chart/crds) in crds/
#
# `go install MODULE@VERSION` is refused by the proxy here (its deprecation check answers 403), so
# each tool is built from a throw-away main module that requires it (as build-k8s.sh does).
#
# Output: $FERROLB_TESTBED_CACHE/olm-tools/{opm-V,operator-sdk-V,olm-V}/{bin/,crds/}
# (default cache: /var/cache/ferrolb-testbed). Reused when present; delete a directory to rebuild
# that tool. Prints "NAME DIR" per tool on stdout.
# Measured on 2 cores, cold Go caches: opm ~5 min, operator-sdk ~5.5 min, OLM ~5 min.
set -euo pipefail

OPM_VERSION=${OPM_VERSION:-v1.73.0}
OPERATOR_SDK_VERSION=${OPERATOR_SDK_VERSION:-v1.42.2}   # v1.42.3 needs a module the proxy refuses
OLM_VERSION=${OLM_VERSION:-v0.46.0}
CACHE=${FERROLB_TESTBED_CACHE:-/var/cache/ferrolb-testbed}/olm-tools

log() { echo "[build-olm $(date -u +%H:%M:%S)] $*" >&2; }
fail() {
  log "FAILED: $*"
  log "Retry with: bash tests/testbed/build-olm.sh   (needs Go >= 1.24 and the Go module proxy;"
  log "the module and build caches are kept, so a retry resumes where it stopped)."
  exit 1
}

command -v go >/dev/null || fail "go is not installed"
export GOTOOLCHAIN=local CGO_ENABLED=0 GOFLAGS=-mod=mod
mkdir -p "$CACHE" || fail "cannot create $CACHE (run as root or set FERROLB_TESTBED_CACHE)"
WORK=
trap '[ -z "$WORK" ] || rm -rf "$WORK"' EXIT

# build NAME MODULE VERSION TAGS LDFLAGS CMD...: go build MODULE/CMD... into $CACHE/NAME-VERSION/bin.
build() {
  local name=$1 module=$2 version=$3 tags=$4 ldflags=$5; shift 5
  local out="$CACHE/$name-$version" c ok=1
  for c in "$@"; do [ -x "$out/bin/$(basename "$c")" ] || ok=0; done
  if [ "$ok" = 1 ]; then
    log "reusing $out/bin"
    echo "$name $out"
    return
  fi
  local w start; w=$(mktemp -d "$CACHE/build.XXXXXX"); start=$(date +%s)
  WORK=$w
  cd "$w"
  go mod init "local/ferrolb-$name" >/dev/null 2>&1 || fail "go mod init"
  local pkgs=() gets=() c
  for c in "$@"; do pkgs+=("$module/$c"); gets+=("$module/$c@$version"); done
  { echo '//go:build tools'; echo 'package tools'; echo 'import ('
    for c in "${pkgs[@]}"; do echo "  _ \"$c\""; done; echo ')'; } > tools.go
  log "$name $version: resolving $module (downloads modules on a cold cache)"
  local dl gomod
  dl=$(go mod download -json "$module@$version" 2>&1) || fail "go mod download $module@$version"
  gomod=$(echo "$dl" | sed -n 's/^[[:space:]]*"GoMod":[[:space:]]*"\(.*\)",\{0,1\}$/\1/p')
  [ -s "$gomod" ] || fail "no go.mod for $module@$version"
  # A dependency's replace directives do not apply to our main module: copy the tool's own (those
  # naming another module at a version, not a local path).
  local lhs rhs
  while IFS='|' read -r lhs rhs; do
    set -- $rhs
    [ $# = 2 ] || continue
    go mod edit -replace="${lhs// /@}=$1@$2"
  done < <(sed -n -e '/^replace (/,/^)/{/=>/p}' -e '/^replace [^(]/{s/^replace //p}' "$gomod" \
             | sed -e 's/^[[:space:]]*//' -e 's/[[:space:]]*=>[[:space:]]*/|/' -e 's/[[:space:]]*$//')
  go get "${gets[@]}" || fail "go get ${gets[*]}"
  mkdir -p "$out/bin.tmp"
  log "$name $version: go build ${pkgs[*]}"
  go build -trimpath -tags "$tags" -ldflags "-s -w $ldflags" -o "$out/bin.tmp/" "${pkgs[@]}" \
    || fail "go build $name"
  if [ "$name" = olm ]; then
    # OLM's CRDs, from the module's own chart (quickstart/crds.yaml lacks OLMConfig)
    local src; src=$(go list -m -f '{{.Dir}}' "$module")
    rm -rf "$out/crds" && mkdir -p "$out/crds" && cp "$src"/deploy/chart/crds/*.yaml "$out/crds/"
    chmod -R u+w "$out/crds"
  fi
  rm -rf "$out/bin" && mv "$out/bin.tmp" "$out/bin"
  cd / && rm -rf "$w" && WORK=
  log "$name $version: built in $(( $(date +%s) - start ))s"
  echo "$name $out"
}

build opm github.com/operator-framework/operator-registry "$OPM_VERSION" json1,containers_image_openpgp \
  "-X github.com/operator-framework/operator-registry/cmd/opm/version.gitCommit=$OPM_VERSION -X github.com/operator-framework/operator-registry/cmd/opm/version.opmVersion=$OPM_VERSION" \
  cmd/opm
build operator-sdk github.com/operator-framework/operator-sdk "$OPERATOR_SDK_VERSION" containers_image_openpgp \
  "-X github.com/operator-framework/operator-sdk/internal/version.Version=$OPERATOR_SDK_VERSION" \
  cmd/operator-sdk images/scorecard-test
build olm github.com/operator-framework/operator-lifecycle-manager "$OLM_VERSION" containers_image_openpgp \
  "-X github.com/operator-framework/operator-lifecycle-manager/pkg/version.OLMVersion=$OLM_VERSION" \
  cmd/olm cmd/catalog
