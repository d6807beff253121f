"""Every fault the engine handles, injected for real: user exceptions, SIGKILLed tasks,
a SIGKILLed worker daemon, a corrupted segment on disk."""
from __future__ import annotations

import os
import signal
import threading
import time
import uuid
from pathlib import Path

import pytest

from conftest import JOBS, make_corpus, read_counts, submit_local, word_counts

FAULTY = os.path.join(JOBS, "faulty.py")


@pytest.fixture
def corpus(tmp_path):
    return [make_corpus(tmp_path / "in.txt", 4000, seed=3)]


class Accomplice(threading.Thread):
    """Does for the job what its tasks may not do themselves (they run unprivileged):
    kill a worker daemon, or corrupt every pool, when the job asks (faulty.py)."""

    def __init__(self, scratch: Path):
        super().__init__(daemon=True)
        self.scratch = scratch
        self.done = threading.Event()
        self.acted = []

    def run(self) -> None:
        while not self.done.is_set():
            for request, act in (("kill-w1", self._kill), ("corrupt-now", self._corrupt)):
                path = self.scratch / request
                if path.exists() and request not in self.acted:
                    self.acted.append(request)
                    act(path.read_text())
            time.sleep(0.02)

    def _kill(self, pid: str) -> None:
        os.kill(int(pid), signal.SIGKILL)

    def _corrupt(self, root: str) -> None:
        disks = os.path.join(root, "disks")
        for node in os.listdir(disks):
            pool = os.path.join(disks, node, "pool")
            for slot in os.listdir(pool):
                if slot.startswith("slot-"):
                    with open(os.path.join(pool, slot), "r+b") as f:
                        f.seek(200)  # inside the first segment's payload
                        byte = f.read(1)
                        f.seek(200)
                        f.write(bytes([byte[0] ^ 0xFF]))
        (self.scratch / "corrupted").touch()


def run_fault(tmp_path, scratch, corpus, fault, *extra, workers=2):
    out = tmp_path / "out"
    accomplice = Accomplice(Path(scratch))
    accomplice.start()
    try:
        r = submit_local(FAULTY, corpus, out, "--split-size", "32K", "--reducers", "2",
                         *extra, workers=workers,
                         job_args=(fault, str(scratch), uuid.uuid4().hex))
    finally:
        accomplice.done.set()
        accomplice.join(5)
    return r, out, Path(scratch)


def test_user_exception_is_retried(tmp_path, shared_dir, corpus, no_leftovers):
    r, out, _ = run_fault(tmp_path, shared_dir, corpus, "user-once")
    assert r.returncode == 0, r.stderr
    assert "m-00000/0" in r.stderr and "failed (user)" in r.stderr
    assert "injected failure on the first attempt" in r.stderr
    assert read_counts(out) == word_counts(*corpus)


def test_user_exception_fails_the_job_with_traceback(tmp_path, shared_dir, corpus,
                                                     no_leftovers):
    scratch = shared_dir
    out = tmp_path / "out"
    tag = uuid.uuid4().hex
    r = submit_local(FAULTY, corpus, out, "--split-size", "32K", "--max-attempts", "3",
                     job_args=("user-always", str(scratch), tag))
    assert r.returncode != 0
    assert "Traceback (most recent call last)" in r.stderr
    assert f"ValueError: injected permanent failure {tag}" in r.stderr
    assert "failed 3 times" in r.stderr and "on worker w" in r.stderr
    # a failed job leaves neither _SUCCESS nor part files nor temporary files
    leftovers = os.listdir(out) if os.path.exists(out) else []
    assert leftovers == [], leftovers


def test_sigkilled_task_is_retried(tmp_path, shared_dir, corpus, no_leftovers):
    r, out, _ = run_fault(tmp_path, shared_dir, corpus, "sigkill-once")
    assert r.returncode == 0, r.stderr
    assert "m-00000/0" in r.stderr and "signal 9 (SIGKILL)" in r.stderr
    assert read_counts(out) == word_counts(*corpus)


def test_worker_daemon_killed_mid_job(tmp_path, shared_dir, corpus, no_leftovers):
    r, out, scratch = run_fault(tmp_path, shared_dir, corpus, "kill-worker",
                                "--parallelism", "1", workers=3)
    assert r.returncode == 0, r.stderr
    assert os.path.exists(scratch / "kill-w1"), "the fault was not injected"
    assert "failed (lost)" in r.stderr
    assert read_counts(out) == word_counts(*corpus)


def test_corrupted_segment_reruns_the_map(tmp_path, shared_dir, corpus, no_leftovers):
    r, out, scratch = run_fault(tmp_path, shared_dir, corpus, "corrupt")
    assert r.returncode == 0, r.stderr
    assert os.path.exists(scratch / "corrupted"), "the fault was not injected"
    assert "failed (fetch)" in r.stderr and "checksum mismatch" in r.stderr
    # the maps whose output was bad ran again: the map count went down after the failure
    after = r.stderr.split("failed (fetch)", 1)[1]
    assert ": map 0/" in after or ": map 1/" in after, r.stderr
    assert read_counts(out) == word_counts(*corpus)


def test_status_updates_keep_a_slow_task_alive(tmp_path, corpus, no_leftovers):
    """Job API: a status update also proves the task is alive (4 s of work, 2 s timeout)."""
    out = tmp_path / "out"
    r = submit_local(os.path.join(JOBS, "chatty_slow.py"), corpus, out, "--task-timeout", "2",
                     "--max-attempts", "1")
    assert r.returncode == 0, r.stderr
    assert "failed" not in r.stderr
    assert read_counts(out) == word_counts(*corpus)
