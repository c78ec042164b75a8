#!/usr/bin/env bash
# testbed.sh — a real Kubernetes cluster with real nodes, pods and routers on one machine.
#
#   testbed.sh up       bring it up (idempotent: reuses a healthy testbed), writes .testbed/env
#   testbed.sh down     remove every namespace, process and file of every testbed of this state dir
#   testbed.sh status   show what is running
#   testbed.sh olm-up [CATALOG_DIR]   add OLM v0 and a CatalogSource serving CATALOG_DIR (default
#                       catalog/) to the running testbed (see olm_up)
#   testbed.sh olm-down stop OLM again (its objects stay)
#
# Topology (all inside network namespaces named ftb-<run>-*; nothing is added to the root namespace
# except one forwarder process listening on 127.0.0.1:<random port> for the admin kubeconfig):
#
#   ftb-<run>-br   bridge "br0"; every other namespace has a veth "eth0" plugged into it
#   ftb-<run>-cp   198.51.100.126  etcd, kube-apiserver (:6443), kube-controller-manager, kube-scheduler
#   ftb-<run>-rtr  198.51.100.1    FRR zebra+bgpd+bfdd (AS 64512), passive peer of every node (v4 and v6), forwards
#   ftb-<run>-bird 198.51.100.2    BIRD 2 (AS 64520), passive peer of every node (any peer AS)
#   ftb-<run>-gobgp 198.51.100.3   gobgpd (AS 64530), passive peer of every node (peer AS 64513)
#   ftb-<run>-cli  198.51.100.100  a client namespace for curl
#   ftb-<run>-nI   198.51.100.1I   node-I: containerd, kubelet, kube-proxy and its hostNetwork pods
#                  (I = 1..4); its pods' namespaces are containerd's (CNI ptp + host-local: pod
#                  IPs from the node's podCIDR, a /27 of 198.51.100.128/25 allocated by
#                  kube-controller-manager)
#   IPv6: 2001:db8:100::<same last number>/48 on the bridge; IPv6 pod CIDRs are /64s of
#   2001:db8:100:100::/56 (inside the on-link /48, like the IPv4 pod CIDRs inside the /24).
#
# Env: TESTBED_NODES (default 3, max 4), K8S_VERSION (default v1.34.4),
#      FERROLB_TESTBED_CACHE (default /var/cache/ferrolb-testbed), CARGO (default cargo),
#      TESTBED_PROFILE (cargo profile dir of the FerroLB binaries, default debug),
#      TESTBED_CARGO_FLAGS (default --locked),
#      TESTBED_STATE_DIR (default <checkout>/.testbed: where env is written; one testbed per state dir).
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
# where .testbed/env lives; each testbed belongs to one state dir (default: this checkout's .testbed)
STATE_DIR=${TESTBED_STATE_DIR:-$ROOT/.testbed}
ENV_FILE="$STATE_DIR/env"
NODES=${TESTBED_NODES:-3}
CARGO=${CARGO:-cargo}
PROFILE=${TESTBED_PROFILE:-debug}
TARGET_DIR=${CARGO_TARGET_DIR:-$ROOT/target}
API_IP=198.51.100.126
API_PORT=6443

log() { echo "[testbed $(date -u +%H:%M:%S)] $*" >&2; }
die() { log "ERROR: $*"; exit 1; }

# ---------------------------------------------------------------------------------------------
# process bookkeeping: every process we start gets RUN/pids/NAME.pid = "PID STARTTIME", so that
# down kills exactly the processes we started (a recycled PID has another start time).
starttime() { awk '{print $22}' "/proc/$1/stat" 2>/dev/null || true; }
record_pid() { echo "$2 $(starttime "$2")" >"$RUN/pids/$1.pid"; }
pid_alive() { # pid_alive FILE -> prints pid if the recorded process still runs
  local f=$1 pid st
  [ -f "$f" ] || return 1
  read -r pid st <"$f" 2>/dev/null || return 1
  [ -n "${pid:-}" ] && [ -d "/proc/$pid" ] || return 1
  [ -z "${st:-}" ] || [ "$(starttime "$pid")" = "$st" ] || return 1
  echo "$pid"
}
bg_in() { # bg_in NAME NETNS CMD... : run CMD in NETNS (nsenter: no new mount namespace), log, record
  local name=$1 ns=$2; shift 2
  nsenter --net="/run/netns/$ns" -- "$@" </dev/null >"$RUN/logs/$name.log" 2>&1 &
  record_pid "$name" $!
}
gone() { # gone PID: the process has exited (a zombie counts as exited)
  [ -d "/proc/$1" ] || return 0
  [ "$(awk '/^State:/{print $2}' "/proc/$1/status" 2>/dev/null)" = Z ]
}
wait_for() { # wait_for SECONDS WHAT CMD...
  local t=$1 what=$2; shift 2
  local end=$(( $(date +%s) + t ))
  until "$@" >/dev/null 2>&1; do
    [ "$(date +%s)" -lt "$end" ] || { log "timeout (${t}s) waiting for $what"; return 1; }
    sleep 0.5
  done
}

# ---------------------------------------------------------------------------------------------
gen_pki() {
  local P=$RUN/pki; mkdir -p "$P"; (
  cd "$P"
  openssl req -x509 -newkey rsa:2048 -nodes -keyout ca.key -out ca.crt -days 365 -subj "/CN=ferrolb-testbed-ca" 2>/dev/null
  openssl req -newkey rsa:2048 -nodes -keyout apiserver.key -out apiserver.csr -subj "/CN=kube-apiserver" 2>/dev/null
  printf 'subjectAltName=IP:127.0.0.1,IP:%s,IP:10.96.0.1,DNS:localhost,DNS:kubernetes,DNS:kubernetes.default,DNS:kubernetes.default.svc,DNS:kubernetes.default.svc.cluster.local\nextendedKeyUsage=serverAuth\nkeyUsage=digitalSignature,keyEncipherment\n' "$API_IP" >apiserver.ext
  openssl x509 -req -in apiserver.csr -CA ca.crt -CAkey ca.key -CAcreateserial -days 365 -extfile apiserver.ext -out apiserver.crt 2>/dev/null
  printf 'extendedKeyUsage=clientAuth\nkeyUsage=digitalSignature,keyEncipherment\n' >client.ext
  client() { # client FILE SUBJECT
    openssl req -newkey rsa:2048 -nodes -keyout "$1.key" -out "$1.csr" -subj "$2" 2>/dev/null
    openssl x509 -req -in "$1.csr" -CA ca.crt -CAkey ca.key -CAcreateserial -days 365 -extfile client.ext -out "$1.crt" 2>/dev/null
  }
  client admin "/O=system:masters/CN=testbed-admin"
  client kcm "/CN=system:kube-controller-manager"
  client scheduler "/CN=system:kube-scheduler"
  client apiserver-kubelet "/O=system:masters/CN=kube-apiserver-kubelet-client"
  client kube-proxy "/CN=system:kube-proxy"
  local i; for i in $(seq 1 "$NODES"); do
    client "node-$i" "/O=system:nodes/CN=system:node:node-$i"
    # the node's kubelet API serving certificate (kubectl logs goes through it)
    openssl req -newkey rsa:2048 -nodes -keyout "kubelet-node-$i.key" -out "kubelet-node-$i.csr" -subj "/O=system:nodes/CN=system:node:node-$i" 2>/dev/null
    printf 'subjectAltName=IP:198.51.100.1%s,IP:2001:db8:100::1%s,DNS:node-%s\nextendedKeyUsage=serverAuth\nkeyUsage=digitalSignature,keyEncipherment\n' "$i" "$i" "$i" >"kubelet-node-$i.ext"
    openssl x509 -req -in "kubelet-node-$i.csr" -CA ca.crt -CAkey ca.key -CAcreateserial -days 365 -extfile "kubelet-node-$i.ext" -out "kubelet-node-$i.crt" 2>/dev/null
  done
  # aggregation layer (front proxy): its own CA, as kubeadm does
  openssl req -x509 -newkey rsa:2048 -nodes -keyout front-proxy-ca.key -out front-proxy-ca.crt -days 365 -subj "/CN=front-proxy-ca" 2>/dev/null
  openssl req -newkey rsa:2048 -nodes -keyout front-proxy-client.key -out front-proxy-client.csr -subj "/CN=front-proxy-client" 2>/dev/null
  openssl x509 -req -in front-proxy-client.csr -CA front-proxy-ca.crt -CAkey front-proxy-ca.key -CAcreateserial -days 365 -extfile client.ext -out front-proxy-client.crt 2>/dev/null
  openssl genrsa -out sa.key 2048 2>/dev/null
  openssl rsa -in sa.key -pubout -out sa.pub 2>/dev/null
  )
}

