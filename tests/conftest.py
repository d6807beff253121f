"""Shared helpers: run the real `blfs` command, read outputs, find leftover processes."""
from __future__ import annotations

import os
import subprocess
import sys
import time
from collections import Counter

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
JOBS = os.path.join(REPO, "tests", "jobs")
EXAMPLES = os.path.join(REPO, "examples")


# Every process a test starts carries this tag in its environment (workers and tasks
# inherit it), so that leftovers can be told apart from other runs on the same machine.
TAG = f"blfs-test-{os.getpid()}-{time.time_ns()}"


def blfs(*args: str, timeout: float = 180, env: dict | None = None) -> subprocess.CompletedProcess:
    """Run `python -m blfsd ARGS` as a user would, capturing its output."""
    env = dict(env if env is not None else os.environ, BLFS_TEST_TAG=TAG)
    return subprocess.run([sys.executable, "-m", "blfsd", *args], cwd=REPO, capture_output=True,
                          text=True, timeout=timeout, env=env)


def submit_local(job: str, inputs: list, output: str, *extra: str, workers: int = 2,
                 job_args: tuple = (), timeout: float = 180,
                 config: "str | os.PathLike | None" = None) -> subprocess.CompletedProcess:
    """`blfs submit --local`; with `config`, that file as BLFS_CONFIG (its [master] and
    [worker] settings reach the embedded cluster)."""
    argv = ["submit", job, "--output", str(output), "--local", "--workers", str(workers)]
    for i in inputs:
        argv += ["--input", str(i)]
    argv += list(extra)
    if job_args:
        argv += ["--", *job_args]
    env = dict(os.environ, BLFS_CONFIG=str(config)) if config else None
    return blfs(*argv, timeout=timeout, env=env)


def read_parts(output: str) -> list:
    """Every output line as (key, value) text, part by part, in file order."""
    rows = []
    for name in sorted(os.listdir(output)):
        if name.startswith("part-"):
            with open(os.path.join(output, name), encoding="utf-8") as f:
                for line in f:
                    key, _, value = line.rstrip("\n").partition("\t")
                    rows.append((key, value))
    return rows


def read_counts(output: str) -> dict:
    return {k: int(v) for k, v in read_parts(output)}


def assert_parts_sorted(output: str) -> None:
    for name in sorted(os.listdir(output)):
        if name.startswith("part-"):
            with open(os.path.join(output, name), encoding="utf-8") as f:
                keys = [line.split("\t", 1)[0] for line in f]
            assert keys == sorted(keys), f"{name} is not sorted by key"


def word_counts(*paths) -> dict:
    c: Counter = Counter()
    for p in paths:
        with open(p, encoding="utf-8") as f:
            for line in f:
                c.update(line.split())
    return dict(c)


def local_worker_pids() -> set:
    """PIDs of blfs processes (submit, workers, tasks) started by this test session."""
    pids = set()
    marker = f"BLFS_TEST_TAG={TAG}".encode()
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) == os.getpid():
            continue
        try:
            with open(f"/proc/{entry}/environ", "rb") as f:
                env = f.read().split(b"\0")
        except OSError:
            continue
        if marker in env:
            pids.add(int(entry))
    return pids


def wait_gone(pids: set, timeout: float = 3.0) -> set:
    """The PIDs of `pids` still alive (non-zombie) after up to `timeout` seconds."""
    deadline = time.monotonic() + timeout
    alive = set(pids)
    while alive and time.monotonic() < deadline:
        alive = {p for p in alive if _alive(p)}
        if alive:
            time.sleep(0.05)
    return alive


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(") ", 1)[1][0] != "Z"
    except OSError:
        return False


@pytest.fixture
def shared_dir():
    """A directory task processes may write to: they run as another user (the task user,
    or nobody), who can reach nothing below pytest's root-only tmp_path."""
    import shutil
    import tempfile
    path = tempfile.mkdtemp(prefix="blfs-shared-", dir="/var/tmp")
    os.chmod(path, 0o1777)
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def no_leftovers():
    """Fails the test if it leaves any local worker or task process behind."""
    yield
    left = wait_gone(local_worker_pids())
    assert not left, f"processes left running: {sorted(left)}"


def make_corpus(path, lines: int, seed: int = 7, vocabulary: int = 300) -> str:
    import random
    rng = random.Random(seed)
    words = [f"w{i:03d}" for i in range(vocabulary)] + ["ünï", "naïve", "x"]
    with open(path, "w", encoding="utf-8") as f:
        for _ in range(lines):
            f.write(" ".join(rng.choices(words, k=rng.randint(0, 12))) + "\n")
    return str(path)
