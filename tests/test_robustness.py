"""The master under faults of its own (issue 12): a request is accepted only when it was
durably recorded, and a periodic loop that raises is logged and goes on. Real daemons."""
from __future__ import annotations

import asyncio
import glob
import json
import os
import subprocess
import sys
import textwrap

import pytest

import msgpack

from blfsd import protocol, rpc
from blfsd.errors import ConnectionClosed
from blfsd.local import LocalCluster
from cluster_helpers import LoopCluster
from conftest import EXAMPLES, JOBS, make_corpus, read_counts, word_counts
from loopdev import root

SLEEPY = textwrap.dedent('''
    import time
    from blfsd import Job


    class Sleepy(Job):
        """Every map sleeps without a word of progress: a task timeout ends it."""

        def map(self, key, value):
            time.sleep(120)
            yield value, 1
''')


def submit_argv(job: str, corpus: str, out: str, master: str, *extra: str) -> list:
    return [sys.executable, "-m", "blfsd", "submit", job, "--input", corpus, "--output", out,
            "--master", master, *extra]


def test_a_tick_that_raises_is_logged_and_timeouts_still_fire(tmp_path):
    """The master's tick raises (an injected fault, five times in a row): each failure is
    logged with its traceback, the ticker goes on, and the task timeout still fires: the
    sleeping job fails by its timeout instead of running for ever."""
    job = tmp_path / "sleepy.py"
    job.write_text(SLEEPY)
    corpus = make_corpus(tmp_path / "in.txt", 50, seed=3)
    out = tmp_path / "out"

    async def go() -> tuple:
        async with LocalCluster(1, task_timeout=2.0, max_attempts=1) as lc:
            real, calls = lc.master.sched.tick, []

            def broken(now: float) -> list:
                calls.append(now)
                if len(calls) <= 5:
                    raise RuntimeError("injected: the tick broke")
                return real(now)

            lc.master.sched.tick = broken
            proc = await asyncio.create_subprocess_exec(
                *submit_argv(str(job), corpus, str(out), lc.socket_path),
                stdout=subprocess.PIPE, stderr=subprocess.PIPE)
            try:
                _, stderr = await asyncio.wait_for(proc.communicate(), 60)
            finally:
                if proc.returncode is None:
                    proc.kill()
            with open(os.path.join(lc.root, "logs", "master.log")) as f:
                log = f.read()
            return proc.returncode, stderr.decode(), log, len(calls)

    code, stderr, log, ticks = asyncio.run(go())
    assert code == 1 and "no progress for 2 s; killed" in stderr, stderr
    assert ticks > 5
    assert "injected: the tick broke" in log and "Traceback" in log
    assert "it goes on" in log


@pytest.fixture
def cluster(tmp_path):
    if os.geteuid() != 0:
        pytest.skip("needs root: loop devices, and a tmpfs over the master's state")
    with LoopCluster(tmp_path, workers=2, slots=16) as c:
        yield c


@root
@pytest.mark.root
def test_a_submit_that_cannot_be_recorded_is_refused_and_nothing_runs(cluster, tmp_path):
    """The master's job records sit on a full file system: submit is refused with one
    line saying why, no job is listed, no output is written, no record file is left."""
    jobs_dir = cluster.state_dir / "jobs"
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k", "blfs-test", str(jobs_dir)],
                   check=True)
    try:
        with open(jobs_dir / "filler", "wb", buffering=0) as f:
            with pytest.raises(OSError):
                while True:
                    f.write(b"\0" * 4096)
        corpus = make_corpus(tmp_path / "in.txt", 200, seed=4)
        out = tmp_path / "out"
        done = cluster.blfs("submit", os.path.join(EXAMPLES, "wordcount.py"), "--input",
                            corpus, "--output", str(out), check=False)
        assert done.returncode == 1
        (line,) = done.stderr.strip().splitlines()
        assert "cannot record job" in line and "No space left on device" in line, line
        assert json.loads(cluster.blfs("jobs", "--json").stdout) == []
        assert not out.exists()
        assert sorted(os.listdir(jobs_dir)) == ["filler"]
    finally:
        subprocess.run(["umount", str(jobs_dir)], check=True)


