#!/usr/bin/env python3
"""Benchmarks of blfs (issue 13), each printed beside its baselines from the same run.

What `make bench` runs (about 20 minutes on 2 CPUs, more on a busy machine; --quick is a
smoke run of about a minute):
  sort       100-byte records (tools/gen_records.py: a unique 10-letter key, a TAB, an
             88-byte payload) through examples/sort.py (identity map, range partitioner on
             the first letter, no combiner, 2 reducers) with `blfs submit --local
             --workers 2`, beside one Python process (readlines, list.sort, writelines)
             and `LC_ALL=C sort -S 1G --parallel=2 -t TAB -k1,1 -s`; blfs's parts,
             concatenated in part order, must be byte-identical to GNU sort's output.
             At 256 MiB and 1 GiB.
  skew       the same at 256 MiB where one key holds half of all records: equal keys make
             the order of their records a choice, so the check is: identical to GNU's
             stable sort, or else keys in order and the same lines.
  wordcount  examples/wordcount.py over the Zipf corpus (tools/gen_corpus.py) beside a
             hand-written 2-process multiprocessing + Counter baseline; counts must agree.
             At 256 MiB and 1 GiB.
  tiny       a 3-line word count end to end.
  shuffle    (root only) on a master and 2 workers with loop-device disks: a shuffle-only
             job (tools/jobs/shuffle_only.py), its reducers' read rate beside what
             `dd iflag=direct` reads from the same loop device (tools/bench_shuffle.py).
  scheduler  the pure scheduler through a simulated 64-worker cluster, 10,000 maps and 64
             reduces (tools/bench_scheduler.py): cost per decision and per heartbeat, and
             how each decision scales.
Every timing is the median of --repeat runs (3), contenders interleaved run by run. For
each blfs run (and each baseline) the process tree is watched through /proc
(tools/proctree.py): CPU = user+sys of the whole tree / wall (200% = both CPUs), the peak
RSS of the largest task process (map, reduce) and of any process, the largest sum of RSS
over the tree at one instant, when maps and reduces ran, and their CPU seconds. The job's
own counters come from its final status (tools/blfs_run.py); time counters the engine does
not report yet are shown as n/a.

Inputs are generated (seeded) and cached under bench-data/ (gitignored); every input is
read once before it is timed, so every contender starts with it in the page cache.
Outputs go to bench-data/out/, each blfs run's output with timestamps to bench-data/logs/,
and the printed report to bench-data/results/.

    .venv/bin/python tools/bench.py                   # everything (what `make bench` runs)
    .venv/bin/python tools/bench.py --quick           # smoke run: small inputs, 1 run each
    .venv/bin/python tools/bench.py --only sort,tiny --sort-sizes 256M --repeat 1
    .venv/bin/python tools/bench.py --blfs-args='--split-size 32M'

Exit status: 0 if every run succeeded and every output was right, 1 otherwise. The
acceptance targets of issue 13 are printed as met / NOT MET; they do not change the exit
status.
"""
from __future__ import annotations

import argparse
import collections
import datetime
import glob
import json
import os
import platform
import shlex
import shutil
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass, field
from typing import Callable, Optional

TOOLS = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(TOOLS)
sys.path.insert(0, TOOLS)

import datacache  # noqa: E402
import gen_corpus  # noqa: E402
import gen_records  # noqa: E402
import proctree  # noqa: E402

DATA = os.path.join(REPO, "bench-data")
SORT_JOB = os.path.join("examples", "sort.py")
WC_JOB = os.path.join("examples", "wordcount.py")
READ_CHUNK = 16 * 1024 * 1024
TINY_INPUT = "the quick brown fox\njumps over the lazy dog\nthe end\n"
SECTIONS = ("sort", "skew", "wordcount", "tiny", "pipeline", "mrjob", "shuffle", "scheduler")
MIB = 1 << 20
# the blfs counters (group "blfs", integer milliseconds summed over the winning attempts)
# that say where the tasks' time went, shown in seconds
TIME_COUNTERS = {"map_seconds": "map_ms", "spill_seconds": "spill_ms",
                 "shuffle_read_seconds": "shuffle_read_ms", "reduce_seconds": "reduce_ms"}


def blfs_python() -> str:
    venv = os.path.join(REPO, ".venv", "bin", "python")
    return venv if os.access(venv, os.X_OK) else sys.executable


# ------------------------------------------------------------------------------ helpers