kubeconfig() { # kubeconfig OUT SERVER CERTNAME
  local b64; b64() { base64 -w0 <"$1"; }
  cat >"$1" <<EOF
apiVersion: v1
kind: Config
clusters:
- name: ferrolb-testbed
  cluster:
    server: $2
    certificate-authority-data: $(b64 "$RUN/pki/ca.crt")
users:
- name: $3
  user:
    client-certificate-data: $(b64 "$RUN/pki/$3.crt")
    client-key-data: $(b64 "$RUN/pki/$3.key")
contexts:
- name: ferrolb-testbed
  context:
    cluster: ferrolb-testbed
    user: $3
current-context: ferrolb-testbed
EOF
}

# ---------------------------------------------------------------------------------------------
# network
ns_new() { ip netns add "$1"; echo "$1" >>"$RUN/netns"; ip -n "$1" link set lo up; }
plug() { # plug NS PORTNAME V4 V6 : veth eth0 in NS <-> PORTNAME on the bridge
  ip -n "$BR" link add "$2" type veth peer name eth0 netns "$1"
  ip -n "$BR" link set "$2" master br0 up
  ip -n "$1" addr add "$3/24" dev eth0
  ip -n "$1" addr add "$4/48" dev eth0 nodad
  ip -n "$1" link set eth0 up
}

# add_route NS [-6] ROUTE... : a route of NS, also written to RUN/routes/NS.sh, which puts every
# route of NS back (the kernel drops gateway routes when a link goes down: Testbed::set_node_link
# runs it after bringing a node's link up again)
add_route() {
  local ns=$1 fam=""; shift
  [ "$1" = -6 ] && { fam=-6; shift; }
  mkdir -p "$RUN/routes"
  echo "ip -n $ns $fam route replace $*" >>"$RUN/routes/$ns.sh"
  ip -n "$ns" $fam route replace "$@"
}

net_up() {
  BR="ftb-$SFX-br"
  ns_new "$BR"
  ip -n "$BR" link add br0 type bridge
  ip -n "$BR" link set br0 up
  ns_new "ftb-$SFX-cp";  plug "ftb-$SFX-cp" cp "$API_IP" 2001:db8:100::126
  ns_new "ftb-$SFX-rtr"; plug "ftb-$SFX-rtr" rtr 198.51.100.1 2001:db8:100::1
  ns_new "ftb-$SFX-cli"; plug "ftb-$SFX-cli" cli 198.51.100.100 2001:db8:100::100
  # Layer 2 load-balancer addresses are on the client's LAN: 203.0.113.0/25 on-link (the nodes
  # answer ARP for them); 2001:db8:100::/48 already is. Host routes via the router (BGP tests)
  # are more specific and win.
  ip -n "ftb-$SFX-cli" route add 203.0.113.0/25 dev eth0
  # The client never follows ICMP redirects: a node that forwards a packet back out onto the
  # bridge (to its default route, e.g. for a load-balancer address it no longer serves) would
  # otherwise make the client send to the router for that address for the next 10 minutes,
  # whatever its routes say, and later tests that reuse the address would fail.
  ip netns exec "ftb-$SFX-cli" sysctl -qw net.ipv4.conf.all.accept_redirects=0 \
    net.ipv4.conf.eth0.accept_redirects=0 net.ipv6.conf.all.accept_redirects=0 \
    net.ipv6.conf.eth0.accept_redirects=0
  ns_new "ftb-$SFX-bird";  plug "ftb-$SFX-bird" bird 198.51.100.2 2001:db8:100::2
  ns_new "ftb-$SFX-gobgp"; plug "ftb-$SFX-gobgp" gobgp 198.51.100.3 2001:db8:100::3
  local i ns
  for i in $(seq 1 "$NODES"); do
    ns="ftb-$SFX-n$i"; ns_new "$ns"; plug "$ns" "n$i" "198.51.100.1$i" "2001:db8:100::1$i"
    ip netns exec "$ns" sysctl -qw net.ipv4.ip_forward=1 net.ipv6.conf.all.forwarding=1 \
      net.ipv4.conf.all.rp_filter=0 net.ipv4.conf.default.rp_filter=0 \
      net.ipv4.conf.eth0.rp_filter=0 net.ipv4.conf.eth0.proxy_arp=1 net.ipv6.conf.eth0.proxy_ndp=1 \
      net.ipv6.conf.eth0.keep_addr_on_down=1 \
      net.ipv4.conf.all.send_redirects=0 net.ipv4.conf.default.send_redirects=0 \
      net.ipv4.conf.eth0.send_redirects=0
    # like a real node's: the host network's route to Service cluster IPs (which exist only in
    # kube-proxy's nftables, rewritten after the route lookup) and to anything off the bridge
    add_route "$ns" default via 198.51.100.1 dev eth0
    add_route "$ns" -6 default via 2001:db8:100::1 dev eth0
  done
}

