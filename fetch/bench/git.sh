#!/usr/bin/env bash
# Benchmark: `fetch git` against the git CLI, in the same run, over smart HTTP on loopback
# (the harness's `git http-backend` server, basic auth).
#
#   shallow:  git clone --depth 1 URL DIR            vs  fetch git --shallow --revision <tip>
#   full:     git clone URL DIR                      vs  fetch git --revision <tip>
#
# The repository is generated with git fast-import: FILES files, COMMITS commits touching a
# few files each. The served repository allows SHAs in wants, as GitHub and GitLab do, so
# both sides fetch one commit in shallow mode. Prints median wall times and the ratios
# fetch/git (target, issue 5: <= 1.0 for both).
#
# Usage: fetch/bench/git.sh          (env: RUNS=5 FILES=5000 COMMITS=500 BENCH_DIR=/tmp/...)
set -euo pipefail

RUNS=${RUNS:-5}
FILES=${FILES:-5000}
COMMITS=${COMMITS:-500}
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
WORK=${BENCH_DIR:-$(mktemp -d /tmp/git-bench.XXXXXX)}
OUT=${OUT_DIR:-$( [ -d /dev/shm ] && mktemp -d /dev/shm/git-bench-out.XXXXXX || echo "$WORK/out")}
mkdir -p "$WORK/repos" "$OUT"

for tool in git python3; do
  command -v "$tool" >/dev/null || { echo "bench: $tool is required" >&2; exit 1; }
done

echo "== building fetch and git-serve (release)"
cargo build --release -p fetch -p e2e --bin fetch --bin git-serve \
  --manifest-path "$ROOT/Cargo.toml" >/dev/null
BIN=${CARGO_TARGET_DIR:-$ROOT/target}/release

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

now() { date +%s.%N; }
run_git() { # depth-args...
  rm -rf "$OUT/git"
  local s; s=$(now)
  GIT_TERMINAL_PROMPT=0 git -c advice.detachedHead=false clone -q "$@" "$AUTH_URL" "$OUT/git"
  echo "$(now) - $s" | bc -l
}
run_fetch() { # extra-args...
  rm -rf "$OUT/share"
  mkdir -p "$OUT/share"
  local s; s=$(now)
  GIT_USERNAME=bench GIT_PASSWORD=s3cret "$BIN/fetch" --termination-log /dev/null git \
    --url "$URL" --revision "$TIP" --target-dir "$OUT/share/source" "$@" 2>/dev/null
  echo "$(now) - $s" | bc -l
}
median() { sort -g | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }

for mode in shallow full; do
  : > "$WORK/$mode.git"; : > "$WORK/$mode.fetch"
  for i in $(seq "$RUNS"); do
    if [ "$mode" = shallow ]; then
      run_git --depth 1 >> "$WORK/$mode.git"
      run_fetch --shallow >> "$WORK/$mode.fetch"
    else
      run_git >> "$WORK/$mode.git"
      run_fetch >> "$WORK/$mode.fetch"
    fi
  done
  # Same tree on both sides.
  diff -r -q --exclude=.git "$OUT/git" "$OUT/share/source" >/dev/null \
    || { echo "bench: $mode checkouts differ" >&2; exit 1; }
  g=$(median < "$WORK/$mode.git"); f=$(median < "$WORK/$mode.fetch")
  printf '%-8s git clone median %.3fs   fetch git median %.3fs   ratio %.3f   (runs: %s)\n' \
    "$mode" "$g" "$f" "$(echo "$f / $g" | bc -l)" "$RUNS"
done
