#!/usr/bin/env bash
# Benchmark: `fetch git` against the git CLI (or, with --vs pko, PKO v2.9.0's own init
# container in git mode, go-git: tool `pko`), in the same run, over smart HTTP on loopback (the
# harness's `git http-backend` server, basic auth).
#
#   shallow:  git clone --depth 1 URL DIR            vs  fetch git --shallow --revision <tip>
#   full:     git clone URL DIR                      vs  fetch git --revision <tip>
#   --vs pko: pulumi-kubernetes-agent init --git-url URL --git-revision <tip> --target-dir DIR
#             (GIT_SHALLOW=true for shallow) in place of git clone
#
# The repository is generated with git fast-import: FILES files, COMMITS commits touching a
# few files each. The served repository allows SHAs in wants, as GitHub and GitLab do, so
# both sides fetch one commit in shallow mode. Prints median wall and CPU times, peak RSS and
# the ratios fetch/other (target against git, issue 5: wall <= 1.0 for both).
#
# Usage: fetch/bench/git.sh [--vs pko]   (env: RUNS=5 FILES=5000 COMMITS=500 BENCH_DIR=/tmp/...)
set -euo pipefail

case "$*" in
  "") VS=git ;;
  "--vs pko") VS=pko ;;
  *) echo "usage: $0 [--vs pko]" >&2; exit 2 ;;
esac

RUNS=${RUNS:-5}
FILES=${FILES:-5000}
COMMITS=${COMMITS:-500}
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
WORK=${BENCH_DIR:-$(mktemp -d /tmp/git-bench.XXXXXX)}
OUT=${OUT_DIR:-$( [ -d /dev/shm ] && mktemp -d /dev/shm/git-bench-out.XXXXXX || echo "$WORK/out")}
mkdir -p "$WORK/repos" "$OUT"

for tool in git python3 /usr/bin/time; do
  command -v "$tool" >/dev/null || { echo "bench: $tool is required" >&2; exit 1; }
done

echo "== building fetch and git-serve (release)"
cargo build --release -p fetch -p e2e --bin fetch --bin git-serve \
  --manifest-path "$ROOT/Cargo.toml" >/dev/null
BIN=${CARGO_TARGET_DIR:-$ROOT/target}/release
if [ "$VS" = pko ]; then
  echo "== building PKO's agent (tests/tools/build.sh pko)"
  bash "$ROOT/tests/tools/build.sh" pko >/dev/null
  AGENT="$(bash "$ROOT/tests/tools/build.sh" --dir pko)/pulumi-kubernetes-agent"
fi

REPO="$WORK/repos/bench.git"
if [ ! -d "$REPO" ]; then
  echo "== generating $FILES files, $COMMITS commits"
  git init -q --bare --initial-branch=main "$REPO"
  python3 - "$FILES" "$COMMITS" <<'PY' | git -C "$REPO" fast-import --quiet
import random, sys
files, commits = int(sys.argv[1]), int(sys.argv[2])
rng = random.Random(7)
out = sys.stdout.buffer
def blob(data):
    out.write(b"data %d\n" % len(data)); out.write(data); out.write(b"\n")
