"""The commit of a job's output and its rollback (blfsd.master.executor), against real files:
each worker's side is its real Files service on a directory disk (tests/fake_links.py).

Parts are renamed into place in partition order, each by the worker that wrote it; then
the output is completed (_SUCCESS by the last part's worker, or the catalog's record of a
cluster output). A fault anywhere takes back every part already moved, and the job fails
with no part and no _SUCCESS left."""
from __future__ import annotations

import asyncio
import os
import zlib
from typing import Optional

import pytest

from blfsd import catalog
from blfsd.aio import TaskSet
from blfsd.catalog import OUTPUTS, Catalog
from blfsd.errors import ConnectionClosed, StorageError
from blfsd.master.executor import Executor
from blfsd.messages import JobSpec, JobState, SegmentLocation, Split, TaskResult
from blfsd.scheduler import Commit, JobEnded, Launch, Scheduler, Settings

from fake_links import FakeLinks

REDUCERS = 2


class Run:
    """A job of one map and two reduces, brought to its commit on workers w1 and w2."""

    def __init__(self, tmp_path, named: bool = False, fault=None):
        self.tmp = tmp_path
        self.links = FakeLinks(str(tmp_path / "disks"), ["w1", "w2"], fault)
        self.sched = Scheduler(Settings(speculation=False))
        for name in ("w1", "w2"):
            self.sched.worker_up(name, 2)
        self.catalog = Catalog(None)
        self.output = "counts" if named else str(tmp_path / "out")
        self.named = named
        self.ended: list = []
        self.tasks = TaskSet()
        self.executor = Executor(self.sched, self.links, self.catalog, self.tasks,
                                 self.ended.append, self._changed)
        self.commit = self._to_commit()

    async def _changed(self) -> None:
        pass

    def output_dir(self, worker: str) -> str:
        """Where a part of this job's output is committed, as its writer sees it."""
        if self.named:
            return catalog.output_dir(self.links.disk(worker), self.output)
        return self.output

    def _to_commit(self) -> Commit:
        spec = JobSpec(name="t", job_file="t.py", source="", job_class="T", args=[],
                       input_format="lines", splits=[Split(path="/in", start=0, end=1)],
                       output=self.output, output_name=self.output if self.named else None,
                       reducers=REDUCERS)
        self.sched.submit("j", spec, 0)
        (launch,) = [a for a in self.sched.schedule(0) if isinstance(a, Launch)]
        segments = [SegmentLocation(node=launch.worker, slot=p, offset=0, length=10, crc=0,
                                    generation=1, partition=p) for p in range(REDUCERS)]
        self.sched.attempt_succeeded(launch.attempt.id, TaskResult(segments=segments), 1)
        actions: list = []
        for launch in [a for a in self.sched.schedule(2) if isinstance(a, Launch)]:
            actions = self.sched.attempt_succeeded(launch.attempt.id,
                                                   self._write_part(launch), 3)
        (commit,) = [a for a in actions if isinstance(a, Commit)]
        return commit

    def _write_part(self, launch: Launch) -> TaskResult:
        """What the reduce's task process leaves: its part under _temporary, fsynced."""
        i, out = launch.attempt.index, self.output_dir(launch.worker)
        tmpdir = os.path.join(out, "_temporary", "j", f"r-{i:05d}.0")
        os.makedirs(tmpdir)
        data = f"key{i}\t{i}\n".encode()
        with open(os.path.join(tmpdir, f"part-{i:05d}"), "wb") as f:
            f.write(data)
        target = os.path.join(out, f"part-{i:05d}")
        extra = {}
        if self.named:
            extra = {"file": os.path.relpath(target, self.links.disk(launch.worker)),
                     "size": len(data), "crc": zlib.crc32(data)}
        return TaskResult(path=os.path.join(tmpdir, f"part-{i:05d}"), target=target, **extra)

    def run(self) -> None:
        async def go() -> None:
            await self.executor.commit(self.commit)
            while len(self.tasks):  # the release and anything else it started
                await asyncio.gather(*self.tasks)
        asyncio.run(go())

    def parts(self) -> dict:
        """worker -> the files of its output directory (besides _temporary)."""
        return {w: sorted(f for f in os.listdir(self.output_dir(w)) if f != "_temporary")
                if os.path.isdir(self.output_dir(w)) else [] for w in ("w1", "w2")}

    @property
    def state(self) -> JobState:
        return self.sched.jobs["j"].state


def fail_at(op: str, index: Optional[int] = None, exc: Exception = None, after=False):
    """A fault for the request `op` (of part `index`, for commit and uncommit)."""
    exc = exc or StorageError("disk on fire")

    def fault(worker: str, got: str, fields: dict):
        if got != op:
            return None
        if index is not None and not fields.get("target", "").endswith(f"part-{index:05d}"):
            return None
        return ("after", exc) if after else exc
    return fault


# ------------------------------------------------------------------ a commit that works

def test_parts_move_in_order_then_success_is_written_last(tmp_path):
    r = Run(tmp_path)
    assert r.commit.parts[0][0] == "w1" and r.commit.parts[1][0] == "w2"
    r.run()
    assert r.state == JobState.SUCCEEDED
    assert sorted(os.listdir(r.output)) == ["_SUCCESS", "part-00000", "part-00001"]
    steps = [(w, op, os.path.basename(f.get("target") or f.get("output", "")))
             for w, op, f in r.links.calls if op in ("commit", "success")]
    assert steps == [("w1", "commit", "part-00000"), ("w2", "commit", "part-00001"),
                     ("w2", "success", "out")]
    assert r.ended == [JobEnded("j", JobState.SUCCEEDED, None)]
    assert [w for w, _ in r.links.ops("release_job")] == ["w1", "w2"]


