#!/usr/bin/env bash
# Benchmark: `fetch flux` against the shell pipeline it replaces, in the same run.
#
#   baseline:  curl -sf URL | tee >(sha256sum) | tar -xz -C DIR
#   fetch:     fetch flux --url URL --digest D --target-dir DIR --max-untar-size -1
#
# Builds a ~300 MB, 12k-file artifact (incompressible content, as most program trees with
# vendored dependencies are once gzip'd), serves it on loopback with Python's threading HTTP
# server, runs each side RUNS times alternately, and prints the median wall-time ratio and peak
# RSS of each. Targets (issue 2): ratio <= 1.0, fetch peak RSS <= 32 MiB.
#
# Usage: fetch/bench/flux.sh            (env: RUNS=5 FILES=12000 MB=300 BENCH_DIR=/tmp/...)
set -euo pipefail

RUNS=${RUNS:-5}
FILES=${FILES:-12000}
MB=${MB:-300}
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
WORK=${BENCH_DIR:-$(mktemp -d /tmp/fetch-bench.XXXXXX)}
# Where both sides unpack. tmpfs by default, so the comparison measures the tools rather than
# the disk's writeback (which made run-to-run noise larger than the difference); set
# OUT_DIR=$WORK to measure on disk.
OUT_DIR=${OUT_DIR:-$( [ -d /dev/shm ] && mktemp -d /dev/shm/fetch-bench-out.XXXXXX || echo "$WORK")}
mkdir -p "$WORK" "$OUT_DIR"

for tool in curl tar sha256sum python3 /usr/bin/time; do
  command -v "$tool" >/dev/null || { echo "bench: $tool is required" >&2; exit 1; }
done

echo "== building fetch (release)"
cargo build --release -p fetch --manifest-path "$ROOT/Cargo.toml" >/dev/null
FETCH=${CARGO_TARGET_DIR:-$ROOT/target}/release/fetch

ART="$WORK/www/artifact.tar.gz"
if [ ! -f "$ART" ]; then
  echo "== generating $FILES files, ~$MB MB"
  python3 - "$WORK/tree" "$FILES" "$MB" <<'PY'
import os, random, sys
root, files, mb = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
rng = random.Random(42)
avg = mb * 1024 * 1024 // files
for i in range(files):
    d = os.path.join(root, f"pkg{i // 100:03d}", "lib" if i % 3 else "src")
    os.makedirs(d, exist_ok=True)
    size = rng.randint(avg // 4, avg * 7 // 4)
    with open(os.path.join(d, f"file{i:05d}.js"), "wb") as f:
        f.write(rng.randbytes(size))
with open(os.path.join(root, "Pulumi.yaml"), "w") as f:
    f.write("name: bench\nruntime: yaml\n")
PY
  mkdir -p "$WORK/www"
  # source-controller's shape: a "." root entry, gzip'd tar.
  tar -C "$WORK/tree" -cf - . | gzip -1 > "$ART"
  rm -rf "$WORK/tree"
fi
DIGEST="sha256:$(sha256sum "$ART" | cut -d' ' -f1)"
SIZE=$(stat -c %s "$ART")
echo "== artifact: $SIZE bytes, $DIGEST"

PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
python3 -m http.server "$PORT" --bind 127.0.0.1 --directory "$WORK/www" >/dev/null 2>&1 &
SERVER=$!
trap 'kill $SERVER 2>/dev/null || true; [ "$OUT_DIR" = "$WORK" ] || rm -rf "$OUT_DIR"' EXIT
for _ in $(seq 50); do curl -sf -o /dev/null -r 0-0 "http://127.0.0.1:$PORT/artifact.tar.gz" && break; sleep 0.1; done
URL="http://127.0.0.1:$PORT/artifact.tar.gz"

# Each measurement prints "wall_seconds max_rss_kib".
measure() { /usr/bin/time -f "%e %M" -o "$WORK/time.txt" "$@" >/dev/null 2>"$WORK/stderr.txt" || { cat "$WORK/stderr.txt" >&2; exit 1; }; cat "$WORK/time.txt"; }

# Both start from an empty output and no pending writeback.
baseline() {
  rm -rf "$OUT_DIR/out-base" "$OUT_DIR/out-fetch" && mkdir -p "$OUT_DIR/out-base" && sync
  measure bash -c "set -o pipefail; curl -sf '$URL' | tee >(sha256sum > '$WORK/base.sum') | tar -xz -C '$OUT_DIR/out-base'"
}
ours() {
  rm -rf "$OUT_DIR/out-fetch" "$OUT_DIR/out-base" && sync
  measure "$FETCH" --termination-log /nonexistent flux --url "$URL" --digest "$DIGEST" \
    --target-dir "$OUT_DIR/out-fetch/source" --max-untar-size -1
}

echo "== warm-up"
baseline >/dev/null
mv "$OUT_DIR/out-base" "$OUT_DIR/check-base"
ours >/dev/null
diff -r "$OUT_DIR/check-base" "$OUT_DIR/out-fetch/source" >/dev/null || { echo "bench: trees differ" >&2; exit 1; }
rm -rf "$OUT_DIR/check-base"
echo "== unpacking into $OUT_DIR"

: > "$WORK/base.txt"; : > "$WORK/fetch.txt"
for i in $(seq "$RUNS"); do
  baseline >> "$WORK/base.txt"
  ours >> "$WORK/fetch.txt"
  echo "   run $i: baseline $(tail -1 "$WORK/base.txt")  fetch $(tail -1 "$WORK/fetch.txt")  (s KiB)"
done

python3 - "$WORK/base.txt" "$WORK/fetch.txt" "$SIZE" <<'PY'
import statistics, sys
def load(p):
    rows = [tuple(map(float, l.split())) for l in open(p) if l.strip()]
    return statistics.median(r[0] for r in rows), max(r[1] for r in rows)
bw, brss = load(sys.argv[1]); fw, frss = load(sys.argv[2]); size = int(sys.argv[3])
ratio = fw / bw
print(f"baseline (curl|tee sha256sum|tar -xz): median {bw:.3f}s, peak RSS {brss/1024:.1f} MiB (largest process)")
print(f"fetch flux:                            median {fw:.3f}s, peak RSS {frss/1024:.1f} MiB, {size/fw/1e6:.0f} MB/s")
print(f"ratio fetch/baseline (median wall): {ratio:.3f}   target <= 1.0: {'met' if ratio <= 1.0 else 'MISSED'}")
print(f"fetch peak RSS: {frss/1024:.1f} MiB   target <= 32 MiB: {'met' if frss <= 32*1024 else 'MISSED'}")
PY
