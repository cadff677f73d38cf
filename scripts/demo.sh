#!/usr/bin/env bash
# The main job: a Stack reaching Ready from a Flux source, live, on this machine.
#
# Starts a local control plane (etcd, kube-apiserver, controller-manager, scheduler) and a real
# node (containerd, runc, the kubelet, kube-proxy in a network namespace) that pulls our images,
# built from Dockerfile.fetch and Dockerfile.operator, and a Pulumi image from a loopback
# registry; installs CoreDNS, Flux's source-controller and this operator (kubectl apply -k
# config/default, the registry's images) in the cluster as users do; serves a git repository.
# Applies the flux-source sample Stack and prints its events until it
# is Ready, the workspace pod's logs, its outputs, and a new commit rolling out. DEMO_KEEP=1
# leaves it all running for kubectl until Ctrl-C.
# Needs root (network namespaces, containers); the first run builds the upstream programs and
# our static image binaries (about 25 minutes on 2 cores). `bash scripts/fetch-demo.sh` shows
# the fetch container alone.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
cargo build --locked -p operator --bins
bash scripts/image-binaries.sh >/dev/null
exec cargo run --locked -q -p e2e --example demo
