"""Nodes leave and join a running master (issue 15, point 2): `systemctl reload
blfs-master` (SIGHUP) re-reads [nodes.*]. A node that left is drained: it starts nothing
new, what it runs finishes, its outputs stay readable until the jobs that need them end,
then the master lets it go. A node that (re)joins is dialled and gets work. No running job
is lost either way. Real daemons on loop-device disks."""
from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import subprocess
import sys
import time

import pytest

from blfsd import auth, client
from blfsd.errors import BlfsError
from cluster_helpers import LoopCluster
from conftest import JOBS, make_corpus, read_counts, word_counts
from loopdev import root


def workers(cluster: LoopCluster) -> dict:
    return {w["name"]: w for w in json.loads(cluster.blfs("workers", "--json").stdout)}


def wait_for(what: str, predicate, timeout: float = 60.0):
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.2)


def on(status: dict, worker: str) -> list:
    return [a for a in status["attempts"] if a["worker"] == worker]


@root
@pytest.mark.root
def test_a_node_that_leaves_is_drained_and_one_that_joins_gets_work(tmp_path):
    with LoopCluster(tmp_path, workers=3, slots=16, parallelism=1) as cluster:
        full = cluster.master_cfg.read_text()
        without = re.sub(r'\[nodes\.w2\]\naddress = "[^"]+"\n', "", full)
        assert without != full
        corpus = make_corpus(tmp_path / "in.txt", 4000, seed=9)
        out = tmp_path / "out"
        proc = subprocess.Popen(
            [sys.executable, "-m", "blfsd", "--config", str(cluster.master_cfg), "submit",
             os.path.join(JOBS, "slow_wordcount.py"), "--input", corpus, "--output",
             str(out), "--split-size", "8K", "--reducers", "2", "--master", cluster.socket,
             "--", "1.0"], env=cluster.env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
            text=True)
        job = wait_for("the job", lambda: next(
            (j["job"] for j in json.loads(cluster.blfs("jobs", "--json").stdout)), None))
        wait_for("an attempt running on w2",
                 lambda: any(a["state"] == "running" for a in on(cluster.status(job), "w2")))
        # w2 leaves the configuration, in the middle of the job
        cluster.master_cfg.write_text(without)
        cluster.master.proc.send_signal(signal.SIGHUP)
        wait_for("w2 draining", lambda: workers(cluster)["w2"]["draining"])
        before = len(on(cluster.status(job), "w2"))
        _, stderr = proc.communicate(timeout=180)
        assert proc.returncode == 0, stderr
        assert read_counts(str(out)) == word_counts(corpus)
        done = cluster.status(job)
        assert len(on(done, "w2")) == before  # nothing new started there after the drain
        assert all(a["state"] == "succeeded" for a in on(done, "w2")), on(done, "w2")
        assert not [f for f in done["failed_attempts"] if f["worker"] == "w2"]
        # drained once the job that needed its map outputs ended: the master lets it go
        wait_for("w2 let go", lambda: "w2" not in workers(cluster))
        assert "w2 drained" in cluster.master.log_tail(1 << 20)
        # and back: w2 joins again, and a new job's attempts run there too
        cluster.master_cfg.write_text(full)
        cluster.master.proc.send_signal(signal.SIGHUP)
        wait_for("w2 up again", lambda: (workers(cluster).get("w2") or {}).get("alive"))
        out2 = tmp_path / "out2"
        cluster.blfs("submit", os.path.join(JOBS, "slow_wordcount.py"), "--input", corpus,
                     "--output", str(out2), "--split-size", "8K", "--reducers", "2",
                     "--", "0.3", timeout=180)
        assert read_counts(str(out2)) == word_counts(corpus)
        second = cluster.status(cluster.job_id_for(str(out2)))
        assert on(second, "w2"), "the node that joined got no work"
        assert "reload: 3 workers configured; dialling w2" in cluster.master.log_tail(1 << 20)


@root
@pytest.mark.root
def test_a_worker_the_master_does_not_know_announces_itself_and_gets_work(tmp_path):
    """w2 is not in the master's [nodes.*]; it listens on every interface and announces
    itself with the cluster key, advertising its address on the route to the master
    (pyroute2: 127.0.0.1 here). The master ([master] accept_announced) dials it, a job's
    attempts run there, and a reload with the same file keeps it. A connection that claims
    to be a worker may announce and nothing else; a configured name keeps its address."""
    with LoopCluster(tmp_path, workers=3, slots=16, parallelism=1,
                     announcing=("w2",)) as cluster:
        assert "[nodes.w2]" not in cluster.master_cfg.read_text()
        port = cluster.ports[2]
        assert (f"worker w2 announced itself at 127.0.0.1:{port}: dialling it"
                in cluster.master.log_tail(1 << 20))
        assert (f"announced to the master at 127.0.0.1:{cluster.master_port} as "
                f"127.0.0.1:{port}" in cluster.daemons[2].log_tail(1 << 20))
        corpus = make_corpus(tmp_path / "in.txt", 2000, seed=3)
        out = tmp_path / "out"
        cluster.blfs("submit", os.path.join(JOBS, "slow_wordcount.py"), "--input", corpus,
                     "--output", str(out), "--split-size", "8K", "--reducers", "3",
                     "--", "0.2", timeout=180)
        assert read_counts(str(out)) == word_counts(corpus)
        assert on(cluster.status(cluster.job_id_for(str(out))), "w2"), "w2 got no work"
        cluster.master.proc.send_signal(signal.SIGHUP)
        wait_for("the reload", lambda: "reload: 3 workers configured; dialling none; "
                 "draining none" in cluster.master.log_tail(1 << 20))
        assert workers(cluster)["w2"]["alive"] and not workers(cluster)["w2"]["draining"]
        assert asyncio.run(announce_as(cluster, "client", "w9")) == \
            "this connection does not serve 'announce'"
        refused = asyncio.run(announce_as(cluster, "worker", "w0"))
        assert refused == f"worker w0 is configured at 127.0.0.1:{cluster.ports[0]}", refused
        assert asyncio.run(submit_as_worker(cluster)) == "this connection does not serve 'jobs'"


async def announce_as(cluster: LoopCluster, role: str, name: str) -> str:
    """What the master answers an announce from (role, name) over TCP with the key."""
    key = auth.load_key(str(cluster.key_file))
    peer = await client.connect(f"127.0.0.1:{cluster.master_port}", key, role, name)
    try:
        return str(await peer.call("announce", limit=5, address="127.0.0.1:9"))
    except BlfsError as exc:
        return str(exc)
    finally:
        await peer.close()


async def submit_as_worker(cluster: LoopCluster) -> str:
    key = auth.load_key(str(cluster.key_file))
    peer = await client.connect(f"127.0.0.1:{cluster.master_port}", key, "worker", "w9")
    try:
        return str(await peer.call("jobs", limit=5))
    except BlfsError as exc:
        return str(exc)
    finally:
        await peer.close()
