"""Task attempts on this worker: launched by the master, one process each, supervised to
the end and reported to the master.

A task talks to its worker over a socketpair with the protocol's framing; its requests are
served, in the order it sent them, from the table `TaskRequests.handlers`: lease a slot,
ensure_view of a peer disk, fresh_file (a dataset's split on a peer), and the reports
progress, done and failed. When the process has exited (reaped through a pidfd), the
master hears `succeeded` (its slots stay leased until the job is released) or `failed`
with a kind (its slots are released at once).
"""
from __future__ import annotations

import asyncio
import logging
import socket
import time
from dataclasses import dataclass, field
from typing import Awaitable, Callable, Optional

from .. import catalog, rpc, runtime
from ..aio import TaskSet
from ..config import Config
from ..errors import ConnectionClosed, ProtocolError
from ..messages import (AttemptSpec, AttemptState, Failure, FailureKind, Message, Progress,
                        Success, TaskResult)
from ..transport import FrameStream
from . import process
from .disk import OwnDisk
from .views import PeerViews

log = logging.getLogger("blfs.worker")

Tell = Callable[[str, AttemptState, Message], Awaitable[None]]  # a report to the master


@dataclass
class RunningAttempt:
    """An attempt whose process has not been reaped yet, and what it said so far."""
    spec: AttemptSpec
    pid: int
    started: float
    done: Optional[TaskResult] = None
    failure: Optional[Failure] = None
    killed: bool = False
    finished: asyncio.Event = field(default_factory=asyncio.Event)

    @property
    def id(self) -> str:
        return self.spec.id

    def fields(self) -> dict:
        return {"BLFS_JOB": self.spec.job, "BLFS_TASK": self.spec.task,
                "BLFS_ATTEMPT": self.spec.attempt}


class TaskRequests:
    """What a task process may ask of its worker, and the reports it sends."""

    def __init__(self, disk: OwnDisk, views: PeerViews, tell: Tell):
        self.disk = disk
        self.views = views
        self.tell = tell
        self.handlers = {"lease": self.lease, "ensure_view": self.ensure_view,
                         "fresh_file": self.fresh_file, "progress": self.progress,
                         "done": self.done, "failed": self.failed}

    def lease(self, attempt: RunningAttempt) -> dict:
        """A free slot of our pool, now held by this attempt (PoolExhausted if none)."""
        return {"slot": self.disk.leases.lease(attempt.id)}

    async def ensure_view(self, attempt: RunningAttempt, node: str, generation: int) -> bool:
        """Our view of `node` made current for a pool generation (remounted if not)."""
        await self.views.ensure(node, generation)
        return True

    async def fresh_file(self, attempt: RunningAttempt, node: str, file: str, size: int,
                         crc: Optional[int] = None) -> bool:
        """A dataset's split file on `node` checked on our view (remounted once if stale)."""
        await self.views.fresh_file(node, file, size, crc)
        return True

    async def progress(self, attempt: RunningAttempt, progress: float, status: str,
                       counters: dict) -> None:
        """Forwarded to the master as it comes (attempt_update running)."""
        await self.tell(attempt.id, AttemptState.RUNNING,
                        Progress(progress=progress, status=status, counters=counters))

    def done(self, attempt: RunningAttempt, result: TaskResult) -> None:
        attempt.done = result  # reported once the process has exited cleanly

    def failed(self, attempt: RunningAttempt, kind: FailureKind, error: str,
               info: Optional[dict] = None) -> None:
        attempt.failure = Failure(kind=kind, error=error, info=info or {})