def path(i):
    return b"pkg%03d/mod%02d/file%05d.ts" % (i // 100, (i // 10) % 10, i)
def body(i, rev):
    words = [b"export const v%d_%d = %d;" % (i, k, rng.randint(0, 10**9)) for k in range(rng.randint(5, 60))]
    return b"// rev %d\n" % rev + b"\n".join(words) + b"\n"
t = 1700000000
for c in range(commits):
    out.write(b"commit refs/heads/main\n")
    out.write(b"committer bench <bench@example.com> %d +0000\n" % (t + c))
    blob(b"commit %d" % c)
    if c == 0:
        out.write(b"M 100644 inline Pulumi.yaml\n"); blob(b"name: bench\nruntime: yaml\n")
        for i in range(files):
            out.write(b"M 100644 inline " + path(i) + b"\n"); blob(body(i, c))
    else:
        # fast-import chains commits on the same ref by itself: no `from` needed.
        for i in rng.sample(range(files), 10):
            out.write(b"M 100644 inline " + path(i) + b"\n"); blob(body(i, c))
    out.write(b"\n")
PY
  git -C "$REPO" config uploadpack.allowReachableSHA1InWant true
  git -C "$REPO" gc -q
fi
TIP=$(git -C "$REPO" rev-parse main)
echo "== repository: $(git -C "$REPO" rev-list --count main) commits, $(git -C "$REPO" ls-tree -r main | wc -l) files, pack $(du -sh "$REPO/objects" | cut -f1)"

"$BIN/git-serve" "$WORK" bench s3cret > "$WORK/serve.url" &
SERVER=$!
trap 'kill $SERVER 2>/dev/null || true; rm -rf "$OUT"' EXIT
for _ in $(seq 50); do [ -s "$WORK/serve.url" ] && break; sleep 0.1; done
BASE=$(cat "$WORK/serve.url")
URL="$BASE/bench.git"
AUTH_URL="http://bench:s3cret@${BASE#http://}/bench.git"

# Each measurement prints "wall_seconds max_rss_kib user_seconds system_seconds".
measure() {
  /usr/bin/time -f "%e %M %U %S" -o "$WORK/time.txt" "$@" >/dev/null 2>"$WORK/stderr.txt" \
    || { cat "$WORK/stderr.txt" >&2; exit 1; }
  cat "$WORK/time.txt"
}
run_other() { # shallow|full
  rm -rf "$OUT/other"
  if [ "$VS" = pko ]; then
    local shallow=false
    [ "$1" = shallow ] && shallow=true
    measure env GIT_USERNAME=bench GIT_PASSWORD=s3cret GIT_SHALLOW=$shallow "$AGENT" init \
      --git-url "$URL" --git-revision "$TIP" --target-dir "$OUT/other"
  else
    local depth=()
    [ "$1" = shallow ] && depth=(--depth 1)
    measure env GIT_TERMINAL_PROMPT=0 git -c advice.detachedHead=false clone -q "${depth[@]}" \
      "$AUTH_URL" "$OUT/other"
  fi
}
run_fetch() { # shallow|full
  rm -rf "$OUT/share"
  mkdir -p "$OUT/share"
  local shallow=()
  [ "$1" = shallow ] && shallow=(--shallow)
  measure env GIT_USERNAME=bench GIT_PASSWORD=s3cret "$BIN/fetch" --termination-log /dev/null git \
    --url "$URL" --revision "$TIP" --target-dir "$OUT/share/source" "${shallow[@]}"
}

for mode in shallow full; do
  : > "$WORK/$mode.other"; : > "$WORK/$mode.fetch"
  for i in $(seq "$RUNS"); do
    run_other "$mode" >> "$WORK/$mode.other"
    run_fetch "$mode" >> "$WORK/$mode.fetch"
  done
  # Same tree on both sides.
  diff -r -q --exclude=.git "$OUT/other" "$OUT/share/source" >/dev/null \
    || { echo "bench: $mode checkouts differ" >&2; exit 1; }
  python3 - "$WORK/$mode.other" "$WORK/$mode.fetch" "$mode" "$VS" "$RUNS" <<'PY'
import statistics, sys
def load(p):
    rows = [tuple(map(float, l.split())) for l in open(p) if l.strip()]
    return (statistics.median(r[0] for r in rows), statistics.median(r[2] + r[3] for r in rows),
            max(r[1] for r in rows) / 1024)
ow, ocpu, orss = load(sys.argv[1]); fw, fcpu, frss = load(sys.argv[2])
mode, vs, runs = sys.argv[3], sys.argv[4], sys.argv[5]
other = "PKO agent init" if vs == "pko" else "git clone"
print(f"{mode:<8} {other} median {ow:.3f}s wall {ocpu:.3f}s CPU {orss:.1f} MiB   "
      f"fetch git median {fw:.3f}s wall {fcpu:.3f}s CPU {frss:.1f} MiB   "
      f"ratios wall {fw/ow:.3f} CPU {fcpu/ocpu:.3f} peak RSS {frss/orss:.3f}   (runs: {runs})")
PY
done
