#!/usr/bin/env python3
"""The shuffle on real block devices: reducers' read rate beside `dd iflag=direct` (root).

A master and 2 workers run as daemons on loop-device disks (tests/cluster_helpers.py
LoopCluster: each worker's disk an ext4 image, every peer's view of it a loop device of its
own, mounted ro,noload). A shuffle-only job (tools/jobs/shuffle_only.py: 1 MiB chunks of a
binary file passed through, one reducer that only counts bytes) moves SIZE bytes through
the slots. The reducer reads its segments with O_DIRECT from both disks, its own and the
peer's, through the loop devices of its worker.

Its rate is SIZE / the time it spends reading, from the engine's counters when it reports
them (blfs shuffle_read_ms, shuffle_read_bytes), else from /proc: the growth of the
bytes the reduce task read from storage (read_bytes, where O_DIRECT reads are counted)
between the samples (every 10 ms) that saw it start and stop reading; and, more
pessimistic, all it read over its whole life. Beside it:
`dd iflag=direct bs=4M` over the extents of the pool's slot files on the very loop devices
that reducer read from (filefrag gives the extents), median of 3. The acceptance target:
the reducer reads at least 80% of dd's rate.

Loop devices, mounts and images are removed and every daemon is stopped even when a step
fails (LoopCluster.close()).

    sudo .venv/bin/python tools/bench_shuffle.py --size 256M
"""
from __future__ import annotations

import argparse
import os
import random
import re
import statistics
import subprocess
import sys
import tempfile
import time
from typing import Optional

TOOLS = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(TOOLS)
sys.path.insert(0, TOOLS)
sys.path.insert(0, os.path.join(REPO, "tests"))
sys.path.insert(0, REPO)

import proctree  # noqa: E402

JOB = os.path.join(TOOLS, "jobs", "shuffle_only.py")
DATA = os.path.join(REPO, "bench-data")
MIB = 1 << 20


def why_not() -> Optional[str]:
    """Why this benchmark cannot run here (None when it can)."""
    try:
        import loopdev
    except ImportError as exc:
        return f"cannot import tests/loopdev.py: {exc}"
    return loopdev.SKIP_REASON


def make_input(size: int, seed: int = 1) -> str:
    """SIZE pseudo-random bytes (cached in bench-data/)."""
    path = os.path.join(DATA, f"shuffle-{size // MIB}M-s{seed}.bin")
    if os.path.exists(path) and os.path.getsize(path) == size:
        return path
    os.makedirs(DATA, exist_ok=True)
    rng = random.Random(f"blfs-shuffle-{seed}")
    tmp = path + ".tmp"
    with open(tmp, "wb") as f:
        left = size
        while left:
            n = min(left, 16 * MIB)
            f.write(rng.randbytes(n))
            left -= n
    os.replace(tmp, path)
    return path


def extents(path: str) -> list:
    """(first byte, length) on the device of each extent of a file (filefrag -v)."""
    out = subprocess.run(["filefrag", "-v", "-b4096", path], capture_output=True, text=True,
                         check=True).stdout
    found = []
    for line in out.splitlines():
        m = re.match(r"\s*\d+:\s+\d+\.\.\s*\d+:\s+(\d+)\.\.\s*(\d+):\s+(\d+):", line)
        if m:
            start, _, length = (int(x) for x in m.groups())
            found.append((start * 4096, length * 4096))
    return found


def merged(ranges: list) -> list:
    out: list = []
    for start, length in sorted(ranges):
        if out and start <= out[-1][0] + out[-1][1]:
            s, l = out[-1]
            out[-1] = (s, max(l, start + length - s))
        else:
            out.append((start, length))
    return out


def dd_rate(device: str, ranges: list, block: int = 4 * MIB) -> tuple:
    """(bytes, seconds) for `dd iflag=direct bs=4M` over these byte ranges of a device."""
    total, seconds = 0, 0.0
    for start, length in ranges:
        argv = ["dd", f"if={device}", "of=/dev/null", f"bs={block}",
                "iflag=direct,skip_bytes,count_bytes", f"skip={start}", f"count={length}"]
        t0 = time.perf_counter()
        subprocess.run(argv, capture_output=True, check=True)
        seconds += time.perf_counter() - t0
        total += length
    return total, seconds


def counter_rate(counters: dict, size: int) -> Optional[float]:
    """The reader's rate from the engine's own counters (blfs shuffle_read_ms: the time
    spent reading and checking segments, integer ms; shuffle_read_bytes), None without them."""
    ms = counters.get("shuffle_read_ms")
    if not ms:
        return None
    return (counters.get("shuffle_read_bytes") or size) / (ms / 1000)


