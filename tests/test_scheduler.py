"""The master's decisions (blfsd.scheduler), driven with explicit clocks (docs/ARCHITECTURE.md, Scheduling).

The Scheduler is pure: events go in (worker_up/down, attempt_succeeded/failed, tick, ...),
actions come out (Launch, Kill, Commit, Release, JobEnded). Every test here feeds events
with explicit `now` values and checks the actions and the state that come back.
"""
from __future__ import annotations

import random
import statistics
from typing import Optional

import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from blfsd import scheduler as sch
from blfsd.messages import (FINISHED, FailureKind, JobSpec, JobState, Priority,
                            SegmentLocation, Split, StepSpec, TaskResult)
from blfsd.scheduler import (Commit, JobEnded, Kill, Launch, Release, Scheduler, Settings,
                             TaskDone)

# ------------------------------------------------------------------------- helpers


def make_spec(maps: int = 2, reducers: int = 2, nodes: Optional[list] = None,
              **extra) -> JobSpec:
    splits = [Split(path=f"/in/file-{i}", start=0, end=100,
                    node=nodes[i] if nodes and i < len(nodes) and nodes[i] else None)
              for i in range(maps)]
    fields = dict(name="test", job_file="test.py", source="", job_class="Test", args=[],
                  input_format="lines", splits=splits, reducers=reducers, output="/out")
    fields.update(extra)
    return JobSpec(**fields)


_slot = iter(range(10**9))


def map_result(s: Scheduler, attempt_id: str, counters: Optional[dict] = None) -> TaskResult:
    """A plausible map result: one segment per partition on the attempt's worker."""
    a = s.attempts[attempt_id]
    n = len(a.task.job.reduces)
    return TaskResult(segments=[SegmentLocation(node=a.worker, slot=next(_slot), offset=0,
                                                length=10, crc=0, generation=1, partition=p,
                                                run=0, seq=0, flags=0) for p in range(n)],
                      counters=counters or {})


def reduce_result(s: Scheduler, attempt_id: str,
                  counters: Optional[dict] = None) -> TaskResult:
    a = s.attempts[attempt_id]
    i = a.task.index
    return TaskResult(path=f"/out/_temporary/{a.task.job.id}/r-{i:05d}.{a.number}/part-{i:05d}",
                      target=f"/out/part-{i:05d}", counters=counters or {})


def result_for(s: Scheduler, attempt_id: str, counters: Optional[dict] = None) -> TaskResult:
    if s.attempts[attempt_id].task.kind == "map":
        return map_result(s, attempt_id, counters)
    return reduce_result(s, attempt_id, counters)


def succeed(s: Scheduler, attempt_id: str, now: float, counters: Optional[dict] = None) -> list:
    return s.attempt_succeeded(attempt_id, result_for(s, attempt_id, counters), now)


def of(actions: list, cls: type) -> list:
    return [a for a in actions if isinstance(a, cls)]


def launched(actions: list) -> dict:
    """task name -> Launch, for the Launch actions in a list."""
    out = {}
    for a in of(actions, Launch):
        assert a.attempt.task not in out, "two launches of one task in one batch"
        out[a.attempt.task] = a
    return out


def running_ids(s: Scheduler, job: str, kind: Optional[str] = None) -> list:
    return [a.id for t in s.jobs[job].tasks() for a in t.running()
            if kind is None or t.kind == kind]


def cluster(*names: str, parallelism: int = 2, settings_: Optional[Settings] = None,
            **per_worker) -> Scheduler:
    s = Scheduler(settings_ or Settings())
    for n in names:
        assert s.worker_up(n, per_worker.get(n, parallelism)) == []
    return s


def check_consistent(s: Scheduler) -> None:
    """The bookkeeping invariants between workers, attempts, tasks and jobs."""
    for name, w in s.workers.items():
        on_w = {aid for aid, a in s.attempts.items() if a.worker == name}
        assert w.running == on_w, f"worker {name}: running {w.running} but attempts {on_w}"
        if not w.alive:
            assert not w.running, f"dead worker {name} still runs {w.running}"
        assert len(w.running) <= w.parallelism, f"worker {name} over its parallelism"
    for aid, a in s.attempts.items():
        assert a.id == aid and a.state == "running"
        assert a in a.task.attempts
        assert a.worker in s.workers
    for job in s.jobs.values():
        for task in job.tasks():
            for a in task.attempts:
                assert (a.state == "running") == (a.id in s.attempts), a.id
            workers = [a.worker for a in task.running()]
            assert len(workers) == len(set(workers)) <= 2, f"{task.name} runs on {workers}"
            if job.state == JobState.RUNNING:
                if task.state == "running":
                    assert task.running(), f"{task.name} is running with no running attempt"
                if task.state == "pending":
                    assert not task.running(), f"{task.name} is pending but has attempts"
            if job.state in FINISHED or job.state == JobState.COMMITTING:
                assert not task.running(), f"{job.state} job {job.id} still runs {task.name}"
            if task.state == "succeeded":
                assert task.winner is not None and task.winner.state == "succeeded"
                assert task.result is not None
            if task.running():  # what the placer's load and job_status's rows rely on
                assert task.state == "running", f"{task.name} runs but is {task.state}"
    check_books(s)


# --------------------------------------------- the stages' books, counted the long way


def brute_book(stage) -> dict:
    """What a stage's book must say, counted over its tasks."""
    tasks = stage.tasks
    holds: dict = {}
    for t in tasks:
        if t.result and t.winner and not t.released:
            for loc in t.result.segments:
                pairs = holds.setdefault(loc.node, {}).setdefault(t.index, [])
                if (loc.slot, t.winner.id) not in pairs:
                    pairs.append((loc.slot, t.winner.id))
    return {"pending": {t.index for t in tasks if t.state == "pending"},
            "running": {t.index for t in tasks if t.state == "running"},
            "succeeded": sum(t.state == "succeeded" for t in tasks),
            "readable": sum(t.state == "succeeded" and not t.released for t in tasks),
            "durations": sorted(t.winner.finished - t.winner.started for t in tasks
                                if t.state == "succeeded" and t.winner),
            "holds": holds,
            "held_count": {node: sum(map(len, on_node.values()))
                           for node, on_node in holds.items()}}


def brute_held_slots(s: Scheduler, node: str) -> list:
    """held_slots as it was first written (every task of every job scanned), each pair
    once in its first place."""
    pairs = [(loc.slot, task.winner.id) for job in s.jobs.values() if job.state not in FINISHED
             for task in job.tasks() if task.result and task.winner and not task.released
             for loc in task.result.segments if loc.node == node]
    return list(dict.fromkeys(pairs))


def brute_threshold(tasks: list, settings_: Settings) -> Optional[float]:
    """The straggler threshold with statistics.median over the stage's winners."""
    if any(t.state == "pending" for t in tasks):
        return None
    durations = [t.winner.finished - t.winner.started for t in tasks
                 if t.state == "succeeded" and t.winner]
    if not durations:
        return None
    return max(settings_.speculation_min_seconds,
               settings_.speculation_slowdown * statistics.median(durations))


def check_books(s: Scheduler) -> None:
    """Every index the scheduler keeps equals its recomputation over every task."""
    nodes = set(s.workers) | {loc.node for j in s.jobs.values() for t in j.tasks()
                              if t.result for loc in t.result.segments}
    for node in nodes:
        assert s.held_slots(node) == brute_held_slots(s, node), node
    for job in s.jobs.values():
        for stage in job.stages:
            book = stage.book
            assert {k: getattr(book, k) for k in brute_book(stage)} == brute_book(stage)
            assert sch.straggler_threshold(stage, s.settings) == \
                brute_threshold(stage.tasks, s.settings)
            assert stage.done() == all(t.state == "succeeded" for t in stage.tasks)
            for t in stage.tasks:
                assert sch.pipeline.ready(job, t) == all(
                    p.state == "succeeded" and not p.released
                    for p in sch.pipeline.producers(job, t))
        assert repr(sch.winners_counters(job)) == repr(sch._winners_counters(job))  # in order
        assert sch.running_attempts([job], s.attempts.values())[job.id] == \
            sum(len(t.running()) for t in job.tasks())


def run_maps(s: Scheduler, job: str, now: float) -> None:
    """Launch and finish every map of a job (enough capacity assumed)."""
    s.schedule(now)
    for aid in running_ids(s, job, "map"):
        succeed(s, aid, now + 1)
    assert s.jobs[job].maps_done()


# ------------------------------------------------------------------- phases


