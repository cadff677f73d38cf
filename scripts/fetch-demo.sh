#!/usr/bin/env bash
# What the workspace pod's `fetch` init container does
# with a Flux artifact, run on this machine against a real HTTP server on loopback.
#
#   1. build `fetch`;
#   2. pack a Pulumi YAML program the way source-controller does (gzip'd tar, "." root entry,
#      0600/0750 modes) and serve it on 127.0.0.1;
#   3. run `fetch flux` exactly as the pod does, into a fake /share volume, and show the result;
#   4. run it again (a pod restart: nothing is downloaded);
#   5. run it with a tampered digest and show the refusal, exit code and termination message.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
WORK=$(mktemp -d /tmp/fetch-demo.XXXXXX)
SERVER=
cleanup() { [ -n "$SERVER" ] && kill "$SERVER" 2>/dev/null; rm -rf "$WORK"; }
trap cleanup EXIT

step() { printf '\n\033[1m== %s\033[0m\n' "$*"; }

step "building fetch"
cargo build --release --locked -p fetch --manifest-path "$ROOT/Cargo.toml"
FETCH=${CARGO_TARGET_DIR:-$ROOT/target}/release/fetch

step "packing a program as source-controller would"
mkdir -p "$WORK/repo/infra" "$WORK/www/gitrepository/default/demo"
cat > "$WORK/repo/infra/Pulumi.yaml" <<'YAML'
name: demo
runtime: yaml
outputs:
  greeting: hello from a verified Flux artifact
YAML
echo "# demo" > "$WORK/repo/README.md"
chmod 0600 "$WORK/repo/infra/Pulumi.yaml" "$WORK/repo/README.md"
chmod 0750 "$WORK/repo/infra"
ART="$WORK/www/gitrepository/default/demo/3f1c2a.tar.gz"
tar --owner=0 --group=0 -C "$WORK/repo" -czf "$ART" .
DIGEST="sha256:$(sha256sum "$ART" | cut -d' ' -f1)"
echo "artifact: $(stat -c %s "$ART") bytes, digest $DIGEST"

PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
python3 -m http.server "$PORT" --bind 127.0.0.1 --directory "$WORK/www" >/dev/null 2>&1 &
SERVER=$!
for _ in $(seq 50); do curl -sf -o /dev/null "http://127.0.0.1:$PORT/" && break; sleep 0.1; done
# The URL as source-controller advertises it; SOURCE_CONTROLLER_LOCALHOST points it here.
URL="http://source-controller.flux-system.svc.cluster.local./gitrepository/default/demo/3f1c2a.tar.gz"
export SOURCE_CONTROLLER_LOCALHOST="127.0.0.1:$PORT"
touch "$WORK/termination-log"

run_fetch() {
  "$FETCH" --termination-log "$WORK/termination-log" flux --url "$URL" --digest "$1" \
    --target-dir "$WORK/share/source" --dir infra --link "$WORK/share/workspace"
}

step "fetch flux --target-dir /share/source --dir infra --link /share/workspace"
run_fetch "$DIGEST"
echo "exit code: 0"
ls -l "$WORK/share"
ls -l "$WORK/share/workspace/"
echo "--- /share/workspace/Pulumi.yaml"
cat "$WORK/share/workspace/Pulumi.yaml"

step "the pod restarts: same digest, nothing downloaded"
run_fetch "$DIGEST"

step "a tampered digest is refused, and nothing is left behind"
BAD="sha256:$(printf '%064d' 0)"
set +e
run_fetch "$BAD"
code=$?
set -e
echo "exit code: $code (5 = verification failed)"
echo "termination message (what kubectl describe pod shows): $(cat "$WORK/termination-log")"
echo "left in /share: $(ls -A "$WORK/share" | tr '\n' ' ')"
[ "$code" -eq 5 ] && [ ! -e "$WORK/share/source" ]
step "done"
