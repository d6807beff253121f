"""Multi-step jobs (issue 11): pipelines against single-process references, what a task
gets from the job API (finish, the split's path, shipped files, sort_values), compressed,
empty and non-UTF-8 inputs, and on the loop-disk cluster: middle steps that never leave
the slot pools, a corrupted middle segment, a worker killed in the second step."""
from __future__ import annotations

import bz2
import gzip
import heapq
import json
import os
import signal
import threading
import time
from collections import Counter
from pathlib import Path

import pytest

from cluster_helpers import LoopCluster
from conftest import (EXAMPLES, JOBS, make_corpus, read_counts, read_parts, submit_local,
                      word_counts)


def _lines(path) -> list:
    with open(path, encoding="utf-8") as f:
        return [line.split() for line in f]


def _local(job: str, inputs: list, out, *extra, job_args=(), workers: int = 2):
    r = submit_local(os.path.join(JOBS, job) if "/" not in job else job, inputs, out,
                     *extra, workers=workers, job_args=job_args)
    assert r.returncode == 0, r.stderr
    return r


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> str:
    return make_corpus(tmp_path_factory.mktemp("pipes") / "in.txt", 6000, seed=5)


# ------------------------------------------------------------------ against references

def test_two_steps_top_words(tmp_path, corpus):
    out = tmp_path / "out"
    _local(os.path.join(EXAMPLES, "top_words.py"), [corpus], out, "--split-size", "32K",
           job_args=("15",))
    lowered: Counter = Counter()
    for w, n in word_counts(corpus).items():
        lowered[w.lower()] += n
    expected = [(w, n) for n, w in heapq.nlargest(15, ((n, w) for w, n in lowered.items()))]
    assert len(expected) == 15
    assert [(k, int(v)) for k, v in read_parts(str(out))] == expected


def test_three_steps_with_a_map_only_middle_and_a_reduce_only_last(tmp_path, corpus):
    out = tmp_path / "out"
    _local("pipe3.py", [corpus], out, "--split-size", "16K")
    letters: Counter = Counter()
    for w, n in word_counts(corpus).items():
        letters[w[0]] += n
    assert read_counts(str(out)) == dict(letters)
    assert len([p for p in os.listdir(out) if p.startswith("part-")]) == 2


def test_four_steps_with_sort_values_and_a_map_only_last(tmp_path, corpus):
    out = tmp_path / "out"
    _local("pipe4.py", [corpus], out, "--split-size", "16K")
    lengths: Counter = Counter()
    for w, n in word_counts(corpus).items():
        lengths[len(w)] += n
    total = sum(lengths.values())
    assert sorted((int(k), v) for k, v in read_parts(str(out))) == \
        sorted((n, f"{c}/{total}") for n, c in lengths.items())


# ------------------------------------------------------------------ what a task gets

def test_finish_input_path_shipped_files_and_sort_values(tmp_path):
    one, two = tmp_path / "one.txt", tmp_path / "two.txt"
    one.write_text("a 3\nb 1\na 1\nb 5\na 2\n")
    two.write_text("a 9\n")
    extra = tmp_path / "extra.txt"
    extra.write_text("extra\n")
    out = tmp_path / "out"
    _local("task_hooks.py", [one, two], out, "--file", str(extra), job_args=("extra.txt",))
    rows = dict(read_parts(str(out)))
    assert rows == {"a": "[1, 2, 3, 9]", "b": "[1, 5]", "path one.txt": "5",
                    "path two.txt": "1", "word": "shipped-word+extra"}


def test_shipped_files_are_limited_in_size(tmp_path):
    big = tmp_path / "big.bin"
    big.write_bytes(os.urandom(5 << 20))
    r = submit_local(os.path.join(EXAMPLES, "wordcount.py"), [_write(tmp_path, "x\n")],
                     tmp_path / "out", "--file", str(big))
    assert r.returncode == 2 and "MiB in all" in r.stderr, r.stderr
    assert len(r.stderr.strip().splitlines()) == 1


def _write(tmp_path, text: str, name: str = "in.txt") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def test_gz_and_bz2_inputs_are_read_decompressed(tmp_path):
    text = "".join(f"w{i % 7} w{i % 3}\n" for i in range(3000))
    gz, bz = tmp_path / "a.txt.gz", tmp_path / "b.bz2"
    gz.write_bytes(gzip.compress(text.encode()))
    bz.write_bytes(bz2.compress(text.encode()))
    plain = _write(tmp_path, text, "plain.txt")
    out = tmp_path / "out"
    r = _local(os.path.join(EXAMPLES, "wordcount.py"), [gz, bz], out, "--split-size", "1K")
    doubled = {w: 2 * n for w, n in word_counts(plain).items()}
    assert read_counts(str(out)) == doubled
    assert "map 2/2" in r.stderr  # one map per compressed file, however small the splits