def test_maps_run_first_and_reduces_only_after_every_map_succeeded():
    s = cluster("w1", "w2", parallelism=4)
    s.submit("j", make_spec(maps=3, reducers=2), now=0)
    assert s.jobs["j"].state == JobState.QUEUED
    acts = s.schedule(0)
    assert s.jobs["j"].state == JobState.RUNNING
    got = launched(acts)
    assert set(got) == {"m-00000", "m-00001", "m-00002"}
    assert all(a.attempt.kind == "map" and a.attempt.attempt == 0 for a in got.values())
    assert [a.attempt.split.path for a in sorted(got.values(),
            key=lambda a: a.attempt.index)] == ["/in/file-0", "/in/file-1", "/in/file-2"]
    ids = {name: a.attempt.id for name, a in got.items()}
    assert ids["m-00000"] == "j/m-00000/0"

    # two maps done: still no reduce
    results = {}
    for name in ("m-00000", "m-00001"):
        results[name] = map_result(s, ids[name])
        done = s.attempt_succeeded(ids[name], results[name], 5)
        assert [type(a) for a in done] == [TaskDone]  # recorded, and nothing else yet
        assert done[0].task.attempt == ids[name] and done[0].task.result == results[name]
        assert of(s.schedule(5), Launch) == []
    # the last map: now both reduces
    results["m-00002"] = map_result(s, ids["m-00002"])
    assert of(s.attempt_succeeded(ids["m-00002"], results["m-00002"], 6), Launch) == []
    got = launched(s.schedule(6))
    assert set(got) == {"r-00000", "r-00001"}
    for name, launch in got.items():
        p = launch.attempt.index
        assert launch.attempt.kind == "reduce"
        segs = launch.attempt.segments
        # exactly the segments of partition p from every map, tagged with map and attempt
        expected = sorted((m, r.segments[p].slot) for m, r in
                          ((int(k[2:]), v) for k, v in results.items()))
        assert sorted((x.map_task, x.slot) for x in segs) == expected
        assert all(x.partition == p and x.map_attempt == 0 for x in segs)

    # reduces done -> commit of exactly those parts, then release and end
    r_ids = [l.attempt.id for l in got.values()]
    assert [type(a) for a in succeed(s, r_ids[0], 7)] == [TaskDone]
    acts = succeed(s, r_ids[1], 8)
    commits = of(acts, Commit)
    assert len(commits) == 1 and commits[0].job == "j"
    assert sorted(p[1] for p in commits[0].parts) == sorted(r_ids)
    assert sorted(p[3] for p in commits[0].parts) == ["/out/part-00000", "/out/part-00001"]
    assert s.jobs["j"].state == JobState.COMMITTING
    acts = s.commit_done("j", 9)
    assert acts == [Release("j", ["w1", "w2"]), JobEnded("j", JobState.SUCCEEDED, None)]
    assert s.jobs["j"].state == JobState.SUCCEEDED
    assert s.commit_done("j", 10) == []  # once only
    check_consistent(s)


def test_commit_failure_fails_the_job():
    s = cluster("w1")
    s.submit("j", make_spec(maps=1, reducers=1), 0)
    run_maps(s, "j", 0)
    s.schedule(2)
    (rid,) = running_ids(s, "j")
    assert of(succeed(s, rid, 3), Commit)
    acts = s.commit_failed("j", "disk full", 4)
    ended = of(acts, JobEnded)
    assert ended and ended[0].state == JobState.FAILED and "disk full" in ended[0].error
    assert of(acts, Release)
    assert s.commit_done("j", 5) == []


# ------------------------------------------------------------------ placement


def test_map_locality_puts_a_split_on_its_node():
    s = cluster("w1", "w2", "w3", parallelism=2)
    s.submit("j", make_spec(maps=4, reducers=1, nodes=["w3", "w2", "w3", "w1"]), 0)
    got = launched(s.schedule(0))
    assert {n: l.worker for n, l in got.items()} == {
        "m-00000": "w3", "m-00001": "w2", "m-00002": "w3", "m-00003": "w1"}
    check_consistent(s)


def test_a_freed_worker_takes_its_own_split_before_anothers():
    """Splits round-robin over three workers of one slot each: when w2 frees up, it takes
    the next split it holds (m-00004), not the first pending one (m-00003, on w1)."""
    s = cluster("w1", "w2", "w3", parallelism=1)
    s.submit("j", make_spec(maps=6, reducers=1, nodes=["w1", "w2", "w3"] * 2), 0)
    got = launched(s.schedule(0))
    assert {n: l.worker for n, l in got.items()} == {
        "m-00000": "w1", "m-00001": "w2", "m-00002": "w3"}
    succeed(s, got["m-00001"].attempt.id, 1)
    again = launched(s.schedule(1))
    assert {n: l.worker for n, l in again.items()} == {"m-00004": "w2"}
    check_consistent(s)


def replicated_spec(holders: list) -> JobSpec:
    """A job over a dataset whose split i is kept on the nodes holders[i]."""
    splits = [Split(path=f"d:{i}", start=0, end=100, node=nodes[0], file=f"data/d/split-{i}",
                    crc=0, replicas=nodes) for i, nodes in enumerate(holders)]
    return make_spec(maps=len(holders), reducers=1).replace(splits=splits)


def test_a_map_goes_to_a_live_holder_of_any_replica_of_its_split():
    """Splits kept on two nodes each: with w1 down, a split w1 held is mapped on its other
    holder; a split goes to its less loaded holder (m-00001 to w3, as w2 runs m-00000);
    one whose live holder is full goes elsewhere only in the second pass."""
    s = cluster("w1", "w2", "w3", parallelism=2)
    s.worker_down("w1", 0)
    holders = [["w1", "w2"], ["w2", "w3"], ["w3", "w1"], ["w1", "w3"]]
    s.submit("j", replicated_spec(holders), 0)
    got = launched(s.schedule(0))
    assert {n: l.worker for n, l in got.items()} == {
        "m-00000": "w2", "m-00001": "w3", "m-00002": "w3", "m-00003": "w2"}
    check_consistent(s)


def test_among_holders_the_least_loaded_takes_the_split():
    s = cluster("w1", "w2", parallelism=2)
    s.submit("j", replicated_spec([["w1", "w2"], ["w1", "w2"]]), 0)
    got = launched(s.schedule(0))
    assert sorted(l.worker for l in got.values()) == ["w1", "w2"]


def test_locality_yields_to_capacity_and_to_dead_nodes():
    s = cluster("w1", "w2", "w3", parallelism=1)
    s.worker_down("w3", 0)
    # three splits on w1 (capacity 1), one on the dead w3, one on an unknown node
    s.submit("j", make_spec(maps=5, reducers=1, nodes=["w1", "w1", "w1", "w3", "nowhere"]), 0)
    got = launched(s.schedule(0))
    assert got["m-00000"].worker == "w1"
    assert len(got) == 2  # two live workers with one slot each
    assert {l.worker for l in got.values()} == {"w1", "w2"}
    assert all(l.worker != "w3" for l in got.values())
    check_consistent(s)


def test_reduces_go_to_the_least_loaded_workers():
    s = cluster("w1", "w2", "w3", parallelism=4)
    # job a keeps w1 busy with three long maps
    s.submit("a", make_spec(maps=3, reducers=1, nodes=["w1", "w1", "w1"]), 0)
    s.submit("b", make_spec(maps=1, reducers=3), 1)
    got = of(s.schedule(1), Launch)
    assert [(l.attempt.job, l.worker) for l in got] == \
        [("a", "w1"), ("a", "w1"), ("a", "w1"), ("b", "w2")]
    assert of(s.schedule(1), Launch) == []  # nothing more to place
    (bm,) = running_ids(s, "b")
    succeed(s, bm, 2)
    reduces = [l for l in of(s.schedule(3), Launch) if l.attempt.job == "b"]
    assert len(reduces) == 3
    where = [l.worker for l in reduces]
    # w1 runs 3, w2 and w3 none: the three reduces go to w2 and w3 only
    assert "w1" not in where
    assert sorted(where) == ["w2", "w2", "w3"]
    check_consistent(s)


def test_least_loaded_counts_running_attempts():
    s = cluster("w1", "w2", parallelism=8)
    s.submit("j", make_spec(maps=1, reducers=6), 0)
    run_maps(s, "j", 0)
    got = of(s.schedule(2), Launch)
    per = {w: sum(1 for l in got if l.worker == w) for w in ("w1", "w2")}
    assert per == {"w1": 3, "w2": 3}


def test_parallelism_is_never_exceeded():
    s = cluster("w1", "w2", parallelism=2, w2=3)
    s.submit("j", make_spec(maps=10, reducers=1), 0)
    got = of(s.schedule(0), Launch)
    assert len(got) == 5
    assert sum(1 for l in got if l.worker == "w1") == 2
    assert sum(1 for l in got if l.worker == "w2") == 3
    assert of(s.schedule(1), Launch) == []
    assert of(s.tick(2), Launch) == []
    assert s.workers["w1"].free == 0 and s.workers["w2"].free == 0
    # one finishes on w1: exactly one new launch, on w1
    a = next(l.attempt.id for l in got if l.worker == "w1")
    succeed(s, a, 3)
    again = of(s.schedule(3), Launch)
    assert [l.worker for l in again] == ["w1"]
    check_consistent(s)


def test_no_worker_no_launch_and_a_late_worker_gets_the_work():
    s = Scheduler()
    s.submit("j", make_spec(maps=2, reducers=1), 0)
    assert s.schedule(0) == []
    assert s.jobs["j"].state == JobState.RUNNING
    assert s.worker_up("w1", 0) == []  # parallelism at least 1
    got = of(s.schedule(1), Launch)
    assert len(got) == 1 and got[0].worker == "w1"


# -------------------------------------------------------------------- failures


@pytest.mark.parametrize("kind", [FailureKind.USER, FailureKind.CRASHED, FailureKind.TIMEOUT, FailureKind.POOL])
def test_counted_failure_requeues_on_another_worker(kind):
    s = cluster("w1", "w2", parallelism=2)
    s.submit("j", make_spec(maps=1, reducers=1, nodes=["w1"]), 0)
    (l0,) = of(s.schedule(0), Launch)
    assert l0.worker == "w1"
    acts = s.attempt_failed(l0.attempt.id, kind, "Traceback: boom", 1)
    assert of(acts, JobEnded) == [] and of(acts, Kill) == []
    task = s.jobs["j"].maps[0]
    assert task.state == "pending" and task.failures == 1 and "w1" in task.avoid
    (l1,) = of(s.schedule(1), Launch)
    # preferred another worker although w1 holds the split and has room
    assert l1.worker == "w2"
    assert l1.attempt.attempt == 1 and l1.attempt.id == "j/m-00000/1"
    st_ = s.job_status("j")
    assert st_["failed_attempts"][-1]["kind"] == kind
    assert st_["failed_attempts"][-1]["worker"] == "w1"
    check_consistent(s)


def test_retry_waits_for_a_busy_fresh_worker_rather_than_the_failed_one():
    s = cluster("w1", "w2", parallelism=1)
    s.submit("j", make_spec(maps=2, reducers=1, nodes=["w1", "w2"]), 0)
    got = launched(s.schedule(0))
    s.attempt_failed(got["m-00000"].attempt.id, FailureKind.USER, "boom", 1)
    # w1 is free, but m-00000 failed there; w2 is busy: wait
    assert of(s.schedule(1), Launch) == []
    succeed(s, got["m-00001"].attempt.id, 2)
    (l,) = of(s.schedule(2), Launch)
    assert l.worker == "w2" and l.attempt.task == "m-00000"


