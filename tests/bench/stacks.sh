#!/usr/bin/env bash
# The operator at scale (issue 7): STACKS (default 500) Stacks on one GitRepository, on the local
# control plane, without running the pods. Prints the operator's peak RSS, the time until every
# Workspace and StatefulSet exists, and p50/p99 of new revision -> StatefulSet, with the ratio
# to each target, and the same revision made by the bench itself (only the two writes per Stack,
# operator stopped) as a baseline. Waits for the API server to go quiet before each, so a run
# takes a few minutes. Release build; needs root like the other control-plane tests.
set -euo pipefail
cd "$(dirname "$0")/../.."
bash tests/tools/build.sh >/dev/null
cargo build --release --locked -p operator --bin operator
STACKS=${STACKS:-500} cargo bench --locked -p e2e --bench stacks
