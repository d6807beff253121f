#!/bin/bash
# Profile blfs with py-spy on the benchmark's sort and word count inputs (root: py-spy uses
# ptrace), and summarise each profile by role (tools/profile_summary.py).
#
#     bash tools/profile_jobs.sh [SIZE]        # default 256M; profiles in bench-data/profile/
#
# py-spy comes from PyPI into the venv (`.venv/bin/pip install py-spy`) if it is missing.
# Samples are of running threads only (CPU); add --idle by setting IDLE=1 to see waits too.
set -euo pipefail
cd "$(dirname "$0")/.."
SIZE=${1:-256M}
PY=.venv/bin/python
SPY=.venv/bin/py-spy
[ -x "$SPY" ] || .venv/bin/pip install -q py-spy
OUT=bench-data/profile
mkdir -p "$OUT"
$PY tools/gen_records.py --size "$SIZE" >/dev/null
$PY tools/gen_corpus.py --size "$SIZE" >/dev/null
extra=()
[ "${IDLE:-0}" = 1 ] && extra=(--idle)
run() {  # name job input
  local name=$1 job=$2 input=$3 dir
  dir=$(mktemp -d "$OUT/out-$name.XXXXXX")
  cat "$input" >/dev/null  # in the page cache, as in the benchmark
  "$SPY" record "${extra[@]}" --subprocesses --format raw -r 100 -o "$OUT/$name-$SIZE.raw" -- \
    $PY -m blfsd submit "$job" --input "$input" --output "$dir/out" --local --workers 2
  rm -rf "$dir"
  $PY tools/profile_summary.py "$OUT/$name-$SIZE.raw" > "$OUT/$name-$SIZE.txt"
  $PY tools/profile_summary.py --lines "$OUT/$name-$SIZE.raw" > "$OUT/$name-$SIZE-lines.txt"
  echo "== $name $SIZE: $OUT/$name-$SIZE.txt (by function), $OUT/$name-$SIZE-lines.txt (by line)"
  head -1 "$OUT/$name-$SIZE.txt"
}
run sort examples/sort.py "bench-data/records-$SIZE-s1.txt"
run wordcount examples/wordcount.py "bench-data/corpus-$SIZE-s1.txt"