# ---------------------------------------------------------------------------------------------
frr_up() {
  local F=$RUN/frr i
  mkdir -p "$F"
  {
    echo "frr defaults traditional"
    echo "hostname ftb-router"
    echo "log file $F/bgpd.log"
    echo "!"
    echo "router bgp 64512"
    echo " bgp router-id 198.51.100.1"
    echo " no bgp ebgp-requires-policy"
    echo " no bgp default ipv4-unicast"
    for i in $(seq 1 "$NODES"); do
      for a in "198.51.100.1$i" "2001:db8:100::1$i"; do
        echo " neighbor $a remote-as external"
        echo " neighbor $a passive"
        echo " neighbor $a timers 3 9"
      done
    done
    echo " address-family ipv4 unicast"
    echo "  maximum-paths 8"
    for i in $(seq 1 "$NODES"); do echo "  neighbor 198.51.100.1$i activate"; done
    echo " exit-address-family"
    echo " address-family ipv6 unicast"
    echo "  maximum-paths 8"
    for i in $(seq 1 "$NODES"); do echo "  neighbor 2001:db8:100::1$i activate"; done
    echo " exit-address-family"
    echo "!"
  } >"$F/frr.conf"
  # BFD (bfdd): a profile for the tests that turn it on per neighbour (`neighbor X bfd profile
  # fast`); no neighbour runs BFD by default.
  printf '%s\n' "frr defaults traditional" "log file $F/bfdd.log" "bfd" " profile fast" \
    "  receive-interval 100" "  transmit-interval 100" "  detect-multiplier 3" " exit" "exit" >"$F/bfdd.conf"
  chown -R frr:frr "$F"
  # zebra installs the BGP routes in the router namespace's kernel, so the router really forwards:
  # a client that routes 203.0.113.0/24 via the router follows what the speakers announce (ECMP).
  ip netns exec "ftb-$SFX-rtr" sysctl -qw net.ipv4.ip_forward=1 net.ipv6.conf.all.forwarding=1 \
    net.ipv4.conf.all.send_redirects=0 net.ipv4.conf.eth0.send_redirects=0 net.ipv4.fib_multipath_hash_policy=1
  ip netns exec "ftb-$SFX-rtr" /usr/lib/frr/zebra -d -u frr -g frr -f "$F/frr.conf" \
    --vty_socket "$F" -z "$F/zserv.api" -i "$F/zebra.pid" -A 127.0.0.1 -P 0
  wait_for 20 "zebra pid file" test -s "$F/zebra.pid"
  record_pid zebra "$(cat "$F/zebra.pid")"
  ip netns exec "ftb-$SFX-rtr" /usr/lib/frr/bgpd -d -u frr -g frr -f "$F/frr.conf" \
    --vty_socket "$F" -z "$F/zserv.api" -i "$F/bgpd.pid" -A 127.0.0.1 -P 0
  wait_for 20 "bgpd pid file" test -s "$F/bgpd.pid"
  record_pid bgpd "$(cat "$F/bgpd.pid")"
  ip netns exec "ftb-$SFX-rtr" /usr/lib/frr/bfdd -d -u frr -g frr -f "$F/bfdd.conf" \
    --vty_socket "$F" -z "$F/zserv.api" -i "$F/bfdd.pid" -A 127.0.0.1 -P 0
  wait_for 20 "bfdd pid file" test -s "$F/bfdd.pid"
  record_pid bfdd "$(cat "$F/bfdd.pid")"
}

# The alternative routers: BIRD (any peer AS) and GoBGP (peer AS $GOBGP_PEER_ASN), both passive
# peers of every node, each in its own namespace so all three can run at once.
GOBGP_PEER_ASN=${TESTBED_GOBGP_PEER_ASN:-64513}
bird_up() {
  local B=$RUN/bird i
  mkdir -p "$B"
  {
    echo "router id 198.51.100.2;"
    echo "log \"$B/bird.log\" all;"
    echo "protocol device {}"
    echo "template bgp node4 { local as 64520; passive on; hold time 9; ipv4 { import all; export none; }; }"
    echo "template bgp node6 { local as 64520; passive on; hold time 9; ipv6 { import all; export none; }; }"
    for i in $(seq 1 "$NODES"); do
      echo "protocol bgp node${i}_v4 from node4 { neighbor 198.51.100.1$i external; }"
      echo "protocol bgp node${i}_v6 from node6 { neighbor 2001:db8:100::1$i external; }"
    done
  } >"$B/bird.conf"
  ip netns exec "ftb-$SFX-bird" bird -c "$B/bird.conf" -s "$B/bird.ctl" -P "$B/bird.pid"
  wait_for 20 "bird pid file" test -s "$B/bird.pid"
  record_pid bird "$(cat "$B/bird.pid")"
}

gobgp_up() {
  local G=$RUN/gobgp i a
  mkdir -p "$G"
  {
    printf '[global.config]\n  as = 64530\n  router-id = "198.51.100.3"\n'
    for i in $(seq 1 "$NODES"); do
      for a in "198.51.100.1$i" "2001:db8:100::1$i"; do
        printf '[[neighbors]]\n  [neighbors.config]\n    neighbor-address = "%s"\n    peer-as = %s\n' "$a" "$GOBGP_PEER_ASN"
        printf '  [neighbors.transport.config]\n    passive-mode = true\n'
        printf '  [neighbors.timers.config]\n    hold-time = 9\n    keepalive-interval = 3\n'
        case $a in
          *:*) printf '  [[neighbors.afi-safis]]\n    [neighbors.afi-safis.config]\n      afi-safi-name = "ipv6-unicast"\n' ;;
          *)   printf '  [[neighbors.afi-safis]]\n    [neighbors.afi-safis.config]\n      afi-safi-name = "ipv4-unicast"\n' ;;
        esac
      done
    done
  } >"$G/gobgpd.toml"
  bg_in gobgpd "ftb-$SFX-gobgp" gobgpd -f "$G/gobgpd.toml" --api-hosts 127.0.0.1:50051 -l info
}

