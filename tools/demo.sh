#!/bin/bash
# The first thing a new user runs: a real word count on the embedded local cluster.
set -euo pipefail
PY=${1:-python3}
cd "$(dirname "$0")/.."
mkdir -p demo-data
if [ ! -s demo-data/corpus.txt ]; then
  echo "generating a 16 MiB sample corpus in demo-data/corpus.txt"
  "$PY" tools/gen_corpus.py --size 16M --output demo-data/corpus.txt >/dev/null
fi
rm -rf demo-data/wordcount
"$PY" -m blfsd submit examples/wordcount.py --input demo-data/corpus.txt \
  --output demo-data/wordcount --local --workers 2 --split-size 4M
echo
echo "top 10 words (output in demo-data/wordcount/part-*):"
sort -t$'\t' -k2,2nr demo-data/wordcount/part-* | sed -n 1,10p
