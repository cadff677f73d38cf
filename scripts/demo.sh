#!/usr/bin/env bash
# The main job: a Stack reaching Ready from a Flux source, live, on this machine.
#
# Starts a local control plane (etcd, kube-apiserver, controller-manager, scheduler), Flux's
# source-controller with a git repository on loopback, this operator under its own RBAC and a
# test kubelet that runs the workspace pod (our fetch and agent, the real Pulumi CLI); applies
# the flux-source sample Stack and prints its events until it is Ready, its outputs, and a new
# commit rolling out. DEMO_KEEP=1 leaves it all running for kubectl until Ctrl-C.
# Needs root (network namespaces, bind mounts); the first run builds the upstream programs
# (about 15 minutes on 2 cores). `bash scripts/fetch-demo.sh` shows the fetch container alone.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
cargo build --locked -p fetch -p operator --bins
exec cargo run --locked -q -p e2e --example demo