def test_retry_falls_back_to_a_failed_worker_when_it_is_the_only_one():
    s = cluster("w1")
    s.submit("j", make_spec(maps=1, reducers=1), 0)
    (l,) = of(s.schedule(0), Launch)
    s.attempt_failed(l.attempt.id, FailureKind.CRASHED, "segfault", 1)
    (l2,) = of(s.schedule(1), Launch)
    assert l2.worker == "w1" and l2.attempt.attempt == 1


def test_max_attempts_fails_the_job_with_a_precise_error_and_cleans_up():
    s = cluster("w1", "w2", "w3", parallelism=2, settings_=Settings(max_attempts=3))
    s.submit("j", make_spec(maps=2, reducers=1, nodes=["w1", "w2"]), 0)
    got = launched(s.schedule(0))
    other = got["m-00001"].attempt.id
    bad = got["m-00000"].attempt.id
    workers_used = []
    for n in range(3):
        workers_used.append(s.attempts[bad].worker)
        acts = s.attempt_failed(bad, FailureKind.USER,
                                f"Traceback (most recent call last):\nValueError: boom {n}",
                                10 + n)
        if n < 2:
            assert of(acts, JobEnded) == []
            nxt = [l for l in of(s.schedule(10 + n), Launch) if l.attempt.task == "m-00000"]
            assert len(nxt) == 1
            assert nxt[0].worker not in workers_used  # a new worker each time
            bad = nxt[0].attempt.id
    assert workers_used == sorted(set(workers_used), key=workers_used.index)
    # the job failed: the other running attempt is killed, slots released, job ended
    assert of(acts, Kill) == [Kill("w2", other)]
    rel = of(acts, Release)
    assert rel == [Release("j", ["w1", "w2", "w3"])]
    (ended,) = of(acts, JobEnded)
    assert acts.index(rel[0]) < acts.index(ended)
    assert ended.state == JobState.FAILED
    err = ended.error
    assert "m-00000" in err
    assert "attempt 2" in err
    assert workers_used[-1] in err
    assert "ValueError: boom 2" in err
    job = s.jobs["j"]
    assert job.state == JobState.FAILED and job.error == err
    assert s.job_status("j")["state"] == JobState.FAILED
    # nothing of the job runs or gets launched any more; late reports are ignored
    assert s.attempts == {}
    assert of(s.schedule(20), Launch) == [] and of(s.tick(21), Launch) == []
    assert s.attempt_succeeded(other, {"segments": []}, 22) == []
    assert s.attempt_failed(other, FailureKind.USER, "late", 22) == []
    assert s.cancel("j", 23) == []
    check_consistent(s)


def test_killed_attempt_report_is_not_a_failure():
    s = cluster("w1", "w2")
    s.submit("j", make_spec(maps=1, reducers=1), 0)
    (l,) = of(s.schedule(0), Launch)
    assert s.attempt_failed(l.attempt.id, FailureKind.KILLED, "killed", 1) == []
    task = s.jobs["j"].maps[0]
    assert task.failures == 0 and task.lost == 0 and not task.avoid
    assert s.job_status("j")["failed_attempts"] == []
    assert s.attempts == {} and s.workers[l.worker].running == set()


def test_unsolicited_killed_report_requeues_the_task():
    """A worker may report 'killed' for an attempt the master did not kill (its `sync` kills
    every attempt of an earlier master session; the report can race the master's worker_up).
    The task must run again, or the job never ends: no attempt is left to time out."""
    s = cluster("w1", "w2")
    s.submit("j", make_spec(maps=1, reducers=1), 0)
    (l,) = of(s.schedule(0), Launch)
    s.attempt_failed(l.attempt.id, FailureKind.KILLED, "killed", 1)
    task = s.jobs["j"].maps[0]
    assert task.state == "pending"
    relaunch = of(s.tick(10_000), Launch)
    assert [x.attempt.task for x in relaunch] == ["m-00000"]


# ---------------------------------------------------------------- lost workers


def test_lost_worker_reruns_its_attempts_elsewhere_without_counting():
    s = cluster("w1", "w2", parallelism=2, settings_=Settings(max_attempts=2))
    s.submit("j", make_spec(maps=3, reducers=2, nodes=["w1", "w1", "w2"]), 0)
    got = launched(s.schedule(0))
    assert got["m-00000"].worker == "w1" and got["m-00001"].worker == "w1"
    # m-00000 finishes on w1: its output lives on w1's disk
    done_on_w1 = map_result(s, got["m-00000"].attempt.id)
    s.attempt_succeeded(got["m-00000"].attempt.id, done_on_w1, 1)
    acts = s.worker_down("w1", 2)
    assert of(acts, JobEnded) == [] and of(acts, Kill) == []
    assert s.workers["w1"].running == set() and not s.workers["w1"].alive
    t1 = s.jobs["j"].maps[1]
    assert t1.state == "pending" and t1.failures == 0 and t1.lost == 1
    assert s.worker_down("w1", 2) == []  # twice is once
    assert s.worker_down("nobody", 2) == []
    (l,) = of(s.schedule(2), Launch)
    assert l.worker == "w2" and l.attempt.task == "m-00001"
    # finished map output on the dead worker is still used
    assert s.jobs["j"].maps[0].state == "succeeded"
    assert s.held_slots("w1") == [(done_on_w1.segments[0].slot, "j/m-00000/0"),
                                  (done_on_w1.segments[1].slot, "j/m-00000/0")]
    for aid in running_ids(s, "j"):
        succeed(s, aid, 3)
    reduces = of(s.schedule(4), Launch)
    assert len(reduces) == 2
    for r in reduces:
        assert r.worker == "w2"
        from_m0 = [x for x in r.attempt.segments if x.map_task == 0]
        assert len(from_m0) == 1 and from_m0[0].node == "w1"
        assert from_m0[0].map_attempt == 0
    check_consistent(s)


def test_losses_do_not_count_toward_max_attempts():
    s = cluster("w1", "w2", settings_=Settings(max_attempts=2))
    s.submit("j", make_spec(maps=1, reducers=1), 0)
    t = 0.0
    for n in range(3):  # more losses than max_attempts
        s.worker_up("w1", 2)
        s.worker_up("w2", 2)
        (l,) = of(s.schedule(t), Launch)
        acts = s.worker_down(l.worker, t + 1)
        assert of(acts, JobEnded) == [], f"loss {n + 1} failed the job"
        t += 2
    assert s.jobs["j"].state == JobState.RUNNING
    assert s.jobs["j"].maps[0].failures == 0


def test_endless_losses_end_the_job_instead_of_looping():
    s = cluster("w1", settings_=Settings(max_attempts=2))
    s.submit("j", make_spec(maps=1, reducers=1), 0)
    ended = []
    for n in range(50):
        s.worker_up("w1", 1)
        if not of(s.schedule(n), Launch):
            break
        ended += of(s.worker_down("w1", n + 0.5), JobEnded)
        if ended:
            break
    assert ended and ended[0].state == JobState.FAILED and "m-00000" in ended[0].error


def test_worker_rejoining_while_alive_loses_its_old_attempts():
    """A worker that re-registers (it restarted) no longer runs what it ran."""
    s = cluster("w1", "w2")
    s.submit("j", make_spec(maps=1, reducers=1, nodes=["w1"]), 0)
    (l,) = of(s.schedule(0), Launch)
    s.worker_up("w1", 2)
    assert s.workers["w1"].running == set()
    assert s.jobs["j"].maps[0].failures == 0
    (l2,) = of(s.schedule(1), Launch)
    assert l2.attempt.attempt == 1
    check_consistent(s)


# --------------------------------------------------------------------- timeouts


def test_silent_attempt_times_out_is_killed_and_retried():
    s = cluster("w1", "w2", settings_=Settings(task_timeout=10, speculation=False))
    s.submit("j", make_spec(maps=1, reducers=1, nodes=["w1"]), 0)
    (l,) = of(s.schedule(0), Launch)
    aid = l.attempt.id
    assert s.tick(5) == []
    s.attempt_progress(aid, 8, 0.5, "halfway")
    assert s.tick(17.9) == []  # 9.9 s since the last sign of life
    acts = s.tick(18.5)
    assert acts[0] == Kill("w1", aid)
    relaunch = of(acts, Launch)
    assert len(relaunch) == 1 and relaunch[0].worker == "w2"
    assert relaunch[0].attempt.attempt == 1
    task = s.jobs["j"].maps[0]
    assert task.failures == 1
    fa = s.job_status("j")["failed_attempts"][-1]
    assert fa["kind"] == FailureKind.TIMEOUT and fa["attempt"] == aid
    # a late report from the killed attempt changes nothing
    assert s.attempt_succeeded(aid, {"segments": []}, 19) == []
    assert task.state == "running"
    check_consistent(s)


def test_job_task_timeout_overrides_the_default_and_timeouts_count():
    s = cluster("w1", settings_=Settings(task_timeout=1000, max_attempts=2))
    s.submit("j", make_spec(maps=1, reducers=1, task_timeout=3), 0)
    s.schedule(0)
    acts = s.tick(4)
    assert len(of(acts, Kill)) == 1 and len(of(acts, Launch)) == 1
    acts = s.tick(8)
    (ended,) = of(acts, JobEnded)
    assert ended.state == JobState.FAILED and "timeout" in ended.error
    assert of(acts, Launch) == []


def test_progress_of_unknown_attempt_is_ignored():
    s = cluster("w1")
    s.attempt_progress("nope/m-00000/0", 1, 0.5)
    assert s.attempt_succeeded("nope/m-00000/0", {}, 1) == []
    assert s.attempt_failed("nope/m-00000/0", FailureKind.USER, "x", 1) == []