def fmt_size(n: int) -> str:
    for unit, mult in (("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if n >= mult:
            v = n / mult
            return f"{v:.0f} {unit}" if v == int(v) else f"{v:.1f} {unit}"
    return f"{n} B"


def mib(n: Optional[int]) -> str:
    return "n/a" if not n else f"{n / MIB:.0f} MiB"


def secs(x: Optional[float]) -> str:
    return "n/a" if x is None else f"{x:.2f}"


def warm(path: str) -> None:
    """Read a file once so that every contender finds it in the page cache."""
    with open(path, "rb") as f:
        while f.read(READ_CHUNK):
            pass


def same_bytes(a_paths: list, b_paths: list) -> Optional[int]:
    """None if the concatenation of a_paths equals that of b_paths, else the offset of
    the first difference."""
    def chunks(paths):
        for p in paths:
            with open(p, "rb") as f:
                while True:
                    data = f.read(READ_CHUNK)
                    if not data:
                        break
                    yield data

    a_it, b_it = chunks(a_paths), chunks(b_paths)
    a = b = b""
    offset = 0
    while True:
        if not a:
            a = next(a_it, b"")
        if not b:
            b = next(b_it, b"")
        if not a or not b:
            return None if not a and not b else offset
        n = min(len(a), len(b))
        if a[:n] != b[:n]:
            return offset + next(i for i in range(n) if a[i] != b[i])
        offset += n
        a, b = a[n:], b[n:]


def keys_in_order(paths: list, key_len: int = gen_records.KEY_LEN) -> Optional[str]:
    """None if the lines of these files (in this order) have non-decreasing keys."""
    last = b""
    for p in paths:
        with open(p, "rb") as f:
            for n, line in enumerate(f, 1):
                k = line[:key_len]
                if k < last:
                    return f"{os.path.basename(p)}:{n}: key {k!r} after {last!r}"
                last = k
    return None


def median_run(runs: list, key: Callable = lambda r: r.wall):
    """The run with the median wall time (the lower middle one for an even count)."""
    ordered = sorted(runs, key=key)
    return ordered[(len(ordered) - 1) // 2]


# ------------------------------------------------------------------------------ running

class RunFailed(Exception):
    def __init__(self, message: str, summary: str | None = None):
        super().__init__(message)
        self.summary = summary or message.splitlines()[0]


@dataclass
class Run:
    """One measured run of blfs or of a baseline."""
    what: str
    m: proctree.Measurement
    status: dict = field(default_factory=dict)  # blfs: the job's final status

    @property
    def wall(self) -> float:
        return self.m.wall

    def counter(self, name: str, group: str = "blfs") -> Optional[float]:
        return (self.status.get("counters") or {}).get(group, {}).get(name)

    def task_peak(self) -> tuple:
        """(bytes, role) of the largest task process."""
        p = self.m.largest("map", "reduce", "task")
        return (p.hwm, p.role) if p else (0, "-")

    def cpu_of(self, *roles: str) -> float:
        return sum(p.cpu for p in self.m.of_role(*roles))


def write_log(path: str, argv: list, m: proctree.Measurement) -> None:
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as log:
        log.write(f"$ (cd {shlex.quote(REPO)} && {shlex.join(argv)})\n")
        log.writelines(f"{t:8.3f}  {line}\n" for t, line in m.output)
        log.write(f"exit status {m.returncode} after {m.wall:.3f} s; user {m.user:.2f} s, "
                  f"sys {m.sys:.2f} s; largest process {m.maxrss / MIB:.0f} MiB; tree "
                  f"{m.tree_peak / MIB:.0f} MiB; {m.samples} samples\n")
        for p in sorted(m.procs.values(), key=lambda p: (p.first, p.pid)):
            log.write(f"   pid {p.pid:>7} {p.role:<7} seen {p.first:7.2f} .. {p.last:7.2f} s  "
                      f"cpu {p.cpu:6.2f} s  peak rss {p.hwm / MIB:6.0f} MiB\n")


def run_blfs(job: str, inputs: list, out_dir: str, workers: int, log_path: str,
             extra: list, interval: float, job_args: tuple = ()) -> Run:
    """One `blfs submit ... --local`, measured; raises RunFailed unless it succeeded."""
    if os.path.lexists(out_dir):
        shutil.rmtree(out_dir)
    status_file = log_path + ".status.json"
    try:
        os.unlink(status_file)
    except FileNotFoundError:
        pass
    argv = [blfs_python(), os.path.join(TOOLS, "blfs_run.py"), "--status-file", status_file,
            "submit", job]
    for i in inputs:
        argv += ["--input", i]
    argv += ["--output", out_dir, "--local", "--workers", str(workers)] + list(extra)
    if job_args:
        argv += ["--", *job_args]

    def classify(pid: int) -> str:
        return proctree.classify_task(proctree.open_files(pid), inputs, out_dir)

    m = proctree.measure(argv, cwd=REPO, interval=interval,
                         roles=("master", "worker", "task"), classify=classify)
    write_log(log_path, argv, m)
    rel = os.path.relpath(log_path, REPO)
    if m.returncode != 0:
        last = next((line for _, line in reversed(m.output) if line.strip()), "(no output)")
        raise RunFailed(
            f"blfs failed with exit status {m.returncode} after {m.wall:.1f} s:\n"
            + "\n".join("  | " + line for _, line in m.output[-30:])
            + f"\n  (full output: {rel})",
            f"exit status {m.returncode}: {last} (see {rel})")
    if not os.path.exists(os.path.join(out_dir, "_SUCCESS")):
        raise RunFailed(f"exit status 0 but no {out_dir}/_SUCCESS (log: {rel})")
    status: dict = {}
    try:
        with open(status_file) as f:
            status = json.load(f)
    except (OSError, ValueError):
        pass
    return Run("blfs", m, status)


def run_baseline(what: str, argv: list, log_path: str, interval: float,
                 env: Optional[dict] = None) -> Run:
    m = proctree.measure(argv, cwd=REPO, interval=interval, env=env,
                         roles=("main", "child", "child"))
    write_log(log_path, argv, m)
    if m.returncode != 0:
        raise RunFailed(f"{what} failed with exit status {m.returncode}:\n"
                        + "\n".join("  | " + line for _, line in m.output[-20:]))
    return Run(what, m)


def parts_of(out_dir: str) -> list:
    parts = sorted(glob.glob(os.path.join(out_dir, "part-*")))
    if not parts:
        raise RunFailed(f"no part files in {out_dir}")
    return parts


def gnu_sort_argv(inp: str, out: str) -> list:
    return ["sort", "-S", "1G", "--parallel=2", "-t", "\t", "-k1,1", "-s", "-o", out, inp]


C_LOCALE = dict(os.environ, LC_ALL="C")


# ------------------------------------------------------------------------------ results

@dataclass
class Row:
    bench: str  # sort, skew, wordcount
    size: int
    label: str
    blfs: list = field(default_factory=list)  # [Run]
    base: dict = field(default_factory=dict)  # name -> [Run]
    check: str = "-"
    error: Optional[str] = None
    gen: str = ""

    def med(self, runs: list) -> Optional[float]:
        return statistics.median(r.wall for r in runs) if runs else None

    @property
    def blfs_time(self) -> Optional[float]:
        return self.med(self.blfs) if self.error is None else None

    def base_time(self, name: str) -> Optional[float]:
        return self.med(self.base.get(name, []))


def others(run: Run) -> str:
    return "n/a" if run.m.others is None else f"{run.m.others:.1f}"


def describe(run: Run) -> str:
    peak, role = run.task_peak()
    text = (f"{run.wall:7.2f} s  CPU {run.m.cpu_share * 100:4.0f}%  others {others(run)} CPUs  "
            f"largest process {mib(run.m.maxrss)}")
    if run.what == "blfs":
        text += f", largest task {mib(peak)} ({role}), tree {mib(run.m.tree_peak)}"
    return text


# ------------------------------------------------------------------------------ sort

def blfs_run_into(row: Row, job: str, inputs: list, out_dir: str, name: str, tag: str,
                  args) -> None:
    """One blfs run of a row (unless an earlier one failed): its result, or its failure,
    kept in the row, and said; the log in logs/blfs-NAME.log."""
    if row.error is not None:
        return
    log = os.path.join(DATA, "logs", f"blfs-{name}.log")
    try:
        run = run_blfs(job, inputs, out_dir, args.workers, log, args.extra, args.interval)
        row.blfs.append(run)
        print(f"   {tag}: blfs     {describe(run)}", flush=True)
    except RunFailed as e:
        row.error = e.summary
        print(f"   blfs FAILED: {e}", flush=True)


def bench_sort(size: int, args, skew: float = 0.0) -> Row:
    name = "skew" if skew else "sort"
    path = gen_records.default_path(DATA, size, args.seed, skew)
    label = datacache.format_size(size) + (f"-skew{round(skew * 100)}" if skew else "")
    row = Row(name, size, label)
    title = (f"{fmt_size(size)} of records, one key holding {skew:.0%} of them"
             if skew else f"{fmt_size(size)} of records")
    print(f"\n== {name}: {title} ({os.path.relpath(path, REPO)})", flush=True)
    info = gen_records.generate(path, size, args.seed, skew)
    row.gen = f"{info['seconds']:.1f} s" + (" (cached)" if info["cached"] else "")
    print(f"   input {'reused from cache' if info['cached'] else 'generated'} in "
          f"{info['seconds']:.1f} s: {info['bytes']:,} bytes, {info['records']:,} records",
          flush=True)
    warm(path)
    out = os.path.join(DATA, "out")
    os.makedirs(out, exist_ok=True)
    py_out = os.path.join(out, f"python-sort-{label}.txt")
    gnu_out = os.path.join(out, f"gnu-sort-{label}.txt")
    blfs_out = os.path.join(out, f"blfs-{name}-{label}")
    row.base = {"python": [], "gnu": []}
    for r in range(args.repeat):
        tag = f"run {r + 1}/{args.repeat}"
        py = run_baseline("python sort", [sys.executable, os.path.join(TOOLS, "baselines.py"),
                                          "sort", path, py_out],
                          os.path.join(DATA, "logs", f"python-{name}-{label}-run{r + 1}.log"),
                          args.interval)
        row.base["python"].append(py)
        print(f"   {tag}: python   {describe(py)}", flush=True)
        gnu = run_baseline("GNU sort", gnu_sort_argv(path, gnu_out),
                           os.path.join(DATA, "logs", f"gnu-{name}-{label}-run{r + 1}.log"),
                           args.interval, env=C_LOCALE)
        row.base["gnu"].append(gnu)
        print(f"   {tag}: GNU sort {describe(gnu)}", flush=True)
        blfs_run_into(row, SORT_JOB, [path], blfs_out, f"{name}-{label}-run{r + 1}", tag,
                      args)
    if row.error is not None:
        row.check = "blfs FAILED"
        return row
    row.check = check_sort(parts_of(blfs_out), gnu_out, py_out, bool(skew))
    print(f"   check: {row.check}", flush=True)
    return row


def check_sort(parts: list, gnu_out: str, py_out: str, ties: bool) -> str:
    """'identical ...' when blfs's parts are GNU sort's bytes; for inputs with equal keys,
    else 'equal up to ties' when the keys are in order and the lines the same; otherwise
    a line starting with MISMATCH."""
    py_diff = same_bytes([py_out], [gnu_out])
    py_note = "" if py_diff is None or ties else \
        f" (and the Python baseline differs from GNU sort at byte {py_diff:,}!)"
    diff = same_bytes(parts, [gnu_out])
    if diff is None:
        return (f"identical to GNU sort ({len(parts)} parts)"
                + (", equal keys in input order" if ties else "") + py_note)
    if not ties:
        return f"MISMATCH: blfs output differs from GNU sort at byte {diff:,}" + py_note
    order = keys_in_order(parts)
    if order:
        return f"MISMATCH: keys out of order: {order}"
    # same lines? compare both sorted on the whole line
    a = os.path.join(DATA, "out", "check-blfs-sorted.txt")
    b = os.path.join(DATA, "out", "check-gnu-sorted.txt")
    try:
        subprocess.run(["sort", "-S", "1G", "-o", a] + parts, env=C_LOCALE, check=True)
        subprocess.run(["sort", "-S", "1G", "-o", b, gnu_out], env=C_LOCALE, check=True)
        lines_diff = same_bytes([a], [b])
    finally:
        for p in (a, b):
            if os.path.exists(p):
                os.unlink(p)
    if lines_diff is not None:
        return "MISMATCH: keys in order but the lines differ from the input's"
    return (f"equal to GNU sort up to the order of equal keys (keys in order, same lines; "
            f"not in input order from byte {diff:,})")


# ------------------------------------------------------------------------------ word count

def read_counts(paths: list) -> dict:
    counts: dict = {}
    for part in paths:
        with open(part, encoding="utf-8") as f:
            for n, line in enumerate(f, 1):
                key, sep, value = line.rstrip("\n").partition("\t")
                if not sep:
                    raise RunFailed(f"{part}:{n}: no TAB in line {line!r}")
                if key in counts:
                    raise RunFailed(f"{part}:{n}: key {key!r} appears twice")
                counts[key] = int(value)
    return counts


def compare_counts(blfs: dict, base: dict) -> list:
    problems = []
    missing = base.keys() - blfs.keys()
    extra = blfs.keys() - base.keys()
    wrong = [k for k in base.keys() & blfs.keys() if base[k] != blfs[k]]
    if missing:
        problems.append(f"{len(missing)} words missing from blfs output, e.g. {sorted(missing)[:5]}")
    if extra:
        problems.append(f"{len(extra)} words only in blfs output, e.g. {sorted(extra)[:5]}")
    if wrong:
        ex = ", ".join(f"{k!r}: blfs {blfs[k]} vs {base[k]}" for k in sorted(wrong)[:5])
        problems.append(f"{len(wrong)} words with wrong counts, e.g. {ex}")
    return problems


def bench_wordcount(size: int, args) -> Row:
    label = datacache.format_size(size)
    corpus = os.path.join(DATA, f"corpus-{label}-s{args.seed}.txt")
    row = Row("wordcount", size, label)
    print(f"\n== wordcount: {fmt_size(size)} corpus ({os.path.relpath(corpus, REPO)})",
          flush=True)
    info = gen_corpus.generate(corpus, size, seed=args.seed)
    row.gen = f"{info['seconds']:.1f} s" + (" (cached)" if info["cached"] else "")
    print(f"   corpus {'reused from cache' if info['cached'] else 'generated'} in "
          f"{info['seconds']:.1f} s: {info['bytes']:,} bytes, {info['lines']:,} lines, "
          f"{info['words']:,} words", flush=True)
    warm(corpus)
    out = os.path.join(DATA, "out")
    os.makedirs(out, exist_ok=True)
    base_out = os.path.join(out, f"baseline-wordcount-{label}.tsv")
    blfs_out = os.path.join(out, f"blfs-wordcount-{label}")
    row.base = {"baseline": []}
    for r in range(args.repeat):
        tag = f"run {r + 1}/{args.repeat}"
        base = run_baseline("word count baseline",
                            [sys.executable, os.path.join(TOOLS, "baselines.py"), "wordcount",
                             corpus, base_out, "--processes", str(args.workers)],
                            os.path.join(DATA, "logs", f"baseline-wordcount-{label}-run{r + 1}.log"),
                            args.interval)
        row.base["baseline"].append(base)
        print(f"   {tag}: baseline {describe(base)}", flush=True)
        blfs_run_into(row, WC_JOB, [corpus], blfs_out, f"wordcount-{label}-run{r + 1}", tag,
                      args)
    if row.error is not None:
        row.check = "blfs FAILED"
        return row
    base_counts = read_counts([base_out])
    problems = []
    if sum(base_counts.values()) != info["words"]:
        problems.append(f"the baseline counted {sum(base_counts.values()):,} words, the "
                        f"generator wrote {info['words']:,}")
    try:
        problems += compare_counts(read_counts(parts_of(blfs_out)), base_counts)
    except (RunFailed, ValueError, OSError) as e:
        problems.append(str(e))
    row.check = ("MISMATCH: " + "; ".join(problems)) if problems else \
        f"counts match ({len(base_counts):,} distinct words)"
    print(f"   check: {row.check}", flush=True)
    return row


# ------------------------------------------------------------------------------ tiny

def bench_tiny(args) -> tuple:
    tiny_dir = os.path.join(DATA, "tiny")
    os.makedirs(tiny_dir, exist_ok=True)
    inp = os.path.join(tiny_dir, "input.txt")
    with open(inp, "w") as f:
        f.write(TINY_INPUT)
    expect = dict(collections.Counter(TINY_INPUT.split()))
    print(f"\n== tiny: a 3-line word count, {args.tiny_runs} runs", flush=True)
    runs: list = []
    for r in range(args.tiny_runs):
        out_dir = os.path.join(DATA, "out", "blfs-tiny")
        log = os.path.join(DATA, "logs", f"blfs-tiny-run{r + 1}.log")
        try:
            run = run_blfs(WC_JOB, [inp], out_dir, args.workers, log, args.extra,
                           args.interval)
            got = read_counts(parts_of(out_dir))
        except RunFailed as e:
            print(f"   blfs FAILED: {e}", flush=True)
            return runs, f"blfs FAILED: {e.summary}"
        runs.append(run)
        print(f"   run {r + 1}: {describe(run)}", flush=True)
        if got != expect:
            return runs, f"MISMATCH: got {got}"
    return runs, "right"


# ------------------------------------------------------------------------------ report

def phase_line(run: Run) -> dict:
    """Where a blfs run's wall time went, from the process samples and the counters."""
    m = run.m
    maps, reduces = m.phase("map"), m.phase("reduce")
    tasks = m.phase("map", "reduce", "task")
    started, finished = run.status.get("started"), run.status.get("finished")
    job = (finished - started) if started and finished and finished >= started else None
    d = {"job": job, "outside": (m.wall - job) if job is not None else None,
         "startup": tasks[0] if tasks else None,
         "map": (maps[1] - maps[0]) if maps else None,
         "between": (reduces[0] - maps[1]) if maps and reduces else None,
         "reduce": (reduces[1] - reduces[0]) if reduces else None,
         "end": (m.wall - tasks[1]) if tasks else None,
         "map_cpu": run.cpu_of("map"), "reduce_cpu": run.cpu_of("reduce"),
         "worker_cpu": run.cpu_of("worker"), "master_cpu": run.cpu_of("master"),
         "maps": len(m.of_role("map")), "reduces": len(m.of_role("reduce"))}
    for name, counter in TIME_COUNTERS.items():
        ms = run.counter(counter)
        d[name] = ms / 1000 if ms is not None else None
    d["spills"] = run.counter("map_spills")
    return d


def print_results(rows: list, tiny: tuple, shuffle: Optional[dict], sched: Optional[list],
                  args, say: Callable) -> list:
    """The summary tables; returns the acceptance lines."""
    acceptance: list = []
    sort_rows = [r for r in rows if r.bench in ("sort", "skew")]
    wc_rows = [r for r in rows if r.bench == "wordcount"]
    n = args.repeat
    med = f"median of {n}" if n > 1 else "1 run"
    if sort_rows:
        say(f"\n== sort: wall seconds, {med} (blfs {SORT_JOB} --local --workers {args.workers}; "
            f"python = 1 process readlines/sort/writelines; GNU = sort -S 1G --parallel=2)")
        say(f"{'input':<16} {'blfs':>7} {'(min)':>7} {'python':>7} {'GNU':>7} {'blfs/py':>8} "
            f"{'blfs/GNU':>8}  check")
        for r in sort_rows:
            b, p, g = r.blfs_time, r.base_time("python"), r.base_time("gnu")
            lo = min((x.wall for x in r.blfs), default=None) if b else None
            say(f"{r.label:<16} {secs(b):>7} {secs(lo):>7} {secs(p):>7} {secs(g):>7} "
                f"{(f'{b / p:.2f}x' if b and p else '-'):>8} "
                f"{(f'{b / g:.2f}x' if b and g else '-'):>8}  {r.check}")
    if wc_rows:
        say(f"\n== word count: wall seconds, {med} (blfs {WC_JOB} --local --workers "
            f"{args.workers}; baseline = {args.workers} processes x Counter)")
        say(f"{'input':<16} {'blfs':>7} {'(min)':>7} {'baseline':>8} {'blfs/base':>9}  check")
        for r in wc_rows:
            b, p = r.blfs_time, r.base_time("baseline")
            lo = min((x.wall for x in r.blfs), default=None) if b else None
            say(f"{r.label:<16} {secs(b):>7} {secs(lo):>7} {secs(p):>8} "
                f"{(f'{b / p:.2f}x' if b and p else '-'):>9}  {r.check}")
    measured = [r for r in rows if r.blfs and r.error is None]
    if measured:
        say("\n== resources of each blfs run (the median run; RSS = peak resident set, sampled; "
            "tree = largest sum of RSS at one sample; CPU = user+sys of the tree / wall, "
            "200% = both CPUs; others = CPUs the rest of the machine kept busy meanwhile)")
        say(f"{'run':<22} {'wall':>6} {'CPU':>5} {'others':>6} {'map RSS':>8} {'reduce RSS':>10} "
            f"{'largest':>8} {'tree':>8}  {'maps x reduces':>14}  baselines: CPU, largest")
        for r in measured:
            run = median_run(r.blfs)
            mp, rd = run.m.largest("map"), run.m.largest("reduce")
            bases = "; ".join(
                f"{name} {median_run(v).m.cpu_share * 100:.0f}%, {mib(median_run(v).m.maxrss)}"
                for name, v in r.base.items() if v)
            maps = (run.status.get("maps") or {}).get("total", len(run.m.of_role("map")))
            reds = (run.status.get("reduces") or {}).get("total", len(run.m.of_role("reduce")))
            say(f"{r.bench + ' ' + r.label:<22} {run.wall:>6.2f} {run.m.cpu_share * 100:>4.0f}% "
                f"{others(run):>6} {mib(mp.hwm if mp else 0):>8} {mib(rd.hwm if rd else 0):>10} "
                f"{mib(run.m.maxrss):>8} {mib(run.m.tree_peak):>8}  {f'{maps} x {reds}':>14}  "
                f"{bases}")
        say(f"\n== where blfs's time went (the median run). job = the master's started .. "
            f"finished, outside = the rest of the command (local cluster start and stop). "
            f"Phases from the process samples (every {args.interval:g} s): start = until the "
            f"first task, map = first map start .. last map end, gap, reduce, end = last task "
            f".. exit. CPU seconds of all map / reduce tasks, of the workers and of the master "
            f"(sampled). Counters (group blfs, summed over tasks) from the job's status: n/a = "
            f"not reported by the engine.")
        say(f"{'run':<22} {'job':>6} {'outside':>7} | {'start':>5} {'map':>6} {'gap':>5} "
            f"{'reduce':>6} {'end':>5} | "
            f"{'mapCPU':>6} {'redCPU':>6} {'wkrCPU':>6} {'mstCPU':>6} | "
            f"{'map_s':>6} {'spill_s':>7} {'shuffle_read_s':>14} {'reduce_s':>8} {'spills':>6}")
        for r in measured:
            d = phase_line(median_run(r.blfs))

            def f(x, w, prec=2):
                return f"{'n/a' if x is None else f'{x:.{prec}f}':>{w}}"

            say(f"{r.bench + ' ' + r.label:<22} {f(d['job'], 6)} {f(d['outside'], 7)} | "
                f"{f(d['startup'], 5)} {f(d['map'], 6)} "
                f"{f(d['between'], 5)} {f(d['reduce'], 6)} {f(d['end'], 5)} | "
                f"{f(d['map_cpu'], 6, 1)} {f(d['reduce_cpu'], 6, 1)} "
                f"{f(d['worker_cpu'], 6, 1)} {f(d['master_cpu'], 6, 1)} | "
                f"{f(d['map_seconds'], 6)} {f(d['spill_seconds'], 7)} "
                f"{f(d['shuffle_read_seconds'], 14)} {f(d['reduce_seconds'], 8)} "
                f"{f(d['spills'], 6, 0)}")
    # scaling
    scal = []
    for bench in ("sort", "wordcount"):
        rs = sorted([r for r in rows if r.bench == bench and r.blfs_time], key=lambda r: r.size)
        if len(rs) >= 2:
            lo, hi = rs[0], rs[-1]
            base = "python" if bench == "sort" else "baseline"
            bl = hi.base_time(base) / lo.base_time(base) if lo.base_time(base) else None
            ratio = hi.blfs_time / lo.blfs_time
            expect = hi.size / lo.size
            rss_lo, rss_hi = median_run(lo.blfs).task_peak()[0], median_run(hi.blfs).task_peak()[0]
            scal.append((bench, lo, hi, ratio, expect, bl, rss_lo, rss_hi))
    if scal:
        say("\n== scaling: time(large) / time(small)   (input ratio; acceptance 0.9x..1.1x of it)")
        for bench, lo, hi, ratio, expect, bl, rss_lo, rss_hi in scal:
            gbase = ""
            if bench == "sort" and lo.base_time("gnu"):
                gbase = f", GNU sort {hi.base_time('gnu') / lo.base_time('gnu'):.2f}"
            say(f"{bench:<10} {hi.label} / {lo.label}: blfs {ratio:.2f} (input {expect:.0f}x); "
                f"{'python' if bench == 'sort' else 'baseline'} {bl:.2f}{gbase}; largest task "
                f"process {mib(rss_lo)} -> {mib(rss_hi)}")
            acceptance.append(ok(f"{bench} {hi.label}/{lo.label} time ratio in "
                                 f"[{0.9 * expect:.1f}, {1.1 * expect:.1f}]",
                                 0.9 * expect <= ratio <= 1.1 * expect, f"{ratio:.2f}"))
    runs, tiny_check = tiny
    if runs:
        t = [r.wall for r in runs]
        d = phase_line(median_run(runs))
        say(f"\n== tiny job (3 lines, --local --workers {args.workers}) end to end: median "
            f"{statistics.median(t):.2f} s of {len(t)} (min {min(t):.2f}, max {max(t):.2f}); "
            f"of the median run {secs(d['job'])} s inside the master's job, "
            f"{secs(d['outside'])} s outside it (starting and stopping the local cluster); "
            f"CPU {median_run(runs).m.cpu_share * 100:.0f}%, largest process "
            f"{mib(median_run(runs).m.maxrss)}; output {tiny_check}")
        acceptance.append(ok("tiny job <= 0.3 s", statistics.median(t) <= 0.3,
                             f"{statistics.median(t):.2f} s"))
    elif tiny_check:
        say(f"\n== tiny job: {tiny_check}")
    if shuffle:
        say("")
        for line in shuffle.get("lines", []):
            say(line)
        if shuffle.get("ratio") is not None:
            acceptance.append(ok("loop-disk shuffle: reducers read >= 80% of dd iflag=direct",
                                 shuffle["ratio"] >= 0.8, f"{shuffle['ratio']:.0%}"))
    if sched:
        say("")
        for line in sched:
            say(line)
        bad = [line for line in sched if "SUPER-LINEAR" in line]
        acceptance.append(ok("scheduler: no decision super-linear in its job's tasks",
                             not bad, f"{len(bad)} found" if bad else "none found"))
    # acceptance on the main sizes
    for r in rows:
        if not r.blfs_time:
            continue
        run = median_run(r.blfs)
        if r.bench == "sort" and r is next(x for x in rows if x.bench == "sort"):
            p = r.base_time("python")
            acceptance.append(ok(f"sort {r.label}: blfs <= 1.5x one Python process (goal 1.0x)",
                                 r.blfs_time <= 1.5 * p, f"{r.blfs_time / p:.2f}x"))
            acceptance.append(ok(f"sort {r.label}: CPU >= 170%", run.m.cpu_share >= 1.7,
                                 f"{run.m.cpu_share * 100:.0f}%"))
        if r.bench == "wordcount" and r is next(x for x in rows if x.bench == "wordcount"):
            p = r.base_time("baseline")
            acceptance.append(ok(f"wordcount {r.label}: blfs <= 1.2x the 2-process baseline",
                                 r.blfs_time <= 1.2 * p, f"{r.blfs_time / p:.2f}x"))
        largest_size = max(x.size for x in rows if x.bench == r.bench)
        if r.bench == "skew" or r.size == largest_size:
            worst = max((p.hwm for x in r.blfs for p in x.m.of_role("map", "reduce", "task")),
                        default=0)
            acceptance.append(ok(f"{r.bench} {r.label}: every task process <= 256 MiB RSS",
                                 worst <= 256 * MIB, mib(worst)))
    return acceptance


def ok(text: str, good: bool, value: str) -> str:
    return f"   {'met    ' if good else 'NOT MET'}  {text}: {value}"


# ------------------------------------------------------------------------------ main

def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter,
                                 epilog=__doc__.split("\n\n", 1)[1])
    ap.add_argument("--quick", action="store_true",
                    help="smoke run: 8M and 32M inputs, 1 run each, 3 tiny runs, small "
                         "shuffle and scheduler runs")
    ap.add_argument("--only", default=",".join(SECTIONS),
                    help=f"comma-separated sections (default all: {','.join(SECTIONS)})")
    ap.add_argument("--sort-sizes", default="256M,1G")
    ap.add_argument("--skew-sizes", default="256M")
    ap.add_argument("--wc-sizes", default="256M,1G")
    ap.add_argument("--repeat", type=int, default=3, help="runs of each contender (default 3)")
    ap.add_argument("--workers", type=int, default=2,
                    help="blfs --local workers = baseline processes (default 2)")
    ap.add_argument("--seed", type=int, default=1, help="input seed (default 1)")
    ap.add_argument("--tiny-runs", type=int, default=5)
    ap.add_argument("--interval", type=float, default=0.05,
                    help="seconds between /proc samples (default 0.05)")
    ap.add_argument("--shuffle-size", default="256M", help="shuffle-only job input (root)")
    ap.add_argument("--pipeline-size", default="256M",
                    help="corpus of the two-step pipeline (word count, then top 100)")
    ap.add_argument("--mrjob-size", default="64M",
                    help="corpus of mrjob's word frequency count (through blfs and -r local)")
    ap.add_argument("--blfs-args", default="", metavar="ARGS",
                    help="extra options for blfs submit, e.g. --blfs-args='--split-size 32M'")
    args = ap.parse_args(argv)
    args.extra = shlex.split(args.blfs_args)
    only = {s.strip() for s in args.only.split(",") if s.strip()}
    if only - set(SECTIONS):
        ap.error(f"unknown sections: {', '.join(sorted(only - set(SECTIONS)))}")
    if args.quick:
        args.sort_sizes = args.wc_sizes = "8M,32M"
        args.skew_sizes = "8M"
        args.repeat, args.tiny_runs = 1, 3
        args.interval = min(args.interval, 0.02)
        args.shuffle_size = "64M"
        args.pipeline_size = args.mrjob_size = "8M"
    if args.repeat < 1 or args.tiny_runs < 1 or args.workers < 1:
        ap.error("--repeat, --tiny-runs and --workers must be at least 1")

    def sizes(text: str) -> list:
        return [datacache.parse_size(s) for s in text.split(",") if s.strip()]

    os.chdir(REPO)
    os.makedirs(os.path.join(DATA, "results"), exist_ok=True)
    stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
    report_path = os.path.join(DATA, "results", f"bench-{stamp}.txt")
    report: list = []

    def say(line: str = "") -> None:
        print(line, flush=True)
        report.append(line)

    say(f"blfs benchmark, {datetime.datetime.now().isoformat(timespec='seconds')}, "
        f"{platform.node()}: {os.cpu_count()} CPUs, Python {platform.python_version()}, "
        f"git {git_head()}, blfs run with {os.path.relpath(blfs_python(), REPO)}"
        f"{' ' + shlex.join(args.extra) if args.extra else ''}")
    load = os.getloadavg()[0]
    say(f"1-minute load average before: {load:.2f}"
        + (" (the machine is busy: timings will be noisy)" if load > 0.5 else ""))
    rows: list = []
    failures: list = []
    tiny: tuple = ([], "")
    shuffle = None
    sched = None
    t_all = time.monotonic()
    try:
        if "sort" in only:
            rows += [bench_sort(s, args) for s in sizes(args.sort_sizes)]
        if "skew" in only:
            rows += [bench_sort(s, args, skew=0.5) for s in sizes(args.skew_sizes)]
        if "wordcount" in only:
            rows += [bench_wordcount(s, args) for s in sizes(args.wc_sizes)]
        if "tiny" in only:
            tiny = bench_tiny(args)
        for section, size in (("pipeline", args.pipeline_size), ("mrjob", args.mrjob_size)):
            if section in only:
                failures += run_issue11(section, datacache.parse_size(size), args, say)
        if "shuffle" in only:
            shuffle = run_shuffle(args)
        if "scheduler" in only:
            sched = run_scheduler(args)
    except RunFailed as e:
        failures.append(e.summary)
        print(f"FAILED: {e}", flush=True)
    for r in rows:
        if r.error or r.check.startswith(("MISMATCH", "blfs FAILED")):
            failures.append(f"{r.bench} {r.label}: {r.error or r.check}")
    if tiny[1] and tiny[1] != "right":
        failures.append(f"tiny: {tiny[1]}")
    if shuffle and shuffle.get("error"):
        failures.append(f"shuffle: {shuffle['error']}")
    acceptance = print_results(rows, tiny, shuffle, sched, args, say)
    if acceptance:
        say("\n== acceptance targets of issue 13 (reported only; they do not change the exit "
            "status)")
        for line in acceptance:
            say(line)
    say(f"\n(input generation is not part of any figure; the whole benchmark took "
        f"{time.monotonic() - t_all:.0f} s; logs in bench-data/logs/, this report in "
        f"{os.path.relpath(report_path, REPO)})")
    if failures:
        say("\nFAILED:")
        for f in failures:
            say("  - " + f.splitlines()[0])
    with open(report_path, "w") as f:
        f.write("\n".join(report) + "\n")
    return 1 if failures else 0


def run_issue11(section: str, size: int, args, say) -> list:
    """The pipeline and mrjob benchmarks (tools/bench_pipeline.py): problems found."""
    import bench_pipeline
    say(f"\n== {section}")
    fn = bench_pipeline.bench_pipeline if section == "pipeline" else bench_pipeline.bench_mrjob
    return fn(size, args, say)


def git_head() -> str:
    try:
        return subprocess.run(["git", "-C", REPO, "rev-parse", "--short", "HEAD"],
                              capture_output=True, text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "?"


def run_shuffle(args) -> dict:
    import bench_shuffle
    print("\n== shuffle: a shuffle-only job on loop-device disks (root)", flush=True)
    why = bench_shuffle.why_not()
    if why:
        line = f"== shuffle on loop-device disks: skipped ({why})"
        print("   " + line, flush=True)
        return {"lines": [line]}
    return bench_shuffle.run(datacache.parse_size(args.shuffle_size), repeat=args.repeat)


def run_scheduler(args) -> list:
    argv = [blfs_python(), os.path.join(TOOLS, "bench_scheduler.py")]
    if args.quick:
        argv.append("--quick")
    print(f"\n== scheduler: the master's decisions in a simulated cluster "
          f"({shlex.join(argv[1:])}; results below)", flush=True)
    t0 = time.monotonic()
    proc = subprocess.run(argv, cwd=REPO, capture_output=True, text=True)
    lines = proc.stdout.rstrip("\n").splitlines()
    lines[0] += f" [{time.monotonic() - t0:.0f} s]"
    if proc.returncode != 0:
        raise RunFailed(f"bench_scheduler.py failed ({proc.returncode}):\n{proc.stderr[-2000:]}")
    return lines


if __name__ == "__main__":
    sys.exit(main())
