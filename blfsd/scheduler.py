"""The master's decisions: task states, placement, retries, speculation. No I/O at all.

The master feeds events in (a worker joined, an attempt finished, time passed) and carries
out the actions that come back (launch, kill, commit, release). Every rule of scheduling
and fault tolerance (docs/ARCHITECTURE.md) that is a decision lives here, so that it can
be tested without sockets or processes (tests/test_scheduler.py).
"""
from __future__ import annotations

import functools
from dataclasses import dataclass, field
from typing import Any, Iterable, Optional

from . import checksums, pipeline, pools, retries, stagebook
from .errors import NotFound
from .messages import (FINISHED, AttemptSpec, AttemptState, FailureKind, FinishedTask,
                       JobSpec, JobState, Priority, Split, TaskKind, TaskResult, TaskState)
from .job import MAX_COUNTER_NAME, MAX_COUNTERS, MAX_STATUS, truncate
from .pipeline import Stage

MAX_JOB_COUNTERS = 5000  # distinct counters of one job in its status
TASK_COUNTERS = MAX_COUNTERS + 64  # what an attempt may report: a task's, and blfs's own
ATTEMPT_ERROR = 2000  # characters of an attempt's error in its row (the traceback's end)
BOOKED = frozenset({"state", "result", "winner", "released"})  # what a stage's book counts


@dataclass
class Launch:
    """Start this attempt on that worker."""
    worker: str
    attempt: AttemptSpec


@dataclass
class Kill:
    """Kill that attempt (the master no longer counts on it)."""
    worker: str
    attempt: str


@dataclass
class TaskDone:
    """A task succeeded: record it durably before carrying out what follows from it."""
    job: str
    task: FinishedTask


@dataclass
class Commit:
    """Every reduce has a winner: move their parts into place, in this order. `again`:
    the job was resumed after a restart, and its commit may have begun before it."""
    job: str
    parts: list  # [(worker, attempt id, source path, target path)]
    again: bool = False


@dataclass
class Release:
    """The job ended: these workers free its slots and temporary output."""
    job: str
    workers: list


@dataclass
class ReleaseOutputs:
    """A middle stage's output is no longer needed: free these attempts' slots."""
    job: str
    attempts: dict  # worker -> [attempt id]


@dataclass
class JobEnded:
    """The job reached a final state (record it; remove its temporary datasets)."""
    job: str
    state: JobState
    error: Optional[str]


@dataclass
class WorkerState:
    """A worker as the scheduler sees it: up or not, its capacity and what runs there."""
    name: str
    parallelism: int
    alive: bool = True
    running: set = field(default_factory=set)
    info: dict = field(default_factory=dict)
    draining: bool = False  # left the configuration: no new attempts, kept until drained

    @property
    def free(self) -> int:
        """Attempts it can still take now (none while it is down or draining)."""
        return self.parallelism - len(self.running) if self.alive and not self.draining \
            else 0


@dataclass
class Attempt:
    """One try of a task on one worker; its id is JOB/TASK/NUMBER@EPOCH."""
    id: str
    task: "Task"
    number: int
    worker: str
    started: float
    last_progress: float  # the liveness signal behind task_timeout
    backup: bool = False  # a speculative copy of a straggler
    state: AttemptState = AttemptState.RUNNING
    progress: float = 0.0
    status: str = ""
    counters: dict = field(default_factory=dict)
    error: str = ""
    why: str = ""  # why it ended, if not by succeeding: its failure kind, or who killed it
    finished: float = 0.0
    given: Optional[set] = None  # a reduce's producers whose output it was told of
    seen: int = 0  # how much of its producers' stage book's readable_log it was told

    def report(self, now: float, progress: float, status: str,
               counters: Optional[dict]) -> None:
        """What its task said last: progress only grows, a status only replaces another."""
        self.last_progress = now
        self.progress = max(self.progress, min(1.0, progress))
        if status:
            self.status = truncate(status, MAX_STATUS)
        if counters is not None:
            self.counters = bound_counters(counters, TASK_COUNTERS)
        self.task.job.version += 1


