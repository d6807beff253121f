"""The master's decisions: task states, placement, retries, speculation. No I/O at all.

The master feeds events in (a worker joined, an attempt finished, time passed) and carries
out the actions that come back (launch, kill, commit, release). Every rule of DESIGN §7
that is a decision lives here so that it can be tested without sockets or processes.
"""
from __future__ import annotations

import statistics
from dataclasses import dataclass, field
from typing import Any, Optional

from .messages import (FINISHED, AttemptSpec, AttemptState, FailureKind, JobSpec, JobState,
                       Split, TaskKind, TaskResult, TaskState)


@dataclass
class Launch:
    worker: str
    attempt: AttemptSpec


@dataclass
class Kill:
    worker: str
    attempt: str


@dataclass
class Commit:
    job: str
    parts: list  # [(worker, attempt id, source path, target path)]


@dataclass
class Release:
    job: str
    workers: list


@dataclass
class JobEnded:
    job: str
    state: JobState
    error: Optional[str]


@dataclass
class WorkerState:
    name: str
    parallelism: int
    alive: bool = True
    running: set = field(default_factory=set)
    info: dict = field(default_factory=dict)

    @property
    def free(self) -> int:
        return self.parallelism - len(self.running) if self.alive else 0


@dataclass
class Attempt:
    id: str
    task: "Task"
    number: int
    worker: str
    started: float
    last_progress: float
    backup: bool = False
    state: AttemptState = AttemptState.RUNNING
    progress: float = 0.0
    status: str = ""
    counters: dict = field(default_factory=dict)
    error: str = ""
    finished: float = 0.0


@dataclass
class Task:
    job: "ScheduledJob"
    kind: TaskKind
    index: int
    split: Optional[Split] = None
    state: TaskState = TaskState.PENDING
    attempts: list = field(default_factory=list)
    failures: int = 0
    lost: int = 0
    avoid: set = field(default_factory=set)
    result: Optional[TaskResult] = None
    winner: Optional[Attempt] = None

    @property
    def name(self) -> str:
        return f"{self.kind[0]}-{self.index:05d}"

    def running(self) -> list:
        return [a for a in self.attempts if a.state == AttemptState.RUNNING]


@dataclass
class ScheduledJob:
    """A job the scheduler knows: its spec, its tasks and where it stands."""
    id: str
    spec: JobSpec
    submitted: float
    state: JobState = JobState.QUEUED
    maps: list = field(default_factory=list)
    reduces: list = field(default_factory=list)
    started: float = 0.0
    finished: float = 0.0
    error: Optional[str] = None
    version: int = 0
    failed_attempts: list = field(default_factory=list)

    def tasks(self) -> list:
        return self.maps + self.reduces

    def maps_done(self) -> bool:
        return all(t.state == TaskState.SUCCEEDED for t in self.maps)


