"""Carrying out the scheduler's actions: the only place where its decisions become I/O.

TaskDone is recorded in the state directory at once, before any action after it (a
restarted master then keeps that task's output). Launch and Kill go to the attempt's
worker. Commit renames every part into place on the
worker that wrote it, in partition order, then completes the output (a durable _SUCCESS
written by a worker, or the cluster output's catalog record); when any step fails, the
parts already moved are taken back and the job fails. Release makes every worker kill
the job's attempts, free its slots and remove its temporary output; ReleaseOutputs frees
the slots of a pipeline's middle stage once the stage it fed is done.
"""
from __future__ import annotations

import asyncio
import logging
import os
import time
from typing import Any, Awaitable, Callable

from .. import storage
from ..aio import TaskSet
from ..catalog import OUTPUTS, Catalog
from ..errors import BlfsError, ConnectionClosed
from ..messages import FailureKind
from ..scheduler import (Commit, JobEnded, Kill, Launch, Release, ReleaseOutputs, Scheduler,
                         ScheduledJob, TaskDone)
from . import copies, placement
from .links import WorkerLinks

log = logging.getLogger("blfs.master")

FAILED_STEP = (BlfsError, OSError, asyncio.TimeoutError)


class Executor:
    """Turns the scheduler's actions into requests to workers, never blocking the caller."""

    def __init__(self, sched: Scheduler, links: WorkerLinks, catalog: Catalog,
                 tasks: TaskSet, ended: Callable[[JobEnded], None],
                 changed: Callable[[], Awaitable[None]],
                 recorded: Callable[[TaskDone], None] = lambda action: None):
        self.sched = sched
        self.links = links
        self.catalog = catalog
        self.tasks = tasks
        self.ended = ended  # a job ended: its record, its temporary datasets
        self.recorded = recorded  # a task's success, written down before what follows
        self.changed = changed

    def execute(self, actions: list, reschedule: bool = True) -> None:
        """Carry out the scheduler's decisions (and, unless told not to, whatever it can
        start now). Never blocks: I/O goes to tasks."""
        if reschedule:
            actions = actions + self.sched.schedule(time.monotonic())
        for action in actions:
            if isinstance(action, TaskDone):  # synchronously: before the actions after it
                self.recorded(action)
            elif isinstance(action, Launch):
                self.tasks.spawn(self._launch(action))
            elif isinstance(action, Kill):
                self.tasks.spawn(self.links.send(action.worker, "kill", attempt=action.attempt))
            elif isinstance(action, Commit):
                self.tasks.spawn(self.commit(action))
            elif isinstance(action, Release):
                self.tasks.spawn(self.release(action))
            elif isinstance(action, ReleaseOutputs):
                for worker, attempts in action.attempts.items():
                    self.tasks.spawn(self.links.send(worker, "release_attempts",
                                                     attempts=attempts))
            elif isinstance(action, JobEnded):
                self.ended(action)
        if actions:
            self.tasks.spawn(self.changed())

    async def _launch(self, action: Launch) -> None:
        """Send an attempt to its worker. A launch that may have happened (a timeout, a
        lost connection) is killed there too and counts as lost; a refused one as crashed."""
        spec = action.attempt
        log.info("launching %s on %s", spec.id, action.worker,
                 extra={"BLFS_JOB": spec.job, "BLFS_TASK": spec.task,
                        "BLFS_ATTEMPT": spec.attempt, "BLFS_NODE": action.worker})
        try:
            await self.links.call(action.worker, "launch", attempt=spec)
        except (ConnectionClosed, asyncio.TimeoutError) as exc:
            # it may have started all the same: make sure it does not run beside its retry
            self.tasks.spawn(self.links.send(action.worker, "kill", attempt=spec.id))
            self.execute(self.sched.attempt_failed(spec.id, FailureKind.LOST,
                                                   f"launch failed: {exc or 'timeout'}",
                                                   time.monotonic()))
        except BlfsError as exc:  # refused by the worker, or too big to send
            self.execute(self.sched.attempt_failed(spec.id, FailureKind.CRASHED,
                                                   f"launch failed: {exc}", time.monotonic()))

    # ------------------------------------------------------------------ commit

    async def commit(self, action: Commit) -> None:
        """Move every part into place, then mark the output complete; on any failure take
        the moved parts back, and the job fails."""
        job = self.sched.jobs[action.job]
        moved: list = []
        try:
            here = _rename_again if action.again else _rename
            for worker, _, source, target in action.parts:
                moved.append((worker, target))  # before: a timed-out rename may have happened
                await self._on_worker(job, worker, "commit", here, source, target,
                                      source=source, target=target, again=action.again)
            await self._complete(job, action.parts)
        except FAILED_STEP as exc:
            await self._take_back(job, moved)
            log.error("commit of job %s failed: %s", job.id, exc, extra={"BLFS_JOB": job.id})
            self.execute(self.sched.commit_failed(job.id, str(exc), time.monotonic()))
            return
        self.execute(self.sched.commit_done(job.id, time.monotonic()))

    async def _complete(self, job: ScheduledJob, parts: list) -> None:
        """The output is whole: a cluster output's record in the catalog; else _SUCCESS,
        written by a worker too (the master may see outputs read-only)."""
        if job.spec.output_name:
            await self._record_output(job, parts)
            return
        last = parts[-1][0] if parts else ""
        output = job.spec.output
        await self._on_worker(job, last, "success", storage.write_success, output,
                              output=output)

    async def _take_back(self, job: ScheduledJob, moved: list) -> None:
        """Undo the renames of a failed commit (a failure here is only logged)."""
        for worker, target in moved:
            try:
                await self._on_worker(job, worker, "uncommit", _unlink, target, target=target)
            except FAILED_STEP:
                log.error("could not take back %s after a failed commit", target,
                          extra={"BLFS_JOB": job.id})

    async def _record_output(self, job: ScheduledJob, parts: list) -> None:
        """A cluster output is complete once the catalog says where each part is (and,
        with output replicas, where its copies are)."""
        files = [{"partition": task.index, "node": worker, "file": task.result.file,
                  "size": task.result.size or 0, "crc": task.result.crc}
                 for task, (worker, _, _, _) in zip(job.final.tasks, parts)]
        name = job.spec.output_name
        if job.spec.output_replicas > 1:
            for index, record in enumerate(files):
                await self._replicate(job, index, record)
        self.catalog.add(OUTPUTS, name, {"job": job.id, "parts": files})
        log.info("output %s recorded: %d parts", name, len(files), extra={"BLFS_JOB": job.id})

    async def _replicate(self, job: ScheduledJob, index: int, record: dict) -> None:
        """Copy a part onto other workers' disks until it has the job's output replicas;
        a copy that fails is tried on the next worker; too few workers leave it with
        fewer copies (logged, and shown by blfs ls), never the job failed for it."""
        want, name = job.spec.output_replicas, job.spec.output_name
        holders = [record["node"]]
        for target in placement.copy_targets(record["node"], self.links.connected()):
            if len(holders) >= want:
                break
            try:
                await copies.copy_to(self.links, record, target, OUTPUTS, name, index)
                holders.append(target)
            except FAILED_STEP as exc:
                log.warning("could not copy part %d of %s to %s: %s", index, name, target,
                            exc, extra={"BLFS_JOB": job.id})
        record["replicas"] = holders
        if len(holders) < want:
            log.warning("part %d of %s is kept on %d disks, not %d: too few workers",
                        index, name, len(holders), want, extra={"BLFS_JOB": job.id})

    async def _on_worker(self, job: ScheduledJob, worker: str, op: str,
                         here: Callable[..., Any], *args: Any, **fields: Any) -> None:
        """An operation on a file of the output, by the worker that holds it. When that
        worker is gone and the output is a directory we see too (--local, a shared file
        system), we do it `here`; a cluster output's files are on the worker's own disk.
        A worker lost in the middle of the call may or may not have done it: then we do
        it here, as a restarted master would (a part it moved is taken as moved)."""
        if worker in self.links.peers or job.spec.output_name:
            try:
                await self.links.call(worker, op, **fields)
                return
            except (ConnectionClosed, asyncio.TimeoutError) as exc:
                if job.spec.output_name:
                    raise
                log.warning("worker %s was lost during %s (%s); doing it here", worker, op,
                            exc or "no answer", extra={"BLFS_JOB": job.id})
                here = _rename_again if here is _rename else here
        here(*args)

    # ------------------------------------------------------------------ release

    async def release(self, action: Release) -> None:
        """Workers kill the job's attempts, free its slots and remove its temporary files;
        then no one writes under OUTPUT/_temporary/JOB, and we remove what a lost worker
        could not (for an output directory; a cluster output's are on the workers' own
        disks)."""
        job = self.sched.jobs[action.job]
        name = job.spec.output_name
        tmp = None if name else os.path.join(job.spec.output, "_temporary", job.id)
        results = await asyncio.gather(*(self.links.send(w, "release_job", job=job.id,
                                                         output_tmp=tmp, output_name=name)
                                         for w in action.workers))
        for worker, result in zip(action.workers, results):
            if result is None and worker in self.links.peers:
                # its leases would leak: reconnect, and the sync rebuilds its lease table
                log.warning("worker %s did not release job %s; reconnecting", worker, job.id)
                await self.links.reconnect(worker)
        if tmp is not None:
            storage.remove_job_temporary(tmp)


def _rename(source: str, target: str) -> None:
    os.rename(source, target)


def _rename_again(source: str, target: str) -> None:
    """_rename, unless a master before us did it."""
    if not storage.moved_before(source, target):
        os.rename(source, target)


def _unlink(path: str) -> None:
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass

