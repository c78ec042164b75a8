#!/usr/bin/env bash
# demo.sh [manifests|olm] — FerroLB on the testbed, end to end, as an admin installs it: the
# operator from config/default (`manifests`, `make demo`) or through OLM from the catalog
# (`olm`, `make demo-olm`: OLM v0 on the testbed, a CatalogSource serving catalog/, an
# OperatorGroup and a Subscription in ferrolb-system, as OperatorHub makes them); then the Layer 2
# sample config, from which the operator deploys the controller, the speakers and their membership
# key; waits until the config is Available, runs an echo Deployment behind a LoadBalancer Service
# on port 80, waits until its IP answers from the client namespace, and prints the IP and the
# command that curls it. The make targets bring the testbed up first; `make testbed-down` removes
# everything.
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
STATE_DIR=${TESTBED_STATE_DIR:-$ROOT/.testbed}
[ -r "$STATE_DIR/env" ] || { echo "demo: no testbed (run make testbed-up)" >&2; exit 1; }
set -a; . "$STATE_DIR/env"; set +a
k() { "$TESTBED_KUBECTL" "$@"; }
log() { printf 'demo: %s\n' "$*" >&2; }
wait_until() { # wait_until SECONDS WHAT COMMAND...
  local deadline=$((SECONDS + $1)) what=$2; shift 2
  until "$@" >/dev/null 2>&1; do
    [ $SECONDS -lt $deadline ] || { log "timed out waiting for $what"; return 1; }
    sleep 0.5
  done
}

METHOD=${1:-manifests}
case $METHOD in
  manifests)
    log "installing the FerroLB operator (kubectl apply --server-side -k config/default)"
    k apply --server-side -k "$ROOT/config/default" >/dev/null
    ;;
  olm)
    log "OLM v0 and a CatalogSource serving catalog/ (testbed.sh olm-up)"
    bash "$HERE/testbed.sh" olm-up
    set -a; . "$STATE_DIR/env"; set +a
    log "installing FerroLB through OLM: namespace, OperatorGroup (all namespaces), Subscription (stable)"
    k apply --server-side -f - >/dev/null <<YAML
apiVersion: v1
kind: Namespace
metadata: {name: ferrolb-system}
---
apiVersion: operators.coreos.com/v1
kind: OperatorGroup
metadata: {name: ferrolb, namespace: ferrolb-system}
spec: {}
---
apiVersion: operators.coreos.com/v1alpha1
kind: Subscription
metadata: {name: ferrolb, namespace: ferrolb-system}
spec:
  name: ferrolb
  channel: stable
  source: $TESTBED_CATALOG_SOURCE
  sourceNamespace: $TESTBED_OLM_NAMESPACE
  installPlanApproval: Automatic
YAML
    csv() { k -n ferrolb-system get subscription ferrolb -o jsonpath='{.status.installedCSV}'; }
    succeeded() { [ -n "$(csv)" ] && [ "$(k -n ferrolb-system get csv "$(csv)" -o jsonpath='{.status.phase}')" = Succeeded ]; }
    wait_until 300 "the ClusterServiceVersion to succeed" succeeded
    log "$(csv): Succeeded"
    ;;
  *) log "usage: demo.sh [manifests|olm]"; exit 2 ;;
esac
k -n ferrolb-system rollout status deployment/ferrolb-operator --timeout=120s >/dev/null
log "applying the Layer 2 sample (config/samples/ferrolb_v1alpha1_loadbalancerconfig_l2.yaml)"
# The webhook answers once a replica is ready and the API server has its CA (a second or so).
wait_until 60 "the admission webhook to answer" \
  k apply --server-side --dry-run=server -f "$ROOT/config/samples/ferrolb_v1alpha1_loadbalancerconfig_l2.yaml"
k apply --server-side -f "$ROOT/config/samples/ferrolb_v1alpha1_loadbalancerconfig_l2.yaml" >/dev/null
seen() { [ -n "$(k get lbc ferrolb -o jsonpath='{.status.observedGeneration}')" ]; }
wait_until 30 "the config to be seen by the operator" seen
k wait --for=condition=Available lbc/ferrolb --timeout=120s >/dev/null
k get lbc ferrolb >&2

log "running an echo Deployment behind a LoadBalancer Service (namespace demo)"
k apply --server-side -f - >/dev/null <<'YAML'
apiVersion: v1
kind: Namespace
metadata: {name: demo}
---
apiVersion: apps/v1
kind: Deployment
metadata: {name: echo, namespace: demo}
spec:
  replicas: 2
  selector: {matchLabels: {app: echo}}
  template:
    metadata: {labels: {app: echo}}
    spec:
      containers:
      - name: echo
        image: ferrolb-testbed/echo:v1   # the testbed's echo server, imported into every node
        imagePullPolicy: Never
        args: [--port, "8080"]
        env:
        - {name: POD_NAME, valueFrom: {fieldRef: {fieldPath: metadata.name}}}
        - {name: POD_NAMESPACE, valueFrom: {fieldRef: {fieldPath: metadata.namespace}}}
        - {name: NODE_NAME, valueFrom: {fieldRef: {fieldPath: spec.nodeName}}}
        - {name: POD_IP, valueFrom: {fieldRef: {fieldPath: status.podIP}}}
        ports: [{name: http, containerPort: 8080}]
        readinessProbe: {httpGet: {path: /readyz, port: http}, periodSeconds: 1}
---
apiVersion: v1
kind: Service
metadata: {name: echo, namespace: demo}
spec:
  type: LoadBalancer
  selector: {app: echo}
  ports: [{name: http, port: 80, targetPort: http}]
YAML
ip_of() { k -n demo get service echo -o jsonpath='{.status.loadBalancer.ingress[0].ip}'; }
has_ip() { [ -n "$(ip_of)" ]; }
wait_until 120 "an IP for Service demo/echo" has_ip
IP=$(ip_of)
log "Service demo/echo has $IP; waiting until it answers from the client namespace"
wait_until 120 "$IP to answer" ip netns exec "$TESTBED_CLIENT_NETNS" curl -sf -m 2 "http://$IP/"
ANSWER=$(ip netns exec "$TESTBED_CLIENT_NETNS" curl -sS -m 2 "http://$IP/")
cat <<MSG

FerroLB is up (installed from $METHOD). Service demo/echo got $IP, announced with ARP by
  $(k -n demo get service echo -o jsonpath='{.status.conditions[?(@.type=="ferrolb.io/Announced")].message}')
and answers from the client namespace:
  $ANSWER

Try it:
  sudo ip netns exec $TESTBED_CLIENT_NETNS curl http://$IP/

More: set -a; . $STATE_DIR/env; set +a; \$TESTBED_KUBECTL -n demo describe service echo
Remove it all: sudo make testbed-down
MSG