@dataclass
class Task:
    """A map (one split, or the output of one task of the stage before) or a reduce (one
    partition) of a stage of a job, and its attempts."""
    job: "ScheduledJob"
    stage: Stage
    index: int
    split: Optional[Split] = None
    state: TaskState = TaskState.PENDING
    attempts: list = field(default_factory=list)
    failures: int = 0
    lost: int = 0
    avoid: set = field(default_factory=set)
    result: Optional[TaskResult] = None
    winner: Optional[Attempt] = None
    by_partition: dict = field(default_factory=dict)  # its output's segments, by partition
    released: bool = False  # its output's slots were given back (nobody needs them)

    def __post_init__(self) -> None:
        self.stage.book.update(self.index, None, stagebook.facts(self))

    def __setattr__(self, name: str, value: Any) -> None:
        """A change of what its stage's book counts (BOOKED) moves it in the book."""
        if name not in BOOKED or name not in self.__dict__:
            object.__setattr__(self, name, value)
            return
        old = stagebook.facts(self)
        object.__setattr__(self, name, value)
        self.stage.book.update(self.index, old, stagebook.facts(self))

    @property
    def kind(self) -> TaskKind:
        return self.stage.kind

    @functools.cached_property
    def name(self) -> str:
        return pipeline.task_name(self.stage, self.index, len(self.job.spec.steps))

    def succeed(self, a: "Attempt", result: TaskResult) -> None:
        """The winner's output is the task's: indexed by partition for its consumers."""
        self.state, self.result, self.winner, self.released = (TaskState.SUCCEEDED, result,
                                                                a, False)
        self.by_partition = {}
        for loc in result.segments:
            self.by_partition.setdefault(loc.partition, []).append(loc)

    def running(self) -> list:
        return [a for a in self.attempts if a.state == AttemptState.RUNNING]

    def new_attempt(self, worker: str, now: float, epoch: str, backup: bool) -> Attempt:
        """The next attempt, on `worker`; the task runs from now on."""
        number = len(self.attempts)
        suffix = f"@{epoch}" if epoch else ""
        a = Attempt(f"{self.job.id}/{self.name}/{number}{suffix}", self, number, worker, now,
                    now, backup=backup)
        self.attempts.append(a)
        self.state = TaskState.RUNNING
        self.job.version += 1
        return a

    def requeue_if_idle(self) -> None:
        """Pending again, unless it succeeded or another attempt of it still runs."""
        if self.state != TaskState.SUCCEEDED and not self.running():
            self.state = TaskState.PENDING

    def discard_output(self, blame: bool = True) -> None:
        """Its output cannot be read (or is gone): pending again; when it was not read
        back, away from the worker that wrote it, and one failure more."""
        self.state, self.result, self.by_partition = TaskState.PENDING, None, {}
        if self.winner and blame:
            self.avoid.add(self.winner.worker)
        self.winner = None
        self.released = False
        if blame:
            self.failures += 1


@dataclass
class ScheduledJob:
    """A job the scheduler knows: its spec, its stages of tasks and where it stands."""
    id: str
    spec: JobSpec
    submitted: float
    state: JobState = JobState.QUEUED
    stages: list = field(default_factory=list)
    started: float = 0.0
    finished: float = 0.0
    error: Optional[str] = None
    version: int = 0
    failed_attempts: list = field(default_factory=list)
    waiting: Optional[str] = None  # why a queued job has not started (pools.waiting_for)
    counted: dict = field(default_factory=dict, repr=False)  # see winners_counters

    @classmethod
    def new(cls, job_id: str, spec: JobSpec, now: float) -> "ScheduledJob":
        """Its stages (pipeline.build_stages): the first map one task per split."""
        job = cls(job_id, spec, now)
        job.stages, sizes = pipeline.build_stages(spec)
        for stage, size in zip(job.stages, sizes):
            stage.tasks = [Task(job, stage, i, split=spec.splits[i] if stage.index == 0
                                else None) for i in range(size)]
        return job

    @property
    def maps(self) -> list:
        return [t for s in self.stages if s.kind == TaskKind.MAP for t in s.tasks]

    @property
    def reduces(self) -> list:
        return [t for s in self.stages if s.kind == TaskKind.REDUCE for t in s.tasks]

    @property
    def final(self) -> Stage:
        return self.stages[-1]

    def tasks(self) -> list:
        return [t for s in self.stages for t in s.tasks]

    def maps_done(self) -> bool:
        """Whether every map of the job has succeeded."""
        return all(s.done() for s in self.stages if s.kind == TaskKind.MAP)


@dataclass
class Settings:
    """The master's defaults ([master] in blfs.toml); a job's spec may override the first
    two."""
    max_attempts: int = 4
    task_timeout: float = 600.0
    speculation: bool = True
    speculation_min_seconds: float = 2.0
    speculation_slowdown: float = 1.5
    # reduces are placed once this share of their producers finished (Hadoop's slow
    # start); they read the rest as it finishes (more_input)
    slow_start: float = 1.0


_DOWN = WorkerState("", 1, alive=False)


class Scheduler:
    """All job, task and attempt state of a master, and every decision about it."""

    def __init__(self, settings: Optional[Settings] = None, epoch: str = ""):
        self.settings = settings or Settings()
        # Attempt ids carry the master session's epoch, so that a report about an attempt
        # of a previous master session can never be taken for one of this session.
        self.epoch = epoch
        self.workers: dict[str, WorkerState] = {}
        self.jobs: dict[str, ScheduledJob] = {}
        self.attempts: dict[str, Attempt] = {}
        self.placer = Placer(self)

    def segment_format(self) -> int:
        """The segment format new attempts write: what every live worker wants first
        (checksums.choose; as cheap as the scan of ready workers each launch makes)."""
        return checksums.choose(w.info.get("segment_formats")
                                for w in self.workers.values() if w.alive)

    # ------------------------------------------------------------------ workers

    def worker_up(self, name: str, parallelism: int, info: Optional[dict] = None) -> list:
        """A worker synced. If we thought it up, its new session killed its attempts."""
        w = self.workers.get(name)
        if w is None:
            w = self.workers[name] = WorkerState(name, max(1, parallelism))
        actions = self._lose_attempts_on(w) if w.alive else []
        w.alive, w.parallelism, w.info = True, max(1, parallelism), info or {}
        return actions

    def update_worker(self, name: str, info: dict) -> None:
        """What a worker says about itself between syncs: room on its disk, free slots, a
        new pool. Placement of puts reads it; nothing here decides on it."""
        w = self.workers.get(name)
        if w is not None:
            w.info.update(info)

    def worker_down(self, name: str, now: float) -> list:
        """A worker stopped answering: its running attempts are lost and re-run elsewhere.
        Its finished map outputs stay valid: the disk is served by the kernel, not by blfs."""
        w = self.workers.get(name)
        if w is None or not w.alive:
            return []
        w.alive = False
        return self._lose_attempts_on(w, now)

    def drain(self, name: str, draining: bool = True) -> None:
        """A worker leaves (or, with draining=False, comes back to) the configuration: it
        takes no new attempts; what it runs finishes, and its outputs stay readable."""
        w = self.workers.get(name)
        if w is not None:
            w.draining = draining

    def drained(self, name: str) -> bool:
        """Whether a draining worker may go: nothing runs there and no unfinished job
        needs an output on its disk."""
        w = self.workers.get(name)
        return w is None or (w.draining and not w.running and not self.held_slots(name))

    def forget_worker(self, name: str) -> None:
        """A drained worker is gone from the cluster."""
        if self.drained(name):
            self.workers.pop(name, None)

    def _lose_attempts_on(self, w: WorkerState, now: float = 0.0) -> list:
        """Every attempt running on a worker is lost with it (counted apart)."""
        return [action for attempt_id in list(w.running) for action in self.attempt_failed(
            attempt_id, FailureKind.LOST, f"worker {w.name} was lost", now)]

    def held_slots(self, node: str) -> list:
        """(slot, attempt id) of every map output on a node that a live job still needs."""
        return held_slots(self.jobs.values(), node)

    # --------------------------------------------------------------------- jobs

    def submit(self, job_id: str, spec: JobSpec, now: float) -> ScheduledJob:
        """A new job, queued: schedule() starts jobs in the order they were submitted."""
        self.jobs[job_id] = job = ScheduledJob.new(job_id, spec, now)
        return job

    def cancel(self, job_id: str, now: float) -> list:
        """`blfs cancel`: end the job, unless it is committing (too late) or ended."""
        job = self.jobs[job_id]
        if job.state in FINISHED or job.state == JobState.COMMITTING:
            return []
        return self._end_job(job, JobState.CANCELLED, "cancelled", now)

    def _end_job(self, job: ScheduledJob, state: JobState, error: Optional[str],
                 now: float) -> list:
        """Stop what still runs; every worker then releases the job (slots, temp files)."""
        actions = self._kill_running(job.tasks(), now, f"its job {state}")
        job.state, job.error, job.finished = state, error, now
        job.version += 1
        return actions + [Release(job.id, sorted(self.workers)), JobEnded(job.id, state, error)]

    def _stop_attempt(self, a: Attempt, state: AttemptState, now: float) -> list:
        """Forget an attempt that ended; a kill of it goes to its worker."""
        a.state, a.finished = state, now
        self.attempts.pop(a.id, None)
        w = self.workers.get(a.worker)
        if w:
            w.running.discard(a.id)
        return [Kill(a.worker, a.id)] if state == AttemptState.KILLED else []

    def _kill_running(self, tasks: list, now: float, why: str) -> list:
        """Kill (and forget) every running attempt of these tasks, saying why."""
        actions = []
        for a in [a for t in tasks for a in t.running()]:
            a.why = why
            actions += self._stop_attempt(a, AttemptState.KILLED, now)
        return actions

    # ----------------------------------------------------------------- attempts

    def attempt_progress(self, attempt_id: str, now: float, progress: float = 0.0,
                         status: str = "", counters: Optional[dict] = None) -> None:
        """A progress report; it also proves the attempt is alive (task_timeout)."""
        a = self.attempts.get(attempt_id)
        if a is not None:
            a.report(now, progress, status, counters)

    def attempt_succeeded(self, attempt_id: str, result: TaskResult, now: float) -> list:
        """The first attempt of a task to succeed wins. A stage done frees the output of
        the stage before it; the last stage done commits the job."""
        a = self.attempts.get(attempt_id)
        if a is None or a.state != AttemptState.RUNNING:
            return []  # a late duplicate: its output is never used
        task, job = a.task, a.task.job
        self._stop_attempt(a, AttemptState.SUCCEEDED, now)
        a.progress = 1.0
        a.counters = bound_counters(result.counters, TASK_COUNTERS)
        # the first to finish wins
        actions = self._kill_running([task], now, f"attempt {a.number} won")
        task.succeed(a, result)
        job.version += 1
        done = TaskDone(job.id, FinishedTask(stage=task.stage.index, index=task.index,
                                             attempt=a.id, number=a.number, worker=a.worker,
                                             result=result))
        actions.insert(0, done)  # recorded before anything that follows from it
        if not task.stage.final:  # what the last stage read goes with the job, at its end
            actions += release_outputs(job, pipeline.to_release(job, task.stage))
        if task.stage.final and task.stage.done():
            actions += self._commit(job, now)
        return actions

    def _commit(self, job: ScheduledJob, now: float, again: bool = False) -> list:
        """Every task of the last stage succeeded: commit their parts."""
        job.state = JobState.COMMITTING
        job.version += 1
        # e.g. a map re-run nobody needs any more
        return self._kill_running(job.tasks(), now, "not needed: the job is committing") + [
            Commit(job.id, [(t.winner.worker, t.winner.id, t.result.path, t.result.target)
                            for t in job.final.tasks], again=again)]

    def resume(self, job_id: str, spec: JobSpec, finished: list[FinishedTask],
               now: float) -> ScheduledJob:
        """A job a previous master accepted, with the tasks it had recorded as finished:
        those are done (their outputs held, so the workers keep their slots when they
        sync); what a done stage fed on is released, as it was. Records that do not fit
        the job (another shape, a repeat) are ignored: their tasks run again."""
        job = self.submit(job_id, spec, now)
        for record in finished:
            stages = job.stages
            if not (0 <= record.stage < len(stages)
                    and 0 <= record.index < len(stages[record.stage].tasks)):
                continue
            task = stages[record.stage].tasks[record.index]
            if task.state == TaskState.SUCCEEDED:
                continue
            a = Attempt(record.attempt, task, record.number, record.worker, now, now,
                        state=AttemptState.SUCCEEDED, progress=1.0,
                        counters=record.result.counters, finished=now)
            task.attempts.append(a)
            task.succeed(a, record.result)
        for stage in job.stages[1:]:
            if not stage.final:
                for t in pipeline.to_release(job, stage):
                    t.released = True
        return job

    def attempt_failed(self, attempt_id: str, kind: FailureKind, error: str, now: float,
                       info: Optional[dict] = None) -> list:
        """An attempt ended badly. Whose fault it was (its kind) decides what
        counts (blfsd/retries.py); a killed attempt, killed by someone else, just runs again."""
        a = self.attempts.get(attempt_id)
        if a is None or a.state != AttemptState.RUNNING:
            return []
        self._stop_attempt(a, AttemptState.FAILED, now)
        a.error, a.why = error, kind
        a.task.job.version += 1
        actions: list = []
        # killed, but not by us (we forget attempts we kill): it runs again, uncounted
        if kind != FailureKind.KILLED:
            a.task.job.failed_attempts.append(retries.failure_record(a, kind, error))
            why = retries.charge(a, kind, error, info or {}, self._max_attempts(a.task.job))
            if why:
                actions = self._end_job(a.task.job, JobState.FAILED, why, now)
            if a.task.job.state == JobState.FAILED and kind != FailureKind.FETCH:
                return actions  # the job failed for it: nothing runs again
        a.task.requeue_if_idle()
        return actions

    def _max_attempts(self, job: ScheduledJob) -> int:
        return job.spec.max_attempts or self.settings.max_attempts

    def commit_done(self, job_id: str, now: float) -> list:
        """Every part is in place and the output complete: the job succeeded."""
        job = self.jobs[job_id]
        if job.state != JobState.COMMITTING:
            return []
        return self._end_job(job, JobState.SUCCEEDED, None, now)  # nothing runs any more

    def commit_failed(self, job_id: str, error: str, now: float) -> list:
        """The commit failed (its moved parts were taken back): the job fails."""
        job = self.jobs[job_id]
        if job.state != JobState.COMMITTING:
            return []
        return self._end_job(job, JobState.FAILED, f"committing the output failed: {error}",
                             now)

    # ---------------------------------------------------------------- decisions

    def tick(self, now: float) -> list:
        """Time passed: time out silent attempts, then place what can run."""
        actions: list = []
        for a, limit in timed_out(list(self.attempts.values()), self.settings, now):
            actions.append(Kill(a.worker, a.id))
            actions += self.attempt_failed(a.id, FailureKind.TIMEOUT,
                                           f"no progress for {limit:g} s; killed", now)
        return actions + self.schedule(now)

    def schedule(self, now: float) -> list:
        """Start queued jobs, then share the free task slots among the running jobs by
        their priorities (see shares), and start backups of stragglers."""
        actions: list = []
        running: list = []
        queue = sorted(self.jobs.values(), key=lambda j: j.spec.submitted_at)
        started = [j for j in queue if j.state == JobState.RUNNING]  # what the pools keep
        blocked = False  # first come, first served: none starts before a waiting one
        for job in queue:
            if job.state == JobState.QUEUED and not blocked:
                blocked = self._wait_for_pools(job, started)
                if not blocked:
                    job.state, job.started = JobState.RUNNING, now
                    job.version += 1
                    started.append(job)
            if job.state != JobState.RUNNING:
                continue
            if job.final.done():  # resumed with every task done: commit once it can
                if all(self.workers.get(t.winner.worker, _DOWN).alive
                       for t in job.final.tasks):
                    actions += self._commit(job, now, again=True)
                continue
            running.append(job)
        return actions + self.placer.place(running, now)

    def _wait_for_pools(self, job: ScheduledJob, running: list) -> bool:
        """Whether a queued job must wait for room in the workers' pools (and why)."""
        why = pools.waiting_for(job, running, self.workers.values())
        if why != job.waiting:
            job.waiting = why
            job.version += 1
        return why is not None

    # ---------------------------------------------------------------- reporting

    def job_status(self, job_id: str, attempts: bool = True) -> dict:
        """What a client sees of a job (see job_status below)."""
        return job_status(self.jobs[job_id], attempts)


