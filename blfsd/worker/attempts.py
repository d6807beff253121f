"""Task attempts on this worker: launched by the master, one contained process each,
supervised to the end and reported to the master.

An attempt runs in its own cgroups and scratch directory, as the task user
(containment.py). It may open nothing on the disks: it asks its worker over its
socketpair, and the replies carry descriptors (taskchannel.py). Its requests are served,
in the order it sent them, from the table `TaskRequests.handlers`: a leased slot to write,
the block device to flush, its split, a peer's slot to read (after making our view of
that disk current), the file its output goes to; and the reports progress, done and
failed. Its stdout and stderr come through a pipe and are kept, bounded (OutputTail).

The attempt ends when its process ends, whatever its children do: they are killed with
its cgroup. Then the master hears `succeeded` (its slots stay leased until the job is
released) or `failed` with a kind (its slots are released at once); its scratch slots (a
reduce's merge passes) are released either way, as soon as its process is gone.
"""
from __future__ import annotations

import asyncio
import errno
import logging
import os
import socket
import time
from dataclasses import dataclass, field
from typing import Awaitable, Callable, Optional

from .. import catalog, rpc, runtime, storage
from ..aio import TaskSet
from ..config import Config
from ..errors import (BlfsError, ConnectionClosed, DiskFull, FetchError, PathRefused,
                      ProtocolError, StorageError)
from ..messages import (AttemptSpec, AttemptState, Failure, FailureKind, Message, Progress,
                        Split, Success, TaskKind, TaskResult)
from ..taskchannel import WithFds, WorkerEnd
from . import process
from .containment import Containment, Sandbox
from .disk import OwnDisk
from .jobfiles import JobFiles, place
from .output import AttemptLogs, OutputTail
from .views import PeerViews

log = logging.getLogger("blfs.worker")

Tell = Callable[[str, AttemptState, Message], Awaitable[None]]  # a report to the master
AskInput = Callable[[str], Awaitable[dict]]  # an early reduce's new input, from the master
DRAIN = 5.0  # seconds to read what a task sent before it exited


