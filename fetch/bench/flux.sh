#!/usr/bin/env bash
# Benchmark: `fetch flux` against what it replaces, in the same run.
#
#   fetch flux --url URL --digest D --target-dir DIR --max-untar-size -1
# against, by default, the shell pipeline
#   curl -sf URL | tee >(sha256sum) | tar -xz -C DIR
# or, with --vs pko, PKO v2.9.0's own init container (tool `pko`, built from PKO's source)
#   pulumi-kubernetes-agent init --flux-url URL --flux-digest D --target-dir DIR
#   (FLUX_MAX_UNTAR_SIZE_BYTES=-1: its default cap is 100 MiB)
#
# Builds an artifact of FILES files, ~MB MB (incompressible content, as most program trees with
# vendored dependencies are once gzip'd), serves it on loopback with Python's threading HTTP
# server, runs each side RUNS times alternately, and prints the median wall and CPU times, the
# peak RSS of each and their ratios. Targets: against the pipeline (issue 2) wall ratio <= 1.0
# and fetch's peak RSS <= 32 MiB; against PKO (issue 22) wall <= 0.5 on the large artifact and
# peak RSS <= 0.25. With --vs pko and no FILES/MB given, both a large (12000 files, 300 MB) and a
# small (50 files, 1 MB) artifact are measured.
#
# Usage: fetch/bench/flux.sh [--vs pko]   (env: RUNS=5 FILES=12000 MB=300 BENCH_DIR=/tmp/...)
set -euo pipefail

case "$*" in
  "") VS=pipeline ;;
  "--vs pko") VS=pko ;;
  *) echo "usage: $0 [--vs pko]" >&2; exit 2 ;;
esac
RUNS=${RUNS:-5}
if [ -n "${FILES:-}${MB:-}" ] || [ "$VS" = pipeline ]; then
  SIZES=("${FILES:-12000}:${MB:-300}")
else
  SIZES=(12000:300 50:1)
fi
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
if [ "$VS" = pko ]; then
  echo "== building PKO's agent (tests/tools/build.sh pko)"
  bash "$ROOT/tests/tools/build.sh" pko >/dev/null
  AGENT="$(bash "$ROOT/tests/tools/build.sh" --dir pko)/pulumi-kubernetes-agent"
fi

PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
mkdir -p "$WORK/www"
python3 -m http.server "$PORT" --bind 127.0.0.1 --directory "$WORK/www" >/dev/null 2>&1 &
SERVER=$!
trap 'kill $SERVER 2>/dev/null || true; [ "$OUT_DIR" = "$WORK" ] || rm -rf "$OUT_DIR"' EXIT

# Each measurement prints "wall_seconds max_rss_kib user_seconds system_seconds".
measure() {
  /usr/bin/time -f "%e %M %U %S" -o "$WORK/time.txt" "$@" >/dev/null 2>"$WORK/stderr.txt" \
    || { cat "$WORK/stderr.txt" >&2; exit 1; }
  cat "$WORK/time.txt"
}

# Both start from an empty output and no pending writeback.
baseline() {
  rm -rf "$OUT_DIR/out-base" "$OUT_DIR/out-fetch" && mkdir -p "$OUT_DIR/out-base" && sync
  if [ "$VS" = pko ]; then
    measure env FLUX_MAX_UNTAR_SIZE_BYTES=-1 "$AGENT" init --flux-url "$URL" \
      --flux-digest "$DIGEST" --target-dir "$OUT_DIR/out-base"
  else
    measure bash -c "set -o pipefail; curl -sf '$URL' | tee >(sha256sum > '$WORK/base.sum') | tar -xz -C '$OUT_DIR/out-base'"
  fi
}
ours() {
  rm -rf "$OUT_DIR/out-fetch" "$OUT_DIR/out-base" && sync
  measure "$FETCH" --termination-log /nonexistent flux --url "$URL" --digest "$DIGEST" \
    --target-dir "$OUT_DIR/out-fetch/source" --max-untar-size -1
}

for size in "${SIZES[@]}"; do
  files=${size%%:*} mb=${size#*:}
  name="artifact-$files-$mb.tar.gz"
  ART="$WORK/www/$name"
  if [ ! -f "$ART" ]; then
    echo "== generating $files files, ~$mb MB"
    rm -rf "$WORK/tree"
    python3 - "$WORK/tree" "$files" "$mb" <<'PY'
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
    # source-controller's shape: a "." root entry, gzip'd tar.
    tar -C "$WORK/tree" -cf - . | gzip -1 > "$ART"
    rm -rf "$WORK/tree"
  fi
  DIGEST="sha256:$(sha256sum "$ART" | cut -d' ' -f1)"
  SIZE=$(stat -c %s "$ART")
  URL="http://127.0.0.1:$PORT/$name"
  for _ in $(seq 50); do curl -sf -o /dev/null -r 0-0 "$URL" && break; sleep 0.1; done
  echo "== artifact: $files files, $SIZE bytes, $DIGEST"

  echo "== warm-up"
  baseline >/dev/null
  mv "$OUT_DIR/out-base" "$OUT_DIR/check-base"
  ours >/dev/null
  diff -r "$OUT_DIR/check-base" "$OUT_DIR/out-fetch/source" >/dev/null \
    || { echo "bench: trees differ" >&2; exit 1; }
  rm -rf "$OUT_DIR/check-base"
  echo "== unpacking into $OUT_DIR"

  : > "$WORK/base.txt"; : > "$WORK/fetch.txt"
  for i in $(seq "$RUNS"); do
    baseline >> "$WORK/base.txt"
    ours >> "$WORK/fetch.txt"
    echo "   run $i: $VS $(tail -1 "$WORK/base.txt")  fetch $(tail -1 "$WORK/fetch.txt")  (s KiB user sys)"
  done

  python3 - "$WORK/base.txt" "$WORK/fetch.txt" "$SIZE" "$VS" "$files" <<'PY'
import statistics, sys
def load(p):
    rows = [tuple(map(float, l.split())) for l in open(p) if l.strip()]
    return (statistics.median(r[0] for r in rows), max(r[1] for r in rows),
            statistics.median(r[2] + r[3] for r in rows))
bw, brss, bcpu = load(sys.argv[1]); fw, frss, fcpu = load(sys.argv[2])
size, vs, files = int(sys.argv[3]), sys.argv[4], int(sys.argv[5])
label = "PKO's agent init (Flux mode)" if vs == "pko" else "baseline (curl|tee sha256sum|tar -xz)"
print(f"{label}: median {bw:.3f}s wall, {bcpu:.3f}s CPU, peak RSS {brss/1024:.1f} MiB (largest process)")
print(f"fetch flux: median {fw:.3f}s wall, {fcpu:.3f}s CPU, peak RSS {frss/1024:.1f} MiB, {size/fw/1e6:.0f} MB/s")
def verdict(ok): return "met" if ok else "MISSED"
if vs == "pko":
    large = files >= 1000
    print(f"ratio fetch/PKO: wall {fw/bw:.3f}" + (f" (target <= 0.5: {verdict(fw/bw <= 0.5)})" if large else "")
          + f", CPU {fcpu/bcpu:.3f}, peak RSS {frss/brss:.3f} (target <= 0.25: {verdict(frss/brss <= 0.25)})")
else:
    ratio = fw / bw
    print(f"ratio fetch/baseline (median wall): {ratio:.3f}   target <= 1.0: {verdict(ratio <= 1.0)}")
    print(f"fetch peak RSS: {frss/1024:.1f} MiB   target <= 32 MiB: {verdict(frss <= 32*1024)}")
PY
done