@root
@pytest.mark.root
def test_a_submit_nested_too_deep_is_refused_before_any_handler(cluster, tmp_path):
    """A spec with a field nested 600 levels deep: the connection is dropped while the
    frame is decoded; nothing is accepted, recorded or run, and the master is fine."""
    out = tmp_path / "out"
    spec = {"name": "deep", "job_file": "x.py", "source": "", "class": "X", "args": ["@"],
            "input_format": "lines", "splits": [], "reducers": 1, "output": str(out)}
    # msgpack itself will not write 600 levels: the nested value is spliced in by hand
    body = msgpack.packb({"op": "submit", "id": 7, "spec": spec}, use_bin_type=True)
    body = body.replace(msgpack.packb("@"), b"\x91" * 600 + b"\x01", 1)

    async def go() -> None:
        peer, _ = await rpc.connect(cluster.socket, None, "client", "attacker",
                                    expect_role="master")
        try:
            peer.stream.writer.write(protocol.LENGTH.pack(len(body)) + body)
            await peer.stream.writer.drain()
            with pytest.raises(ConnectionClosed):
                await asyncio.wait_for(peer.stream.read(), 10)
        finally:
            await peer.close()

    asyncio.run(go())
    assert json.loads(cluster.blfs("jobs", "--json").stdout) == []
    assert not out.exists()
    assert glob.glob(str(cluster.state_dir / "jobs" / "*")) == []
    assert "dropping client" in cluster.master.log_tail(1 << 20)


# ------------------------------------------------------------------ memory under a flood

def _peak_rss(pid: int) -> int:
    """VmHWM of a process: the most it ever held resident, in bytes."""
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    raise AssertionError("no VmHWM")


def _heavy_frame(msg_id: int) -> bytes:
    """A ping carrying an array of 500,000 empty arrays: half a MiB on the wire, some
    30 MB once decoded (about the most entries a frame may hold)."""
    n = 500_000
    body = (b"\x83" + msgpack.packb("op") + msgpack.packb("ping") + msgpack.packb("id")
            + msgpack.packb(msg_id) + msgpack.packb("x") + b"\xdd" + n.to_bytes(4, "big")
            + b"\x90" * n)
    return protocol.LENGTH.pack(len(body)) + body


@pytest.fixture
def budget_cluster(tmp_path):
    if os.geteuid() != 0:
        pytest.skip("needs root: loop devices")
    with LoopCluster(tmp_path, workers=2, slots=16,
                     master_cluster='request_memory = "64M"\n') as c:
        yield c


