#!/usr/bin/env python3
"""Time `blfs put` of a generated file into a loop-disk cluster (root only).

A master and N workers on loop-device disks (tests/cluster_helpers.LoopCluster), as in the
tests; the client talks to the master over TCP with the cluster key, so every chunk crosses
two protected connections (client to master, master to worker). Prints the median of
--repeat runs and the rate.

    sudo .venv/bin/python tools/bench_put.py --size 256M --repeat 3
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path[:0] = [REPO, os.path.join(REPO, "tests")]

from cluster_helpers import LoopCluster, free_port  # noqa: E402
from blfsd.inputs import parse_size  # noqa: E402


class TcpCluster(LoopCluster):
    """A LoopCluster whose master also listens on a known TCP port."""

    def write_configs(self) -> None:
        super().write_configs()
        self.tcp = f"127.0.0.1:{free_port()}"
        text = self.master_cfg.read_text()
        self.master_cfg.write_text(text.replace('listen = "127.0.0.1:0"',
                                                f'listen = "{self.tcp}"'))


def make_file(path: str, size: int) -> None:
    """Lines of text (a put cuts on line boundaries), `size` bytes."""
    line = b"the quick brown fox jumps over the lazy dog 0123456789\n"
    block = line * (1 << 20 // len(line) + 1)
    with open(path, "wb") as f:
        left = size
        while left > 0:
            f.write(block[:left])
            left -= len(block[:left])


def main(argv: list | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--size", default="256M")
    p.add_argument("--repeat", type=int, default=3)
    p.add_argument("--workers", type=int, default=2)
    args = p.parse_args(argv)
    if os.geteuid() != 0:
        print("bench_put: needs root (loop devices)", file=sys.stderr)
        return 2
    size = parse_size(args.size)
    with tempfile.TemporaryDirectory(prefix="blfs-bench-put-", dir="/var/tmp") as base:
        data = os.path.join(base, "input.txt")
        make_file(data, size)
        image = max(64 << 20, 2 * size // args.workers + (32 << 20))
        with TcpCluster(base, workers=args.workers, image_size=image) as c:
            tcp = c.tcp
            times = []
            for i in range(args.repeat):
                started = time.monotonic()
                c.blfs("put", data, f"bench{i}", "--master", tcp, "--key", str(c.key_file),
                       master=False, timeout=600)
                times.append(time.monotonic() - started)
                c.blfs("rm", f"bench{i}")
    median = statistics.median(times)
    print(f"blfs put {args.size} over TCP into {args.workers} loop-disk workers: "
          f"median {median:.2f} s of {', '.join(f'{t:.2f}' for t in times)} "
          f"({size / median / (1 << 20):.0f} MiB/s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
