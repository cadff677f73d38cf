#!/usr/bin/env bash
# What the demo and the tests need on a fresh machine (Debian/Ubuntu, run as root): the system
# packages, then the upstream programs built from their Go modules (tests/tools/build.sh; about
# 15 minutes on 2 cores the first time, cached by version afterwards).
set -euo pipefail
cd "$(dirname "$0")/.."

# The tests serve git over smart HTTP (git http-backend) and run some programs alone in
# bubblewrap sandboxes (the agent, our images' binaries); `fetch git` is tested against a real
# sshd, with keys from ssh-keygen and openssl. Our images are built with buildah from the Dockerfiles and served by a
# loopback registry (docker-registry); the test images take a static busybox as their shell and
# a pause binary built with gcc -static. Real nodes (tests/src/node.rs) run containerd (with
# ctr) and runc, the CNI plugins, iptables and conntrack (kube-proxy), ipset (kube-router, which
# enforces NetworkPolicy there), set sysctls (procps) and start their processes in a network
# namespace with nsenter (util-linux).
missing=()
for pair in bwrap:bubblewrap ip:iproute2 git:git /usr/sbin/sshd:openssh-server \
  ssh-keygen:openssh-client openssl:openssl buildah:buildah docker-registry:docker-registry \
  /bin/busybox:busybox-static gcc:gcc containerd:containerd runc:runc \
  /usr/lib/cni/bridge:containernetworking-plugins iptables:iptables conntrack:conntrack \
  /usr/sbin/ipset:ipset sysctl:procps nsenter:util-linux; do
  command -v "${pair%%:*}" >/dev/null || missing+=("${pair#*:}")
done
if [ ${#missing[@]} -gt 0 ]; then
  export DEBIAN_FRONTEND=noninteractive
  apt-get install -y -q "${missing[@]}" >/dev/null 2>&1 \
    || { apt-get update -q >/dev/null && apt-get install -y -q "${missing[@]}" >/dev/null; }
fi
bwrap --version

command -v go >/dev/null || { echo "go is required to build the upstream tools" >&2; exit 1; }
bash tests/tools/build.sh