def map_can_run(job: "ScheduledJob", stage: Stage) -> bool:
    """A map of this stage is pending with its input there: a later step's maps that
    wait for the very reduces running early are not a reason to stop those reduces."""
    if stage.kind != TaskKind.MAP:
        return False
    return any(pipeline.ready(job, stage.tasks[i]) for i in stage.book.pending)


class Placer:
    """Where and when attempts start: the free task slots shared among the running jobs
    (fair share by priority), a worker's own splits first, backups of stragglers. It
    changes the scheduler's state only by launching attempts, and by taking back the
    slot of an early reduce that a map needs (slow start must never starve a map)."""

    def __init__(self, sched: "Scheduler"):
        self.sched = sched

    def place(self, jobs: list, now: float) -> list:
        """Launches for the running jobs (in submission order), then their backups."""
        actions = self._share(jobs, now)
        for job in jobs if self.sched.settings.speculation else []:
            for stage in job.stages:
                actions += self._speculate(job, stage, now)
        return actions + self._make_room(jobs, now)

    def _early_room(self, task: Task, workers: list) -> bool:
        """A reduce placed before its producers all finished (slow start) must leave a free
        slot for each producer still to finish (their backups and re-runs)."""
        job = task.job
        if task.kind != TaskKind.REDUCE or task.stage.index == 0:
            return True
        before = job.stages[task.stage.index - 1]
        left = len(before.tasks) - before.book.readable
        return left == 0 or sum(w.free for w in ready_workers(workers)) - 1 >= left

    def _make_room(self, jobs: list, now: float) -> list:
        """With no slot free anywhere while a map of a job waits, an early reduce of that
        job still waiting for input gives its slot back (the youngest; pending again, at
        no cost to its task): a lost worker can take the room early_room kept."""
        if any(w.free > 0 for w in ready_workers(list(self.sched.workers.values()))):
            return []
        for job in jobs:
            waiting = [a for s in job.stages if s.kind == TaskKind.REDUCE
                       for i in s.book.running for a in s.tasks[i].running()
                       if a.given is not None and len(a.given) < len(
                           job.stages[s.index - 1].tasks)]
            # the early reduces first (a few running attempts): only with one is it worth
            # looking through a later step's pending maps, on every call with all slots busy
            if waiting and any(map_can_run(job, s) for s in job.stages):
                a = max(waiting, key=lambda x: x.started)
                a.why = "its slot was needed by a map"
                actions = self.sched._stop_attempt(a, AttemptState.KILLED, now)
                a.task.requeue_if_idle()
                return actions
        return []

    def _share(self, jobs: list, now: float) -> list:
        """Fair share: first every job up to its share of all slots (its priority's weight
        over the running jobs' weights), the furthest below its share first, older first
        among equals; then what is still free to whoever can use it, in the same order."""
        free = sum(w.free for w in self.sched.workers.values())
        if free <= 0 or not jobs:  # all slots busy: nothing to decide (the common case)
            return []
        load = running_attempts(jobs, self.sched.attempts.values())
        quota = shares(jobs, load, sum(w.parallelism for w in self.sched.workers.values()
                                       if w.alive))
        actions: list = []
        for first_pass in (True, False):
            order = sorted(jobs, key=lambda j: (load[j.id] / weight(j), j.spec.submitted_at))
            for job in order:
                cap = min(quota[job.id], free) if first_pass else free
                placed = self._place(job, now, cap) if cap > 0 else []
                load[job.id] += len(placed)
                free -= len(placed)
                actions += placed
        return actions

    def _place(self, job: ScheduledJob, now: float, cap: int) -> list:
        """Launch up to `cap` of the job's pending tasks whose input is ready, a worker
        taking the splits it holds before anyone else's."""
        slow_start = self.sched.settings.slow_start
        pending = [t for stage in job.stages for i in sorted(stage.book.pending)
                   for t in [stage.tasks[i]] if pipeline.ready(job, t, slow_start)]
        actions: list = []
        workers = list(self.sched.workers.values())
        ready = ready_workers(workers)
        held = pools.held_counts(self.sched.jobs.values()) if pending else {}
        roomy = pools.prefer_room(ready, held)  # for a task whose output goes into slots
        for local_only in (True, False) if pending else ():
            for task in pending:
                if len(actions) >= cap:
                    return actions
                if task.state == TaskState.PENDING and self._early_room(task, workers):
                    # only the avoid rule looks past the workers with room (choose_worker)
                    if task.avoid:
                        among = workers if task.stage.final else pools.prefer_room(workers,
                                                                                  held)
                    else:
                        among = ready if task.stage.final else roomy
                    worker = choose_worker(task, among, local_only)
                    if worker is not None:
                        actions.append(self._launch(task, worker, now))
                        ready = ready_workers(workers)
                        roomy = pools.prefer_room(ready, held)
        return actions

    def _launch(self, task: Task, worker: str, now: float, backup: bool = False) -> Launch:
        sched = self.sched
        a = task.new_attempt(worker, now, sched.epoch, backup)
        sched.attempts[a.id] = a
        sched.workers[worker].running.add(a.id)
        return Launch(worker, attempt_spec(a, sched.segment_format()))

    def _speculate(self, job: ScheduledJob, stage: Stage, now: float) -> list:
        """Backup attempts for the stragglers at the end of a stage (only while their
        input is all there: a producer may be running again)."""
        threshold = straggler_threshold(stage, self.sched.settings)
        actions: list = []
        for task in [stage.tasks[i] for i in sorted(stage.book.running)] \
                if threshold is not None else []:
            running = task.running()
            if len(running) != 1 or not pipeline.ready(job, task):
                continue
            a = running[0]
            if now - a.started < threshold:
                continue
            worker = backup_worker(self.sched.workers.values(), task.avoid | {a.worker})
            if worker is not None:
                actions.append(self._launch(task, worker, now, backup=True))
        return actions