@dataclass
class RunningAttempt:
    """An attempt whose process has not been reaped yet, and what it said so far."""
    spec: AttemptSpec
    pid: int
    started: float
    box: Sandbox
    output: OutputTail
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

    def __init__(self, config: Config, disk: OwnDisk, views: PeerViews,
                 containment: Containment, tell: Tell, ask_input: AskInput):
        self.config = config
        self.disk = disk
        self.views = views
        self.paths = containment.paths
        self.tell = tell
        self.ask_input = ask_input
        self.handlers = {"lease": self.lease, "device": self.device,
                         "open_split": self.open_split, "open_slot": self.open_slot,
                         "create_output": self.create_output,
                         "release_scratch": self.release_scratch, "progress": self.progress,
                         "more_input": self.more_input, "done": self.done,
                         "failed": self.failed}

    def lease(self, attempt: RunningAttempt, scratch: bool = False) -> WithFds:
        """A free slot of our pool, now held by this attempt (PoolExhausted if none), open
        for writing: never created, never truncated (storage rule 2). A scratch slot (a
        reduce's merge pass) is freed when the attempt ends, success or not."""
        holder = storage.scratch_holder(attempt.id) if scratch else attempt.id
        slot = self.disk.leases.lease(holder)
        try:
            fd = os.open(storage.slot_path(self.disk.path, slot), os.O_WRONLY | os.O_CLOEXEC)
        except OSError:
            self.disk.leases.release_slot(slot)
            raise
        return WithFds({"slot": slot}, [fd])

    def device(self, attempt: RunningAttempt) -> WithFds:
        """The block device under our disk, to flush after writing slots (none in --local)."""
        if not self.disk.device:
            return WithFds({"device": False}, [])
        return WithFds({"device": True}, [os.open(self.disk.device, os.O_RDONLY | os.O_CLOEXEC)])

    async def open_split(self, attempt: RunningAttempt) -> WithFds:
        """The map's split: a dataset's file (checked on our view, remounted if stale), or
        a path the job named (opened with the path user's rights)."""
        split = attempt.spec.split
        if split is None:
            raise ProtocolError("only a map has a split")
        if split.file:
            return WithFds({}, [await self._open_stored(attempt, split)])
        try:
            return WithFds({}, [self.paths.open(split.path, os.O_RDONLY)])
        except OSError as exc:
            raise PathRefused(f"cannot read {split.path} as {self.paths.name}: "
                              f"{exc.strerror}") from None

    async def _open_stored(self, attempt: RunningAttempt, split: Split) -> int:
        """A dataset's split file from the first of its replicas that can be read: ours
        first, then the others in the order they were stored (a lost disk is skipped)."""
        last: Optional[BlfsError] = None
        for node in replica_order(split.holders(), self.disk.name):
            try:
                path = await self.views.fresh_file(node, split.file, split.end, split.crc)
                fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
            except OSError as exc:
                last = StorageError(f"cannot read {split.file} on {node}: {exc.strerror}")
            except BlfsError as exc:
                last = exc
            else:
                if last is not None:
                    log.warning("%s: read the replica on %s instead (%s)", split.file, node,
                                last, extra=attempt.fields())
                return fd
            if len(split.holders()) > 1:
                log.warning("%s: the replica on %s cannot be read: %s", split.file, node,
                            last, extra=attempt.fields())
        assert last is not None
        raise last

    async def open_slot(self, attempt: RunningAttempt, node: str, slot: int,
                        generation: int) -> WithFds:
        """A slot of `node`'s pool to read segments from, with O_DIRECT, through a view
        made current for `generation` (storage rules 4 and 5)."""
        if node != self.disk.name:
            await self.views.ensure(node, generation)
        if not 0 <= slot < 1 << 20:
            raise ProtocolError(f"no slot {slot}")
        path = storage.slot_path(self.views.disk(catalog.check_node(node)), slot)
        try:
            fd, direct = storage.open_for_read(path, self.config.allow_buffered_reads)
        except OSError as exc:
            raise FetchError(f"cannot open {path}: {exc.strerror}", node=node) from None
        return WithFds({"direct": direct}, [fd])

    def create_output(self, attempt: RunningAttempt) -> WithFds:
        """The file a reduce writes its part to, under OUTPUT/_temporary/JOB/ (moved into
        place by the commit). On our own disk for a cluster output; else created with the
        path user's rights."""
        spec = attempt.spec
        target = os.path.join(spec.output, f"part-{spec.index:05d}")
        # named by the attempt id, whose epoch differs between master sessions
        tmpdir = os.path.join(spec.output, "_temporary", spec.job,
                              f"{spec.task}.{spec.id.rsplit('/', 1)[-1]}")
        path = os.path.join(tmpdir, os.path.basename(target))
        flags = os.O_WRONLY | os.O_CREAT | os.O_TRUNC
        where = {"path": path, "target": target}
        try:
            if spec.output_name:
                os.makedirs(tmpdir, exist_ok=True)
                fd = os.open(path, flags | os.O_CLOEXEC, 0o644)
                where["file"] = os.path.relpath(target, self.disk.path)
            else:
                self.paths.makedirs(tmpdir)
                fd = self.paths.open(path, flags, 0o644)
        except OSError as exc:
            if exc.errno in (errno.ENOSPC, errno.EDQUOT):
                raise DiskFull(f"disk full on {self.disk.name}: cannot create {path}") \
                    from None
            if spec.output_name:
                raise StorageError(f"cannot create {path}: {exc.strerror}") from None
            raise PathRefused(f"cannot create {path} as {self.paths.name}: "
                              f"{exc.strerror}") from None
        return WithFds(where, [fd])

    def release_scratch(self, attempt: RunningAttempt, slots: list) -> None:
        """Scratch slots the task is done with (a merge pass read them); only its own."""
        self.disk.leases.release_scratch(attempt.id, slots)

    async def more_input(self, attempt: RunningAttempt) -> dict:
        """An early reduce's input that finished since it last asked, from the master
        (which answers within seconds, with nothing if nothing finished)."""
        if attempt.spec.kind != TaskKind.REDUCE or not attempt.spec.partial:
            raise ProtocolError("only a reduce placed early asks for more input")
        return await self.ask_input(attempt.id)

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

    def __init__(self, config: Config, disk: OwnDisk, views: PeerViews, tell: Tell,
                 ask_files: Callable[[str], Awaitable[list]], ask_input: AskInput):
        self.config = config
        self.disk = disk
        self.tell = tell
        self.running: dict[str, RunningAttempt] = {}
        self.containment = Containment(config)
        self.job_files = JobFiles(ask_files)
        self.requests = TaskRequests(config, disk, views, self.containment, tell, ask_input)
        self._supervisors = TaskSet("the supervisor of an attempt")
        self.logs = AttemptLogs(config.work_dir, config.history_days)
        self.handlers = {"launch": self.launch, "kill": self.kill,
                         "attempt_log": self.attempt_log}

    def attempt_log(self, peer: Optional[rpc.Peer], attempt: str) -> dict:
        """What an attempt wrote to stdout and stderr, as kept (`blfs logs`)."""
        try:
            return {"output": self.logs.read(attempt)}
        except ValueError as exc:
            raise ProtocolError(str(exc)) from None

    async def launch(self, peer: Optional[rpc.Peer], attempt: AttemptSpec) -> dict:
        """Start an attempt's task process in its sandbox, and its supervisor."""
        spec = attempt
        if spec.output_name:  # a cluster output: parts go to our own disk
            spec = spec.replace(output=catalog.output_dir(
                self.disk.path, catalog.check_name(spec.output_name)))
        if spec.id in self.running:
            raise ProtocolError(f"attempt {spec.id} is already running here")
        shipped = await self.job_files.of(spec)
        if spec.id in self.running:  # launched twice while we asked for its files
            raise ProtocolError(f"attempt {spec.id} is already running here")
        box = self.containment.prepare(spec)
        try:
            place(box.scratch, spec, shipped, box.identity)
        except OSError:
            self.containment.release(box)
            raise
        try:
            pid, sock, out = process.fork_task(spec, self._task_env(), box)
        except OSError:
            self.containment.release(box)
            raise
        running = RunningAttempt(spec, pid, time.monotonic(), box, OutputTail(out))
        self.running[running.id] = running
        log.info("started %s (%s) as pid %d", running.id, spec.kind, pid,
                 extra={**running.fields(), "BLFS_NODE": self.disk.name})
        self._supervisors.spawn(self._supervise(running, sock))
        return {"pid": pid}

    def _task_env(self) -> runtime.TaskEnv:
        """What the task process gets of its worker, at fork."""
        cfg, m = self.config, self.disk.manifest
        return runtime.TaskEnv(
            node=self.disk.name, generation=m.generation, slot_size=m.slot_size,
            spill_records=cfg.spill_records, segment_max=cfg.segment_max,
            spill_bytes=cfg.spill_bytes, merge_factor=cfg.merge_factor)

    def kill(self, peer: Optional[rpc.Peer], attempt: str) -> dict:
        """The master kills an attempt (it is reported killed once reaped)."""
        running = self.running.get(attempt)
        if running:
            self.terminate(running)
        return {"killed": running is not None}

    def terminate(self, attempt: RunningAttempt) -> None:
        """Kill an attempt's processes, all of them (it is reported killed once reaped)."""
        if attempt.finished.is_set():
            return
        attempt.killed = True
        attempt.box.kill(attempt.pid)

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

    def close(self) -> None:
        self.containment.close()

    # ------------------------------------------------------------------ supervision

    async def _supervise(self, attempt: RunningAttempt, sock: socket.socket) -> None:
        """Serve the task until its process exits; then kill whatever it left (its cgroup),
        read what it sent before it went, reap it, and report how it ended."""
        serving = asyncio.ensure_future(self._serve_task(attempt, sock))
        status = await process.wait_exit(attempt.pid)
        attempt.box.kill(attempt.pid)  # its children, setsid() or not, go with it
        try:
            await asyncio.wait_for(asyncio.shield(serving), DRAIN)
        except asyncio.TimeoutError:  # something of it still holds the socket open
            serving.cancel()
        await attempt.output.closed(DRAIN)
        self.logs.save(attempt.id, attempt.output)
        oom = attempt.box.oom_killed()
        self.containment.release(attempt.box)
        self.disk.leases.release_scratch(attempt.id)  # its merge passes', however it ended
        self.running.pop(attempt.id, None)
        attempt.finished.set()
        await self._report(attempt, status, oom)

    async def _serve_task(self, attempt: RunningAttempt, sock: socket.socket) -> None:
        """The task's requests, until it closes its end (it exits, or is killed)."""
        end = WorkerEnd(sock)
        try:
            while True:  # in order: a task's reports must reach the master as it sent them
                answer = await rpc.respond(self.requests.handlers, attempt,
                                           await end.read(), f"task {attempt.id}")
                if answer is None:
                    continue
                passing = answer.get("result")
                if isinstance(passing, WithFds):
                    try:
                        await end.write(dict(answer, result=passing.result), passing.fds)
                    finally:
                        passing.close()
                else:
                    await end.write(answer)
        except (ConnectionClosed, ProtocolError):
            pass
        except Exception:  # a bug of ours: end the attempt, and still reap and report it
            log.exception("supervising %s failed", attempt.id,
                          extra={**attempt.fields(), "BLFS_NODE": self.disk.name})
            if attempt.failure is None:
                attempt.failure = Failure(kind=FailureKind.INTERNAL,
                                          error="its worker could not serve it")
            self.terminate(attempt)
            attempt.killed = False  # report the failure above, not a kill by request
        finally:
            end.close()

    async def _report(self, attempt: RunningAttempt, status: int, oom: bool) -> None:
        """Tell the master how the attempt ended; a failed one's slots are free again."""
        fields = {**attempt.fields(), "BLFS_NODE": self.disk.name}
        if attempt.done is not None and status == 0 and not attempt.killed:
            # its slots stay leased: they hold the output until the job is released
            log.info("%s succeeded", attempt.id, extra=fields)
            await self.tell(attempt.id, AttemptState.SUCCEEDED, Success(result=attempt.done))
            return
        self.disk.leases.release_attempt(attempt.id)
        failure = self._failure(attempt, status, oom)
        if failure.kind == FailureKind.KILLED:
            log.info("%s killed", attempt.id, extra=fields)
        else:
            log.warning("%s failed (%s): %s", attempt.id, failure.kind, failure.error[-8192:],
                        extra=fields)
        await self.tell(attempt.id, AttemptState.FAILED, failure)

    def _failure(self, attempt: RunningAttempt, status: int, oom: bool) -> Failure:
        """Why an attempt failed, and whose fault it was."""
        if attempt.killed:
            return Failure(kind=FailureKind.KILLED, error="killed")
        if oom:
            return Failure(kind=FailureKind.OOM, error=f"out of memory (limit "
                           f"{attempt.box.memory_limit_text()})")
        if attempt.failure is not None:
            return attempt.failure
        said = attempt.output.last_lines(3)
        return Failure(kind=FailureKind.CRASHED,
                       error=f"task process {process.describe_status(status)}"
                             + (f"; its last output: {said}" if said else ""))


def replica_order(holders: list[str], own: str) -> list[str]:
    """Where to read a split from: our own disk when it keeps a replica (no remount, no
    peer's cache), then the others in the order they were stored."""
    return sorted(holders, key=lambda n: n != own)
