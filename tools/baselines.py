#!/usr/bin/env python3
"""The hand-written baselines that tools/bench.py times beside blfs, each its own process.

    python tools/baselines.py sort INPUT OUTPUT
        one Python process: readlines, list.sort, writelines (bytes, so the order is the
        C locale's, as `LC_ALL=C sort`)
    python tools/baselines.py wordcount INPUT OUTPUT [--processes 2]
        N processes (multiprocessing, fork), each counting the words of 1/N of the file
        (cut on line boundaries) with collections.Counter; merged, written sorted as
        `word<TAB>count`
"""
from __future__ import annotations

import argparse
import collections
import multiprocessing
import os
import sys

READ_CHUNK = 16 * 1024 * 1024


def sort_file(path: str, out_path: str) -> int:
    with open(path, "rb") as f:
        lines = f.readlines()
    lines.sort()
    with open(out_path, "wb") as out:
        out.writelines(lines)
    return len(lines)


def line_aligned_offset(path: str, offset: int) -> int:
    """The first line start at or after `offset`."""
    if offset <= 0:
        return 0
    with open(path, "rb") as f:
        f.seek(offset - 1)
        while True:
            block = f.read(65536)
            if not block:
                return f.tell()
            i = block.find(b"\n")
            if i >= 0:
                return f.tell() - len(block) + i + 1


def count_range(args: tuple) -> dict:
    path, start, end = args
    counter: collections.Counter = collections.Counter()
    with open(path, "rb") as f:
        f.seek(start)
        pos = start
        carry = b""
        while pos < end:
            data = f.read(min(READ_CHUNK, end - pos))
            if not data:
                break
            pos += len(data)
            cut = data.rfind(b"\n") + 1
            if cut == 0:
                carry += data
                continue
            counter.update((carry + data[:cut]).split() if carry else data[:cut].split())
            carry = data[cut:]
        if carry:
            counter.update(carry.split())
    return dict(counter)


def wordcount(path: str, out_path: str, processes: int = 2) -> dict:
    size = os.path.getsize(path)
    bounds = [0] + [line_aligned_offset(path, size * i // processes)
                    for i in range(1, processes)] + [size]
    ranges = [(path, bounds[i], bounds[i + 1]) for i in range(processes)]
    with multiprocessing.get_context("fork").Pool(processes) as pool:
        parts = pool.map(count_range, ranges, chunksize=1)
    total: collections.Counter = collections.Counter(parts[0])
    for part in parts[1:]:
        total.update(part)
    counts = {k.decode("utf-8"): v for k, v in total.items()}
    with open(out_path, "w", encoding="utf-8") as out:
        out.writelines(f"{w}\t{c}\n" for w, c in sorted(counts.items()))
    return counts


def main(argv: list | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = ap.add_subparsers(dest="what", required=True)
    s = sub.add_parser("sort")
    s.add_argument("input")
    s.add_argument("output")
    w = sub.add_parser("wordcount")
    w.add_argument("input")
    w.add_argument("output")
    w.add_argument("--processes", "-j", type=int, default=2)
    args = ap.parse_args(argv)
    if args.what == "sort":
        sort_file(args.input, args.output)
    else:
        wordcount(args.input, args.output, args.processes)
    return 0


if __name__ == "__main__":
    sys.exit(main())