# ---------------------------------------------------------------------------------------------
cp_up() {
  local CP="ftb-$SFX-cp" P=$RUN/pki
  mkdir -p "$RUN/etcd"
  bg_in etcd "$CP" etcd --name ftb --data-dir "$RUN/etcd" \
    --listen-client-urls http://127.0.0.1:2379 --advertise-client-urls http://127.0.0.1:2379 \
    --listen-peer-urls http://127.0.0.1:2380 --initial-advertise-peer-urls http://127.0.0.1:2380 \
    --initial-cluster ftb=http://127.0.0.1:2380
  wait_for 60 etcd nsenter --net="/run/netns/$CP" curl -fsS http://127.0.0.1:2379/health
  bg_in kube-apiserver "$CP" "$K8S_BIN/kube-apiserver" \
    --etcd-servers=http://127.0.0.1:2379 \
    --bind-address=0.0.0.0 --secure-port=$API_PORT --advertise-address=$API_IP \
    --tls-cert-file="$P/apiserver.crt" --tls-private-key-file="$P/apiserver.key" \
    --client-ca-file="$P/ca.crt" \
    --kubelet-client-certificate="$P/apiserver-kubelet.crt" --kubelet-client-key="$P/apiserver-kubelet.key" \
    --kubelet-certificate-authority="$P/ca.crt" --kubelet-preferred-address-types=InternalIP \
    --requestheader-client-ca-file="$P/front-proxy-ca.crt" --requestheader-allowed-names=front-proxy-client \
    --requestheader-username-headers=X-Remote-User --requestheader-group-headers=X-Remote-Group \
    --requestheader-extra-headers-prefix=X-Remote-Extra- \
    --proxy-client-cert-file="$P/front-proxy-client.crt" --proxy-client-key-file="$P/front-proxy-client.key" \
    --authorization-mode=Node,RBAC \
    --enable-admission-plugins=NodeRestriction \
    --enable-aggregator-routing=true \
    --service-cluster-ip-range=10.96.0.0/16,2001:db8:96::/112 \
    --service-account-issuer=https://kubernetes.default.svc.cluster.local \
    --service-account-key-file="$P/sa.pub" \
    --service-account-signing-key-file="$P/sa.key" \
    --allow-privileged=true --profiling=false --v=1
  wait_for 120 kube-apiserver nsenter --net="/run/netns/$CP" "$KUBECTL" --kubeconfig="$RUN/admin-internal.kubeconfig" get --raw /readyz
  bg_in kube-controller-manager "$CP" "$K8S_BIN/kube-controller-manager" \
    --kubeconfig="$RUN/kcm.kubeconfig" \
    --authentication-kubeconfig="$RUN/kcm.kubeconfig" --authorization-kubeconfig="$RUN/kcm.kubeconfig" \
    --bind-address=127.0.0.1 --secure-port=10257 --leader-elect=false \
    --service-account-private-key-file="$P/sa.key" --root-ca-file="$P/ca.crt" \
    --cluster-signing-cert-file="$P/ca.crt" --cluster-signing-key-file="$P/ca.key" \
    --use-service-account-credentials=true --controllers='*' \
    --allocate-node-cidrs=true --cluster-cidr=198.51.100.128/25,2001:db8:100:100::/56 \
    --node-cidr-mask-size-ipv4=27 --node-cidr-mask-size-ipv6=64 \
    --service-cluster-ip-range=10.96.0.0/16,2001:db8:96::/112 \
    --node-monitor-grace-period=40s --v=1
  bg_in kube-scheduler "$CP" "$K8S_BIN/kube-scheduler" \
    --kubeconfig="$RUN/scheduler.kubeconfig" \
    --authentication-kubeconfig="$RUN/scheduler.kubeconfig" --authorization-kubeconfig="$RUN/scheduler.kubeconfig" \
    --bind-address=127.0.0.1 --secure-port=10259 --leader-elect=false --v=1
}

# ---------------------------------------------------------------------------------------------
# nodes: each node namespace runs a real containerd (with runc and the reference CNI plugins), a
# real kubelet and the real kube-proxy (nftables mode), all v1.34 but containerd (Debian's).
# containerd and the kubelet share a private mount namespace per node, held open by a keeper
# process, in which /run, /var/lib and /var/log are the node's own directories (RUN/nodes/NODE/
# {run,lib,log}) and the three kernel tunables the kubelet sets machine-wide
# (vm.overcommit_memory, kernel.panic, kernel.panic_on_oops) are files of the node's own. So
# nothing a node writes reaches the machine, and no two nodes (or testbeds) share a path; their
# pods' cgroups live under /ftb-<run>-nI in every hierarchy, removed by down.
CGROUP_ROOT=/sys/fs/cgroup
node_dir() { echo "$RUN/nodes/node-$1"; }
node_cgroup() { echo "ftb-$SFX-n$1"; }
keeper_pid() { pid_alive "$RUN/pids/node-$1-ns.pid"; }
bg_node() { # bg_node NAME I CMD... : CMD in node I's network and mount namespaces, in the background, logged and recorded
  local name=$1 i=$2; shift 2
  nsenter --target "$(keeper_pid "$i")" --mount --net -- "$@" </dev/null >"$RUN/logs/$name.log" 2>&1 &
  record_pid "$name" $!
}

node_up() { # node_up I : the node's namespace, containerd, kubelet and kube-proxy
  local i=$1 N; N=$(node_dir "$i")
  mkdir -p "$N"/{run,lib,log,etc,sysctl,cni/net.d}
  printf '1\n' >"$N/sysctl/overcommit_memory"; printf '10\n' >"$N/sysctl/panic"; printf '1\n' >"$N/sysctl/panic_on_oops"
  # the kubelet requires its cgroup root to exist; cpuset needs its cpus and mems filled in
  local h cg; cg=$(node_cgroup "$i")
  for h in "$CGROUP_ROOT"/*/; do
    [ -e "${h}cgroup.procs" ] || continue
    mkdir -p "$h$cg"
    if [ -e "${h}cpuset.cpus" ]; then cat "${h}cpuset.cpus" >"$h$cg/cpuset.cpus"; cat "${h}cpuset.mems" >"$h$cg/cpuset.mems"; fi
  done
  local mounts="mount --bind $N/run /run && mount --bind $N/lib /var/lib && mount --bind $N/log /var/log"
  local t; for t in vm/overcommit_memory kernel/panic kernel/panic_on_oops; do
    mounts="$mounts && mount --bind $N/sysctl/${t#*/} /proc/sys/$t"
  done
  nsenter --net="/run/netns/ftb-$SFX-n$i" -- unshare --mount --propagation private -- \
    sh -c "$mounts && touch /run/.ready && exec sleep infinity" </dev/null >"$RUN/logs/node-$i-ns.log" 2>&1 &
  record_pid "node-$i-ns" $!
  wait_for 10 "node-$i mount namespace" test -e "$N/run/.ready"

  cat >"$N/etc/containerd.toml" <<EOF
version = 2
root = "/var/lib/containerd"
state = "/run/containerd"
# opt would write /opt/containerd on the machine; the others are snapshotters nobody uses here
disabled_plugins = ["io.containerd.internal.v1.opt", "io.containerd.snapshotter.v1.aufs",
  "io.containerd.snapshotter.v1.btrfs", "io.containerd.snapshotter.v1.devmapper",
  "io.containerd.snapshotter.v1.zfs", "io.containerd.tracing.processor.v1.otlp"]
[grpc]
  address = "/run/containerd/containerd.sock"
