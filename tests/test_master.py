"""The master against real worker daemons on loop disks: restart, cancel, several jobs."""
from __future__ import annotations

import json
import os
import time

import pytest

from cluster_helpers import LoopCluster
from conftest import JOBS, make_corpus, read_counts, word_counts
from loopdev import root

pytestmark = [root, pytest.mark.root, pytest.mark.slow]
SLOW = os.path.join(JOBS, "slow_wordcount.py")


@pytest.fixture
def cluster(tmp_path):
    with LoopCluster(tmp_path, workers=3, slots=32) as c:
        yield c


def submit_detached(cluster, corpus, out, sleep: float) -> str:
    r = cluster.blfs("submit", SLOW, "--input", corpus, "--output", str(out),
                     "--split-size", "64K", "--reducers", "2", "--detach", "--", str(sleep))
    return r.stdout.strip()


def wait_state(cluster, job: str, states: set, timeout: float = 60) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        r = cluster.blfs("status", job, "--json", check=False)
        if r.returncode == 0:
            status = json.loads(r.stdout)
            if status["state"] in states:
                return status
        time.sleep(0.2)
    raise AssertionError(f"job {job} not in {states} after {timeout} s\n{cluster.logs()}")


def test_master_restart_resumes_accepted_job(cluster, tmp_path):
    corpus = make_corpus(tmp_path / "in.txt", 6000, seed=11)
    out = tmp_path / "out"
    job = submit_detached(cluster, corpus, out, sleep=1.5)
    wait_state(cluster, job, {"running"})
    cluster.restart_master()  # SIGKILL: no goodbye, no state written
    status = wait_state(cluster, job, {"succeeded", "failed", "cancelled"})
    assert status["state"] == "succeeded", status
    assert read_counts(out) == word_counts(corpus)
    assert "resuming job " + job in cluster.master.log_tail(1 << 20)


def test_cancel_cleans_up(cluster, tmp_path):
    corpus = make_corpus(tmp_path / "in.txt", 6000, seed=12)
    out = tmp_path / "out"
    job = submit_detached(cluster, corpus, out, sleep=30)
    wait_state(cluster, job, {"running"})
    r = cluster.blfs("cancel", job)
    assert "cancelled" in r.stdout
    status = wait_state(cluster, job, {"cancelled"})
    assert status["state"] == "cancelled"
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        rows = json.loads(cluster.blfs("workers", "--json").stdout)
        busy = [w for w in rows if w["running"] or w["info"].get("free_slots") != 32]
        leftovers = os.listdir(out) if out.exists() else []
        if not busy and not leftovers:
            break
        time.sleep(0.3)
    assert not busy, rows  # no attempt left running, every slot released
    assert leftovers == [], leftovers


def test_jobs_run_side_by_side(cluster, tmp_path):
    corpora = [make_corpus(tmp_path / f"in{i}.txt", 3000, seed=20 + i) for i in range(3)]
    jobs = [submit_detached(cluster, c, tmp_path / f"out{i}", sleep=0.3)
            for i, c in enumerate(corpora)]
    for i, job in enumerate(jobs):
        assert wait_state(cluster, job, {"succeeded", "failed"})["state"] == "succeeded"
        assert read_counts(tmp_path / f"out{i}") == word_counts(corpora[i])
    listed = json.loads(cluster.blfs("jobs", "--json").stdout)
    assert {r["job"] for r in listed} >= set(jobs)