def attempt_spec(a: Attempt, segment_format: Optional[int] = None) -> AttemptSpec:
    """Everything a task process needs to run attempt `a`: the job's code and settings, and
    its input (a map's split; a reduce's segments of its partition from every map's
    winner, each tagged with the map attempt that wrote it)."""
    task, job = a.task, a.task.job
    spec, stage = job.spec, task.stage
    inputs: dict[str, Any] = {}
    if stage.index == 0:
        inputs["split"] = task.split
    elif task.kind == TaskKind.REDUCE:
        a.given, a.seen = set(), len(job.stages[stage.index - 1].book.readable_log)
        inputs["segments"] = pipeline.input_segments(job, task, a.given)
        inputs["producers"] = len(job.stages[stage.index - 1].tasks)
        inputs["partial"] = len(a.given) < inputs["producers"]
    else:
        inputs["segments"] = pipeline.input_segments(job, task)
    return AttemptSpec(id=a.id, job=job.id, task=task.name, kind=task.kind, index=task.index,
                       attempt=a.number, source=spec.source, job_file=spec.job_file,
                       job_class=spec.job_class, args=spec.args,
                       input_format=spec.input_format, reducers=stage.partitions,
                       output=spec.output, output_name=spec.output_name, api=spec.api,
                       step=stage.step, stage=stage.index, sort_output=stage.sort_output,
                       sort_values=stage.sort_values, files=[f.name for f in spec.files],
                       merge_values=(stage.kind == TaskKind.REDUCE
                                     and spec.steps[stage.step].sort_values),
                       task_memory=spec.task_memory, task_pids=spec.task_pids,
                       task_cpu_weight=spec.task_cpu_weight,
                       segment_format=(None if segment_format == checksums.CRC32
                                       else segment_format), **inputs)


