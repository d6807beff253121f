"""A soak (issue 12): 50 jobs back to back on one cluster, with task attempts that crash
at random, a worker SIGKILLed and restarted in the middle of one job and the master in the
middle of another. Every output exact; afterwards every slot is free, no task process,
scratch directory or _temporary is left, and the master's memory did not grow."""
from __future__ import annotations

import os
import pwd
import subprocess
import sys
import time

import pytest

from cluster_helpers import LoopCluster
from conftest import JOBS, make_corpus, read_counts, word_counts
from loopdev import root

pytestmark = [root, pytest.mark.root, pytest.mark.slow]

JOBS_IN_ALL = 50
WORKER_RESTART_AT, MASTER_RESTART_AT = 17, 33


def rss(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        return next(int(line.split()[1]) * 1024 for line in f if line.startswith("VmRSS:"))


def processes_of(user: str) -> list:
    try:
        uid = pwd.getpwnam(user).pw_uid
    except KeyError:
        return []
    found = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            if os.stat(f"/proc/{pid}").st_uid == uid:
                found.append(int(pid))
        except FileNotFoundError:
            pass
    return found


def test_fifty_jobs_with_crashes_and_restarts(tmp_path):
    task_users = ("blfs-task", "nobody")
    before = {u: set(processes_of(u)) for u in task_users}
    with LoopCluster(tmp_path, workers=3, slots=48) as cluster:
        wrong, rss_first = [], 0
        for n in range(JOBS_IN_ALL):
            corpus = make_corpus(tmp_path / f"in{n}.txt", 1500, seed=100 + n)
            out = tmp_path / f"out{n}"
            sleep = "0.6" if n in (WORKER_RESTART_AT, MASTER_RESTART_AT) else "0"
            proc = subprocess.Popen(
                [sys.executable, "-m", "blfsd", "--config", str(cluster.master_cfg), "submit",
                 os.path.join(JOBS, "crashy.py"), "--input", corpus, "--output", str(out),
                 "--split-size", "8K", "--reducers", "3", "--master", cluster.socket, "--",
                 str(n), sleep], env=cluster.env, stdout=subprocess.PIPE,
                stderr=subprocess.PIPE, text=True)
            if n in (WORKER_RESTART_AT, MASTER_RESTART_AT):
                time.sleep(1.0)  # in the middle of its maps
                if n == WORKER_RESTART_AT:
                    cluster.restart_worker(1)
                else:
                    cluster.restart_master()
            _, stderr = proc.communicate(timeout=240)
            if proc.returncode != 0 or read_counts(str(out)) != word_counts(corpus):
                wrong.append((n, proc.returncode, stderr[-2000:]))
            if n == 0:
                rss_first = rss(cluster.master.pid)
        rss_last = rss(cluster.master.pid)
        print(f"\nsoak: {JOBS_IN_ALL} jobs, {len(wrong)} wrong; master RSS after the first "
              f"job {rss_first >> 20} MiB (before its restart), at the end {rss_last >> 20} "
              f"MiB")
        assert wrong == []
        assert cluster.free_slots(timeout=15) == [cluster.slots] * cluster.n
        assert rss_last <= 1.2 * rss_first, (rss_first, rss_last)
        leftovers = [p for i in range(cluster.n)
                     for p in (tmp_path).glob(f"work-{cluster.names[i]}-*/tasks/*")]
        assert leftovers == []
        temporary = [str(p) for p in tmp_path.glob("out*/_temporary")]
        assert temporary == []
        time.sleep(0.5)
        after = {u: set(processes_of(u)) - before[u] for u in task_users}
        assert after == {u: set() for u in task_users}, after
