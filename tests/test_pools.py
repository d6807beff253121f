"""The workers' slot pools as the scheduler counts them (blfsd/pools.py). No I/O.

A map's output stays in a slot of its worker's pool until its job ends. Two jobs whose
maps together need more slots than the pools hold could each fill part of them and then
fail (or wait) for the room the other one holds: the rolling-upgrade container test lost a
job so ("out of pool slots on w3: all 12 slots are leased", two 19-map jobs on 3 x 12
slots). Here the workers' pools are simulated: a map that finds its worker's pool full
fails with FailureKind.POOL, as runtime/attempt.py reports it."""
from __future__ import annotations

from typing import Optional

from blfsd import pools
from blfsd import scheduler as sch
from blfsd.messages import (FailureKind, JobState, SegmentLocation, StepSpec, TaskResult,
                            TaskKind)
from blfsd.scheduler import Commit, Launch, Release, ReleaseOutputs, Settings

from test_scheduler import launched, make_spec, of, reduce_result


class Pools:
    """Each worker's pool: which job holds which slot (what the workers' leases are)."""

    def __init__(self, s: sch.Scheduler, slots: int):
        self.s = s
        self.slots = slots
        self.held: dict[str, dict[int, str]] = {w: {} for w in s.workers}  # slot -> attempt

    def take(self, worker: str, attempt: str) -> Optional[int]:
        free = [i for i in range(self.slots) if i not in self.held[worker]]
        if not free:
            return None
        self.held[worker][free[0]] = attempt
        return free[0]

    def free(self, job: str, attempts: Optional[set] = None) -> None:
        for on_worker in self.held.values():
            for slot, attempt in list(on_worker.items()):
                if attempt.startswith(job + "/") and (attempts is None or attempt in attempts):
                    del on_worker[slot]

    def report(self) -> None:
        """What the pongs tell the master: free slots and the pool's size."""
        for w, on_worker in self.held.items():
            self.s.update_worker(w, {"slots": self.slots,
                                     "free_slots": self.slots - len(on_worker)})


def pooled_cluster(workers: int, parallelism: int, slots: int,
                   settings_: Optional[Settings] = None) -> tuple[sch.Scheduler, Pools]:
    s = sch.Scheduler(settings_ or Settings(speculation=False))
    for i in range(1, workers + 1):
        s.worker_up(f"w{i}", parallelism, {"slots": slots, "free_slots": slots})
    return s, Pools(s, slots)


def finish(s: sch.Scheduler, p: Pools, attempt: str, now: float) -> list:
    """The attempt ends as the worker would end it: a map with a slot of its pool (or
    failing with POOL when there is none), a reduce with its part."""
    a = s.attempts[attempt]
    if a.task.kind == TaskKind.REDUCE:
        return s.attempt_succeeded(attempt, reduce_result(s, attempt), now)
    slot = p.take(a.worker, attempt)
    if slot is None:
        return s.attempt_failed(attempt, FailureKind.POOL,
                                f"out of pool slots on {a.worker}: all slots are leased", now)
    parts = max(1, len(a.task.job.stages[a.task.stage.index + 1].tasks)) \
        if not a.task.stage.final else 1
    return s.attempt_succeeded(attempt, TaskResult(segments=[
        SegmentLocation(node=a.worker, slot=slot, offset=0, length=10, crc=0, generation=1,
                        partition=q, run=0, seq=0, flags=0) for q in range(parts)]), now)


def carry_out(s: sch.Scheduler, p: Pools, actions: list, now: float) -> None:
    """What the master does with the actions that matter to the pools."""
    for action in actions:
        if isinstance(action, Commit):
            carry_out(s, p, s.commit_done(action.job, now), now)
        elif isinstance(action, Release):
            p.free(action.job)
        elif isinstance(action, ReleaseOutputs):
            p.free(action.job, {a for ids in action.attempts.values() for a in ids})
    p.report()


def run_until_ended(s: sch.Scheduler, p: Pools, jobs: list, now: float = 1.0,
                    steps: int = 400, submit_at: Optional[dict] = None) -> float:
    """Every running attempt ends, one wave per step, until every job ended."""
    submit_at = dict(submit_at or {})
    for _ in range(steps):
        for job, spec in [(j, v) for j, (at, v) in submit_at.items() if at <= now]:
            s.submit(job, spec, now)
            del submit_at[job]
        carry_out(s, p, s.schedule(now), now)
        for attempt in list(s.attempts):
            if attempt in s.attempts:
                carry_out(s, p, finish(s, p, attempt, now), now)
        now += 1
        if not submit_at and all(s.jobs[j].state in (JobState.SUCCEEDED, JobState.FAILED)
                                 for j in jobs):
            break
    return now