class Attempts:
    """The attempts running here: launch, kill, supervise, report."""

    def __init__(self, config: Config, disk: OwnDisk, views: PeerViews, tell: Tell):
        self.config = config
        self.disk = disk
        self.tell = tell
        self.running: dict[str, RunningAttempt] = {}
        self.requests = TaskRequests(disk, views, tell)
        self._supervisors = TaskSet()
        self.handlers = {"launch": self.launch, "kill": self.kill}

    def launch(self, peer: Optional[rpc.Peer], attempt: AttemptSpec) -> dict:
        """Start an attempt's task process, and its supervisor."""
        spec = attempt
        if spec.output_name:  # a cluster output: parts go to our own disk
            spec = spec.replace(output=catalog.output_dir(
                self.disk.path, catalog.check_name(spec.output_name)))
        if spec.id in self.running:
            raise ProtocolError(f"attempt {spec.id} is already running here")
        pid, sock = process.fork_task(spec, self._task_env())
        running = RunningAttempt(spec, pid, time.monotonic())
        self.running[running.id] = running
        log.info("started %s (%s) as pid %d", running.id, spec.kind, pid,
                 extra={**running.fields(), "BLFS_NODE": self.disk.name})
        self._supervisors.spawn(self._supervise(running, sock))
        return {"pid": pid}

    def _task_env(self) -> runtime.TaskEnv:
        """What the task process gets of its worker, at fork."""
        cfg, m = self.config, self.disk.manifest
        return runtime.TaskEnv(
            node=self.disk.name, disk=self.disk.path, disks_root=cfg.disks_root,
            generation=m.generation, slot_size=m.slot_size, device=self.disk.device,
            allow_buffered=cfg.allow_buffered_reads, spill_records=cfg.spill_records,
            segment_max=cfg.segment_max)

    def kill(self, peer: Optional[rpc.Peer], attempt: str) -> dict:
        """The master kills an attempt (it is reported killed once reaped)."""
        running = self.running.get(attempt)
        if running:
            self.terminate(running)
        return {"killed": running is not None}

    def terminate(self, attempt: RunningAttempt) -> None:
        """Kill an attempt's processes (it is reported as killed once reaped)."""
        if attempt.finished.is_set():
            return
        attempt.killed = True
        process.kill(attempt.pid)

    def terminate_all(self, job: Optional[str] = None) -> None:
        """Kill every attempt here, or every attempt of one job."""
        for attempt in list(self.running.values()):
            if job is None or attempt.spec.job == job:
                self.terminate(attempt)

    async def wait_all(self, timeout: float) -> None:
        """Wait (at most `timeout` seconds in all) for every attempt to be reaped."""
        deadline = time.monotonic() + timeout
        for attempt in list(self.running.values()):
            try:
                await asyncio.wait_for(attempt.finished.wait(),
                                       max(0.1, deadline - time.monotonic()))
            except asyncio.TimeoutError:
                pass

    # ------------------------------------------------------------------ supervision

    async def _supervise(self, attempt: RunningAttempt, sock: socket.socket) -> None:
        """Serve the task, reap its process, report how it ended."""
        await self._serve_task(attempt, sock)
        status = await process.wait_exit(attempt.pid)
        self.running.pop(attempt.id, None)
        attempt.finished.set()
        await self._report(attempt, status)

    async def _serve_task(self, attempt: RunningAttempt, sock: socket.socket) -> None:
        """The task's requests, until it closes its end (it exits, or is killed)."""
        sock.setblocking(False)
        reader, writer = await asyncio.open_unix_connection(sock=sock)
        stream = FrameStream(reader, writer)
        try:
            while True:  # in order: a task's reports must reach the master as it sent them
                answer = await rpc.respond(self.requests.handlers, attempt,
                                           await stream.read(), f"task {attempt.id}")
                if answer is not None:
                    await stream.write(answer)
        except (ConnectionClosed, ProtocolError):
            pass
        except Exception:  # a bug of ours: end the attempt, and still reap and report it
            log.exception("supervising %s failed", attempt.id,
                          extra={**attempt.fields(), "BLFS_NODE": self.disk.name})
            if attempt.failure is None:
                attempt.failure = Failure(kind=FailureKind.CRASHED,
                                          error="its worker could not serve it")
            self.terminate(attempt)
            attempt.killed = False  # report the failure above, not a kill by request
        finally:
            await stream.close()

    async def _report(self, attempt: RunningAttempt, status: int) -> None:
        """Tell the master how the attempt ended; a failed one's slots are free again."""
        fields = {**attempt.fields(), "BLFS_NODE": self.disk.name}
        if attempt.done is not None and status == 0 and not attempt.killed:
            # its slots stay leased: they hold the output until the job is released
            log.info("%s succeeded", attempt.id, extra=fields)
            await self.tell(attempt.id, AttemptState.SUCCEEDED, Success(result=attempt.done))
            return
        self.disk.leases.release_attempt(attempt.id)
        if attempt.killed:
            failure = Failure(kind=FailureKind.KILLED, error="killed")
        elif attempt.failure is not None:
            failure = attempt.failure
        else:
            failure = Failure(kind=FailureKind.CRASHED,
                              error=f"task process {process.describe_status(status)}")
        if failure.kind == FailureKind.KILLED:
            log.info("%s killed", attempt.id, extra=fields)
        else:
            log.warning("%s failed (%s): %s", attempt.id, failure.kind, failure.error,
                        extra=fields)
        await self.tell(attempt.id, AttemptState.FAILED, failure)
