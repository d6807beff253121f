#!/usr/bin/env python3
"""Summarise a py-spy profile of a blfs run by process role: master, worker, map, reduce.

Record one with (root; py-spy from PyPI: `.venv/bin/pip install py-spy`):

    .venv/bin/py-spy record --subprocesses --format raw -r 100 -o sort.raw -- \\
        .venv/bin/python -m blfsd submit examples/sort.py --input IN --output OUT \\
        --local --workers 2
    .venv/bin/python tools/profile_summary.py sort.raw [--top 15] [--lines]

`--format raw` writes one line per distinct stack: the processes from the root down
(`process PID:"CMDLINE"`), then the Python frames `function (file:line)` from the outermost,
then the number of samples. A stack is a map task's when it runs through
`runtime.run_map`, a reduce task's through `runtime.run_reduce` (and so is every other stack of that task process: loading the job,
freeing buffers, sending the result), a "task" when it is a task process (a fork of a
worker, the third process down) that was never seen in either, a worker's when its
innermost process is a `blfsd worker`, and otherwise the `blfs submit` process's (in
--local, the client and the master). py-spy samples only threads that are running
(without --idle), so shares are of CPU time.

For each role: its share of all samples, then the functions with the most samples of
their own ("self": the innermost frame) and those with the most samples below them
("total"), as % of the role's samples and of all samples. --lines lists self samples by
source line instead of by function.
"""
from __future__ import annotations

import argparse
import re
import sys
from collections import Counter, defaultdict

ROLES = ("map", "reduce", "task", "worker", "master")
_FRAME = re.compile(r"^(?P<func>.*) \((?P<file>[^()]*?)(?::(?P<line>\d+))?\)$")


def parse_line(line: str) -> tuple[list, list, int] | None:
    """(process frames, python frames, count) of one raw line; None if not one."""
    line = line.rstrip("\n")
    stack, sep, count = line.rpartition(" ")
    if not sep or not count.isdigit():
        return None
    procs, frames = [], []
    for part in split_frames(stack):
        (procs if part.startswith("process ") else frames).append(part)
    return procs, frames, int(count)


def split_frames(stack: str) -> list:
    """Split on ';' outside double quotes (command lines may hold ';')."""
    out, cur, quoted = [], [], False
    for ch in stack:
        if ch == '"':
            quoted = not quoted
        if ch == ";" and not quoted:
            out.append("".join(cur))
            cur = []
        else:
            cur.append(ch)
    out.append("".join(cur))
    return [p for p in out if p]


def role_of(procs: list, frames: list) -> str:
    """The role of one stack on its own (see roles_by_process for whole processes)."""
    for f in frames:
        if f.startswith("run_map "):
            return "map"
        if f.startswith("run_reduce "):
            return "reduce"
    if len(procs) >= 3:  # blfs submit -> worker -> task (a fork: same command line)
        return "task"
    if procs and " worker " in procs[-1] + " ":
        return "worker"
    return "master"


def process_id(procs: list) -> str:
    return procs[-1].split(":", 1)[0] if procs else "?"


def roles_by_process(parsed: list) -> dict:
    """A task process is a map or a reduce in all its stacks, also those outside run_map
    and run_reduce (loading the job, freeing its buffers, sending its result)."""
    roles: dict = {}
    for procs, frames, _ in parsed:
        role = role_of(procs, frames)
        pid = process_id(procs)
        if role in ("map", "reduce") or pid not in roles:
            roles[pid] = role
    return roles


def function(frame: str) -> str:
    """'func (file:line)' -> 'func (file)'."""
    m = _FRAME.match(frame)
    return f"{m['func']} ({m['file']})" if m else frame


def summarise(lines, top: int = 15, by_line: bool = False) -> list:
    total = 0
    per_role: Counter = Counter()
    self_by: dict = defaultdict(Counter)
    incl_by: dict = defaultdict(Counter)
    parsed_all = [p for p in map(parse_line, lines) if p is not None]
    roles = roles_by_process(parsed_all)
    for procs, frames, n in parsed_all:
        role = roles[process_id(procs)]
        total += n
        per_role[role] += n
        if frames:
            leaf = frames[-1] if by_line else function(frames[-1])
            self_by[role][leaf] += n
        for fn in {function(f) for f in frames}:
            incl_by[role][fn] += n
    out = [f"{total:,} samples: " + ", ".join(
        f"{r} {per_role[r] / max(1, total):.0%}" for r in ROLES if per_role[r])]
    for role in ROLES:
        n = per_role[role]
        if not n:
            continue
        out.append(f"\n--- {role}: {n:,} samples, {n / total:.1%} of all")
        out.append(f"    self{' (by line)' if by_line else ''}: % of {role} | % of all")
        for fn, c in self_by[role].most_common(top):
            out.append(f"    {c / n:6.1%} {c / total:6.1%}  {fn}")
        out.append(f"    total (the function and what it calls), below 98% of {role}:")
        shown = 0
        for fn, c in incl_by[role].most_common():
            if c / n >= 0.98:
                continue
            out.append(f"    {c / n:6.1%} {c / total:6.1%}  {fn}")
            shown += 1
            if shown >= top:
                break
    return out


def main(argv: list | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter,
                                 epilog=__doc__.split("\n\n", 1)[1])
    ap.add_argument("raw", help="py-spy record --format raw output")
    ap.add_argument("--top", type=int, default=15)
    ap.add_argument("--lines", action="store_true", help="self samples by source line")
    args = ap.parse_args(argv)
    with open(args.raw) as f:
        for line in summarise(f, args.top, args.lines):
            print(line)
    return 0


if __name__ == "__main__":
    sys.exit(main())