# ----------------------------------------------------------------- fetch failures


def _to_reduce_phase(s: Scheduler, maps: int = 2, reducers: int = 2, nodes=None):
    s.submit("j", make_spec(maps=maps, reducers=reducers, nodes=nodes), 0)
    got = launched(s.schedule(0))
    results = {}
    for name, l in got.items():
        results[name] = map_result(s, l.attempt.id)
        s.attempt_succeeded(l.attempt.id, results[name], 1)
    return got, results


def test_fetch_failure_reruns_the_map_and_sends_the_reduce_back_to_pending():
    s = cluster("w1", "w2", "w3", parallelism=2, settings_=Settings(speculation=False))
    maps, results = _to_reduce_phase(s, nodes=["w1", "w2"])
    reduces = launched(s.schedule(2))
    r0 = reduces["r-00000"].attempt.id
    acts = s.attempt_failed(r0, FailureKind.FETCH, "checksum mismatch in slot 3", 3,
                            {"map_task": 1, "node": "w2"})
    assert of(acts, JobEnded) == []
    job = s.jobs["j"]
    assert job.maps[1].state == "pending" and job.maps[1].result is None
    assert job.maps[0].state == "succeeded"
    assert job.reduces[0].state == "pending"
    assert job.reduces[0].failures == 0  # the reducer is not to blame
    st_ = s.job_status("j")
    assert st_["maps"]["done"] == 1 and st_["reduces"]["running"] == 1
    # the map runs again, not where its unreadable output was; the reduce waits
    again = of(s.schedule(3), Launch)
    assert [l.attempt.task for l in again] == ["m-00001"]
    assert again[0].worker != "w2" and again[0].attempt.attempt == 1
    new = map_result(s, again[0].attempt.id)
    s.attempt_succeeded(again[0].attempt.id, new, 4)
    (rl,) = of(s.schedule(4), Launch)
    assert rl.attempt.task == "r-00000" and rl.attempt.attempt == 1
    from_m1 = [x for x in rl.attempt.segments if x.map_task == 1]
    assert [(x.slot, x.map_attempt, x.node) for x in from_m1] == \
        [(new.segments[0].slot, 1, again[0].worker)]
    check_consistent(s)


@pytest.mark.parametrize("info", [None, {}, {"map_task": "m-00001"}, {"map_task": 7},
                                  {"map_task": -1}])
def test_fetch_failure_without_a_valid_map_only_requeues_the_reduce(info):
    s = cluster("w1", "w2", settings_=Settings(speculation=False))
    _to_reduce_phase(s)
    reduces = launched(s.schedule(2))
    s.attempt_failed(reduces["r-00000"].attempt.id, FailureKind.FETCH, "io error", 3, info)
    job = s.jobs["j"]
    assert job.maps_done()
    assert job.reduces[0].state == "pending"
    (l,) = of(s.schedule(3), Launch)
    assert l.attempt.task == "r-00000"


def test_repeated_fetch_failures_of_one_map_fail_the_job():
    s = cluster("w1", "w2", "w3", parallelism=4, settings_=Settings(max_attempts=2,
                                                                     speculation=False))
    _to_reduce_phase(s, maps=1, reducers=1)
    (r,) = of(s.schedule(2), Launch)
    acts = s.attempt_failed(r.attempt.id, FailureKind.FETCH, "bad crc", 3, {"map_task": 0})
    assert of(acts, JobEnded) == []
    (m,) = of(s.schedule(3), Launch)
    assert m.attempt.task == "m-00000" and m.attempt.attempt == 1
    succeed(s, m.attempt.id, 4)
    (r,) = of(s.schedule(4), Launch)
    assert r.attempt.task == "r-00000" and r.attempt.attempt == 1
    acts = s.attempt_failed(r.attempt.id, FailureKind.FETCH, "bad crc", 5, {"map_task": 0})
    (ended,) = of(acts, JobEnded)
    assert ended.state == JobState.FAILED
    assert "m-00000" in ended.error and "bad crc" in ended.error
    assert of(acts, Release) == [Release("j", ["w1", "w2", "w3"])]


def test_fetch_failure_naming_several_maps_reruns_them_all_at_once():
    s = cluster("w1", "w2", "w3", parallelism=2, settings_=Settings(speculation=False))
    _to_reduce_phase(s, maps=3, reducers=1, nodes=["w1", "w2", "w3"])
    (r,) = of(s.schedule(2), Launch)
    s.attempt_failed(r.attempt.id, FailureKind.FETCH, "node w3 unreadable", 3,
                     {"map_task": 0, "map_tasks": [0, 2], "node": "w3"})
    job = s.jobs["j"]
    assert [t.state for t in job.maps] == ["pending", "succeeded", "pending"]
    again = launched(s.schedule(3))
    assert set(again) == {"m-00000", "m-00002"}
    assert again["m-00000"].worker != "w1" and again["m-00002"].worker != "w3"


def test_fetch_failure_that_fails_the_job_ends_it_once():
    s = cluster("w1", "w2", settings_=Settings(max_attempts=1, speculation=False))
    _to_reduce_phase(s, maps=2, reducers=1)
    (r,) = of(s.schedule(2), Launch)
    acts = s.attempt_failed(r.attempt.id, FailureKind.FETCH, "gone", 3, {"map_tasks": [0, 1]})
    assert len(of(acts, JobEnded)) == 1 and len(of(acts, Release)) == 1
    assert s.jobs["j"].state == JobState.FAILED


def test_max_attempts_of_the_job_overrides_the_default():
    s = cluster("w1", "w2", settings_=Settings(max_attempts=4))
    s.submit("j", make_spec(maps=1, reducers=1, max_attempts=1), 0)
    (l,) = of(s.schedule(0), Launch)
    (ended,) = of(s.attempt_failed(l.attempt.id, FailureKind.USER, "boom", 1), JobEnded)
    assert ended.state == JobState.FAILED and "boom" in ended.error


def test_attempt_ids_carry_the_master_session():
    s = Scheduler(Settings(), epoch="e7")
    s.worker_up("w1", 1)
    s.submit("j", make_spec(maps=1, reducers=1), 0)
    (l,) = of(s.schedule(0), Launch)
    assert l.attempt.id == "j/m-00000/0@e7" and l.attempt.attempt == 0
    # a report about the same attempt of another master session is not this one
    assert s.attempt_succeeded("j/m-00000/0", {"segments": []}, 1) == []
    assert s.attempt_failed("j/m-00000/0@e6", FailureKind.USER, "old", 1) == []
    assert s.jobs["j"].maps[0].state == "running"


# ------------------------------------------------------------------- speculation


def _straggler_setup(speculation=True):
    st_ = Settings(speculation=speculation, speculation_min_seconds=2,
                   speculation_slowdown=1.5, task_timeout=1000)
    s = cluster("w1", "w2", "w3", parallelism=2, settings_=st_)
    s.submit("j", make_spec(maps=4, reducers=2, nodes=["w1", "w2", "w3", "w1"]), 0)
    got = launched(s.schedule(0))
    for name in ("m-00000", "m-00001", "m-00002"):
        succeed(s, got[name].attempt.id, 10)  # each took 10 s: threshold 15 s
    return s, got


def test_straggler_gets_a_backup_and_first_success_wins():
    s, got = _straggler_setup()
    slow = got["m-00003"].attempt.id
    assert of(s.schedule(14), Launch) == []  # not yet a straggler
    acts = of(s.schedule(16), Launch)
    assert len(acts) == 1
    backup = acts[0]
    assert backup.attempt.task == "m-00003" and backup.attempt.attempt == 1
    assert backup.worker != "w1"
    assert of(s.schedule(17), Launch) == []  # one backup only
    running = s.job_status("j")["running"]
    assert sorted((r["attempt"], r["backup"]) for r in running) == \
        [(slow, False), (backup.attempt.id, True)]
    # the backup finishes first: it wins, the original is killed
    b_result = map_result(s, backup.attempt.id, counters={"c": {"n": 7}})
    acts = s.attempt_succeeded(backup.attempt.id, b_result, 18)
    assert isinstance(acts[0], TaskDone) and acts[1:] == [Kill("w1", slow)]
    task = s.jobs["j"].maps[3]
    assert task.winner.id == backup.attempt.id and task.result is b_result
    # the loser's late success is ignored
    late = {"segments": [{"node": "w1", "slot": 999, "offset": 0, "length": 1, "crc": 0,
                          "generation": 1, "partition": p, "run": 0, "seq": 0, "flags": 0}
                         for p in range(2)], "counters": {"c": {"n": 1000}}}
    assert s.attempt_succeeded(slow, late, 19) == []
    assert task.winner.id == backup.attempt.id and task.result is b_result
    assert s.job_status("j")["counters"] == {"c": {"n": 7}}
    assert all(slot != 999 for slot, _ in s.held_slots("w1"))
    # reduces read the winner's output only
    reduces = of(s.schedule(20), Launch)
    assert len(reduces) == 2
    for r in reduces:
        m3 = [x for x in r.attempt.segments if x.map_task == 3]
        assert len(m3) == 1 and m3[0].map_attempt == 1 and m3[0].slot != 999
        assert m3[0].node == backup.worker
    check_consistent(s)


