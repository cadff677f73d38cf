#!/usr/bin/env bash
# The operator at scale (issues 7 and 22): STACKS (default 500) Stacks on one GitRepository, on
# the local control plane, without running the pods. Prints the operator's peak RSS and CPU,
# its own API requests per Stack (from the API server's audit log), the time until every
# Workspace and StatefulSet exists, and p50/p99 of new revision -> StatefulSet, with the ratio
# to each target, and the same revision made by the bench itself (only the two writes per Stack,
# operator stopped) as a baseline. Waits for the API server to go quiet before each, so a run
# takes a few minutes. Release build; needs root like the other control-plane tests.
#
#   bash tests/bench/stacks.sh            ours alone
#   bash tests/bench/stacks.sh --vs pko   then PKO v2.9.0's own manager (built from PKO's source
#                                         by tests/tools/build.sh pko-manager) on a fresh control
#                                         plane, and the ratios ours/PKO against issue 22's targets
set -euo pipefail
cd "$(dirname "$0")/../.."
case "$*" in
  "") vs= ;;
  "--vs pko") vs=pko ;;
  *) echo "usage: $0 [--vs pko]" >&2; exit 2 ;;
esac
bash tests/tools/build.sh >/dev/null
if [ "$vs" = pko ]; then
  bash tests/tools/build.sh pko-manager >/dev/null
  PKO_MANAGER="$(bash tests/tools/build.sh --dir pko-manager)/manager"
  export PKO_MANAGER
fi
cargo build --release --locked -p operator --bin operator
STACKS=${STACKS:-500} cargo bench --locked -p e2e --bench stacks