@root
@pytest.mark.root
def test_clients_flooding_heavy_frames_cannot_bloat_the_master(budget_cluster, tmp_path):
    """24 clients each pipeline 3 frames that decode to ~30 MB: the master's peak RSS grows
    by about its request_memory (64M) plus one frame, not by what they send; a word count
    submitted meanwhile gives its exact output."""
    c = budget_cluster
    pid = c.master.pid
    before = _peak_rss(pid)
    corpus = make_corpus(tmp_path / "in.txt", 2000, seed=6)
    out = tmp_path / "out"

    async def flood() -> int:
        conns = []
        for i in range(24):
            peer, _ = await rpc.connect(c.socket, None, "client", f"flood{i}",
                                        expect_role="master")
            conns.append(peer)

        async def send(peer: rpc.Peer) -> int:
            for k in range(3):
                peer.stream.writer.write(_heavy_frame(k + 1))
            await peer.stream.writer.drain()
            answers = 0
            for _ in range(3):
                await asyncio.wait_for(peer.stream.read(), 120)
                answers += 1
            return answers

        submit = await asyncio.create_subprocess_exec(
            *submit_argv(os.path.join(EXAMPLES, "wordcount.py"), corpus, str(out), c.socket),
            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        try:
            answered = sum(await asyncio.gather(*(send(p) for p in conns)))
            _, err = await asyncio.wait_for(submit.communicate(), 120)
            assert submit.returncode == 0, err.decode()
        finally:
            for peer in conns:
                await peer.close()
        return answered

    assert asyncio.run(flood()) == 72  # every frame was read and answered
    grown = _peak_rss(pid) - before
    print(f"\nmaster peak RSS grew by {grown / 2**20:.0f} MiB under 24 x 3 heavy frames "
          f"(request_memory 64M)")
    assert grown < 200 << 20, f"the master's peak RSS grew by {grown >> 20} MiB"
    assert read_counts(str(out)) == word_counts(corpus)


# ------------------------------------------------------------------ what a task may send

NOISY = os.path.join(JOBS, "noisy.py")


def _noisy(cluster: LoopCluster, tmp_path, what: str) -> tuple:
    corpus = make_corpus(tmp_path / f"{what}.txt", 3000, seed=8)
    out = tmp_path / f"out-{what}"
    done = cluster.blfs("submit", NOISY, "--input", corpus, "--output", str(out),
                        "--split-size", "16K", "--", what, timeout=180)
    assert read_counts(str(out)) == word_counts(corpus)
    return done, cluster.status(cluster.job_id_for(str(out)))


@root
@pytest.mark.root
def test_two_million_counters_are_bounded_and_said_to_be(cluster, tmp_path):
    """A task makes 2 million distinct counters: the job succeeds (its attempts used to die
    'before reporting'), keeps the first 1000, and its status counts the dropped ones."""
    _, status = _noisy(cluster, tmp_path, "counters")
    assert len(status["counters"]["many"]) == 1000
    assert status["counters"]["blfs"]["counters_dropped"] == 2_000_000 - 1000


@root
@pytest.mark.root
def test_a_10_mib_status_is_cut_with_a_marker(cluster, tmp_path):
    """set_status of 10 MiB: submit follows the job to its end and exits 0 (it used to quit
    with 'the reply exceeds the frame size limit'); the status kept is cut and says so."""
    job = os.path.join(JOBS, "noisy.py")
    corpus = make_corpus(tmp_path / "status.txt", 3000, seed=8)
    out = tmp_path / "out-status"
    proc = subprocess.Popen(submit_argv(job, corpus, str(out), cluster.socket, "--split-size",
                                        "16K", "--", "status"),
                            env=cluster.env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
    statuses = []
    while proc.poll() is None:
        rows = json.loads(cluster.blfs("jobs", "--json").stdout)
        for row in rows:
            if row["output"] == str(out):
                statuses += [r["status"] for r in cluster.status(row["job"])["running"]]
    _, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 0, stderr
    assert read_counts(str(out)) == word_counts(corpus)
    long = [s for s in statuses if s.startswith("sss")]
    assert all(len(s) <= 2000 and s.endswith("[...truncated]") for s in long), \
        [len(s) for s in long]


@root
@pytest.mark.root
def test_a_task_s_output_is_kept_bounded_out_of_the_worker_s_log(cluster, tmp_path):
    """20 MiB on a task's stdout and stderr: the job succeeds, the workers' logs do not
    grow by it, and the attempt's output is kept beside the worker, bounded."""
    logs_before = sum(os.path.getsize(d.log) for d in cluster.daemons)
    _, status = _noisy(cluster, tmp_path, "output")
    grown = sum(os.path.getsize(d.log) for d in cluster.daemons) - logs_before
    assert grown < 200_000, f"the daemons' logs grew by {grown} bytes"
    (winner,) = [a for a in status["attempts"]
                 if a["task"] == "m-00000" and a["state"] == "succeeded"]
    kept = glob.glob(str(tmp_path / "work-*" / "logs" / status["job"] / "*"))
    (path,) = [p for p in kept if os.path.basename(p).startswith("m-00000.")]
    text = open(path, encoding="utf-8").read()
    assert 60_000 < len(text) < 80_000 and "bytes of output left out" in text
    assert winner["worker"] in path


# ------------------------------------------------------------------ a full disk

@root
@pytest.mark.root
def test_a_full_disk_is_not_the_job_s_fault_and_another_node_takes_the_task(cluster,
                                                                          tmp_path):
    """w0's own disk is full: its reduces of a cluster output fail as disk_full, naming
    the node and the path, with no traceback; they run on w1 instead, and although the
    job allows one attempt per task (--max-attempts 1) it succeeds, exact."""
    own = cluster.disk(0, 0)
    filler = own / "filler"
    with open(filler, "wb", buffering=0) as f:
        with pytest.raises(OSError):
            while True:
                f.write(b"\0" * (1 << 20))
    try:
        corpus = make_corpus(tmp_path / "in.txt", 2000, seed=12)
        done = cluster.blfs("submit", os.path.join(EXAMPLES, "wordcount.py"), "--input",
                            corpus, "--output", "fullcounts", "--reducers", "4",
                            "--max-attempts", "1", timeout=120)
        (job,) = [r["job"] for r in json.loads(cluster.blfs("jobs", "--json").stdout)
                  if r["output"] == "fullcounts"]
        status = cluster.status(job)
    finally:
        filler.unlink()
    assert status["state"] == "succeeded", status["error"]
    full = [f for f in status["failed_attempts"] if f["kind"] == "disk_full"]
    assert full and all(f["worker"] == "w0" for f in full), status["failed_attempts"]
    for f in full:
        assert "disk full on w0" in f["error"] and str(own) in f["error"], f["error"]
        assert "Traceback" not in f["error"]
    assert "failed (disk_full)" in done.stderr
    text = cluster.blfs("cat", "fullcounts").stdout
    assert {k: int(v) for k, v in (line.split("\t") for line in text.splitlines())} \
        == word_counts(corpus)