def test_original_wins_and_commit_names_only_the_winner():
    s, got = _straggler_setup()
    succeed(s, got["m-00003"].attempt.id, 11)
    reduces = launched(s.schedule(11))
    r0, r1 = reduces["r-00000"].attempt.id, reduces["r-00001"].attempt.id
    succeed(s, r0, 20)  # 9 s: threshold max(2, 13.5)
    assert of(s.schedule(24), Launch) == []
    (backup,) = of(s.schedule(25), Launch)
    assert backup.attempt.task == "r-00001" and backup.worker != reduces["r-00001"].worker
    b_id = backup.attempt.id
    assert backup.attempt.segments == reduces["r-00001"].attempt.segments
    acts = succeed(s, r1, 26)  # the original finishes first
    assert Kill(backup.worker, b_id) in acts
    (commit,) = of(acts, Commit)
    assert sorted(p[1] for p in commit.parts) == sorted([r0, r1])
    assert b_id not in {p[1] for p in commit.parts}
    for worker, aid, source, target in commit.parts:
        assert worker == s.jobs["j"].reduces[int(target[-5:])].winner.worker
        assert f".{aid.rsplit('/', 1)[1]}/" in source
    # the backup's late success neither wins nor commits twice
    late = {"path": "/elsewhere", "target": "/out/part-00001"}
    assert s.attempt_succeeded(b_id, late, 27) == []
    assert s.jobs["j"].reduces[1].winner.id == r1


def test_no_speculation_when_disabled():
    s, got = _straggler_setup(speculation=False)
    assert of(s.schedule(100), Launch) == []
    assert of(s.tick(200), Launch) == []


def test_no_speculation_while_a_task_of_the_phase_is_pending():
    st_ = Settings(speculation_min_seconds=2, speculation_slowdown=1.5, task_timeout=1000)
    s = cluster("w1", "w2", "w3", parallelism=1, settings_=st_)
    s.submit("j", make_spec(maps=3, reducers=1, nodes=["w1", "w2", "w3"]), 0)
    got = launched(s.schedule(0))
    succeed(s, got["m-00000"].attempt.id, 1)
    s.attempt_failed(got["m-00002"].attempt.id, FailureKind.USER, "x", 1)  # failed on w3
    (retry,) = of(s.schedule(1), Launch)
    assert retry.worker == "w1"
    s.attempt_failed(retry.attempt.id, FailureKind.USER, "x", 2)  # and on w1
    # m-00002 now waits for w2, busy with the straggling m-00001; w1 and w3 are free,
    # but no backup is started while a task of the phase still waits for its place
    assert of(s.schedule(100), Launch) == []
    assert s.jobs["j"].maps[2].state == "pending"
    succeed(s, got["m-00001"].attempt.id, 101)
    (l,) = of(s.schedule(101), Launch)
    assert l.worker == "w2" and l.attempt.task == "m-00002"


def test_backup_respects_avoid():
    st_ = Settings(speculation_min_seconds=2, speculation_slowdown=1.0, task_timeout=1000)
    s = cluster("w1", "w2", "w3", parallelism=1, settings_=st_)
    s.submit("j", make_spec(maps=2, reducers=1, nodes=["w1", "w2"]), 0)
    got = launched(s.schedule(0))
    succeed(s, got["m-00000"].attempt.id, 1)
    # m-00001 fails on w2, runs again on w1 (least loaded, name first)
    s.attempt_failed(got["m-00001"].attempt.id, FailureKind.USER, "x", 1)
    (retry,) = of(s.schedule(1), Launch)
    assert retry.worker == "w1"
    # straggling: a backup may not go to w2 (failed there) nor w1 (running there)
    (backup,) = of(s.schedule(10), Launch)
    assert backup.worker == "w3" and backup.attempt.attempt == 2


# ------------------------------------------------------------------------ cancel


def test_cancel_kills_releases_and_ends():
    s = cluster("w1", "w2")
    s.submit("j", make_spec(maps=3, reducers=1), 0)
    got = of(s.schedule(0), Launch)
    acts = s.cancel("j", 1)
    assert sorted((k.worker, k.attempt) for k in of(acts, Kill)) == \
        sorted((l.worker, l.attempt.id) for l in got)
    assert acts[-2:] == [Release("j", ["w1", "w2"]), JobEnded("j", JobState.CANCELLED, "cancelled")]
    assert s.jobs["j"].state == JobState.CANCELLED
    assert s.cancel("j", 2) == []
    assert of(s.schedule(3), Launch) == []
    assert s.attempt_succeeded(got[0].attempt.id, {"segments": []}, 4) == []
    check_consistent(s)


def test_cancel_a_queued_job():
    s = Scheduler()
    s.submit("j", make_spec(), 0)
    acts = s.cancel("j", 1)
    assert of(acts, JobEnded) == [JobEnded("j", JobState.CANCELLED, "cancelled")]
    s.worker_up("w1", 4)
    assert s.schedule(2) == []


def test_cancel_while_committing_is_too_late():
    """Every part is done once a job commits: a cancel then changes nothing (it would leave
    a cancelled job with a complete output, or half of one)."""
    s = cluster("w1")
    s.submit("j", make_spec(maps=1, reducers=1), 0)
    run_maps(s, "j", 0)
    s.schedule(2)
    (rid,) = running_ids(s, "j")
    succeed(s, rid, 3)
    assert s.jobs["j"].state == JobState.COMMITTING
    assert s.cancel("j", 4) == []
    assert s.jobs["j"].state == JobState.COMMITTING
    assert of(s.commit_done("j", 5), JobEnded)
    assert s.jobs["j"].state == JobState.SUCCEEDED


# ------------------------------------------------------------------ several jobs


def test_queued_jobs_run_in_submission_order():
    s = cluster("w1", parallelism=1)
    for i, job in enumerate(["c-first", "b-second", "a-third"]):
        s.submit(job, make_spec(maps=1, reducers=1), now=i)
    order = []
    now = 10.0
    for _ in range(20):
        acts = of(s.schedule(now), Launch)
        if not acts:
            break
        (l,) = acts
        order.append((l.attempt.job, l.attempt.task))
        acts = succeed(s, l.attempt.id, now + 1)
        for c in of(acts, Commit):
            s.commit_done(c.job, now + 1)
        now += 2
    assert order == [("c-first", "m-00000"), ("c-first", "r-00000"),
                     ("b-second", "m-00000"), ("b-second", "r-00000"),
                     ("a-third", "m-00000"), ("a-third", "r-00000")]
    assert all(j.state == JobState.SUCCEEDED for j in s.jobs.values())


def test_same_time_submissions_keep_their_order():
    s = cluster("w1", parallelism=1)
    for job in ["z", "y", "x"]:
        s.submit(job, make_spec(maps=1, reducers=1), now=5)
    (l,) = of(s.schedule(5), Launch)
    assert l.attempt.job == "z"


def test_a_later_job_uses_capacity_the_first_cannot_use():
    s = cluster("w1", "w2", parallelism=2)
    s.submit("a", make_spec(maps=1, reducers=1), 0)
    s.submit("b", make_spec(maps=5, reducers=1), 1)
    got = of(s.schedule(2), Launch)
    assert [l.attempt.job for l in got] == ["a", "b", "b", "b"]


# ------------------------------------------------------------------ shares (issue 15)


def test_a_new_job_gets_slots_as_tasks_finish_while_an_older_one_still_has_pending():
    """The one-minute job behind the ten-hour job: it no longer waits for the older job's
    last pending task; each slot that frees goes to whoever is furthest below its share."""
    s = cluster("w1", parallelism=4, settings_=Settings(speculation=False))
    s.submit("long", make_spec(maps=20, reducers=1), 0)
    assert len(of(s.schedule(0), Launch)) == 4
    s.submit("short", make_spec(maps=4, reducers=1), 1)
    assert of(s.schedule(1), Launch) == []  # nothing is free yet
    for aid in running_ids(s, "long")[:2]:
        succeed(s, aid, 2)
    got = [l.attempt.job for l in of(s.schedule(2), Launch)]
    assert got == ["short", "short"]  # its share (2 of 4), though "long" has 16 pending
    check_consistent(s)


def test_priorities_weight_the_shares_and_the_furthest_below_goes_first():
    s = cluster("w1", "w2", parallelism=5, settings_=Settings(speculation=False))
    s.submit("low", make_spec(maps=30, reducers=1, priority=Priority.LOW), 0)
    s.submit("high", make_spec(maps=30, reducers=1, priority=Priority.HIGH), 1)
    got = [l.attempt.job for l in of(s.schedule(2), Launch)]
    assert got.count("high") == 8 and got.count("low") == 2  # 4 : 1 of 10 slots
    # a slot freed by the high job goes back to it: low already has its share
    succeed(s, running_ids(s, "high")[0], 3)
    assert [l.attempt.job for l in of(s.schedule(3), Launch)] == ["high"]
    # one freed by the low job goes back to the low job, the furthest below its share
    succeed(s, running_ids(s, "low")[0], 4)
    assert [l.attempt.job for l in of(s.schedule(4), Launch)] == ["low"]
    check_consistent(s)


def test_a_cancelled_job_frees_its_share_at_once():
    s = cluster("w1", parallelism=4, settings_=Settings(speculation=False))
    s.submit("a", make_spec(maps=10, reducers=1), 0)
    s.submit("b", make_spec(maps=10, reducers=1), 1)
    assert [l.attempt.job for l in of(s.schedule(2), Launch)] == ["a", "a", "b", "b"]
    s.cancel("a", 3)
    assert [l.attempt.job for l in of(s.schedule(3), Launch)] == ["b", "b"]
    check_consistent(s)


def test_shares_round_up_and_count_what_runs():
    from blfsd.scheduler import shares
    s = Scheduler()
    for name, prio in (("a", Priority.NORMAL), ("b", Priority.NORMAL), ("c", Priority.LOW)):
        s.submit(name, make_spec(priority=prio), 0)
    jobs = list(s.jobs.values())
    assert shares(jobs, {"a": 0, "b": 3, "c": 0}, 10) == {"a": 4, "b": 1, "c": 2}
    assert shares(jobs, {"a": 9, "b": 0, "c": 0}, 10) == {"a": 0, "b": 4, "c": 2}