def test_a_line_that_is_not_utf8_arrives_and_leaves_unchanged(tmp_path):
    path = tmp_path / "odd.txt"
    path.write_bytes(b"plain line\nlatin \xe9t\xe9 \xff\n")
    job = tmp_path / "echo.py"
    job.write_text("from blfsd import Job\n\n\nclass Echo(Job):\n    reducers = 1\n\n"
                   "    def map(self, key, line):\n"
                   "        yield key, [line, len(line.encode('utf-8', 'surrogateescape'))]\n"
                   "\n    def reduce(self, key, values):\n"
                   "        for line, n in values:\n            yield line, n\n")
    out = tmp_path / "out"
    _local(str(job), [path], out)
    assert (out / "part-00000").read_bytes() == b"plain line\t10\nlatin \xe9t\xe9 \xff\t11\n"


def test_a_job_with_mrjob_method_names_is_refused(tmp_path):
    job = tmp_path / "named.py"
    job.write_text("from blfsd import Job\n\n\nclass Named(Job):\n"
                   "    def mapper(self, key, value):\n        yield value, 1\n\n"
                   "    def reducer(self, key, values):\n        yield key, sum(values)\n")
    r = submit_local(str(job), [_write(tmp_path, "x\n")], tmp_path / "out")
    assert r.returncode == 2, r.stderr
    (line,) = r.stderr.strip().splitlines()
    assert "rename mapper to map, reducer to reduce" in line
    assert not (tmp_path / "out").exists()


def test_an_mrjob_job_without_mrjob_says_how_to_install_it(tmp_path):
    fake = tmp_path / "nomrjob"
    (fake / "mrjob").mkdir(parents=True)
    # what Python raises when a package is not installed, before the real one is found
    (fake / "mrjob" / "__init__.py").write_text(
        "raise ModuleNotFoundError(\"No module named 'mrjob'\", name='mrjob')\n")
    job = tmp_path / "mr.py"
    job.write_text("from mrjob.job import MRJob\n\n\nclass MR(MRJob):\n"
                   "    def mapper(self, _, line):\n        yield line, 1\n")
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(fake), str(Path(JOBS).parents[1])]))
    import subprocess
    import sys
    done = subprocess.run([sys.executable, "-m", "blfsd", "submit", str(job), "--input",
                           str(_write(tmp_path, "x\n")), "--output", str(tmp_path / "out"),
                           "--local"], capture_output=True, text=True, env=env, timeout=60)
    assert done.returncode == 2
    (line,) = done.stderr.strip().splitlines()
    assert "needs mrjob" in line and "pip install mrjob" in line


# ------------------------------------------------------------------ on the loop-disk cluster

@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    if os.geteuid() != 0:
        pytest.skip("needs root: loop devices")
    with LoopCluster(tmp_path_factory.mktemp("pipecluster"), workers=3, slots=16,
                     image_size=96 << 20) as c:
        yield c


def _disk_files(c: LoopCluster) -> dict:
    """Every file on every own disk except the pool's slots: (size, mtime) by path."""
    found = {}
    for i in range(c.n):
        root = str(c.disk(i, i))
        for d, _, names in os.walk(root):
            for n in names:
                path = os.path.join(d, n)
                if os.path.dirname(path) == os.path.join(root, "pool"):
                    continue
                st = os.stat(path)
                found[path] = (st.st_size, st.st_mtime_ns)
    return found


@pytest.mark.root
def test_middle_steps_stay_in_the_slot_pools(cluster, tmp_path, corpus):
    """Nothing but slot bytes changes on the shared disks while a pipeline runs, and
    every slot is free when it has ended."""
    before = _disk_files(cluster)
    out = tmp_path / "out"
    cluster.blfs("submit", os.path.join(JOBS, "pipe4.py"), "--input", corpus, "--output",
                 str(out), "--split-size", "16K", timeout=180)
    assert _disk_files(cluster) == before
    lengths: Counter = Counter()
    for w, n in word_counts(corpus).items():
        lengths[len(w)] += n
    assert len(read_parts(str(out))) == len(lengths)
    assert cluster.free_slots() == [cluster.slots] * cluster.n
    logs = "".join(d.log_tail(1 << 22) for d in cluster.daemons)
    assert "released the slots of" in logs, "no middle stage was released before the end"


