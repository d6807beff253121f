"""Jobs as clients see them: submit, status, jobs, workers, cancel, wait; and the job
records in the master's StateDirectory (every accepted job, each finished task, then the
job's final status), from which a restarted master resumes what it had accepted without
running again what had finished."""
from __future__ import annotations

import asyncio
import logging
import os
import secrets
import time
from typing import Callable, Optional

from .. import rpc
from ..catalog import OUTPUTS, Catalog
from ..config import Config
from ..errors import NotFound, ProtocolError, StateError
from ..messages import FINISHED, FinishedTask, JobSpec, JobState, TaskState
from ..scheduler import JobEnded, Scheduler, ScheduledJob, TaskDone
from ..state import JobStore
from . import placement

log = logging.getLogger("blfs.master")

WAIT_LIMIT = 60.0  # seconds a `wait` may hold a client at most
LISTED = ("job", "name", "state", "priority", "maps", "reduces", "progress", "error",
          "output")
SUMMARY = LISTED + ("submitted", "started", "finished")
RETIRE_AFTER = 60.0  # seconds a finished job stays whole in memory (late reports, waits)
PRUNE_EVERY = 3600.0  # seconds between prunings of old job records
ERROR_SUMMARY = 500  # characters of a job's error kept in its summary


def new_job_id() -> str:
    """Sortable by submission time, unique enough for one master."""
    return time.strftime("%Y%m%d-%H%M%S-") + secrets.token_hex(2)


def summary(status: dict) -> dict:
    """What stays in memory of a finished job: what `blfs jobs` lists."""
    row = {k: status.get(k) for k in SUMMARY}
    if isinstance(row["error"], str) and len(row["error"]) > ERROR_SUMMARY:
        row["error"] = row["error"][:ERROR_SUMMARY] + " [...]"
    return row


def status_line(sched: Scheduler) -> str:
    """One line a person reads in `systemctl status` and `blfs status`."""
    alive = sum(1 for w in sched.workers.values() if w.alive)
    running = [j for j in sched.jobs.values() if j.state not in FINISHED]
    tasks = [t for j in running for t in j.tasks()]
    done = sum(1 for t in tasks if t.state == TaskState.SUCCEEDED)
    return (f"{alive} workers, {len(running)} job{'s' if len(running) != 1 else ''} "
            f"running, {done}/{len(tasks)} tasks done")


