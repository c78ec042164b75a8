#!/usr/bin/env bash
# demo.sh — FerroLB on the testbed, end to end: installs the controller and the speakers from
# config/ (as an admin would, with the membership Secret), applies the Layer 2 sample config, runs
# an echo Deployment behind a LoadBalancer Service on port 80, waits until its IP answers from the
# client namespace, and prints the IP and the command that curls it. `make demo` brings the testbed
# up first; `make testbed-down` removes everything.
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

log "installing FerroLB from config/default"
k apply --server-side -k "$ROOT/config/default" >/dev/null
if ! k -n ferrolb-system get secret ferrolb-memberlist >/dev/null 2>&1; then
  k -n ferrolb-system create secret generic ferrolb-memberlist \
    --from-literal=key="$(openssl rand -hex 32)" >/dev/null
fi
log "applying the Layer 2 sample (config/samples/ferrolb_v1alpha1_loadbalancerconfig_l2.yaml)"
k apply --server-side -f "$ROOT/config/samples/ferrolb_v1alpha1_loadbalancerconfig_l2.yaml" >/dev/null
k -n ferrolb-system rollout status deployment/ferrolb-controller --timeout=120s >/dev/null
k -n ferrolb-system rollout status daemonset/ferrolb-speaker --timeout=120s >/dev/null

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
        image: ferrolb-testbed/echo:latest
        args: [--port, "8080"]
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
wait_until 120 "an IP for Service demo/echo" test -n "$(ip_of)"
IP=$(ip_of)
log "Service demo/echo has $IP; waiting until it answers from the client namespace"
wait_until 120 "$IP to answer" ip netns exec "$TESTBED_CLIENT_NETNS" curl -sf -m 2 "http://$IP/"
ANSWER=$(ip netns exec "$TESTBED_CLIENT_NETNS" curl -sS -m 2 "http://$IP/")
cat <<MSG

FerroLB is up. Service demo/echo got $IP, announced with ARP by
  $(k -n demo get service echo -o jsonpath='{.status.conditions[?(@.type=="ferrolb.io/Announced")].message}')
and answers from the client namespace:
  $ANSWER

Try it:
  sudo ip netns exec $TESTBED_CLIENT_NETNS curl http://$IP/

More: set -a; . $STATE_DIR/env; set +a; \$TESTBED_KUBECTL -n demo describe service echo
Remove it all: sudo make testbed-down
MSG