[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "$PAUSE_IMAGE"
  # the machine gives root no CAP_SYS_RESOURCE, so no process may lower its OOM score below
  # containerd's (the kubelet asks -998 for sandboxes): keep them at containerd's instead
  restrict_oom_score_adj = true
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
        SystemdCgroup = false
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "/usr/lib/cni"
    conf_dir = "$N/cni/net.d"
EOF
  bg_node "containerd-node-$i" "$i" containerd --config "$N/etc/containerd.toml"
  wait_for 30 "node-$i containerd" ctr -a "$N/run/containerd/containerd.sock" version
  local file name
  while read -r file name; do
    ctr -a "$N/run/containerd/containerd.sock" -n k8s.io images import "$IMAGES/$file" >/dev/null \
      || die "importing $file ($name) into node-$i's containerd"
  done <"$IMAGES/images.txt"
  # the image under a second name, so a test can roll the operands to a "new" image
  ctr -a "$N/run/containerd/containerd.sock" -n k8s.io images tag "$FERROLB_IMAGE" "$FERROLB_IMAGE-rollout" >/dev/null

  cat >"$N/etc/kubelet.yaml" <<EOF
apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
containerRuntimeEndpoint: unix:///run/containerd/containerd.sock
cgroupDriver: cgroupfs
cgroupRoot: /$cg
failCgroupV1: false
failSwapOn: false
authentication:
  anonymous: {enabled: false}
  webhook: {enabled: true}
  x509: {clientCAFile: $RUN/pki/ca.crt}
authorization: {mode: Webhook}
tlsCertFile: $RUN/pki/kubelet-node-$i.crt
tlsPrivateKeyFile: $RUN/pki/kubelet-node-$i.key
readOnlyPort: 0
healthzBindAddress: 127.0.0.1
clusterDomain: cluster.local
makeIPTablesUtilChains: false
protectKernelDefaults: false
# Secret and ConfigMap volumes follow their objects within ~8 s (a pod is synced every 5-7.5 s;
# the default is every 1-1.5 minutes)
syncFrequency: 5s
# nothing is ever pulled: image garbage collection would only delete the imported images
imageGCHighThresholdPercent: 100
imageGCLowThresholdPercent: 99
evictionHard: {memory.available: 100Mi, nodefs.available: 1%, imagefs.available: 1%, nodefs.inodesFree: 1%}
serializeImagePulls: false
EOF
  bg_node "kubelet-node-$i" "$i" "$K8S_BIN/kubelet" --config="$N/etc/kubelet.yaml" \
    --kubeconfig="$RUN/node-$i.kubeconfig" --hostname-override="node-$i" \
    --node-ip="198.51.100.1$i,2001:db8:100::1$i" --v=1

  cat >"$N/etc/kube-proxy.yaml" <<EOF
apiVersion: kubeproxy.config.k8s.io/v1alpha1
kind: KubeProxyConfiguration
mode: nftables
clientConnection: {kubeconfig: $RUN/kube-proxy.kubeconfig}
hostnameOverride: node-$i
clusterCIDR: 198.51.100.128/25,2001:db8:100:100::/56
healthzBindAddress: 0.0.0.0:10256
metricsBindAddress: 127.0.0.1:10249
# 0: leave the (machine-wide) conntrack table size and timeouts as they are
conntrack: {maxPerCore: 0, min: 0, tcpEstablishedTimeout: 0s, tcpCloseWaitTimeout: 0s}
EOF
  bg_in "kube-proxy-node-$i" "ftb-$SFX-n$i" "$K8S_BIN/kube-proxy" --config="$N/etc/kube-proxy.yaml" --v=1
}

# Once kube-controller-manager gave every node its pod CIDRs: each node's CNI configuration
# (ptp veths, host-local addresses of its CIDRs), and routes to them via the node in every other
# namespace on the bridge.
pod_network_up() {
  local KC="$RUN/admin-internal.kubeconfig" i j cidrs v4 v6 ns
  for i in $(seq 1 "$NODES"); do
    wait_for 60 "node-$i's pod CIDRs" bash -c \
      "nsenter --net=/run/netns/ftb-$SFX-cp '$KUBECTL' --kubeconfig='$KC' get node node-$i -o jsonpath='{.spec.podCIDRs}' | grep -q ':'"
    cidrs=$(nsenter --net="/run/netns/ftb-$SFX-cp" "$KUBECTL" --kubeconfig="$KC" get node "node-$i" -o jsonpath='{.spec.podCIDRs[*]}')
    v4=""; v6=""
    for c in $cidrs; do case $c in *:*) v6=$c ;; *) v4=$c ;; esac; done
    cat >"$(node_dir "$i")/cni/net.d/10-testbed.conflist" <<EOF
{
  "cniVersion": "1.0.0",
  "name": "testbed",
  "plugins": [{
    "type": "ptp",
    "mtu": 1500,
    "ipam": {
      "type": "host-local",
      "ranges": [[{"subnet": "$v4"}], [{"subnet": "$v6"}]],
      "routes": [{"dst": "0.0.0.0/0"}, {"dst": "::/0"}]
    }
  }]
}
EOF
    for ns in $(cat "$RUN/netns"); do
      [ "$ns" = "ftb-$SFX-n$i" ] || [ "$ns" = "ftb-$SFX-br" ] && continue
      add_route "$ns" "$v4" via "198.51.100.1$i" dev eth0
      add_route "$ns" -6 "$v6" via "2001:db8:100::1$i" dev eth0
    done
  done
}