@pytest.mark.parametrize("named", [False, True], ids=["directory", "cluster-output"])
def test_a_resumed_commit_takes_parts_its_predecessor_moved_as_moved(tmp_path, named):
    """A master restarted in the middle of a commit commits again (Commit.again): the part
    it finds already in place counts as moved, the rest moves, and the job succeeds. The
    same commit without `again` fails on it."""
    r = Run(tmp_path, named=named)
    worker, _, source, target = r.commit.parts[0]
    os.rename(source, target)  # what the master before the restart did
    r.commit.again = True
    r.run()
    assert r.state == JobState.SUCCEEDED
    assert all(os.path.exists(t) and not os.path.exists(s) for _, _, s, t in r.commit.parts)

    again = Run(tmp_path / "plain", named=named)
    worker, _, source, target = again.commit.parts[0]
    os.rename(source, target)
    again.run()
    assert again.state == JobState.FAILED


def test_a_cluster_output_is_recorded_instead_of_success(tmp_path):
    r = Run(tmp_path, named=True)
    r.run()
    assert r.state == JobState.SUCCEEDED
    assert r.parts() == {"w1": ["part-00000"], "w2": ["part-00001"]}
    entry = r.catalog.get(OUTPUTS, "counts")
    assert [(p["partition"], p["node"], p["file"]) for p in entry["parts"]] == [
        (0, "w1", "output/counts/part-00000"), (1, "w2", "output/counts/part-00001")]
    assert all(p["size"] == len("key0\t0\n") and isinstance(p["crc"], int) for p in entry["parts"])
    assert not r.links.ops("success")
    for w in ("w1", "w2"):  # each worker removed its own temporary files
        assert not os.path.exists(os.path.join(r.output_dir(w), "_temporary"))


def test_with_a_worker_gone_the_master_moves_parts_of_a_shared_directory(tmp_path):
    """--local (or a shared output directory): the master sees the same files."""
    r = Run(tmp_path)
    del r.links.peers["w2"]
    r.run()
    assert r.state == JobState.SUCCEEDED
    assert sorted(os.listdir(r.output)) == ["_SUCCESS", "part-00000", "part-00001"]
    assert [w for w, _ in r.links.ops("commit")] == ["w1"]


# ------------------------------------------------------------------ and one that does not

@pytest.mark.parametrize("exc", [ConnectionClosed("Connection lost"), asyncio.TimeoutError()],
                         ids=["worker-lost", "reply-lost"])
@pytest.mark.parametrize("after", [True, False], ids=["after-rename", "before-rename"])
def test_a_worker_lost_during_a_commit_to_a_directory_the_master_finishes_it(tmp_path, exc,
                                                                              after):
    """The soak's worker restart in the middle of a commit: the part's worker went away
    with the request, having moved the part or not. The output is a directory the master
    sees: it moves the part itself if need be, and the job succeeds (it failed before)."""
    r = Run(tmp_path, fault=fail_at("commit", 1, exc, after=after))
    r.run()
    assert r.state == JobState.SUCCEEDED, r.sched.jobs["j"].error
    assert sorted(os.listdir(r.output)) == ["_SUCCESS", "part-00000", "part-00001"]
    assert not r.links.ops("uncommit")


@pytest.mark.parametrize("fault,asked,named", [
    (fail_at("commit", 1), 2, False),  # refused before the rename
    (fail_at("commit", 1, asyncio.TimeoutError(), after=True), 2, True),  # done, reply lost
    (fail_at("success"), 2, False),
    (fail_at("commit", 0), 1, False),
], ids=["second-commit", "second-commit-reply-lost-cluster-output", "success", "first-commit"])
def test_a_fault_in_the_middle_takes_the_moved_parts_back(tmp_path, fault, asked, named):
    r = Run(tmp_path, fault=fault, named=named)
    r.run()
    assert r.state == JobState.FAILED
    assert "committing the output failed" in r.sched.jobs["j"].error
    assert r.parts() == {"w1": [], "w2": []}  # no part, no _SUCCESS
    taken_back = [os.path.basename(f["target"]) for _, f in r.links.ops("uncommit")]
    assert taken_back == [f"part-{i:05d}" for i in range(asked)]
    assert [e.state for e in r.ended] == [JobState.FAILED]
    for w in ("w1", "w2"):  # released
        assert not os.path.exists(os.path.join(r.output_dir(w), "_temporary", "j"))


def test_a_cluster_output_that_fails_is_not_recorded_and_leaves_no_part(tmp_path):
    r = Run(tmp_path, named=True, fault=fail_at("commit", 1))
    r.run()
    assert r.state == JobState.FAILED
    assert not r.catalog.has(OUTPUTS, "counts")
    assert r.parts() == {"w1": [], "w2": []}


def test_a_cluster_output_needs_its_writers(tmp_path):
    """Its parts are on the writers' own disks: nobody else may move them."""
    r = Run(tmp_path, named=True)
    del r.links.peers["w2"]
    r.run()
    assert r.state == JobState.FAILED and "w2 is not connected" in r.sched.jobs["j"].error
    assert r.parts()["w1"] == []


def test_a_take_back_that_fails_is_logged_and_the_job_still_fails(tmp_path, caplog):
    def fault(worker, op, fields):
        if op == "uncommit":  # refused (a lost worker's part the master takes back itself)
            return StorageError("read-only file system")
        return fail_at("success")(worker, op, fields)

    r = Run(tmp_path, fault=fault)
    r.run()
    assert r.state == JobState.FAILED
    assert "could not take back" in caplog.text
    assert r.parts()["w1"] == ["part-00000", "part-00001"]  # what could not be taken back