def more_input(sched: "Scheduler", attempt_id: str, worker: str) -> Optional[dict]:
    """What a running reduce attempt placed before all its producers finished (slow
    start) has not been told yet: the segments of producers whose output became readable
    since, and whether it now knows them all. None when nothing changed. In time linear
    in what became readable since (the producers' stage book's log). A producer is told
    once: a later attempt of it is never mixed into this one's input."""
    a = sched.attempts.get(attempt_id)
    if a is None or a.worker != worker or a.given is None:
        raise NotFound(f"no reduce attempt {attempt_id[:100]} on {worker[:100]}")
    if a.state != AttemptState.RUNNING:
        raise NotFound(f"attempt {attempt_id[:100]} is not running")
    job, task = a.task.job, a.task
    before = job.stages[task.stage.index - 1]
    total = len(before.tasks)
    log = before.book.readable_log
    if len(a.given) < total and len(log) == a.seen:
        return None
    fresh = sorted(set(log[a.seen:]))
    a.seen = len(log)
    segments = pipeline.input_segments(job, task, a.given, fresh)
    return {"segments": segments, "complete": len(a.given) >= total, "producers": total}


def release_outputs(job: ScheduledJob, tasks: list) -> list:
    """Mark these tasks' outputs released, and the action that frees their slots."""
    by_worker: dict = {}
    for t in tasks:
        t.released = True
        by_worker.setdefault(t.winner.worker, []).append(t.winner.id)
    return [ReleaseOutputs(job.id, by_worker)] if by_worker else []


