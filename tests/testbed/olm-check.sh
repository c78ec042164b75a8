#!/usr/bin/env bash
# olm-check.sh — the committed OLM bundle and catalog, through the real tools (build-olm.sh):
#   operator-sdk bundle validate ./bundle --select-optional suite=operatorframework
#   opm validate catalog
# Fails on any error, and on any warning not listed in KNOWN_WARNINGS (each with its reason).
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
log() { echo "[olm-check $(date -u +%H:%M:%S)] $*" >&2; }

declare -A TOOL
while read -r name dir; do TOOL[$name]=$dir/bin; done < <(bash "$ROOT/tests/testbed/build-olm.sh")

# Warnings that are understood and accepted (a regular expression each, and why):
KNOWN_WARNINGS=(
  # The validator (operator-framework/api, removed_apis.go) flags every RBAC rule on the group and
  # resource events.k8s.io/events as "removed in v1.25", because events.k8s.io/v1beta1 was; a rule
  # names no version, and the operator writes events.k8s.io/v1, which is current. A false positive.
  'removed in v1\.25.*Migrate the API\(s\) for events: \(\[\\"ClusterServiceVersion\.Spec\.InstallStrategy\.StrategySpec\.ClusterPermissions\[0\]\.Rules\[[0-9]+\]\\"\]\)'
)

cd "$ROOT"
log "operator-sdk bundle validate ./bundle --select-optional suite=operatorframework"
out=$("${TOOL[operator-sdk]}/operator-sdk" bundle validate ./bundle --select-optional suite=operatorframework 2>&1) \
  || { echo "$out" >&2; log "FAILED: the bundle does not validate"; exit 1; }
echo "$out" >&2
unexplained=$(grep -iE 'level=warn|WARN' <<<"$out" || true)
for known in "${KNOWN_WARNINGS[@]}"; do unexplained=$(grep -vE "$known" <<<"$unexplained" || true); done
if [ -n "$unexplained" ]; then
  log "FAILED: warnings nobody explained (fix them, or add them to KNOWN_WARNINGS with a reason):"
  echo "$unexplained" >&2
  exit 1
fi
log "opm validate catalog"
"${TOOL[opm]}/opm" validate catalog || { log "FAILED: the catalog does not validate"; exit 1; }
log "bundle and catalog valid"