def run(size: int, repeat: int = 3, interval: float = 0.01, seed: int = 1) -> dict:
    """Run the benchmark; returns {"lines": [...], "ratio": reducer / dd or None,
    "error": text or None}."""
    from cluster_helpers import LoopCluster

    lines: list = []
    inp = make_input(size, seed)
    workers, parallelism = 2, 2
    maps = 8
    split = size // maps
    # one slot per map attempt (its output is its split plus headers), twice over
    slot_size = (split + split // 8 + 4 * MIB) // (4 * MIB) * (4 * MIB)
    slots = 2 * (maps // workers) + 2
    image = slots * slot_size + 128 * MIB
    base = tempfile.mkdtemp(prefix="blfs-bench-shuffle-", dir=os.path.join(DATA))
    result: dict = {"lines": lines, "ratio": None, "error": None}
    head = (f"== shuffle on loop-device disks: {size // MIB} MiB through {maps} maps, 1 reduce, "
            f"2 workers x {parallelism} slots ({slots} slots of {slot_size // MIB} MiB each)")
    lines.append(head)
    try:
        with LoopCluster(base, workers=workers, image_size=image, slot_size=slot_size,
                         slots=slots, parallelism=parallelism) as c:
            rates, life_rates, reads, job_status = [], [], [], {}
            reduce_worker = None
            for r in range(repeat):
                out = os.path.join(base, f"out-{r}")
                argv = [sys.executable, "-m", "blfsd", "--config", str(c.master_cfg), "submit",
                        JOB, "--input", inp, "--output", out, "--split-size", str(split),
                        "--master", c.socket, "--quiet"]
                also = {d.pid: 1 for d in c.daemons if d.name != "master"}
                also[c.master.pid] = 1

                def classify(pid: int, out=out) -> str:
                    return proctree.classify_task(proctree.open_files(pid), [inp], out)

                m = proctree.measure(argv, cwd=REPO, env=c.env, interval=interval,
                                     roles=("client", "daemon", "task"), classify=classify,
                                     also=also)
                if m.returncode != 0:
                    raise RuntimeError(f"shuffle job failed ({m.returncode}): "
                                       + " | ".join(line for _, line in m.output[-10:])
                                       + "\n" + c.logs(1500))
                job = c.job_id_for(out)
                job_status = c.status(job)
                red = [a for a in job_status.get("attempts", [])
                       if "/r-" in a["attempt"] and a["state"] == "succeeded"]
                reduce_worker = red[0]["worker"] if red else None
                procs = m.of_role("reduce")
                if not procs:
                    raise RuntimeError("no reduce task was seen (sampling too slow?)")
                p = max(procs, key=lambda p: p.read_bytes)
                window = proctree.read_rate(p.reads)
                counters = (job_status.get("counters") or {}).get("blfs", {})
                rate = counter_rate(counters, size)
                if rate:
                    how = (f"the job's counters: {counters.get('shuffle_read_bytes', size) / MIB:.0f}"
                           f" MiB in {counters['shuffle_read_ms']} ms read and checked")
                elif window:
                    rate = window[0] / window[1]
                    how = f"/proc samples: {window[0] / MIB:.0f} MiB in {window[1]:.2f} s"
                else:  # too quick to be seen reading twice: its whole life, all it read
                    rate = size / max(interval, p.last - p.first + interval)
                    how = "its life as sampled (too short to see it read)"
                life = max(interval, p.last - p.first)
                rates.append(rate)
                life_rates.append(p.read_bytes / life)
                reads.append(p.read_bytes)
                lines.append(f"   run {r + 1}/{repeat}: job {m.wall:.2f} s; reduce on "
                             f"{reduce_worker}: read {p.read_bytes / MIB:.0f} MiB, "
                             f"{rate / 1e6:.0f} MB/s ({how}), {p.read_bytes / life / 1e6:.0f} "
                             f"MB/s over its whole life ({life:.2f} s)")
                print(lines[-1], flush=True)
            # dd over the slot files' extents, on the devices that reducer read through
            viewer = c.names.index(reduce_worker) if reduce_worker in c.names else 0
            dd_lines, dd_rates = [], []
            for owner in range(workers):
                device = c.devices[(viewer, owner)]
                disk = str(c.disk(owner, owner))  # the owner's own mount: extents are the same
                ranges = merged([e for s in range(slots)
                                 for e in extents(os.path.join(disk, "pool", f"slot-{s:05d}"))])
                runs = [dd_rate(device, ranges) for _ in range(3)]
                b = runs[0][0]
                rate = statistics.median(b / s for b, s in runs)
                dd_rates.append(rate)
                dd_lines.append(f"{device} ({c.names[viewer]}'s view of {c.names[owner]}): "
                                f"{rate / 1e6:.0f} MB/s over {b / MIB:.0f} MiB")
            dd = statistics.fmean(dd_rates)
            red_rate = statistics.median(rates)
            result["ratio"] = red_rate / dd if dd else None
            lines.append("   dd iflag=direct bs=4M over the slots' extents, median of 3: "
                         + "; ".join(dd_lines))
            lines.append(f"   reducer {red_rate / 1e6:.0f} MB/s (median; whole life: "
                         f"{statistics.median(life_rates) / 1e6:.0f} MB/s) vs dd "
                         f"{dd / 1e6:.0f} MB/s: {result['ratio']:.0%} (target >= 80%)")
            if abs(statistics.median(reads) - size) > size * 0.05:
                lines.append(f"   note: the reduce read {statistics.median(reads) / MIB:.0f} MiB "
                             f"from storage for {size / MIB:.0f} MiB of input")
    except Exception as exc:  # the cluster is gone by now; report and go on
        result["error"] = f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
        lines.append(f"   FAILED: {exc}")
    finally:
        try:
            os.rmdir(base)
        except OSError:
            subprocess.run(["rm", "-rf", "--one-file-system", base], check=False)
    return result


def main(argv: list | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--size", default="256M")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--interval", type=float, default=0.01)
    args = ap.parse_args(argv)
    why = why_not()
    if why:
        print(f"skipped: {why}")
        return 0
    from datacache import parse_size
    res = run(parse_size(args.size), args.repeat, args.interval)
    for line in res["lines"]:
        print(line)
    return 1 if res["error"] else 0


if __name__ == "__main__":
    sys.exit(main())