def test_jobs_are_independent():
    s = cluster("w1", "w2", parallelism=4, settings_=Settings(max_attempts=1))
    s.submit("a", make_spec(maps=1, reducers=1), 0)
    s.submit("b", make_spec(maps=1, reducers=1), 0)
    got = {l.attempt.job: l for l in of(s.schedule(0), Launch)}
    acts = s.attempt_failed(got["a"].attempt.id, FailureKind.USER, "boom", 1)
    assert of(acts, JobEnded)[0].job == "a"
    assert of(acts, Kill) == []  # b's attempt is untouched
    assert s.jobs["b"].state == JobState.RUNNING
    assert got["b"].attempt.id in s.attempts


# -------------------------------------------------------------------- held slots


def test_held_slots_lists_map_outputs_of_live_jobs_only():
    s = cluster("w1", "w2", parallelism=4)
    s.submit("a", make_spec(maps=2, reducers=2, nodes=["w1", "w2"]), 0)
    s.submit("b", make_spec(maps=1, reducers=1, nodes=["w1"]), 0)
    got = of(s.schedule(0), Launch)
    res = {}
    for l in got:
        res[l.attempt.id] = map_result(s, l.attempt.id)
        s.attempt_succeeded(l.attempt.id, res[l.attempt.id], 1)
    # a running map's output is not held (not reported yet): nothing running here
    a0 = res["a/m-00000/0"].segments
    b0 = res["b/m-00000/0"].segments
    a1 = res["a/m-00001/0"].segments
    assert sorted(s.held_slots("w1")) == sorted(
        [(x.slot, "a/m-00000/0") for x in a0] + [(x.slot, "b/m-00000/0") for x in b0])
    assert sorted(s.held_slots("w2")) == sorted((x.slot, "a/m-00001/0") for x in a1)
    assert s.held_slots("w9") == []
    # b finishes: its slots are no longer held
    s.schedule(2)
    (rb,) = running_ids(s, "b", "reduce")
    (commit,) = of(succeed(s, rb, 3), Commit)
    assert sorted(s.held_slots("w1")) == sorted(
        [(x.slot, "a/m-00000/0") for x in a0] + [(x.slot, "b/m-00000/0") for x in b0])
    s.commit_done("b", 4)  # released only once the job has ended
    assert sorted(s.held_slots("w1")) == sorted((x.slot, "a/m-00000/0") for x in a0)
    s.cancel("a", 5)
    assert s.held_slots("w1") == [] and s.held_slots("w2") == []


def test_held_slots_forget_an_output_that_is_being_rerun():
    s = cluster("w1", "w2", settings_=Settings(speculation=False))
    _to_reduce_phase(s, maps=1, reducers=1, nodes=["w1"])
    assert len(s.held_slots("w1")) == 1
    (r,) = of(s.schedule(2), Launch)
    s.attempt_failed(r.attempt.id, FailureKind.FETCH, "bad", 3, {"map_task": 0})
    assert s.held_slots("w1") == []


# -------------------------------------------------------------------- job_status


def test_job_status_counts_and_counters():
    s = cluster("w1", "w2", parallelism=1, settings_=Settings(speculation=False))
    s.submit("j", make_spec(maps=3, reducers=2, name="wc"), 0)
    st_ = s.job_status("j")
    assert st_["state"] == JobState.QUEUED and st_["name"] == "wc" and st_["output"] == "/out"
    assert st_["maps"] == {"total": 3, "done": 0, "running": 0}
    assert st_["reduces"] == {"total": 2, "done": 0, "running": 0}
    assert st_["progress"] == 0
    v0 = st_["version"]
    got = of(s.schedule(0), Launch)
    st_ = s.job_status("j")
    assert st_["state"] == JobState.RUNNING and st_["version"] > v0
    assert st_["maps"] == {"total": 3, "done": 0, "running": 2}
    s.attempt_progress(got[0].attempt.id, 1, 0.5, "reading", {"user": {"lines": 3}})
    st_ = s.job_status("j")
    run = {r["attempt"]: r for r in st_["running"]}
    assert run[got[0].attempt.id]["status"] == "reading"
    assert run[got[0].attempt.id]["progress"] == 0.5
    assert st_["counters"] == {}  # counters of unfinished attempts are not summed
    assert st_["progress"] == pytest.approx(0.5 / 5, abs=1e-3)
    # progress never goes backwards and never above 1
    s.attempt_progress(got[0].attempt.id, 2, 0.2)
    s.attempt_progress(got[1].attempt.id, 2, 7.0)
    run = {r["attempt"]: r for r in s.job_status("j")["running"]}
    assert run[got[0].attempt.id]["progress"] == 0.5
    assert run[got[1].attempt.id]["progress"] == 1.0
    s.attempt_failed(got[1].attempt.id, FailureKind.USER, "oops", 3)
    succeed(s, got[0].attempt.id, 3, counters={"user": {"lines": 4}, "blfs": {"x": 1}})
    st_ = s.job_status("j")
    assert st_["maps"] == {"total": 3, "done": 1, "running": 0}
    assert st_["counters"] == {"user": {"lines": 4}, "blfs": {"x": 1}}
    assert [f["task"] for f in st_["failed_attempts"]] == ["m-00001"]
    assert "oops" in st_["failed_attempts"][0]["error"]
    for _ in range(10):
        for l in of(s.schedule(4), Launch):
            succeed(s, l.attempt.id, 5, counters={"user": {"lines": 1}})
    st_ = s.job_status("j")
    assert st_["state"] == JobState.COMMITTING
    assert st_["maps"]["done"] == 3 and st_["reduces"]["done"] == 2
    assert st_["progress"] == 1.0
    assert st_["counters"] == {"user": {"lines": 4 + 4}, "blfs": {"x": 1}}
    states = [(a["attempt"], a["state"]) for a in st_["attempts"]]
    assert ("j/m-00001/0", "failed") in states and ("j/m-00001/1", "succeeded") in states
    s.commit_done("j", 6)
    st_ = s.job_status("j")
    assert st_["state"] == JobState.SUCCEEDED and st_["finished"] == 6 and st_["started"] == 0


def test_commit_leaves_no_attempt_running():
    """A map re-run (after a fetch failure) that nobody needs once every reduce succeeded
    is killed when the job commits: nothing of a finished job keeps a worker busy."""
    st_ = Settings(speculation_min_seconds=1, speculation_slowdown=1.0, task_timeout=1000)
    s = cluster("w1", "w2", "w3", parallelism=2, settings_=st_)
    _to_reduce_phase(s, maps=2, reducers=2, nodes=["w1", "w2"])
    reduces = launched(s.schedule(2))
    succeed(s, reduces["r-00000"].attempt.id, 3)
    (backup,) = of(s.schedule(10), Launch)  # r-00001 straggles: a backup
    assert backup.attempt.task == "r-00001"
    # the original r-00001 cannot read m-00000: m-00000 runs again
    acts = s.attempt_failed(reduces["r-00001"].attempt.id, FailureKind.FETCH, "bad crc", 11,
                            {"map_task": 0})
    rerun = [l for l in of(s.schedule(11), Launch) if l.attempt.task == "m-00000"]
    assert len(rerun) == 1
    # ... but the backup had read it fine and succeeds: every reduce is done
    acts = succeed(s, backup.attempt.id, 12)
    assert of(acts, Commit)
    acts += s.commit_done("j", 13)
    assert of(acts, JobEnded)[0].state == JobState.SUCCEEDED
    # the job is over: nothing of it may still run, or hold a worker's capacity
    assert Kill(rerun[0].worker, rerun[0].attempt.id) in acts
    assert running_ids(s, "j") == []
    assert rerun[0].attempt.id not in s.workers[rerun[0].worker].running


# ------------------------------------------------------------ random event sequences


def _random_run(rnd: random.Random, steps: int) -> None:
    st_ = Settings(max_attempts=rnd.choice([1, 2, 3, 4]), task_timeout=rnd.choice([5, 20, 50]),
                   speculation=rnd.random() < 0.7, speculation_min_seconds=1,
                   speculation_slowdown=rnd.choice([1.0, 1.5]))
    s = Scheduler(st_)
    names = [f"w{i}" for i in range(rnd.randint(1, 4))]
    par = {n: rnd.randint(1, 3) for n in names}
    for n in names:
        s.worker_up(n, par[n])
    ever: list = []  # every attempt id ever launched
    now = 0.0
    jobs = 0

    def apply(actions: list) -> None:
        for act in actions:
            if isinstance(act, Launch):
                ever.append(act.attempt.id)
                w = s.workers[act.worker]
                assert w.alive and act.attempt.id in w.running
                job = s.jobs[act.attempt.job]
                assert job.state == JobState.RUNNING
                if act.attempt.kind == "reduce":
                    # reduces read winners' outputs only, of every map
                    assert job.maps_done()
                    seen = set()
                    for seg in act.attempt.segments:
                        m = job.maps[seg.map_task]
                        assert m.winner.number == seg.map_attempt
                        assert seg in [x.replace(map_task=m.index, map_attempt=m.winner.number)
                                       for x in m.result.segments]
                        seen.add(seg.map_task)
                    assert seen == set(range(len(job.maps)))
            elif isinstance(act, Commit):
                job = s.jobs[act.job]
                assert job.state == JobState.COMMITTING
                assert len(act.parts) == len(job.reduces)
                for (worker, aid, _, target), t in zip(act.parts, job.reduces):
                    assert t.winner.id == aid and t.winner.state == "succeeded"
                    assert t.winner.worker == worker
                if rnd.random() < 0.8:
                    apply(s.commit_done(act.job, now) if rnd.random() < 0.8
                          else s.commit_failed(act.job, "no", now))
            elif isinstance(act, JobEnded):
                assert s.jobs[act.job].state in FINISHED

    for _ in range(steps):
        op = rnd.random()
        now += rnd.choice([0, 0.5, 1, 3, 7])
        if op < 0.08 or not s.jobs:
            jobs += 1
            s.submit(f"j{jobs}", make_spec(maps=rnd.randint(0, 5), reducers=rnd.randint(1, 3),
                                           nodes=[rnd.choice(names + [None])
                                                  for _ in range(5)]), now)
            apply(s.schedule(now))
        elif op < 0.40 and s.attempts:
            aid = rnd.choice(sorted(s.attempts))
            apply(s.attempt_succeeded(aid, result_for(s, aid), now))
            apply(s.schedule(now))
        elif op < 0.55 and s.attempts:
            aid = rnd.choice(sorted(s.attempts))
            kind = rnd.choice([FailureKind.USER, FailureKind.CRASHED, FailureKind.TIMEOUT, FailureKind.POOL, FailureKind.LOST,
                               FailureKind.KILLED, FailureKind.FETCH])
            info = {"map_task": rnd.randint(-1, 5)} if kind == FailureKind.FETCH else None
            apply(s.attempt_failed(aid, kind, "err", now, info))
            apply(s.schedule(now))
        elif op < 0.62 and ever:
            # a late or duplicate report of any attempt ever launched
            aid = rnd.choice(ever)
            if aid not in s.attempts:
                before = {j: s.job_status(j) for j in s.jobs}
                assert s.attempt_succeeded(aid, TaskResult(path="x", target="y"), now) == []
                assert s.attempt_failed(aid, FailureKind.USER, "late", now) == []
                s.attempt_progress(aid, now, 0.9)
                assert {j: s.job_status(j) for j in s.jobs} == before
        elif op < 0.70:
            name = rnd.choice(names)
            if s.workers[name].alive and rnd.random() < 0.7:
                apply(s.worker_down(name, now))
            else:
                apply(s.worker_up(name, par[name]))
            apply(s.schedule(now))
        elif op < 0.75:
            apply(s.cancel(rnd.choice(sorted(s.jobs)), now))
        elif op < 0.85 and s.attempts:
            aid = rnd.choice(sorted(s.attempts))
            s.attempt_progress(aid, now, rnd.random())
        else:
            apply(s.tick(now))
        check_consistent(s)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(seed=st.integers(0, 2**32 - 1), steps=st.integers(1, 120))