def job_status(job: ScheduledJob, attempts: bool = True) -> dict:
    """A job as `blfs status` shows it: its state and version (for `wait`), task counts,
    progress, running attempts, the last failures, counters of the winning attempts; and,
    with `attempts`, every attempt's row."""
    stages = [{"step": s.step, "kind": s.kind, "total": len(s.tasks),
               "done": s.book.succeeded, "running": len(s.book.running)} for s in job.stages]
    progress = [max((a.progress for a in t.attempts), default=0.0)
                if t.state != TaskState.SUCCEEDED else 1.0 for t in job.tasks()]
    running = [{"attempt": a.id, "worker": a.worker, "progress": round(a.progress, 3),
                "status": a.status, "backup": a.backup}
               for s in job.stages for i in sorted(s.book.running)
               for a in s.tasks[i].running()]
    status = {
        "job": job.id, "name": job.spec.name, "state": job.state,
        "priority": job.spec.priority or Priority.NORMAL,
        "version": job.version, "error": job.error,
        "maps": _task_counts(stages, TaskKind.MAP),
        "reduces": _task_counts(stages, TaskKind.REDUCE),
        "progress": round(sum(progress) / max(1, len(progress)), 4),
        "running": running, "failed_attempts": job.failed_attempts[-20:],
        "counters": winners_counters(job), "output": job.spec.output,
        "submitted": job.submitted, "started": job.started, "finished": job.finished,
        "stages": stages, "waiting": job.waiting if job.state == JobState.QUEUED else None,
    }
    if attempts:
        status["attempts"] = [attempt_row(t, a) for t in job.tasks() for a in t.attempts]
    return status


def _task_counts(stages: list, kind: TaskKind) -> dict:
    """Tasks of one kind over the stages' rows of a job_status: total, done, running."""
    return {key: sum(s[key] for s in stages if s["kind"] == kind)
            for key in ("total", "done", "running")}


def attempt_row(t: Task, a: Attempt) -> dict:
    """An attempt as `blfs tasks` and the timeline show it: where and when it ran, how it
    ended and why, and its records and bytes in and out (from its blfs counters)."""
    row = {"attempt": a.id, "task": t.name, "kind": t.kind, "step": t.stage.step,
           "stage": t.stage.index, "worker": a.worker, "state": a.state, "backup": a.backup,
           "started": a.started, "finished": a.finished}
    if a.why:
        row["why"] = a.why
    if a.error:  # a traceback's end says the most
        row["error"] = a.error if len(a.error) <= ATTEMPT_ERROR else \
            "[...] " + a.error[-ATTEMPT_ERROR:]
    c = a.counters.get("blfs", {}) if isinstance(a.counters, dict) else {}
    if c:
        first = t.kind == TaskKind.MAP
        row["io"] = [c.get("map_input_records" if first else "reduce_input_records", 0),
                     c.get("map_input_bytes" if first else "shuffle_read_bytes", 0),
                     c.get("reduce_output_records", 0) if not first else
                     c.get("combine_output_records", c.get("map_output_records", 0)),
                     c.get("output_bytes", c.get("map_output_bytes", 0))]
    return row


def winners_counters(job: ScheduledJob) -> dict:
    """The job's counters, exactly as _winners_counters sums them, from sums per block of
    tasks (stagebook.BLOCK), each summed again only after a winner in it changed (a
    winner's counters never change). The full sum when the blocks' cannot be exact:
    more distinct counters than a job keeps, or a count that is not an int."""
    total: dict = {}
    for stage in job.stages:
        for start in range(0, len(stage.tasks), stagebook.BLOCK):
            part = _block_counters(job, stage, start)
            if part is None:
                return _winners_counters(job)
            _add_counters(total, part)
    if sum(len(names) for names in total.values()) > MAX_JOB_COUNTERS:
        return _winners_counters(job)
    return total