def test_two_jobs_whose_maps_together_exceed_the_pools_both_finish():
    """The rolling-upgrade shape: 3 workers of 12 slots, two 19-map jobs overlapping."""
    s, p = pooled_cluster(workers=3, parallelism=2, slots=12)
    s.submit("a", make_spec(maps=19, reducers=1), 0)
    s.submit("b", make_spec(maps=19, reducers=1), 0.5)
    run_until_ended(s, p, ["a", "b"])
    assert {j: (s.jobs[j].state, s.jobs[j].error) for j in "ab"} \
        == {"a": (JobState.SUCCEEDED, None), "b": (JobState.SUCCEEDED, None)}
    assert not [f for j in "ab" for f in s.jobs[j].failed_attempts if f["kind"] == "pool"]


def test_a_job_waits_queued_while_the_pools_cannot_hold_it_and_says_so():
    s, p = pooled_cluster(workers=2, parallelism=2, slots=10)
    s.submit("a", make_spec(maps=12, reducers=1), 0)
    assert len(launched(s.schedule(0))) == 4
    s.submit("b", make_spec(maps=10, reducers=1), 1)
    assert of(s.schedule(1), Launch) == [] and s.jobs["b"].state == JobState.QUEUED
    status = s.job_status("b")
    assert status["state"] == JobState.QUEUED
    assert status["waiting"] == ("pool slots: the job needs 10, the running jobs "
                                 "keep 12 of the workers' 20")
    # a job the pools can hold beside the first one starts at once, but only after the
    # job before it (first come, first served: a large job is not passed over for ever)
    s.submit("c", make_spec(maps=2, reducers=1), 2)
    assert of(s.schedule(2), Launch) == [] and s.jobs["c"].state == JobState.QUEUED
    run_until_ended(s, p, ["a", "b", "c"], now=3)
    assert [s.jobs[j].state for j in "abc"] == [JobState.SUCCEEDED] * 3
    assert s.jobs["b"].started >= s.jobs["a"].finished
    assert s.job_status("b")["waiting"] is None


def test_a_job_larger_than_every_pool_still_starts_alone():
    """It may fit after all (outputs released as its stages end, or the pools grow); it
    must not wait for ever behind nothing."""
    s, _ = pooled_cluster(workers=2, parallelism=2, slots=4)
    s.submit("big", make_spec(maps=20, reducers=1), 0)
    assert len(launched(s.schedule(0))) == 4


def test_without_pool_sizes_nothing_waits():
    """Workers that never said their pool's size (the scheduler's own tests, an older
    worker): no job waits for slots."""
    s = sch.Scheduler(Settings(speculation=False))
    s.worker_up("w1", 2)
    s.submit("a", make_spec(maps=50, reducers=1), 0)
    s.submit("b", make_spec(maps=50, reducers=1), 0.5)
    s.schedule(1)
    assert s.jobs["a"].state == s.jobs["b"].state == JobState.RUNNING


def test_a_map_goes_to_a_worker_with_room_rather_than_to_its_split_on_a_full_pool():
    s, p = pooled_cluster(workers=2, parallelism=3, slots=3)
    s.submit("a", make_spec(maps=3, reducers=1, nodes=["w1"] * 3), 0)
    maps = of(s.schedule(0), Launch)
    assert [m.worker for m in maps] == ["w1"] * 3
    for launch in maps:  # w1's pool fills with job a's map outputs; its reduce runs on
        carry_out(s, p, finish(s, p, launch.attempt.id, 0), 0)
    assert len(p.held["w1"]) == 3 and s.jobs["a"].state == JobState.RUNNING
    s.submit("b", make_spec(maps=1, reducers=1, nodes=["w1"]), 1)
    held = pools.held_counts(s.jobs.values())
    room = {w: pools.room(s.workers[w], held) for w in ("w1", "w2")}
    assert room["w1"] <= 0 < room["w2"], room
    maps = {launch.attempt.task: launch.worker for launch in of(s.schedule(1), Launch)
            if launch.attempt.job == "b"}
    assert maps == {"m-00000": "w2"}


def test_the_need_of_a_job_is_what_its_outputs_can_hold_at_once():
    """A stage's outputs are held until the stage after it has succeeded; the last
    stage's output is the job's part files, not slots."""
    assert pools.need(sch.ScheduledJob.new("j", make_spec(maps=7, reducers=3), 0)) == 7
    steps = [StepSpec(reducers=4), StepSpec(reducers=2)]
    job = sch.ScheduledJob.new("p", make_spec(maps=5, reducers=4, steps=steps), 0)
    sizes = [len(st.tasks) for st in job.stages]
    assert sizes[-1] == 2 and pools.need(job) == max(
        a + b for a, b in zip(sizes[:-1], sizes[1:-1] + [0]))