def test_random_event_sequences_keep_the_bookkeeping_consistent(seed, steps):
    _random_run(random.Random(seed), steps)


# ------------------------------------------------- the books against a recount, per event


def test_held_slots_follow_a_release_a_rerun_and_a_cancel():
    """A map stage's slots go when the reduce stage after it is done; a rerun's output
    replaces the old; a cancelled job holds nothing."""
    s = cluster("w1", "w2", parallelism=4, settings_=Settings(speculation=False))
    s.submit("j", make_spec(maps=3, reducers=2, steps=[StepSpec(), StepSpec()]), 0)
    first = [l.attempt.id for l in of(s.schedule(0), Launch)]
    for aid in first:
        succeed(s, aid, 1)
    held_maps = brute_held_slots(s, "w1") + brute_held_slots(s, "w2")
    assert held_maps and sorted(s.held_slots("w1") + s.held_slots("w2")) == sorted(held_maps)
    reduces = [l.attempt.id for l in of(s.schedule(2), Launch)]
    for aid in reduces:  # step 0's reduce done: its maps' slots are released
        released = of(succeed(s, aid, 3), sch.ReleaseOutputs)
    assert released and not set(s.held_slots("w1") + s.held_slots("w2")) & set(held_maps)
    check_books(s)
    (m2,) = of(s.schedule(4), Launch)[:1]
    s.attempt_failed(m2.attempt.id, FailureKind.FETCH, "bad", 5, {"map_task": 0})
    check_books(s)  # step 0's r-00000 runs again, and by lineage the maps it read
    assert s.jobs["j"].stages[0].book.pending == {0, 1, 2}
    s.cancel("j", 6)
    assert s.held_slots("w1") == [] and s.held_slots("w2") == []
    check_books(s)


def test_a_draining_worker_is_drained_once_its_outputs_are_released():
    s = cluster("w1", "w2", parallelism=2, settings_=Settings(speculation=False))
    s.submit("j", make_spec(maps=2, reducers=1, nodes=["w2", "w2"]), 0)
    for l in of(s.schedule(0), Launch):
        succeed(s, l.attempt.id, 1)
    s.drain("w2")
    assert s.held_slots("w2") and not s.drained("w2")
    (r,) = of(s.schedule(2), Launch)
    assert r.worker == "w1"
    for c in of(succeed(s, r.attempt.id, 3), Commit):
        s.commit_done(c.job, 4)
    assert s.held_slots("w2") == [] and s.drained("w2")
    s.forget_worker("w2")
    assert "w2" not in s.workers and s.held_slots("w2") == []
    check_books(s)


def test_the_straggler_threshold_follows_a_new_winner():
    s, got = _straggler_setup(speculation=False)
    stage = s.jobs["j"].stages[0]
    succeed(s, got["m-00003"].attempt.id, 40)  # 10, 10, 10, 40: median 10
    assert sch.straggler_threshold(stage, s.settings) == 15.0
    (r,) = of(s.schedule(41), Launch)[:1]
    s.attempt_failed(r.attempt.id, FailureKind.FETCH, "bad", 42, {"map_task": 0})
    assert sch.straggler_threshold(stage, s.settings) is None  # m-00000 is pending again
    (again,) = [l for l in of(s.schedule(50), Launch) if l.attempt.task == "m-00000"]
    succeed(s, again.attempt.id, 80)  # its new winner took 30 s: 10, 10, 30, 40
    assert sch.straggler_threshold(stage, s.settings) == 1.5 * 20
    assert stage.book.durations == [10, 10, 30, 40]
    check_books(s)


def _recursive_lineage(job, task) -> list:
    """lineage as first written: every released producer and its lineage, recursively."""
    again = []
    for p in sch.pipeline.producers(job, task):
        if p.released and p.state == "succeeded":
            again += [p] + _recursive_lineage(job, p)
    return again


def test_lineage_of_a_chain_of_reduces_lists_each_task_once():
    s = cluster("w1", "w2", parallelism=8, settings_=Settings(speculation=False))
    s.submit("j", make_spec(maps=4, reducers=3, steps=[StepSpec(), StepSpec(map=False),
                                                       StepSpec(map=False)]), 0)
    job, now = s.jobs["j"], 0.0
    while job.stages[2].book.pending:  # run the stages up to the last one
        now += 1
        for l in of(s.schedule(now), Launch):
            if l.attempt.stage < 2:
                succeed(s, l.attempt.id, now)
    assert all(t.released for t in job.stages[0].tasks)  # step 1's reduce is done
    last = job.stages[2].tasks[0]
    got = sch.pipeline.lineage(job, job.stages[1].tasks[1])
    assert len(got) == len({id(t) for t in got}) == 4  # the maps, once each
    assert {id(t) for t in got} == {id(t) for t in
                                    _recursive_lineage(job, job.stages[1].tasks[1])}
    assert sch.pipeline.lineage(job, last) == []  # its producers still hold their output
    for t in job.stages[1].tasks:  # as if the last stage had been done once
        t.released = True
    got = sch.pipeline.lineage(job, last)
    assert len(got) == len({id(t) for t in got}) == 3 + 4
    assert {id(t) for t in got} == {id(t) for t in _recursive_lineage(job, last)}
    check_books(s)


SHAPES = [[StepSpec()], [StepSpec(), StepSpec(map=False)], [StepSpec(reduce=False), StepSpec()],
          [StepSpec(), StepSpec(reduce=False)],
          [StepSpec(), StepSpec(), StepSpec(map=False, reducers=2)]]


def _shared_slot_result(s: Scheduler, aid: str, rnd: random.Random) -> TaskResult:
    """A result whose segments may share slots (as a real map's do)."""
    a = s.attempts[aid]
    if a.task.stage.final:
        return reduce_result(s, aid)
    base = next(_slot) * 3
    return TaskResult(segments=[SegmentLocation(node=a.worker, slot=base + rnd.randint(0, 2),
                                                offset=p * 4096, length=10, crc=0,
                                                generation=1, partition=p)
                                for p in range(a.task.stage.partitions)],
                      counters={f"g{rnd.randint(0, 2)}": {f"c{rnd.randint(0, 3)}": rnd.randint(0, 9)
                                                           for _ in range(2)}})


def _books_event(s: Scheduler, rnd: random.Random, now: float, names: list,
                 records: dict) -> Scheduler:
    """One random event of a pipeline cluster (a new master resuming its jobs among
    them); returns the scheduler that goes on."""
    op, aid = rnd.random(), rnd.choice(sorted(s.attempts)) if s.attempts else None
    if op < 0.1 or not s.jobs:
        job = f"j{len(records)}"
        records[job] = []
        s.submit(job, make_spec(maps=rnd.randint(0, 5), reducers=rnd.randint(1, 3),
                                nodes=[rnd.choice(names) for _ in range(5)],
                                steps=rnd.choice(SHAPES)), now)
    elif op < 0.45 and aid:
        records[s.attempts[aid].task.job.id] += _recorded(
            s.attempt_succeeded(aid, _shared_slot_result(s, aid, rnd), now))
    elif op < 0.58 and aid:
        s.attempt_failed(aid, rnd.choice(list(FailureKind)), "err", now,
                         {"map_tasks": [rnd.randint(-1, 5), rnd.randint(0, 2)]})
    elif op < 0.66:
        name = rnd.choice(names)
        if name in s.workers and s.workers[name].alive and rnd.random() < 0.6:
            s.worker_down(name, now)
        else:
            s.worker_up(name, rnd.randint(1, 3))
    elif op < 0.72:
        name = rnd.choice(names)
        s.drain(name, rnd.random() < 0.7)
        if rnd.random() < 0.5:
            s.forget_worker(name)
    elif op < 0.76:
        s.cancel(rnd.choice(sorted(s.jobs)), now)
    elif op < 0.80:
        for job in [j for j in s.jobs.values() if j.state == JobState.COMMITTING]:
            s.commit_done(job.id, now)
    elif op < 0.83:
        again = Scheduler(s.settings, epoch=f"e{now:g}")
        for job in [j for j in s.jobs.values() if j.state not in FINISHED]:
            again.resume(job.id, job.spec, records[job.id], now)
        for name in names:
            again.worker_up(name, rnd.randint(1, 3))
        return again
    else:
        s.tick(now)
    s.schedule(now)
    return s


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(seed=st.integers(0, 2**32 - 1), steps=st.integers(1, 100))
def test_random_pipelines_keep_every_book_equal_to_a_recount(seed, steps):
    """Pipelines, fetch failures (lineage), backups, lost and draining workers, cancels,
    commits and resumed jobs: after every event each stage's book, held_slots, the
    straggler threshold, ready and the job's counters equal their recount (with blocks
    of 2 tasks, and sometimes more counters than a job keeps)."""
    rnd = random.Random(seed)
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(sch.stagebook, "BLOCK", 2)
        mp.setattr(sch, "MAX_JOB_COUNTERS", rnd.choice([4, 12, sch.MAX_JOB_COUNTERS]))
        _random_pipelines(rnd, steps)


