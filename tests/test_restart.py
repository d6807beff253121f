"""A master SIGKILLed in the middle of a job keeps the work that had finished (issue 12,
point 5): every finished task's result is in the state directory before it counts, the
workers keep those slots through the new master's sync, and `blfs submit` follows its job
across the restart to its real outcome. Real daemons on loop disks."""
from __future__ import annotations

import os
import subprocess
import sys
import time
from collections import Counter

import pytest

from cluster_helpers import LoopCluster
from conftest import JOBS, make_corpus, read_counts, word_counts
from loopdev import root

pytestmark = [root, pytest.mark.root, pytest.mark.slow]


@pytest.fixture
def cluster(tmp_path):
    with LoopCluster(tmp_path, workers=3, slots=48) as c:
        yield c


def follow(cluster: LoopCluster, job: str, corpus: str, out, *extra: str) -> subprocess.Popen:
    """`blfs submit` in the foreground, as a user would type it (it follows the job)."""
    argv = [sys.executable, "-m", "blfsd", "--config", str(cluster.master_cfg), "submit",
            os.path.join(JOBS, job), "--input", corpus, "--output", str(out),
            "--split-size", "16K", "--master", cluster.socket, *extra]
    return subprocess.Popen(argv, env=cluster.env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def wait_for_status(cluster: LoopCluster, out, ready, timeout: float = 60) -> dict:
    """The status of the job writing `out` once ready(status) holds."""
    deadline = time.monotonic() + timeout
    job = None
    while time.monotonic() < deadline:
        if job is None:
            rows = cluster.blfs("jobs", "--json").stdout
            if str(out) in rows:
                job = cluster.job_id_for(str(out))
        if job is not None:
            status = cluster.status(job)
            if ready(status):
                return status
        time.sleep(0.05)
    raise AssertionError(f"the job writing {out} never got there\n{cluster.logs()}")


def winners(status: dict, stages: set) -> dict:
    """task -> the attempt that succeeded, for the tasks of these stages that did."""
    return {a["task"]: a["attempt"] for a in status["attempts"]
            if a["state"] == "succeeded" and _stage(status, a) in stages}


def attempts_of(status: dict) -> dict:
    by_task: dict = {}
    for a in status["attempts"]:
        by_task.setdefault(a["task"], []).append(a["attempt"])
    return by_task


def _stage(status: dict, attempt: dict) -> int:
    kinds = [(s["step"], s["kind"]) for s in status["stages"]]
    return kinds.index((attempt["step"], attempt["kind"]))


def finish(proc: subprocess.Popen, cluster: LoopCluster) -> str:
    try:
        _, stderr = proc.communicate(timeout=180)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, f"{stderr}\n{cluster.logs()}"
    assert "lost the master" in stderr and "the master is back" in stderr, stderr
    return stderr


def test_master_killed_between_maps_runs_no_finished_map_again(cluster, tmp_path):
    """Five times in a row: the master is SIGKILLed while some maps have finished and
    others have not; the new master runs none of the finished ones again (each keeps its
    one attempt, of the old master's session), and the output is exact."""
    for round_ in range(5):
        corpus = make_corpus(tmp_path / f"in{round_}.txt", 6000, seed=40 + round_)
        out = tmp_path / f"out{round_}"
        proc = follow(cluster, "slow_wordcount.py", corpus, out, "--reducers", "2",
                      "--", "1.0")
        before = wait_for_status(cluster, out, lambda s: 0 < s["maps"]["done"]
                                 < s["maps"]["total"] - 2)
        done_before = winners(before, {0})
        cluster.restart_master()
        finish(proc, cluster)
        assert read_counts(out) == word_counts(corpus)
        after = cluster.status(before["job"])
        by_task = attempts_of(after)
        for task, attempt in done_before.items():
            assert by_task[task] == [attempt], (round_, task, by_task[task])
        log = cluster.master.log_tail(1 << 20)
        assert f"resuming job {before['job']} accepted before a restart" in log
        kept = int(log.split(f"resuming job {before['job']} accepted before a restart: ")[1]
                   .split(" of ")[0])
        assert kept >= len(done_before)


def test_master_killed_in_a_pipelines_second_step_keeps_the_first(cluster, tmp_path):
    """tests/jobs/slow_pipeline.py: the master is SIGKILLed while step 2's maps run; the
    first step's maps and reduces do not run again (the reduces' output is still held in
    the workers' slots and read from there), and the output is exact."""
    corpus = make_corpus(tmp_path / "in.txt", 6000, seed=50)
    out = tmp_path / "out"
    proc = follow(cluster, "slow_pipeline.py", corpus, out, "--", "1.5")
    before = wait_for_status(cluster, out, lambda s: s["stages"][1]["done"]
                             == s["stages"][1]["total"] and s["stages"][2]["running"] > 0)
    first_step = winners(before, {0, 1})
    assert first_step and all(not t.startswith("s1-") for t in first_step)
    cluster.restart_master()
    finish(proc, cluster)
    letters: Counter = Counter()
    for word, n in word_counts(corpus).items():
        letters[word[0]] += n
    assert read_counts(out) == dict(letters)
    by_task = attempts_of(cluster.status(before["job"]))
    for task, attempt in first_step.items():
        assert by_task[task] == [attempt], (task, by_task[task])
    assert cluster.free_slots() == [cluster.slots] * cluster.n