class Jobs:
    """The client's requests about jobs, and the records that outlive the master."""

    def __init__(self, config: Config, sched: Scheduler, catalog: Catalog,
                 execute: Callable[[list], None]):
        self.config = config
        self.sched = sched
        self.catalog = catalog
        self.execute = execute
        self.store = JobStore(config.state_dir)
        self.history: dict[str, dict] = {}  # summaries of finished jobs (see retire)
        self._pruned = float("-inf")
        self.changed = asyncio.Condition()  # wakes `wait`: some job's version moved
        self.handlers = {"submit": self.submit, "status": self.status, "jobs": self.list_jobs,
                         "workers": self.list_workers, "cancel": self.cancel,
                         "wait": self.wait}

    # ------------------------------------------------------------------ records

    def restore(self) -> None:
        """Resume every job a previous master accepted but did not finish, with the tasks
        it had recorded as finished; keep a summary of the ones that ended."""
        for found in self.store.load_all():
            record = found.record
            job_id = record["job"]
            if record.get("status"):
                self.history[job_id] = summary(record["status"])
                continue
            try:
                spec = JobSpec.from_wire(record.get("spec"), f"job record {job_id}")
                finished = [FinishedTask.from_wire(r, f"results of job {job_id}")
                            for r in found.results]
            except ProtocolError as exc:
                log.error("cannot resume job %s: %s", job_id, exc, extra={"BLFS_JOB": job_id})
                continue
            job = self.sched.resume(job_id, spec, finished, time.monotonic())
            kept = sum(1 for t in job.tasks() if t.state == TaskState.SUCCEEDED)
            log.warning("resuming job %s accepted before a restart: %d of %d tasks were "
                        "finished and are kept", job_id, kept, len(job.tasks()),
                        extra={"BLFS_JOB": job_id})

    def _record(self, job_id: str, spec: JobSpec, status: Optional[dict] = None) -> dict:
        """A job's record: its spec while it runs; its final status (and the spec without
        the job's source) once it ended."""
        record: dict = {"job": job_id, "spec": spec.to_wire(), "submitted": spec.submitted_at}
        if status is not None:
            record["status"] = status
            del record["spec"]["source"]
        return record

    def record_result(self, action: TaskDone) -> None:
        """A task's success, appended to its job's results before anything follows from it.
        If it cannot be written the job goes on (only a restart would run the task again)."""
        try:
            self.store.add_result(action.job, action.task.to_wire())
        except StateError as exc:
            log.error("%s; a restarted master would run that task again", exc,
                      extra={"BLFS_JOB": action.job})

    def ended(self, action: JobEnded) -> None:
        """Log how the job ended and record its final status (its results are then not
        needed any more)."""
        job = self.sched.jobs[action.job]
        elapsed = (job.finished - job.started) if job.started else 0.0
        level = logging.INFO if action.state == JobState.SUCCEEDED else logging.WARNING
        log.log(level, "job %s %s after %.2f s%s", action.job, action.state, elapsed,
                f": {action.error}" if action.error else "", extra={"BLFS_JOB": action.job})
        try:
            self.store.save(job.id, self._record(job.id, job.spec,
                                                 self.sched.job_status(job.id)))
            self.store.drop_results(job.id)
        except StateError as exc:
            log.error("%s", exc, extra={"BLFS_JOB": job.id})

    def retire(self, now: float, after: float = RETIRE_AFTER) -> int:
        """Jobs that ended more than `after` seconds ago leave the scheduler: a summary
        stays in memory, the full status in the state directory. Old records are pruned."""
        gone = [j for j in self.sched.jobs.values()
                if j.state in FINISHED and j.finished and now - j.finished > after]
        for job in gone:
            self.history[job.id] = summary(self.sched.job_status(job.id))
            del self.sched.jobs[job.id]
        if self.config.history_days > 0 and now - self._pruned > PRUNE_EVERY:
            self._pruned = now
            for job_id in self.store.prune(self.config.history_days * 86400):
                self.history.pop(job_id, None)
        return len(gone)

    async def wake(self) -> None:
        """Some job changed: every `wait` looks again."""
        async with self.changed:
            self.changed.notify_all()

    # ------------------------------------------------------------------ requests

    def job(self, job_id: str) -> ScheduledJob:
        """A job of this session, or NotFound."""
        job = self.sched.jobs.get(job_id)
        if job is None:
            raise NotFound(f"no job {job_id[:80]}")
        return job

    def submit(self, peer: rpc.Peer, spec: JobSpec) -> dict:
        """Accept a job (its spec checked already): refuse a taken output, fill in the
        default reducers, record it, and let the scheduler start it."""
        has_success = (not spec.output_name
                       and os.path.exists(os.path.join(spec.output, "_SUCCESS")))
        placement.check_output(spec, self.catalog.has(OUTPUTS, spec.output), has_success,
                               [(j.id, j.spec.output) for j in self.sched.jobs.values()
                                if j.state not in FINISHED])
        alive = sum(1 for w in self.sched.workers.values() if w.alive)
        disks = max(len(self.config.nodes), len(self.sched.workers))
        placement.check_replicas(spec.output_replicas, disks, "part")
        spec = spec.replace(
            reducers=placement.default_reducers(spec.reducers, self.config.default_reducers,
                                                alive),
            priority=spec.priority or self.config.default_priority,
            submitted_at=time.time())  # wall clock: survives a restart, orders jobs
        job_id = new_job_id()
        # durably recorded before it is accepted: else refused (StateError), nothing runs
        self.store.save(job_id, self._record(job_id, spec))
        job = self.sched.submit(job_id, spec, time.monotonic())
        log.info("accepted job %s (%s): %d maps, %d reduces, output %s", job_id, spec.name,
                 len(job.maps), len(job.reduces), spec.output, extra={"BLFS_JOB": job_id})
        self.execute([])
        return {"job": job_id, "status": self.sched.job_status(job_id)}

    def status(self, peer: rpc.Peer, job: Optional[str] = None) -> dict:
        """A job's status; without a job, the cluster's: its line, jobs and workers."""
        if job is None:
            return {"status": status_line(self.sched), "jobs": self.list_jobs(peer),
                    "workers": self.list_workers(peer)}
        if job in self.history and job not in self.sched.jobs:
            return self.store.final_status(job) or self.history[job]
        self.job(job)
        return self.sched.job_status(job)

    def list_jobs(self, peer: rpc.Peer) -> list:
        """`blfs jobs`: finished jobs from before a restart, then this session's."""
        rows = [dict(s) for s in self.history.values()]
        for job in sorted(self.sched.jobs.values(), key=lambda j: j.submitted):
            status = self.sched.job_status(job.id)
            rows.append({k: status[k] for k in LISTED})
        return rows

    def list_workers(self, peer: rpc.Peer) -> list:
        """`blfs workers`: each worker's state, capacity and what it last said."""
        return [{"name": w.name, "alive": w.alive, "parallelism": w.parallelism,
                 "running": len(w.running), "draining": w.draining, "info": w.info}
                for w in sorted(self.sched.workers.values(), key=lambda w: w.name)]

    def cancel(self, peer: rpc.Peer, job: str) -> dict:
        """`blfs cancel`: end the job (kills its attempts, releases it); its status."""
        self.job(job)
        self.execute(self.sched.cancel(job, time.monotonic()))
        return self.status(peer, job)

    async def wait(self, peer: rpc.Peer, job: str, version: int,
                   timeout: Optional[float] = None) -> dict:
        """Long poll: the job's status as soon as its version differs from `version`."""
        timeout = timeout or 30
        if not 0 < timeout <= WAIT_LIMIT:  # also refuses NaN
            raise ProtocolError("wait: timeout must be in (0, 60]")
        if job in self.history and job not in self.sched.jobs:  # ended: nothing to wait for
            return self.status(peer, job)
        waited = self.job(job)
        deadline = time.monotonic() + timeout
        async with self.changed:
            while waited.version == version and waited.state not in FINISHED:
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                try:
                    await asyncio.wait_for(self.changed.wait(), left)
                except asyncio.TimeoutError:
                    break
        # followers need the attempts at the end only: a running job's are not even made
        return self.sched.job_status(job, attempts=waited.state in FINISHED)