def _block_counters(job: ScheduledJob, stage: Stage, start: int) -> Optional[dict]:
    """The sum of the winners' counters of the block of tasks from `start` (None if a
    count is not an int), kept in job.counted until a winner in the block changes."""
    changes = stage.book.winner_changes.get(start // stagebook.BLOCK, 0)
    kept = job.counted.get((stage.index, start))
    if kept is None or kept[0] != changes:
        part: Optional[dict] = {}
        for t in stage.tasks[start:start + stagebook.BLOCK]:
            if t.winner and part is not None:
                part = _add_counters(part, t.winner.counters)
        job.counted[(stage.index, start)] = kept = (changes, part)
    return kept[1]


def _add_counters(total: dict, counters: dict) -> Optional[dict]:
    """Add {group: {name: n}} into `total` (groups and names in order of first sight);
    None if a count is not an int (sums of others depend on their order)."""
    for group, names in counters.items():
        for name, n in names.items():
            if type(n) is not int:
                return None
            g = total.setdefault(group, {})
            g[name] = g.get(name, 0) + n
    return total


def _winners_counters(job: ScheduledJob) -> dict:
    """The job's counters: the sum over the winning attempt of each task (a loser's or a
    running attempt's counters would count work twice); at most MAX_JOB_COUNTERS of them,
    the increments of others counted in blfs.counters_dropped."""
    counters: dict = {}
    kept = dropped = 0
    for task in job.tasks():
        for group, names in (task.winner.counters if task.winner else {}).items():
            for name, n in names.items():
                g = counters.get(group)
                if g is not None and name in g:
                    g[name] += n
                elif kept < MAX_JOB_COUNTERS:
                    counters.setdefault(group, {})[name] = n
                    kept += 1
                else:
                    dropped += n if (group, name) == ("blfs", "counters_dropped") else 1
    if dropped:
        blfs = counters.setdefault("blfs", {})
        blfs["counters_dropped"] = blfs.get("counters_dropped", 0) + dropped
    return counters


def bound_counters(counters: Any, limit: int) -> dict:
    """What a task reported as counters, as {group: {name: int}} with at most `limit`
    names (cut to MAX_COUNTER_NAME characters): anything else is dropped, and the number
    of dropped counters added to blfs.counters_dropped."""
    out: dict = {}
    kept = dropped = 0
    for group, names in (counters.items() if isinstance(counters, dict) else ()):
        for name, n in (names.items() if isinstance(names, dict) else ()):
            if not (isinstance(n, int) and not isinstance(n, bool)):
                dropped += 1
            elif kept < limit or (group, name) == ("blfs", "counters_dropped"):
                g = out.setdefault(str(group)[:MAX_COUNTER_NAME], {})
                key = str(name)[:MAX_COUNTER_NAME]
                g[key] = g.get(key, 0) + n
                kept += 1
            else:
                dropped += 1
    if dropped:
        blfs = out.setdefault("blfs", {})
        blfs["counters_dropped"] = blfs.get("counters_dropped", 0) + dropped
    return out


def weight(job: ScheduledJob) -> int:
    """A job's claim on the slots, from its priority."""
    return (job.spec.priority or Priority.NORMAL).weight


def shares(jobs: list, load: dict, slots: int) -> dict:
    """job id -> how many more attempts it may start before it has its share of `slots`:
    its weight over all the running jobs' weights (rounded up), less what it runs."""
    total = sum(weight(j) for j in jobs) or 1
    return {j.id: max(0, -(-slots * weight(j) // total) - load[j.id]) for j in jobs}


def held_slots(jobs: Iterable[ScheduledJob], node: str) -> list:
    """(slot, attempt id) of every task output on `node` that an unfinished job needs, in
    the order of jobs and tasks, each pair once (a map's segments share slots; a worker
    keeps one lease per slot): from the stages' books."""
    return [pair for job in jobs if job.state not in FINISHED for stage in job.stages
            for pair in stage.book.held_on(node)]


def running_attempts(jobs: list, attempts: Iterable[Attempt]) -> dict:
    """job id -> how many attempts of it run (the scheduler's running attempts, counted
    once, instead of every task of every job asked)."""
    load = {j.id: 0 for j in jobs}
    for a in attempts:
        if a.task.job.id in load:
            load[a.task.job.id] += 1
    return load


def ready_workers(workers: list) -> list:
    """The workers that can take an attempt now, in their order: for a task that avoids
    no worker, choose_worker decides among these alone, whatever the others do."""
    return [w for w in workers if w.alive and not w.draining and w.free > 0]


def choose_worker(task: Task, workers: Iterable[WorkerState],
                  local_only: bool = False) -> Optional[str]:
    """The worker for a pending task now, if any; with local_only, only one that holds the
    task's split (of its replicas, the least loaded). A worker where the task failed is
    avoided while any live worker where it did not could take it later."""
    alive = [w for w in workers if w.alive and not w.draining]
    ready = [w for w in alive if w.free > 0]
    if not ready:
        return None
    fresh = [w for w in ready if w.name not in task.avoid]
    if not fresh:
        if any(w.name not in task.avoid for w in alive):
            return None  # wait for a worker where this task has not failed yet
        fresh = ready
    if task.kind == TaskKind.MAP and task.split and task.split.node:
        holders = task.split.holders()
        local = [w for w in fresh if w.name in holders]
        if local:
            return _least_loaded(local)
    if local_only:
        return None
    return _least_loaded(fresh)


def _least_loaded(workers: list) -> str:
    """Least loaded first; among equals, the one with most free capacity, then by name."""
    return min(workers, key=lambda w: (len(w.running), -w.free, w.name)).name


def timed_out(attempts: list, settings: Settings, now: float) -> list:
    """(attempt, its limit) for each running attempt silent for longer than its job's
    task_timeout (or the master's)."""
    return [(a, limit) for a in attempts
            for limit in [a.task.job.spec.task_timeout or settings.task_timeout]
            if a.state == AttemptState.RUNNING and now - a.last_progress > limit]


def straggler_threshold(stage: Stage, settings: Settings) -> Optional[float]:
    """How long an attempt of a stage may run before it gets a backup: max(the minimum,
    slowdown x the median of the stage's winners' run times); None while a task of the
    stage is still pending or none has succeeded (from the stage's book)."""
    median = stage.book.median()
    if stage.book.pending or median is None:
        return None
    return max(settings.speculation_min_seconds, settings.speculation_slowdown * median)


def backup_worker(workers: Iterable[WorkerState], avoid: set) -> Optional[str]:
    """The least loaded live worker with room, other than those to avoid."""
    ready = [w for w in workers if w.alive and w.free > 0 and w.name not in avoid]
    return min(ready, key=lambda w: (len(w.running), w.name)).name if ready else None