@pytest.mark.root
def test_a_corrupted_middle_segment_reruns_its_producer(cluster, tmp_path, shared_dir,
                                                        corpus):
    """Step 2's map finds the segment step 1's reduce wrote corrupt: that reduce runs
    again (after the maps it reads, whose output was already given back), and the output
    is exact."""
    job = tmp_path / "corrupt_pipe.py"
    job.write_text(CORRUPTING_PIPE)
    out = tmp_path / "out"
    stop = threading.Event()
    flipper = threading.Thread(target=_flip_when_asked,
                               args=(cluster, Path(shared_dir), stop), daemon=True)
    flipper.start()
    try:
        done = cluster.blfs("submit", str(job), "--input", corpus, "--output", str(out),
                            "--split-size", "32K", "--", shared_dir, timeout=180)
    finally:
        stop.set()
        flipper.join(5)
    assert (Path(shared_dir) / "flipped").exists(), "the fault was not injected"
    assert "failed (fetch)" in done.stderr, done.stderr
    letters: Counter = Counter()
    for w, n in word_counts(corpus).items():
        letters[w[0]] += n
    assert read_counts(str(out)) == dict(letters)


CORRUPTING_PIPE = '''
import os, time
from blfsd import Job, Step


class Corrupting(Job):
    """pipe3.py, whose step-1 map asks the test to corrupt what step 0's reduce wrote."""

    def steps(self):
        return [Step(map=self.words, combine=self.total, reduce=self.total, reducers=2),
                Step(map=self.by_letter),
                Step(reduce=self.total, reducers=2)]

    def setup(self):
        shared = self.args[0]
        if self.context.step == 1 and self.context.attempt == 0 and self._first(shared):
            with open(os.path.join(shared, "flip-now"), "w") as f:
                f.write("x")
            while not os.path.exists(os.path.join(shared, "flipped")):
                time.sleep(0.05)

    def _first(self, shared):
        try:
            os.close(os.open(os.path.join(shared, "asked"), os.O_CREAT | os.O_EXCL))
            return True
        except FileExistsError:
            return False

    def words(self, key, line):
        for word in line.split():
            yield word, 1

    def total(self, key, counts):
        yield key, sum(counts)

    def by_letter(self, word, count):
        yield word[0], count
'''


def _flip_when_asked(c: LoopCluster, shared: Path, stop: threading.Event) -> None:
    """When the job asks: flip a byte inside the first segment of every slot of every
    pool (as root: a task may not write a pool), then say so."""
    while not stop.is_set() and not (shared / "flip-now").exists():
        time.sleep(0.02)
    if stop.is_set():
        return
    for i in range(c.n):
        pool = os.path.join(str(c.disk(i, i)), "pool")
        for slot in sorted(os.listdir(pool)):
            if slot.startswith("slot-"):
                with open(os.path.join(pool, slot), "r+b") as f:
                    f.seek(200)
                    byte = f.read(1)
                    f.seek(200)
                    f.write(bytes([byte[0] ^ 0xFF]))
                    f.flush()
                    os.fsync(f.fileno())
        os.sync()
    (shared / "flipped").touch()


@pytest.mark.root
def test_a_worker_killed_in_the_second_step_still_gives_the_exact_output(cluster,
                                                                         tmp_path):
    corpus = make_corpus(tmp_path / "big.txt", 20000, seed=9)
    job = os.path.join(JOBS, "slow_pipeline.py")
    out = tmp_path / "out"
    import subprocess
    import sys
    argv = [sys.executable, "-m", "blfsd", "--config", str(cluster.master_cfg), "submit",
            str(job), "--input", corpus, "--output", str(out), "--split-size", "64K",
            "--master", cluster.socket, "--", "1.0"]
    proc = subprocess.Popen(argv, env=cluster.env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    victim = cluster.daemons[1]  # w1
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            rows = json.loads(cluster.blfs("jobs", "--json").stdout)
            mine = [r for r in rows if r.get("output") == str(out)]
            if mine and _second_step_running(cluster, mine[0]["job"]):
                break
            time.sleep(0.1)
        victim.proc.send_signal(signal.SIGKILL)
        stdout, stderr = proc.communicate(timeout=240)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, stderr
    letters: Counter = Counter()
    for w, n in word_counts(corpus).items():
        letters[w[0]] += n
    assert read_counts(str(out)) == dict(letters)
    assert "failed (lost)" in stderr


def _second_step_running(c: LoopCluster, job: str) -> bool:
    status = c.status(job)
    return any(a["attempt"].split("/")[1].startswith("s1-") and a["worker"] == "w1"
               for a in status["running"])


