#!/usr/bin/env bash
# A soak run, outside CI: Stacks following one git repository through many revisions on a
# real node while faults strike at random (tests/examples/soak.rs says which and what is
# checked). Sizes from the environment, e.g.
#   SOAK_STACKS=50 SOAK_REVISIONS=20 SOAK_MINUTES=15 bash tests/bench/soak.sh
# Runs as root, like the real-node tests. Exits non-zero when a check fails.
set -euo pipefail
cd "$(dirname "$0")/../.."
bash scripts/setup.sh
cargo build --locked -p operator --bins
bash scripts/image-binaries.sh >/dev/null
exec cargo run --locked -q -p e2e --example soak