def _random_pipelines(rnd: random.Random, steps: int) -> None:
    names = [f"w{i}" for i in range(rnd.randint(1, 4))]
    s = cluster(*names, parallelism=2, settings_=Settings(
        max_attempts=rnd.randint(1, 3), speculation_min_seconds=rnd.choice([0.5, 2.0])))
    records: dict = {}
    now = 0.0
    for _ in range(steps):
        now += rnd.choice([0, 0.5, 1, 3, 7])
        s = _books_event(s, rnd, now, names, records)
        check_books(s)


# ------------------------------------------------------------------- pure helpers


def test_choose_worker_prefers_the_split_holder_then_the_least_loaded():
    s = cluster("w1", "w2", "w3", parallelism=2)
    s.submit("j", make_spec(maps=2, reducers=1, nodes=["w3", None]), 0)
    local, anywhere = s.jobs["j"].maps
    workers = list(s.workers.values())
    assert sch.choose_worker(local, workers, local_only=True) == "w3"
    assert sch.choose_worker(anywhere, workers, local_only=True) is None
    s.workers["w1"].running.add("x")
    assert sch.choose_worker(anywhere, workers) == "w2"
    anywhere.avoid = {"w2"}
    assert sch.choose_worker(anywhere, workers) == "w3"
    # failed on every free worker, but w1 (busy) is still fresh: wait for it
    anywhere.avoid = {"w2", "w3"}
    s.workers["w1"].running.add("y")
    assert sch.choose_worker(anywhere, workers) is None


def test_straggler_threshold_and_backup_worker():
    s, got = _straggler_setup()
    phase = s.jobs["j"].stages[0]
    st_ = Settings(speculation_min_seconds=2, speculation_slowdown=1.5)
    assert sch.straggler_threshold(phase, st_) == 15.0  # 1.5 x the median of 10 s
    assert sch.straggler_threshold(phase, Settings(speculation_min_seconds=20)) == 20
    phase.tasks[0].state = "pending"
    assert sch.straggler_threshold(phase, st_) is None
    workers = list(s.workers.values())
    assert sch.backup_worker(workers, {"w1"}) in {"w2", "w3"}
    assert sch.backup_worker(workers, {"w1", "w2", "w3"}) is None


def test_timed_out_uses_the_job_limit_before_the_masters():
    s = cluster("w1", parallelism=2, settings_=Settings(task_timeout=100, speculation=False))
    s.submit("short", make_spec(maps=1, reducers=1, task_timeout=5), 0)
    s.submit("long", make_spec(maps=1, reducers=1), 0)
    s.schedule(0)
    late = sch.timed_out(list(s.attempts.values()), s.settings, 50)
    assert [(a.task.job.id, limit) for a, limit in late] == [("short", 5)]


# ------------------------------------------------------------------- resuming


def _recorded(actions: list) -> list:
    return [a.task for a in of(actions, TaskDone)]


def test_a_resumed_job_runs_only_what_was_not_recorded_as_finished():
    """A master records each success (TaskDone, first of its actions); another master
    resumes the job from those records: the finished maps are not launched again, their
    slots are held for the workers' sync, and the reduces read the recorded segments."""
    s = cluster("w1", "w2", parallelism=4)
    s.submit("j", make_spec(maps=4, reducers=2), now=0)
    s.schedule(0)
    ids = running_ids(s, "j", "map")
    records = []
    for aid in ids[:3]:
        records += _recorded(succeed(s, aid, 1))
    assert [r.index for r in records] == [0, 1, 2]

    again = cluster("w1", "w2", parallelism=4)
    again.epoch = "e2"
    job = again.resume("j", make_spec(maps=4, reducers=2), records, now=10)
    assert [t.state for t in job.maps] == ["succeeded"] * 3 + ["pending"]
    held = sorted(again.held_slots("w1") + again.held_slots("w2"))
    assert held == sorted((loc.slot, r.attempt) for r in records for loc in r.result.segments)
    first = launched(again.schedule(11))
    assert set(first) == {"m-00003"} and first["m-00003"].attempt.id == "j/m-00003/0@e2"
    rest = _recorded(succeed(again, first["m-00003"].attempt.id, 12))
    reduces = launched(again.schedule(12))
    assert set(reduces) == {"r-00000", "r-00001"}
    read = {(seg.map_task, seg.map_attempt, seg.slot)
            for seg in reduces["r-00000"].attempt.segments}
    want = {(r.index, r.number, loc.slot) for r in records + rest
            for loc in r.result.segments if loc.partition == 0}
    assert read == want


def test_a_resumed_job_whose_last_stage_was_done_commits_once_its_workers_are_up():
    s = cluster("w1", "w2", parallelism=4)
    s.submit("j", make_spec(maps=1, reducers=2), now=0)
    run_maps(s, "j", 0)
    records = _recorded([])
    for t in s.jobs["j"].maps:
        records.append(sch.FinishedTask(stage=0, index=t.index, attempt=t.winner.id,
                                        number=t.winner.number, worker=t.winner.worker,
                                        result=t.result))
    s.schedule(2)
    for aid in running_ids(s, "j", "reduce"):
        records += _recorded(succeed(s, aid, 3))
    assert s.jobs["j"].state == JobState.COMMITTING

    again = Scheduler()
    job = again.resume("j", make_spec(maps=1, reducers=2), records, now=10)
    assert job.final.done() and of(again.schedule(10), Commit) == []  # no worker yet
    for name in sorted({r.worker for r in records}):
        again.worker_up(name, 4)
    commits = of(again.schedule(11), Commit)
    assert len(commits) == 1 and job.state == JobState.COMMITTING
    assert commits[0].again  # its predecessor may have moved some parts already
    assert [p[3] for p in commits[0].parts] == ["/out/part-00000", "/out/part-00001"]
    assert of(again.schedule(12), Commit) == []  # once


def test_resume_ignores_records_that_do_not_fit_the_job():
    s = cluster("w1")
    job = s.resume("j", make_spec(maps=2, reducers=1), [
        sch.FinishedTask(stage=5, index=0, attempt="j/x/0", number=0, worker="w1",
                         result=TaskResult()),
        sch.FinishedTask(stage=0, index=9, attempt="j/x/0", number=0, worker="w1",
                         result=TaskResult())], now=0)
    assert all(t.state == "pending" for t in job.tasks())


# ------------------------------------------------------------------ nodes leave (issue 15)


def test_a_draining_worker_gets_no_new_attempt_and_goes_once_nothing_needs_it():
    s = cluster("w1", "w2", parallelism=2, settings_=Settings(speculation=False))
    s.submit("j", make_spec(maps=6, reducers=2), 0)
    first = of(s.schedule(0), Launch)
    assert {l.worker for l in first} == {"w1", "w2"}
    s.drain("w2")
    on_w2 = [l.attempt.id for l in first if l.worker == "w2"]
    assert not s.drained("w2")  # its attempts still run: they are not killed
    for aid in running_ids(s, "j"):
        succeed(s, aid, 1)
    later = of(s.schedule(2), Launch)
    assert later and all(l.worker == "w1" for l in later)
    assert s.workers["w2"].free == 0 and on_w2
    # its maps' outputs are held until the job that needs them ends
    assert not s.drained("w2") and s.held_slots("w2")
    for _ in range(10):
        acts = []
        for aid in running_ids(s, "j"):
            acts += succeed(s, aid, 3)
        for c in of(acts, Commit):
            s.commit_done(c.job, 4)
        launched_now = of(s.schedule(4), Launch)
        assert all(l.worker == "w1" for l in launched_now)
        if s.jobs["j"].state == JobState.SUCCEEDED:
            break
    assert s.jobs["j"].state == JobState.SUCCEEDED
    assert s.drained("w2")
    s.forget_worker("w2")
    assert "w2" not in s.workers
    check_consistent(s)


def test_a_task_that_failed_on_every_other_worker_does_not_wait_for_a_draining_one():
    s = cluster("w1", "w2", parallelism=1, settings_=Settings(speculation=False))
    s.submit("j", make_spec(maps=1, reducers=1), 0)
    (l,) = of(s.schedule(0), Launch)
    s.attempt_failed(l.attempt.id, FailureKind.USER, "boom", 1)
    s.drain("w2" if l.worker == "w1" else "w1")  # the only other worker leaves
    (again,) = of(s.schedule(2), Launch)
    assert again.worker == l.worker  # it runs again where it failed, as with no other worker


def test_a_worker_back_in_the_configuration_takes_attempts_again():
    s = cluster("w1", "w2", parallelism=1, settings_=Settings(speculation=False))
    s.drain("w2")
    s.submit("j", make_spec(maps=4, reducers=1), 0)
    assert [l.worker for l in of(s.schedule(0), Launch)] == ["w1"]
    s.drain("w2", False)
    assert [l.worker for l in of(s.schedule(1), Launch)] == ["w2"]
