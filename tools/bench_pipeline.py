#!/usr/bin/env python3
"""Two benchmarks of issue 11, run by `make bench` (sections pipeline and mrjob):

- pipeline: word count then the top 100 words over a Zipf corpus (default 256 MiB), as one
  blfs job of two steps (tools/jobs/top100.py), beside the same work as two separate blfs
  jobs (examples/wordcount.py, then tools/jobs/top100_of_counts.py over its parts) and a
  single Python process (Counter, heapq.nlargest); the three answers must be the same.
- mrjob: mrjob's own word frequency count example over a 64 MiB corpus, through
  `blfs submit --local --workers 2`, beside mrjob's `-r local` runner on the same input;
  the two outputs must hold the same records.

Medians of --repeat runs, interleaved.
"""
from __future__ import annotations

import collections
import heapq
import importlib.util
import os
import shutil
import statistics
import sys
import time

import bench  # noqa: E402  (tools/bench.py: measured runs, logs)
import datacache  # noqa: E402
import gen_corpus  # noqa: E402

TOOLS = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(TOOLS)
DATA = bench.DATA
PIPELINE_JOB = os.path.join(TOOLS, "jobs", "top100.py")
SECOND_JOB = os.path.join(TOOLS, "jobs", "top100_of_counts.py")


def top100_reference(corpus: str) -> list:
    """The single-process answer: (word, count) of the 100 most frequent words."""
    counts: collections.Counter = collections.Counter()
    with open(corpus, "rb") as f:
        for line in f:
            counts.update(line.decode("utf-8", "surrogateescape").split())
    return [(w, n) for n, w in heapq.nlargest(100, ((n, w) for w, n in counts.items()))]


def read_top(out_dir: str) -> list:
    rows = []
    for path in bench.parts_of(out_dir):
        with open(path, encoding="utf-8", errors="surrogateescape") as f:
            for line in f:
                word, _, count = line.rstrip("\n").rpartition("\t")
                rows.append((word, int(count)))
    return rows


def bench_pipeline(size: int, args, say) -> list:
    """Problems found (empty: the three answers agree)."""
    label = datacache.format_size(size)
    corpus = os.path.join(DATA, f"corpus-{label}-s{args.seed}.txt")
    gen_corpus.generate(corpus, size, seed=args.seed)
    bench.warm(corpus)
    out = os.path.join(DATA, "out")
    os.makedirs(out, exist_ok=True)
    logs = os.path.join(DATA, "logs")
    times: dict = {"pipeline": [], "two jobs": [], "python": []}
    answers: dict = {}
    for r in range(args.repeat):
        t0 = time.monotonic()
        answers["python"] = top100_reference(corpus)
        times["python"].append(time.monotonic() - t0)
        run = bench.run_blfs(PIPELINE_JOB, [corpus], os.path.join(out, "pipe-top100"),
                             args.workers, os.path.join(logs, f"pipeline-{label}-{r}.log"),
                             args.extra, args.interval)
        times["pipeline"].append(run.wall)
        answers["pipeline"] = read_top(os.path.join(out, "pipe-top100"))
        counts_dir = os.path.join(out, "two-jobs-counts")
        first = bench.run_blfs(bench.WC_JOB, [corpus], counts_dir, args.workers,
                               os.path.join(logs, f"two-jobs-a-{label}-{r}.log"), args.extra,
                               args.interval)
        second = bench.run_blfs(SECOND_JOB, bench.parts_of(counts_dir),
                                os.path.join(out, "two-jobs-top100"), args.workers,
                                os.path.join(logs, f"two-jobs-b-{label}-{r}.log"),
                                args.extra, args.interval)
        times["two jobs"].append(first.wall + second.wall)
        answers["two jobs"] = read_top(os.path.join(out, "two-jobs-top100"))
        say(f"   run {r + 1}/{args.repeat}: pipeline {run.wall:.2f} s; two jobs "
            f"{first.wall:.2f} + {second.wall:.2f} s; python {times['python'][-1]:.2f} s")
    med = {k: statistics.median(v) for k, v in times.items()}
    say(f"pipeline {label}: one 2-step job {med['pipeline']:.2f} s, two separate jobs "
        f"{med['two jobs']:.2f} s ({med['two jobs'] / med['pipeline']:.2f}x the pipeline), "
        f"one Python process {med['python']:.2f} s (pipeline/python "
        f"{med['pipeline'] / med['python']:.2f}x)")
    problems = [f"{k} differs from the Python answer" for k in ("pipeline", "two jobs")
                if answers[k] != answers["python"]]
    say("   check: " + ("; ".join(problems) if problems else
                        "the same 100 words and counts from all three"))
    return problems


def _mrjob_example(name: str) -> str:
    spec = importlib.util.find_spec(f"mrjob.examples.{name}")
    if spec is None:
        raise bench.RunFailed("mrjob is not installed (pip install mrjob==0.7.4)")
    return spec.origin


def bench_mrjob(size: int, args, say) -> list:
    label = datacache.format_size(size)
    corpus = os.path.join(DATA, f"corpus-{label}-s{args.seed}.txt")
    gen_corpus.generate(corpus, size, seed=args.seed)
    bench.warm(corpus)
    job = _mrjob_example("mr_word_freq_count")
    out = os.path.join(DATA, "out")
    logs = os.path.join(DATA, "logs")
    ours_dir, theirs_dir = os.path.join(out, "mrjob-blfs"), os.path.join(out, "mrjob-local")
    ours, theirs = [], []
    for r in range(args.repeat):
        run = bench.run_blfs(job, [corpus], ours_dir, args.workers,
                             os.path.join(logs, f"mrjob-blfs-{label}-{r}.log"), args.extra,
                             args.interval)
        ours.append(run.wall)
        shutil.rmtree(theirs_dir, ignore_errors=True)
        base = bench.run_baseline("mrjob -r local", [
            sys.executable, job, "-r", "local", "--no-conf", "--output-dir", theirs_dir,
            corpus], os.path.join(logs, f"mrjob-local-{label}-{r}.log"), args.interval)
        theirs.append(base.wall)
        say(f"   run {r + 1}/{args.repeat}: blfs {run.wall:.2f} s; mrjob -r local "
            f"{base.wall:.2f} s")
    mine, ref = _lines(ours_dir), _lines(theirs_dir)
    say(f"mrjob word frequency count {label}: through blfs --local --workers {args.workers} "
        f"{statistics.median(ours):.2f} s, mrjob -r local {statistics.median(theirs):.2f} s "
        f"({statistics.median(theirs) / statistics.median(ours):.2f}x blfs)")
    same = sorted(mine) == sorted(ref) and mine
    say("   check: " + ("the same lines from both" if same else "the outputs DIFFER"))
    return [] if same else ["mrjob through blfs differs from mrjob -r local"]


def _lines(out_dir: str) -> list:
    lines = []
    for name in sorted(os.listdir(out_dir)):
        if name.startswith("part-"):
            with open(os.path.join(out_dir, name), "rb") as f:
                lines += f.read().splitlines()
    return lines