node_down() { # node_down RUN I : every process of the node (its pods' included), then its cgroups
  local RUN=$1 i=$2 sfx keep f pid cg h pids
  sfx=${RUN##*/ferrolb-testbed-}; cg="ftb-$sfx-n$i"
  stop_recorded 10 "$RUN/pids" -name "kubelet-node-$i.pid"
  keep=$(pid_alive "$RUN/pids/node-$i-ns.pid" || true)
  local mnt=""; [ -n "$keep" ] && mnt=$(readlink "/proc/$keep/ns/mnt" 2>/dev/null || true)
  for _ in 1 2 3 4 5 6 7 8 9 10; do
    pids=""
    # the pods' processes are in the node's cgroups; containerd, its shims and the keeper in its
    # mount namespace (the containers have mount namespaces of their own)
    for h in "$CGROUP_ROOT"/*/; do
      [ -d "$h$cg" ] && pids="$pids $(find "$h$cg" -name cgroup.procs -exec cat {} + 2>/dev/null)"
    done
    if [ -n "$mnt" ]; then
      for f in /proc/[0-9]*; do
        [ "$(readlink "$f/ns/mnt" 2>/dev/null)" = "$mnt" ] && pids="$pids ${f#/proc/}"
      done
    fi
    pids=$(echo $pids | tr ' ' '\n' | grep -v "^$$\$" | sort -u | tr '\n' ' ')
    [ -n "${pids// /}" ] || break
    kill -KILL $pids 2>/dev/null || true
    sleep 0.3
  done
  for h in "$CGROUP_ROOT"/*/; do
    [ -d "$h$cg" ] && find "$h$cg" -depth -type d -exec rmdir {} \; 2>/dev/null
  done
  return 0
}

# ---------------------------------------------------------------------------------------------
write_env() {
  local nodes="" i
  for i in $(seq 1 "$NODES"); do nodes="$nodes ftb-$SFX-n$i"; done
  local tmp="$ENV_FILE.tmp"
  cat >"$tmp" <<EOF
# written by tests/testbed/testbed.sh up; source it: set -a; . .testbed/env; set +a
KUBECONFIG=$RUN/admin.kubeconfig
TESTBED_RUN=$SFX
TESTBED_RUN_DIR=$RUN
TESTBED_NODE_NETNS="${nodes# }"
TESTBED_NODE_NAMES="$(for i in $(seq 1 "$NODES"); do printf 'node-%s ' "$i"; done | sed 's/ $//')"
TESTBED_NODE_IPS="$(for i in $(seq 1 "$NODES"); do printf '198.51.100.1%s ' "$i"; done | sed 's/ $//')"
TESTBED_ROUTER_NETNS=ftb-$SFX-rtr
TESTBED_ROUTER_IP=198.51.100.1
TESTBED_ROUTER_IPV6=2001:db8:100::1
TESTBED_ROUTER_ASN=64512
TESTBED_ROUTER_VTY=$RUN/frr
TESTBED_BIRD_NETNS=ftb-$SFX-bird
TESTBED_BIRD_IP=198.51.100.2
TESTBED_BIRD_ASN=64520
TESTBED_BIRD_CTL=$RUN/bird/bird.ctl
TESTBED_GOBGP_NETNS=ftb-$SFX-gobgp
TESTBED_GOBGP_IP=198.51.100.3
TESTBED_GOBGP_ASN=64530
TESTBED_GOBGP_PEER_ASN=$GOBGP_PEER_ASN
TESTBED_GOBGP_API=127.0.0.1:50051
TESTBED_CLIENT_NETNS=ftb-$SFX-cli
TESTBED_CLIENT_IP=198.51.100.100
TESTBED_CP_NETNS=ftb-$SFX-cp
TESTBED_API_INTERNAL=https://$API_IP:$API_PORT
TESTBED_KUBECTL=$KUBECTL
TESTBED_K8S_BIN=$K8S_BIN
TESTBED_FERROLB_BIN=$TARGET_DIR/x86_64-unknown-linux-gnu/$PROFILE
TESTBED_FERROLB_IMAGE=$FERROLB_IMAGE
EOF
  mv "$tmp" "$ENV_FILE"
}

healthy() { # the testbed in ENV_FILE is up and answering
  [ -s "$ENV_FILE" ] || return 1
  local RUN; RUN=$(sed -n 's/^TESTBED_RUN_DIR=//p' "$ENV_FILE")
  [ -d "$RUN/pids" ] || return 1
  local f; for f in "$RUN"/pids/*.pid; do pid_alive "$f" >/dev/null || return 1; done
  local kc kubectl; kc=$(sed -n 's/^KUBECONFIG=//p' "$ENV_FILE"); kubectl=$(sed -n 's/^TESTBED_KUBECTL=//p' "$ENV_FILE")
  "$kubectl" --kubeconfig="$kc" --request-timeout=5s get --raw /readyz >/dev/null 2>&1
}

up() {
  [ "$(id -u)" = 0 ] || die "must run as root (network namespaces, nftables)"
  mkdir -p "$STATE_DIR"
  if healthy; then
    log "testbed already up ($(sed -n 's/^TESTBED_RUN=//p' "$ENV_FILE")); reusing"
    local run_dir; run_dir=$(sed -n 's/^TESTBED_RUN_DIR=//p' "$ENV_FILE")
    if ! (cd "${FERROLB_TESTBED_CACHE:-/var/cache/ferrolb-testbed}/images" && sha256sum -c --quiet "$run_dir/images.sha256") >/dev/null 2>&1; then
      log "WARNING: the images changed since bring-up; the nodes run the old ones (make testbed-down testbed-up)"
    fi
    return 0
  fi
  down_all || die "could not remove the previous testbed of this checkout (see above)"
  for c in etcd openssl curl nft nsenter unshare /usr/lib/frr/bgpd /usr/lib/frr/bfdd vtysh bird birdc gobgpd gobgp containerd ctr runc buildah /usr/lib/cni/ptp; do
    command -v "$c" >/dev/null || die "missing $c: run 'bash tests/testbed/install-deps.sh'"
  done
  [ "$NODES" -ge 1 ] && [ "$NODES" -le 4 ] || die "TESTBED_NODES must be 1..4 (pod CIDRs are /27s of 198.51.100.128/25)"
  local t0; t0=$(date +%s)
  trap 'log "bring-up FAILED: logs are in \$TESTBED_RUN_DIR/logs ($RUN/logs); remove everything with: make testbed-down"' ERR

  log "control-plane binaries (first build: ~5 min on 2 cores, then cached)"
  K8S_BIN=$(bash "$HERE/build-k8s.sh" | tail -n1) || die "building kube-apiserver etc. failed (see above); retry: bash tests/testbed/build-k8s.sh"
  KUBECTL="$K8S_BIN/kubectl"

  log "images: FerroLB, the testbed's echo server, pause, busybox and scorecard-test, built FROM scratch"
  IMAGES=$(bash "$HERE/images.sh" | tail -n1) || die "building the images failed (see above); retry: bash tests/testbed/images.sh"
  image_of() { awk -v f="$1" '$1 == f {print $2}' "$IMAGES/images.txt"; }
  FERROLB_IMAGE=$(image_of ferrolb.tar); PAUSE_IMAGE=$(image_of pause.tar)

  SFX=$(head -c4 /dev/urandom | od -An -tx1 | tr -d ' \n')
  RUN=/dev/shm/ferrolb-testbed-$SFX
  mkdir -p "$RUN"/{pids,logs,bin,nodes}
  echo "$STATE_DIR" >"$RUN/owner"
  : >"$RUN/netns"
  mkdir -p "$STATE_DIR"; echo "$RUN" >"$STATE_DIR/run"
  # the static build of the echo image's binary also serves the machine (forwarder, probes)
  install -m 0755 "$TARGET_DIR/x86_64-unknown-linux-gnu/$PROFILE/ferrolb-testbed" "$RUN/bin/ferrolb-testbed"
  log "run $SFX, state in $RUN"

  gen_pki
  kubeconfig "$RUN/admin-internal.kubeconfig" "https://$API_IP:$API_PORT" admin
  kubeconfig "$RUN/kcm.kubeconfig" "https://$API_IP:$API_PORT" kcm
  kubeconfig "$RUN/scheduler.kubeconfig" "https://$API_IP:$API_PORT" scheduler
  kubeconfig "$RUN/kube-proxy.kubeconfig" "https://$API_IP:$API_PORT" kube-proxy
  local i; for i in $(seq 1 "$NODES"); do kubeconfig "$RUN/node-$i.kubeconfig" "https://$API_IP:$API_PORT" "node-$i"; done

  log "network: bridge, control plane, router, client and $NODES node namespaces"
  net_up
  log "etcd + kube-apiserver + kube-controller-manager + kube-scheduler"
  cp_up
  # the admin kubeconfig for processes in the root namespace goes through a forwarder on 127.0.0.1
  "$RUN/bin/ferrolb-testbed" forward --listen 127.0.0.1:0 --netns "/run/netns/ftb-$SFX-cp" \
    --to "$API_IP:$API_PORT" --port-file "$RUN/forward.port" </dev/null >"$RUN/logs/forward.log" 2>&1 &
  record_pid forward $!
  wait_for 20 forwarder test -s "$RUN/forward.port"
  kubeconfig "$RUN/admin.kubeconfig" "https://127.0.0.1:$(cat "$RUN/forward.port")" admin
  log "routers: FRR bgpd, BIRD, GoBGP"
  frr_up
  bird_up
  gobgp_up
  log "nodes: containerd, kubelet and kube-proxy in each of $NODES node namespaces"
  for i in $(seq 1 "$NODES"); do node_up "$i"; done
  pod_network_up
  local KC="$RUN/admin.kubeconfig"
  wait_for 120 "$NODES Ready nodes" bash -c \
    "[ \$('$KUBECTL' --kubeconfig='$KC' get nodes --no-headers 2>/dev/null | awk '\$2==\"Ready\"' | wc -l) -ge $NODES ]"
  wait_for 120 "default ServiceAccount (kube-controller-manager)" "$KUBECTL" --kubeconfig="$KC" -n default get serviceaccount default
  wait_for 60 "kube-root-ca.crt ConfigMap" "$KUBECTL" --kubeconfig="$KC" -n default get configmap kube-root-ca.crt
  (cd "$IMAGES" && sha256sum ./*.tar) >"$RUN/images.sha256"
  write_env
  log "up in $(( $(date +%s) - t0 ))s: source .testbed/env (set -a; . .testbed/env; set +a)"
  "$KUBECTL" --kubeconfig="$KC" get nodes -o wide >&2
}

# ---------------------------------------------------------------------------------------------
# OLM v0 on a running testbed (olm-up [CATALOG_DIR]), as OperatorHub clusters run it:
# - OLM's CRDs, and an OLMConfig that turns off copied CSVs (one per namespace, only API load here);
# - the olm operator in the control plane's namespace;
# - in ftb-<run>-olm (198.51.100.124): the catalog operator and `opm serve CATALOG_DIR` (default:
#   the repository's catalog/) on :50051, named by the CatalogSource olm/ferrolb-catalog through
#   spec.address: no registry pod and no bundle image (the catalog carries the bundle's objects).
# Both OLM operators serve health on :8080, hence two namespaces. Run again with another directory
# (or the same one changed) and it serves that instead, under a re-created CatalogSource (which
# polls it every 10 s). down removes all of it.
# Not here: OLM's packageserver (the PackageManifest API the console lists); subscriptions do not
# need it.
OLM_NS=olm
OLM_IP=198.51.100.124
CATALOG_SOURCE=ferrolb-catalog
olm_up() {
  [ "$(id -u)" = 0 ] || die "must run as root"
  healthy || die "the testbed is not up: make testbed-up"
  set -a; . "$ENV_FILE"; set +a
  RUN=$TESTBED_RUN_DIR; SFX=$TESTBED_RUN; KUBECTL=$TESTBED_KUBECTL; BR="ftb-$SFX-br"
  local catalog=${1:-$ROOT/catalog} ns="ftb-$SFX-olm" tools olm opm
  catalog=$(cd "$catalog" && pwd) || die "no catalog directory ${1:-}"
  k() { "$KUBECTL" --kubeconfig="$KUBECONFIG" "$@"; }
  tools=$(bash "$HERE/build-olm.sh") || die "building the OLM tools failed (see above)"
  olm=$(awk '$1 == "olm" {print $2}' <<<"$tools"); opm=$(awk '$1 == "opm" {print $2}' <<<"$tools")/bin/opm
  if ! pid_alive "$RUN/pids/olm-operator.pid" >/dev/null; then
    log "OLM v0: CRDs, the olm operator (control-plane namespace), the catalog operator ($ns)"
    k apply --server-side -f "$olm/crds" >/dev/null
    k wait --for=condition=Established --timeout=60s -f "$olm/crds" >/dev/null
    k create namespace "$OLM_NS" --dry-run=client -o yaml | k apply -f - >/dev/null
    printf '%s\n' 'apiVersion: operators.coreos.com/v1' 'kind: OLMConfig' 'metadata: {name: cluster}' \
      'spec: {features: {disableCopiedCSVs: true}}' | k apply -f - >/dev/null
    kubeconfig "$RUN/olm.kubeconfig" "https://$API_IP:$API_PORT" admin
    bg_in olm-operator "ftb-$SFX-cp" env KUBECONFIG="$RUN/olm.kubeconfig" "$olm/bin/olm" \
      --namespace "$OLM_NS" --writeStatusName ""
    ip netns list | awk '{print $1}' | grep -qx "$ns" \
      || { ns_new "$ns"; plug "$ns" olm "$OLM_IP" 2001:db8:100::124; }
    bg_in olm-catalog "$ns" env KUBECONFIG="$RUN/olm.kubeconfig" "$olm/bin/catalog" \
      --kubeconfig "$RUN/olm.kubeconfig" --namespace "$OLM_NS" --writeStatusName "" --set-workload-user-id
  fi
  local pid served
  served="$catalog $(cd "$catalog" && find . -type f -print0 | sort -z | xargs -0 sha256sum | sha256sum | cut -d' ' -f1)"
  if [ "$(cat "$RUN/olm-catalog" 2>/dev/null)" != "$served" ] || ! pid_alive "$RUN/pids/olm-registry.pid" >/dev/null; then
    if pid=$(pid_alive "$RUN/pids/olm-registry.pid"); then
      kill "$pid"; while ! gone "$pid"; do sleep 0.1; done
    fi
    log "opm serve $catalog on $OLM_IP:50051"
    rm -rf "$RUN/olm-cache"
    "$opm" serve "$catalog" --cache-dir "$RUN/olm-cache" --cache-only >"$RUN/logs/olm-cache.log" 2>&1 \
      || die "opm could not index $catalog (see $RUN/logs/olm-cache.log)"
    bg_in olm-registry "$ns" "$opm" serve "$catalog" --cache-dir "$RUN/olm-cache" -p 50051
    echo "$served" >"$RUN/olm-catalog"
    wait_for 30 "opm serve" nsenter --net="/run/netns/$ns" bash -c 'exec 3<>/dev/tcp/127.0.0.1/50051'
    k -n "$OLM_NS" delete catalogsource "$CATALOG_SOURCE" --ignore-not-found >/dev/null
    printf '%s\n' 'apiVersion: operators.coreos.com/v1alpha1' 'kind: CatalogSource' \
      "metadata: {name: $CATALOG_SOURCE, namespace: $OLM_NS}" \
      "spec: {sourceType: grpc, address: '$OLM_IP:50051', displayName: FerroLB (testbed), publisher: FerroLB, updateStrategy: {registryPoll: {interval: 10s}}}" \
      | k apply -f - >/dev/null
  fi
  wait_for 120 "CatalogSource $OLM_NS/$CATALOG_SOURCE READY" bash -c \
    "[ \"\$('$KUBECTL' --kubeconfig='$KUBECONFIG' -n $OLM_NS get catalogsource $CATALOG_SOURCE -o jsonpath='{.status.connectionState.lastObservedState}')\" = READY ]"
  grep -q '^TESTBED_OLM_NAMESPACE=' "$ENV_FILE" \
    || printf 'TESTBED_OLM_NAMESPACE=%s\nTESTBED_CATALOG_SOURCE=%s\n' "$OLM_NS" "$CATALOG_SOURCE" >>"$ENV_FILE"
  log "OLM up: CatalogSource $OLM_NS/$CATALOG_SOURCE serves $catalog"
}

# olm-down: stop OLM's processes (and the catalog's server), so later tests run beside no more
# than the cluster; OLM's CRDs and objects stay, and olm-up starts it again.
olm_down() {
  [ "$(id -u)" = 0 ] || die "must run as root"
  [ -s "$ENV_FILE" ] || die "the testbed is not up"
  RUN=$(sed -n 's/^TESTBED_RUN_DIR=//p' "$ENV_FILE")
  stop_recorded 10 "$RUN/pids" -name 'olm-*.pid'
  rm -f "$RUN"/pids/olm-*.pid "$RUN/olm-catalog"
  log "OLM stopped"
}

# ---------------------------------------------------------------------------------------------
stop_recorded() { # stop_recorded GRACE DIR FIND-ARGS... : SIGTERM, wait GRACE s, SIGKILL
  local grace=$1 dir=$2 f pid pids=() alive=(); shift 2
  while IFS= read -r -d '' f; do
    pid=$(pid_alive "$f") && pids+=("$pid")
  done < <(find "$dir" "$@" -print0 2>/dev/null)
  [ "${#pids[@]}" -gt 0 ] || return 0
  kill -TERM "${pids[@]}" 2>/dev/null || true
  local end=$(( $(date +%s) + grace ))
  while :; do
    alive=(); for pid in "${pids[@]}"; do gone "$pid" || alive+=("$pid"); done
    [ "${#alive[@]}" -eq 0 ] && return 0
    [ "$(date +%s)" -lt "$end" ] || break
    sleep 0.2
  done
  log "still running ${grace}s after SIGTERM, sending SIGKILL: $(for p in "${alive[@]}"; do printf '%s(%s) ' "$p" "$(cat /proc/$p/comm 2>/dev/null)"; done)"
  kill -KILL "${alive[@]}" 2>/dev/null || true
  end=$(( $(date +%s) + 5 ))
  while [ "$(date +%s)" -lt "$end" ]; do
    alive=(); for pid in "${pids[@]}"; do gone "$pid" || alive+=("$pid"); done
    [ "${#alive[@]}" -eq 0 ] && return 0
    sleep 0.2
  done
}

down_run() { # down_run RUNDIR : kill every recorded process, delete every namespace, remove files
  local RUN=$1 f pid sfx
  [ -d "$RUN" ] || return 0
  sfx=${RUN##*/ferrolb-testbed-}
  log "tearing down run $sfx ($RUN)"
  local snapshot; snapshot=$(find "$RUN" -name '*.pid' -exec cat {} + 2>/dev/null || true)
  # nodes first (kubelet, containerd, every pod), then everything else that is recorded
  local i; for f in "$RUN"/pids/node-*-ns.pid; do
    [ -e "$f" ] || continue
    i=${f##*/node-}; i=${i%-ns.pid}
    node_down "$RUN" "$i"
  done
  stop_recorded 5 "$RUN" -name '*.pid'
  # processes started after the pid files were read (a pod restarting during teardown)
  while IFS= read -r -d '' f; do
    pid=$(pid_alive "$f") && kill -KILL "$pid" 2>/dev/null || true
  done < <(find "$RUN" -name '*.pid' -print0 2>/dev/null)
  # every namespace of this run: recorded ones and pod namespaces made by the agents
  local ns
  for ns in $( { cat "$RUN/netns" 2>/dev/null; ip netns list 2>/dev/null | awk '{print $1}' | grep "^ftb-$sfx-" ; } | sort -u); do
    ip netns del "$ns" 2>/dev/null || true
  done
  # mounts below the run dir (none expected: pod mounts live in private mount namespaces)
  awk -v r="$RUN" '$2 ~ "^"r {print $2}' /proc/self/mounts | sort -r | while read -r m; do umount -l "$m" || true; done
  # the nftables/routes of the testbed live in its namespaces and went with them
  rm -rf "$RUN"
  # verify: no process, namespace, mount or file of this run is left
  local left=""
  while read -r pid st; do
    [ -n "${pid:-}" ] && ! gone "$pid" && [ "$(starttime "$pid")" = "$st" ] && left="$left process:$pid($(cat /proc/$pid/comm 2>/dev/null))"
  done <<<"$snapshot"
  for ns in $(ip netns list 2>/dev/null | awk '{print $1}' | grep "^ftb-$sfx-" || true); do left="$left netns:$ns"; done
  grep -q "ferrolb-testbed-$sfx" /proc/self/mounts && left="$left mounts"
  for f in "$CGROUP_ROOT"/*/"ftb-$sfx-"*; do [ -e "$f" ] && left="$left cgroup:$f"; done
  [ -e "$RUN" ] && left="$left dir:$RUN"
  if [ -n "$left" ]; then log "LEFT BEHIND by run $sfx:$left"; return 1; fi
  log "run $sfx removed: no process, namespace, mount or file left"
}

down_all() {
  local r rc=0
  for r in /dev/shm/ferrolb-testbed-*; do
    [ -d "$r" ] || continue
    [ "$(cat "$r/owner" 2>/dev/null)" = "$STATE_DIR" ] || continue
    down_run "$r" || rc=1
  done
  rm -f "$ENV_FILE" "$STATE_DIR/run"
  return $rc
}

down() { [ "$(id -u)" = 0 ] || die "must run as root"; down_all; log "down"; }

status() {
  if [ ! -s "$ENV_FILE" ]; then echo "testbed: down (no $ENV_FILE)"; return 1; fi
  local RUN KUBECTL KC f pid
  RUN=$(sed -n 's/^TESTBED_RUN_DIR=//p' "$ENV_FILE")
  KUBECTL=$(sed -n 's/^TESTBED_KUBECTL=//p' "$ENV_FILE"); KC=$(sed -n 's/^KUBECONFIG=//p' "$ENV_FILE")
  echo "testbed run $(sed -n 's/^TESTBED_RUN=//p' "$ENV_FILE") ($RUN)"
  cat "$ENV_FILE" | grep -v '^#'
  echo "processes:"
  for f in "$RUN"/pids/*.pid; do
    if pid=$(pid_alive "$f"); then echo "  $(basename "$f" .pid): pid $pid running"; else echo "  $(basename "$f" .pid): NOT RUNNING"; fi
  done
  echo "namespaces: $(ip netns list | awk '{print $1}' | grep -c "^ftb-$(sed -n 's/^TESTBED_RUN=//p' "$ENV_FILE")-")"
  "$KUBECTL" --kubeconfig="$KC" --request-timeout=5s get nodes -o wide || true
  "$KUBECTL" --kubeconfig="$KC" --request-timeout=5s get pods -A -o wide || true
  healthy && echo "healthy" || { echo "UNHEALTHY"; return 1; }
}

save_logs() { # keep the logs of the running testbed in .testbed/logs-<run> (for CI after a failure)
  local RUN SFX dst
  RUN=$(cat "$STATE_DIR/run" 2>/dev/null || true)
  [ -n "$RUN" ] && [ -d "$RUN" ] || { log "no testbed run directory"; return 0; }
  SFX=${RUN##*/ferrolb-testbed-}
  dst="$STATE_DIR/logs-$SFX"; mkdir -p "$dst"
  cp -r "$RUN/logs" "$dst/control-plane" 2>/dev/null || true
  [ -d "$RUN/frr" ] && cp "$RUN/frr/"*.log "$dst/control-plane/" 2>/dev/null || true
  # every container's log, as the kubelets wrote them (nodes/node-I/log/pods/NS_POD_UID/CONTAINER/N.log)
  (cd "$RUN/nodes" 2>/dev/null && find . -path '*/log/pods/*.log' -exec cp --parents {} "$dst/" \;) || true
  log "logs saved in $dst"
}

case "${1:-}" in
  up) up ;;
  down) down ;;
  status) status ;;
  save-logs) save_logs ;;
  olm-up) shift; olm_up "$@" ;;
  olm-down) olm_down ;;
  *) echo "usage: $0 up|down|status|save-logs|olm-up [CATALOG_DIR]|olm-down" >&2; exit 2 ;;
esac
