#!/usr/bin/env bash
# demo.sh [manifests|olm|bgp] — FerroLB on the testbed, end to end, as an admin installs it: the
# operator from config/default (`manifests`, `make demo`) or through OLM from the catalog
# (`olm`, `make demo-olm`: OLM v0 on the testbed, a CatalogSource serving catalog/, an
# OperatorGroup and a Subscription in ferrolb-system, as OperatorHub makes them); then the Layer 2
# sample config, from which the operator deploys the controller, the speakers and their membership
# key; waits until the config is Available, runs an echo Deployment behind a LoadBalancer Service
# on port 80, waits until its IP answers from the client namespace, and prints the IP and the
# command that curls it. `bgp` (`make demo-bgp`) installs from config/default too, with a BGP
# config instead: a pool in 203.0.113.128/25 (which the client has no route to) announced by every
# node to the testbed's routers FRR, BIRD and GoBGP; it waits until FRR routes the Service's IP
# over every node, routes it in the client namespace via FRR, and prints the commands that curl it
# that way. The make targets bring the testbed up first; `make testbed-down` removes everything.
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
# how FerroLB is installed, and how the Service's IP is announced
INSTALL=$METHOD ANNOUNCE=l2
[ "$METHOD" != bgp ] || { INSTALL=manifests ANNOUNCE=bgp; }
case $INSTALL in
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
  *) log "usage: demo.sh [manifests|olm|bgp]"; exit 2 ;;
esac
k -n ferrolb-system rollout status deployment/ferrolb-operator --timeout=120s >/dev/null
# The BGP config: every router of the testbed a peer of every node (the GoBGP router accepts only
# AS $TESTBED_GOBGP_PEER_ASN; FRR and BIRD take any external AS), one advertisement of the pool to
# all of them.
bgp_config() {
  local asn=${TESTBED_GOBGP_PEER_ASN:-64513}
  cat <<YAML
apiVersion: ferrolb.io/v1alpha1
kind: LoadBalancerConfig
metadata: {name: ferrolb}
spec:
  addressPools:
  - name: bgp
    addresses: [203.0.113.160/27, "2001:db8:1b::/120"]
  bgpPeers:
  - {name: frr, myASN: $asn, peerASN: $TESTBED_ROUTER_ASN, peerAddress: "$TESTBED_ROUTER_IP", holdTime: 9s}
  - {name: frr-v6, myASN: $asn, peerASN: $TESTBED_ROUTER_ASN, peerAddress: "$TESTBED_ROUTER_IPV6", holdTime: 9s}
  - {name: bird, myASN: $asn, peerASN: $TESTBED_BIRD_ASN, peerAddress: "$TESTBED_BIRD_IP", holdTime: 9s}
  - {name: gobgp, myASN: $asn, peerASN: $TESTBED_GOBGP_ASN, peerAddress: "$TESTBED_GOBGP_IP", holdTime: 9s}
  bgpAdvertisements:
  - name: all
    communities: ["64512:100", "large:$asn:1:2"]
YAML
}
SAMPLE=$ROOT/config/samples/ferrolb_v1alpha1_loadbalancerconfig_l2.yaml
apply_config() { # apply_config ARGS... : kubectl apply --server-side ARGS of the demo's config
  if [ "$ANNOUNCE" = bgp ]; then bgp_config | k apply --server-side "$@" -f -
  else k apply --server-side "$@" -f "$SAMPLE"; fi
}
if [ "$ANNOUNCE" = bgp ]; then
  log "applying a BGP config: pool 203.0.113.160/27 announced by every node to FRR, BIRD and GoBGP"
else
  log "applying the Layer 2 sample (config/samples/ferrolb_v1alpha1_loadbalancerconfig_l2.yaml)"
fi
# The webhook answers once a replica is ready and the API server has its CA (a second or so).
wait_until 60 "the admission webhook to answer" apply_config --dry-run=server
apply_config >/dev/null
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
if [ "$ANNOUNCE" = bgp ]; then
  # an address of the BGP pool (after an earlier `make demo`, the Service moves off its L2 one)
  has_ip() { case $(ip_of) in 203.0.113.1[6-8][0-9] | 203.0.113.19[01]) ;; *) return 1 ;; esac; }
else
  has_ip() { [ -n "$(ip_of)" ]; }
fi
wait_until 120 "an IP for Service demo/echo" has_ip
IP=$(ip_of)
CLI=$TESTBED_CLIENT_NETNS
if [ "$ANNOUNCE" = bgp ]; then
  # FRR installs what it learns in its namespace's kernel: one route, a next hop per node.
  frr_route() { ip -n "$TESTBED_ROUTER_NETNS" route show "$IP/32"; }
  every_node() { local r n; r=$(frr_route); for n in $TESTBED_NODE_IPS; do grep -q "via $n " <<<"$r" || return 1; done; }
  log "Service demo/echo has $IP; waiting until FRR routes it over every node"
  wait_until 120 "FRR to route $IP over every node ($TESTBED_NODE_IPS)" every_node
  # The client reaches 203.0.113.128/25 only through a host route via the router.
  log "routing $IP via FRR ($TESTBED_ROUTER_IP) in the client namespace; waiting until it answers"
  ip netns exec "$CLI" ip route replace "$IP/32" via "$TESTBED_ROUTER_IP"
else
  log "Service demo/echo has $IP; waiting until it answers from the client namespace"
fi
wait_until 120 "$IP to answer" ip netns exec "$CLI" curl -sf -m 2 "http://$IP/"
ANSWER=$(ip netns exec "$CLI" curl -sS -m 2 "http://$IP/")
if [ "$ANNOUNCE" = bgp ]; then
  cat <<MSG

FerroLB is up (installed from $INSTALL). Service demo/echo got $IP, announced over BGP by every
node to FRR ($TESTBED_ROUTER_IP), BIRD ($TESTBED_BIRD_IP) and GoBGP ($TESTBED_GOBGP_IP); FRR routes it over all of them:
$(frr_route | sed 's/^/  /')
and the client, through FRR, gets:
  $ANSWER

Try it (the demo has added the host route already; it is the client's only way to $IP):
  sudo ip netns exec $CLI ip route replace $IP/32 via $TESTBED_ROUTER_IP
  sudo ip netns exec $CLI curl http://$IP/

The routers' view:
  sudo ip netns exec $TESTBED_ROUTER_NETNS vtysh --vty_socket $TESTBED_ROUTER_VTY -c 'show bgp ipv4 unicast $IP/32'
  sudo ip netns exec $TESTBED_BIRD_NETNS birdc -s $TESTBED_BIRD_CTL show route for $IP/32 all
  sudo ip netns exec $TESTBED_GOBGP_NETNS gobgp global rib -a ipv4

More: set -a; . $STATE_DIR/env; set +a; \$TESTBED_KUBECTL -n demo describe service echo
Remove it all: sudo make testbed-down
MSG
else
  cat <<MSG

FerroLB is up (installed from $METHOD). Service demo/echo got $IP, announced with ARP by
  $(k -n demo get service echo -o jsonpath='{.status.conditions[?(@.type=="ferrolb.io/Announced")].message}')
and answers from the client namespace:
  $ANSWER

Try it:
  sudo ip netns exec $CLI curl http://$IP/

More: set -a; . $STATE_DIR/env; set +a; \$TESTBED_KUBECTL -n demo describe service echo
Remove it all: sudo make testbed-down
MSG
fi
