#!/usr/bin/env bash
# olm-check.sh — the committed OLM bundle and catalog, through the real tools (build-olm.sh):
#
#   olm-check.sh            operator-sdk bundle validate ./bundle --select-optional suite=operatorframework
#                           opm validate catalog
#                           Fails on any error, and on any warning not listed in KNOWN_WARNINGS
#                           (each with its reason). Needs no cluster.
#   olm-check.sh scorecard [OUT.json]
#                           operator-sdk scorecard ./bundle (the basic and OLM suites of
#                           bundle/tests/scorecard/config.yaml) on the running testbed, in a namespace
#                           made for it and deleted after; the nodes run the images images.sh built
#                           (scorecard-test from source, busybox as the untar image). Writes the
#                           results as JSON to OUT.json (default $TESTBED_RUN_DIR/scorecard.json),
#                           prints them as text, and fails unless every test passed.
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
log() { echo "[olm-check $(date -u +%H:%M:%S)] $*" >&2; }

declare -A TOOL
while read -r name dir; do TOOL[$name]=$dir/bin; done < <(bash "$ROOT/tests/testbed/build-olm.sh")

# scorecard [OUT.json]: see above.
scorecard() {
  local env_file=${TESTBED_STATE_DIR:-$ROOT/.testbed}/env
  [ -s "$env_file" ] || { log "FAILED: the testbed is not up (make testbed-up)"; exit 1; }
  set -a; . "$env_file"; set +a
  local out=${1:-$TESTBED_RUN_DIR/scorecard.json} ns=ferrolb-scorecard rc=0
  local images; images=${FERROLB_TESTBED_CACHE:-/var/cache/ferrolb-testbed}/images/images.txt
  local busybox; busybox=$(awk '$1 == "busybox.tar" {print $2}' "$images")
  [ -n "$busybox" ] || { log "FAILED: no busybox image in $images (bash tests/testbed/images.sh)"; exit 1; }
  k() { "$TESTBED_KUBECTL" --kubeconfig="$KUBECONFIG" "$@"; }
  k delete namespace "$ns" --ignore-not-found --wait >/dev/null
  k create namespace "$ns" >/dev/null
  k label namespace "$ns" pod-security.kubernetes.io/enforce=restricted >/dev/null
  # The suites read only the bundle (mounted in the pod); the pods need no API access, so they run
  # as the namespace's default ServiceAccount, which may do nothing.
  log "operator-sdk scorecard ./bundle (namespace $ns, untar image $busybox)"
  (cd "$ROOT" && "${TOOL[operator-sdk]}/operator-sdk" scorecard ./bundle --kubeconfig "$KUBECONFIG" \
    --namespace "$ns" --service-account default --untar-image "$busybox" --storage-image "$busybox" \
    --pod-security restricted --test-output "$TESTBED_RUN_DIR/scorecard-output" --wait-time 180s \
    --output json) >"$out.tmp" || rc=$?
  k delete namespace "$ns" --wait=false >/dev/null || true
  mv -f "$out.tmp" "$out"
  # one line per test: its name and state, then its errors and suggestions
  jq -r '.items[].status.results[] | "\(.state)\t\(.name)" , (.errors // [] | .[] | "  error: \(.)"), (.suggestions // [] | .[] | "  suggestion: \(.)")' "$out" >&2 \
    || { log "FAILED: operator-sdk scorecard wrote no results (exit $rc): $(head -c 2000 "$out")"; exit 1; }
  local total failed
  total=$(jq '[.items[].status.results[]] | length' "$out")
  failed=$(jq '[.items[].status.results[] | select(.state != "pass")] | length' "$out")
  if [ "$rc" != 0 ] || [ "$total" = 0 ] || [ "$failed" != 0 ]; then
    log "FAILED: $failed of $total scorecard tests did not pass (operator-sdk exit $rc); results in $out"
    exit 1
  fi
  log "scorecard: all $total tests passed; results in $out"
}

if [ "${1:-}" = scorecard ]; then
  shift
  scorecard "$@"
  exit 0
fi

# Warnings that are understood and accepted (a regular expression each, and why):
KNOWN_WARNINGS=(
  # The validator (operator-framework/api, removed_apis.go) flags every RBAC rule on the group and
  # resource events.k8s.io/events as "removed in v1.25", because events.k8s.io/v1beta1 was; a rule
  # names no version, and the operator writes events.k8s.io/v1, which is current. A false positive.
  'removed in v1\.25.*Migrate the API\(s\) for events: \(\[\\"ClusterServiceVersion\.Spec\.InstallStrategy\.StrategySpec\.ClusterPermissions\[0\]\.Rules\[[0-9]+\]\\"\]\)'
  # The validator (csv.go, matchGVKProvidedAPIs) wants an alm-example of every owned CRD. The
  # BGPSession has none on purpose: the speakers write them (one per node and peer), people only
  # read them, and the CSV marks it internal (operators.operatorframework.io/internal-objects), so
  # the console offers no form an example would fill.
  'Value ferrolb\.io/v1alpha1, Kind=BGPSession: provided API should have an example annotation'
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