@dataclass
class Settings:
    max_attempts: int = 4
    task_timeout: float = 600.0
    speculation: bool = True
    speculation_min_seconds: float = 2.0
    speculation_slowdown: float = 1.5


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

    # ------------------------------------------------------------------ workers

    def worker_up(self, name: str, parallelism: int, info: Optional[dict] = None) -> list:
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

        Its finished map outputs stay valid: the disk is served by the kernel, not by blfs.
        """
        w = self.workers.get(name)
        if w is None or not w.alive:
            return []
        w.alive = False
        return self._lose_attempts_on(w, now)

    def _lose_attempts_on(self, w: WorkerState, now: float = 0.0) -> list:
        actions: list = []
        for attempt_id in list(w.running):
            actions += self.attempt_failed(attempt_id, FailureKind.LOST,
                                           f"worker {w.name} was lost", now)
        return actions

    def held_slots(self, node: str) -> list:
        """(slot, attempt id) of every map output on a node that a live job still needs."""
        held = []
        for job in self.jobs.values():
            if job.state in FINISHED:
                continue
            for task in job.maps:
                if task.result and task.winner:
                    for loc in task.result.segments:
                        if loc.node == node:
                            held.append((loc.slot, task.winner.id))
        return held

    # --------------------------------------------------------------------- jobs

    def submit(self, job_id: str, spec: JobSpec, now: float) -> ScheduledJob:
        """A new job: one map per split, `spec.reducers` reduces (the master set it)."""
        job = ScheduledJob(job_id, spec, now)
        job.maps = [Task(job, TaskKind.MAP, i, split=s) for i, s in enumerate(spec.splits)]
        job.reduces = [Task(job, TaskKind.REDUCE, i) for i in range(spec.reducers or 1)]
        self.jobs[job_id] = job
        return job

    def cancel(self, job_id: str, now: float) -> list:
        job = self.jobs[job_id]
        if job.state in FINISHED or job.state == JobState.COMMITTING:
            return []  # committing: every part is done, it is too late to take it back
        return self._end_job(job, JobState.CANCELLED, "cancelled", now)

    def _end_job(self, job: ScheduledJob, state: JobState, error: Optional[str],
                 now: float) -> list:
        actions: list = []
        for task in job.tasks():
            for a in task.running():
                actions += self._stop_attempt(a, AttemptState.KILLED, now)
        job.state, job.error, job.finished = state, error, now
        job.version += 1
        workers = sorted(self.workers)
        actions.append(Release(job.id, workers))
        actions.append(JobEnded(job.id, state, error))
        return actions

    def _stop_attempt(self, a: Attempt, state: AttemptState, now: float) -> list:
        a.state, a.finished = state, now
        self.attempts.pop(a.id, None)
        w = self.workers.get(a.worker)
        if w:
            w.running.discard(a.id)
        return [Kill(a.worker, a.id)] if state == AttemptState.KILLED else []

    # ----------------------------------------------------------------- attempts

    def attempt_progress(self, attempt_id: str, now: float, progress: float = 0.0,
                         status: str = "", counters: Optional[dict] = None) -> None:
        a = self.attempts.get(attempt_id)
        if a is None:
            return
        a.last_progress = now
        a.progress = max(a.progress, min(1.0, progress))
        if status:
            a.status = status
        if counters is not None:
            a.counters = counters
        a.task.job.version += 1

    def attempt_succeeded(self, attempt_id: str, result: TaskResult, now: float) -> list:
        a = self.attempts.get(attempt_id)
        if a is None or a.state != AttemptState.RUNNING:
            return []  # a late duplicate: its output is never used
        task, job = a.task, a.task.job
        self._stop_attempt(a, AttemptState.SUCCEEDED, now)
        a.progress = 1.0
        a.counters = result.counters
        actions: list = []
        # first attempt to finish wins; the others are killed
        for other in task.running():
            actions += self._stop_attempt(other, AttemptState.KILLED, now)
        task.state, task.result, task.winner = TaskState.SUCCEEDED, result, a
        job.version += 1
        if task.kind == TaskKind.REDUCE and all(t.state == TaskState.SUCCEEDED
                                                for t in job.reduces):
            job.state = JobState.COMMITTING
            for other_task in job.tasks():  # e.g. a map re-run nobody needs any more
                for other in other_task.running():
                    actions += self._stop_attempt(other, AttemptState.KILLED, now)
            parts = [(t.winner.worker, t.winner.id, t.result.path, t.result.target)
                     for t in job.reduces]
            actions.append(Commit(job.id, parts))
        return actions

    def attempt_failed(self, attempt_id: str, kind: FailureKind, error: str, now: float,
                       info: Optional[dict] = None) -> list:
        a = self.attempts.get(attempt_id)
        if a is None or a.state != AttemptState.RUNNING:
            return []
        task, job = a.task, a.task.job
        self._stop_attempt(a, AttemptState.FAILED, now)
        a.error = error
        job.version += 1
        actions: list = []
        if kind == FailureKind.KILLED:  # not by us (we forget attempts we kill): again, uncounted
            if task.state != TaskState.SUCCEEDED and not task.running():
                task.state = TaskState.PENDING
            return actions
        job.failed_attempts.append({"attempt": a.id, "task": task.name, "number": a.number,
                                    "worker": a.worker, "kind": kind, "error": error})
        if kind == FailureKind.FETCH:
            info = info or {}
            bad = info.get("map_tasks") or [info.get("map_task")]
            for map_index in bad if isinstance(bad, list) else []:
                if job.state == JobState.RUNNING:
                    actions += self._refetch(job, map_index, error, now)
        elif kind == FailureKind.LOST:
            task.lost += 1
            if task.lost > 2 * self._max_attempts(job):
                return actions + self._end_job(
                    job, JobState.FAILED, f"{task.name} lost {task.lost} times with its worker",
                    now)
        elif kind.counted:
            task.failures += 1
            task.avoid.add(a.worker)
            if task.failures >= self._max_attempts(job):
                return actions + self._end_job(job, JobState.FAILED,
                                               self._failure_text(a, kind, error), now)
        if task.state != TaskState.SUCCEEDED and not task.running():
            task.state = TaskState.PENDING
        return actions

    def _max_attempts(self, job: ScheduledJob) -> int:
        return job.spec.max_attempts or self.settings.max_attempts

    @staticmethod
    def _failure_text(a: Attempt, kind: str, error: str) -> str:
        return (f"task {a.task.name} failed {a.task.failures} times; last attempt "
                f"{a.number} on worker {a.worker} ({kind}):\n{error}")

    def _refetch(self, job: ScheduledJob, map_index: Any, error: str, now: float) -> list:
        """A reducer could not read a map's output: run that map again."""
        if not isinstance(map_index, int) or not 0 <= map_index < len(job.maps):
            return []
        task = job.maps[map_index]
        if task.state != TaskState.SUCCEEDED:
            return []
        task.state, task.result = TaskState.PENDING, None
        if task.winner:
            task.avoid.add(task.winner.worker)
        task.winner = None
        task.failures += 1
        if task.failures >= self._max_attempts(job):
            return self._end_job(job, JobState.FAILED, f"the output of {task.name} could not "
                                 f"be read {task.failures} times: {error}", now)
        return []

    def commit_done(self, job_id: str, now: float) -> list:
        job = self.jobs[job_id]
        if job.state != JobState.COMMITTING:
            return []
        job.state, job.finished = JobState.SUCCEEDED, now
        job.version += 1
        return [Release(job.id, sorted(self.workers)),
                JobEnded(job.id, JobState.SUCCEEDED, None)]

    def commit_failed(self, job_id: str, error: str, now: float) -> list:
        job = self.jobs[job_id]
        if job.state != JobState.COMMITTING:
            return []
        return self._end_job(job, JobState.FAILED, f"committing the output failed: {error}",
                             now)

    # ---------------------------------------------------------------- decisions

    def tick(self, now: float) -> list:
        """Time passed: time out silent attempts, then place what can run."""
        actions: list = []
        for a in list(self.attempts.values()):
            limit = a.task.job.spec.task_timeout or self.settings.task_timeout
            if a.state == AttemptState.RUNNING and now - a.last_progress > limit:
                actions.append(Kill(a.worker, a.id))
                actions += self.attempt_failed(
                    a.id, FailureKind.TIMEOUT, f"no progress for {limit:g} s; killed", now)
        return actions + self.schedule(now)

    def schedule(self, now: float) -> list:
        actions: list = []
        for job in sorted(self.jobs.values(), key=lambda j: j.spec.submitted_at):
            if job.state == JobState.QUEUED:
                job.state, job.started = JobState.RUNNING, now
                job.version += 1
            if job.state != JobState.RUNNING:
                continue
            phase = job.maps if not job.maps_done() else job.reduces
            # two passes: a worker takes the splits it holds before anyone else's
            for local_only in (True, False):
                for task in phase:
                    if task.state == TaskState.PENDING:
                        worker = self._place(task, local_only)
                        if worker is not None:
                            actions.append(self._launch(task, worker, now))
            if self.settings.speculation:
                actions += self._speculate(job, phase, now)
        return actions

    def _place(self, task: Task, local_only: bool = False) -> Optional[str]:
        """The worker for a pending task now, if any; with local_only, only the one that
        holds the task's split."""
        alive = [w for w in self.workers.values() if w.alive]
        ready = [w for w in alive if w.free > 0]
        if not ready:
            return None
        fresh = [w for w in ready if w.name not in task.avoid]
        if not fresh:
            if any(w.name not in task.avoid for w in alive):
                return None  # wait for a worker where this task has not failed yet
            fresh = ready
        if task.kind == TaskKind.MAP and task.split and task.split.node:
            local = [w for w in fresh if w.name == task.split.node]
            if local:
                return local[0].name
        if local_only:
            return None
        # least loaded first; among equals, the one with most free capacity, then by name
        best = min(fresh, key=lambda w: (len(w.running), -w.free, w.name))
        return best.name

    def _launch(self, task: Task, worker: str, now: float, backup: bool = False) -> Launch:
        job = task.job
        number = len(task.attempts)
        suffix = f"@{self.epoch}" if self.epoch else ""
        a = Attempt(f"{job.id}/{task.name}/{number}{suffix}", task, number, worker, now, now,
                    backup=backup)
        task.attempts.append(a)
        task.state = TaskState.RUNNING
        self.attempts[a.id] = a
        self.workers[worker].running.add(a.id)
        job.version += 1
        return Launch(worker, attempt_spec(a))

    def _speculate(self, job: ScheduledJob, phase: list, now: float) -> list:
        """Backup attempts for the stragglers at the end of a phase."""
        if any(t.state == TaskState.PENDING for t in phase):
            return []
        durations = [t.winner.finished - t.winner.started for t in phase
                     if t.state == TaskState.SUCCEEDED and t.winner]
        if not durations:
            return []
        typical = statistics.median(durations)
        threshold = max(self.settings.speculation_min_seconds,
                        self.settings.speculation_slowdown * typical)
        actions: list = []
        for task in phase:
            running = task.running()
            if task.state != TaskState.RUNNING or len(running) != 1:
                continue
            a = running[0]
            if now - a.started < threshold:
                continue
            avoid = task.avoid | {a.worker}
            ready = [w for w in self.workers.values()
                     if w.alive and w.free > 0 and w.name not in avoid]
            if ready:
                best = min(ready, key=lambda w: (len(w.running), w.name))
                actions.append(self._launch(task, best.name, now, backup=True))
        return actions

    # ---------------------------------------------------------------- reporting

    def job_status(self, job_id: str) -> dict:
        job = self.jobs[job_id]

        def count(tasks: list, state: str) -> int:
            return sum(1 for t in tasks if t.state == state)

        counters: dict = {}
        for task in job.tasks():
            source = task.winner if task.winner else None
            for group, names in (source.counters if source else {}).items():
                for name, n in names.items():
                    g = counters.setdefault(group, {})
                    g[name] = g.get(name, 0) + n
        progress = [max((a.progress for a in t.attempts), default=0.0)
                    if t.state != TaskState.SUCCEEDED else 1.0 for t in job.tasks()]
        running = [{"attempt": a.id, "worker": a.worker, "progress": round(a.progress, 3),
                    "status": a.status, "backup": a.backup}
                   for t in job.tasks() for a in t.running()]
        return {
            "job": job.id, "name": job.spec.name, "state": job.state,
            "version": job.version, "error": job.error,
            "maps": {"total": len(job.maps), "done": count(job.maps, TaskState.SUCCEEDED),
                     "running": count(job.maps, TaskState.RUNNING)},
            "reduces": {"total": len(job.reduces),
                        "done": count(job.reduces, TaskState.SUCCEEDED),
                        "running": count(job.reduces, TaskState.RUNNING)},
            "progress": round(sum(progress) / max(1, len(progress)), 4),
            "running": running, "failed_attempts": job.failed_attempts[-20:],
            "counters": counters, "output": job.spec.output,
            "submitted": job.submitted, "started": job.started, "finished": job.finished,
            "attempts": [{"attempt": a.id, "worker": a.worker, "state": a.state,
                          "backup": a.backup} for t in job.tasks() for a in t.attempts],
        }


def attempt_spec(a: Attempt) -> AttemptSpec:
    """Everything a task process needs to run attempt `a`: the job's code and settings, and
    its input (a map's split; a reduce's segments of its partition from every map's
    winner, each tagged with the map attempt that wrote it)."""
    task, job = a.task, a.task.job
    spec = job.spec
    inputs: dict[str, Any] = {}
    if task.kind == TaskKind.MAP:
        inputs["split"] = task.split
    else:
        inputs["segments"] = [loc.replace(map_task=m.index, map_attempt=m.winner.number)
                              for m in job.maps for loc in m.result.segments
                              if loc.partition == task.index]
    return AttemptSpec(id=a.id, job=job.id, task=task.name, kind=task.kind, index=task.index,
                       attempt=a.number, source=spec.source, job_file=spec.job_file,
                       job_class=spec.job_class, args=spec.args,
                       input_format=spec.input_format, reducers=len(job.reduces),
                       output=spec.output, output_name=spec.output_name, **inputs)
