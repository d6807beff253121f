"""The worker daemon: serves the master, runs each task attempt in its own process."""
from __future__ import annotations

import asyncio
import ctypes
import functools
import gc
import logging
import os
import shutil
import signal
import socket
import sys
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Optional

from . import catalog, datafiles, rpc, runtime, storage
from .config import WORKER_PORT, Config
from .errors import (BlfsError, ConnectionClosed, FetchError, NotFound, ProtocolError,
                     StorageError)
from .messages import (AttemptSpec, AttemptState, Failure, FailureKind, Message, Progress,
                       Success, TaskResult)
from .systemd import Notifier, listen_fds, setup_logging
from .transport import FrameStream, format_address, parse_address

log = logging.getLogger("blfs.worker")

PR_SET_PDEATHSIG = 1


@dataclass
class RunningAttempt:
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


class Worker:
    def __init__(self, config: Config, key: Optional[bytes]):
        self.config = config
        self.key = key
        self.name = config.worker_name
        self.disk = os.path.join(config.disks_root, self.name)
        self.manifest: Optional[storage.Manifest] = None
        self.leases: Optional[storage.SlotLeases] = None
        self.device: Optional[str] = None
        self.attempts: dict[str, RunningAttempt] = {}
        self.master: Optional[rpc.Peer] = None
        self.notifier = Notifier()
        self.servers: list = []
        self.stopping = asyncio.Event()
        self._listen_socks: list = []
        self._view_lock = asyncio.Lock()
        self._supervisors: set = set()  # asyncio keeps only weak references to tasks
        self._views: dict[str, int] = {}
        self._verified: set = set()  # (path, size, crc) of files our views show intact
        self.uploads: Optional[datafiles.Uploads] = None
        self.address = ""
        self.handlers = self._handler_table()
        self.task_handlers = {"lease": self._lease, "ensure_view": self._task_ensure_view,
                              "fresh_file": self._task_fresh_file, "progress": self._progress,
                              "done": self._done, "failed": self._failed}

    # ------------------------------------------------------------------ start/stop

    def open_pool(self) -> None:
        cfg = self.config
        if cfg.prepare_pool:
            self.manifest, changed = storage.prepare_pool(
                self.disk, self.name, cfg.slot_count, cfg.slot_size, cfg.durable_pool,
                cfg.fill_pool)
            if changed:
                log.info("prepared pool on %s: %d slots of %d bytes, generation %d",
                         self.disk, self.manifest.slot_count, self.manifest.slot_size,
                         self.manifest.generation)
        else:
            self.manifest = storage.check_pool(self.disk)
            if self.manifest is None:
                raise BlfsError(f"no prepared pool on {self.disk} (run blfs-iscsi up)")
        self.leases = storage.SlotLeases(self.manifest.slot_count)
        self.device = storage.block_device_of(self.disk)
        self.uploads = datafiles.Uploads(self.disk, self.device)

    async def start(self) -> None:
        self.open_pool()
        activated = [s for _, s in listen_fds()]
        if activated:
            socks = activated
        else:
            host, port = parse_address(self.config.worker_listen, WORKER_PORT)
            socks = [socket.create_server((host, port), reuse_port=False)]
        for sock in socks:
            sock.setblocking(False)
            server = await asyncio.start_server(self._on_connect, sock=sock)
            self.servers.append(server)
            self._listen_socks.append(sock)
        name = socks[0].getsockname()
        self.address = format_address(*name[:2]) if isinstance(name, tuple) else str(name)
        log.info("worker %s listening on %s, pool generation %d, %d slots",
                 self.name, self.address, self.manifest.generation, self.manifest.slot_count,
                 extra={"BLFS_NODE": self.name})
        self.notifier.notify("READY=1", f"STATUS={self.status_line()}",
                             f"BLFS_LISTEN={self.address}", f"BLFS_NAME={self.name}")

    async def reload_pool(self) -> None:
        """SIGHUP: adopt a pool that blfs-iscsi changed, and announce its new generation.

        Segments written under the old generation can no longer be trusted: readers see
        the generation differ, remount their view, and the maps whose output is gone run
        again. New attempts lease slots of the new pool.
        """
        manifest = storage.check_pool(self.disk, self.config.fill_pool)
        if manifest is None:
            log.error("SIGHUP: no complete pool on %s; keeping generation %d", self.disk,
                      self.manifest.generation, extra={"BLFS_NODE": self.name})
            return
        if manifest == self.manifest:
            log.info("SIGHUP: pool unchanged (generation %d)", manifest.generation)
            return
        self.manifest = manifest
        self.leases.resize(manifest.slot_count)
        log.warning("pool on %s is now generation %d, %d slots of %d bytes", self.disk,
                    manifest.generation, manifest.slot_count, manifest.slot_size,
                    extra={"BLFS_NODE": self.name})
        if self.master is not None:
            try:
                await self.master.notify("pool_changed", generation=manifest.generation,
                                         slots=manifest.slot_count)
            except (ConnectionClosed, ProtocolError) as exc:
                log.warning("could not announce the new pool: %s", exc)

    def status_line(self) -> str:
        free = self.leases.free_count() if self.leases else 0
        total = self.manifest.slot_count if self.manifest else 0
        master = "master connected" if self.master else "waiting for the master"
        return (f"{len(self.attempts)} attempts running, {free}/{total} slots free, {master}")

    async def run(self) -> None:
        await self.start()
        watchdog = Notifier.watchdog_interval()
        while not self.stopping.is_set():
            try:
                await asyncio.wait_for(self.stopping.wait(), watchdog or 5.0)
            except asyncio.TimeoutError:
                pass
            if watchdog:
                self.notifier.notify("WATCHDOG=1")
            self.notifier.status(self.status_line())
        await self.shutdown()

    async def shutdown(self) -> None:
        self.notifier.notify("STOPPING=1")
        for server in self.servers:
            server.close()
        for attempt in list(self.attempts.values()):
            self._kill(attempt)
        if self.master:
            await self.master.close()
        deadline = time.monotonic() + 5
        for attempt in list(self.attempts.values()):
            try:
                await asyncio.wait_for(attempt.finished.wait(), max(0.1, deadline - time.monotonic()))
            except asyncio.TimeoutError:
                pass

    # ------------------------------------------------------------------ connections

    async def _on_connect(self, reader: asyncio.StreamReader,
                          writer: asyncio.StreamWriter) -> None:
        peer = await rpc.accept_connection(reader, writer, self.key, "worker", self.name,
                                           self.handlers, self.config.group)
        if peer is None:
            return
        if peer.role == "master":
            if self.master is not None:
                await self.master.close()
            self.master = peer
            log.info("master %s connected from %s", peer.name, peer.stream.peer_label())
        await peer.serve()
        if self.master is peer:
            self.master = None
            log.info("master %s disconnected", peer.name)

    def _handler_table(self) -> dict:
        """What we serve: ping to anyone, everything else to the current master only."""
        for_master = {
            "sync": self.sync, "launch": self.launch, "kill": self.kill,
            "commit": self.commit, "uncommit": self.uncommit, "success": self.write_success,
            "release_job": self.release_job, "store": self.store, "abort_put": self.abort_put,
            "drop": self.drop, "fetch": self.fetch}
        return {"ping": self.ping,
                **{op: self._master_only(op, fn) for op, fn in for_master.items()}}

    def _master_only(self, op: str, handler: Callable[..., Any]) -> Callable[..., Any]:
        @functools.wraps(handler)
        def guarded(peer: rpc.Peer, **fields: Any) -> Any:
            if peer is not self.master:
                raise ProtocolError(f"{op} is only for the master")
            return handler(peer, **fields)
        return guarded

    def ping(self, peer: rpc.Peer, time: Optional[float] = None) -> dict:
        return {**rpc.ping(peer), **self.usage()}

    def kill(self, peer: rpc.Peer, attempt: str) -> dict:
        running = self.attempts.get(attempt)
        if running:
            self._kill(running)
        return {"killed": running is not None}

    async def store(self, peer: rpc.Peer, name: str, index: int, offset: int, data: bytes,
                    last: bool) -> Optional[dict]:
        try:
            return await asyncio.get_running_loop().run_in_executor(
                None, self.uploads.write, catalog.check_name(name), index, offset, data, last)
        except OSError as exc:  # a full disk, most likely: one line for the user
            raise StorageError(f"storing on {self.name}: {exc.strerror}") from None

    def abort_put(self, peer: rpc.Peer, name: str) -> None:
        self.uploads.abort(catalog.check_name(name))

    def drop(self, peer: rpc.Peer, kind: str, name: str) -> dict:
        return {"removed": datafiles.drop(self.disk, kind, catalog.check_name(name))}

    # ------------------------------------------------------------------ operations

    def sync(self, peer: rpc.Peer, held: list) -> dict:
        """A (new) master session: forget everything it does not know about."""
        for attempt in list(self.attempts.values()):
            self._kill(attempt)
        pairs = []
        for item in held:
            if (isinstance(item, list) and len(item) == 2 and isinstance(item[0], int)
                    and isinstance(item[1], str)):
                pairs.append((item[0], item[1]))
        self.leases.reset(pairs)
        for name in self.uploads.abort_all():
            log.warning("dropped dataset %s: its put was cut short by a new master session",
                        name)
        return {"name": self.name, "parallelism": self.config.cpu_parallelism(),
                "generation": self.manifest.generation, "slots": self.manifest.slot_count,
                "slot_size": self.manifest.slot_size, "disk": self.disk,
                "device": self.device or "", **self.usage()}

    def usage(self) -> dict:
        """What changes while we run: free slots, and room on our disk for datasets."""
        info: dict = {"free_slots": self.leases.free_count(), "running": len(self.attempts)}
        try:
            vfs = os.statvfs(self.disk)
            info.update(disk_bytes=vfs.f_blocks * vfs.f_frsize,
                        disk_free=vfs.f_bavail * vfs.f_frsize)
        except OSError:
            pass
        return info

    def launch(self, peer: Optional[rpc.Peer], attempt: AttemptSpec) -> dict:
        spec = attempt
        if spec.output_name:  # a cluster output: parts go to our own disk
            spec = spec.replace(output=catalog.output_dir(self.disk,
                                                          catalog.check_name(spec.output_name)))
        if spec.id in self.attempts:
            raise ProtocolError(f"attempt {spec.id} is already running here")
        parent, child = socket.socketpair()
        env = self._task_env()
        gc.freeze()  # the child must not collect (and so finalize) the worker's objects
        worker_pid = os.getpid()
        try:
            pid = os.fork()
        except OSError:
            gc.unfreeze()
            parent.close()
            child.close()
            raise
        if pid == 0:  # the task process: never returns
            parent.close()
            _task_main(child, spec, env, worker_pid)
        gc.unfreeze()
        child.close()
        attempt = RunningAttempt(spec, pid, time.monotonic())
        self.attempts[attempt.id] = attempt
        log.info("started %s (%s) as pid %d", attempt.id, spec.kind, pid,
                 extra={**attempt.fields(), "BLFS_NODE": self.name})
        task = asyncio.ensure_future(self._supervise(attempt, parent))
        self._supervisors.add(task)
        task.add_done_callback(self._supervisors.discard)
        return {"pid": pid}

    def _task_env(self) -> runtime.TaskEnv:
        cfg = self.config
        return runtime.TaskEnv(
            node=self.name, disk=self.disk, disks_root=cfg.disks_root,
            generation=self.manifest.generation, slot_size=self.manifest.slot_size,
            device=self.device, allow_buffered=cfg.allow_buffered_reads,
            spill_records=cfg.spill_records, segment_max=cfg.segment_max)

    def _kill(self, attempt: RunningAttempt) -> None:
        if attempt.finished.is_set():
            return
        attempt.killed = True
        # The group may not exist yet (the child calls setsid first thing); the pid is ours
        # until we reap it, so killing it by pid is always safe.
        for kill in (os.killpg, os.kill):
            try:
                kill(attempt.pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass

    async def commit(self, peer: rpc.Peer, source: str, target: str) -> dict:
        """Move a finished reduce output into place, atomically."""
        if os.path.basename(source) != os.path.basename(target):
            raise ProtocolError("commit source and target must have the same file name")
        try:
            os.rename(source, target)
        except FileNotFoundError:
            raise NotFound(f"nothing to commit at {source}") from None
        storage.fsync_dir(os.path.dirname(target))
        if _inside(target, self.disk):
            # a cluster output part: its metadata in place, for peers' noload mounts
            await asyncio.get_running_loop().run_in_executor(None, storage.publish_metadata,
                                                             self.disk, self.device)
        return {"committed": target}

    def uncommit(self, peer: rpc.Peer, target: str) -> dict:
        """Take back a committed part of a job whose commit failed further on."""
        if not os.path.basename(target).startswith("part-"):
            raise ProtocolError("only part files can be taken back")
        try:
            os.unlink(target)
        except FileNotFoundError:
            pass
        return {"removed": target}

    def write_success(self, peer: rpc.Peer, output: str) -> dict:
        """The job's output is complete: _SUCCESS, durable, written last."""
        return {"written": storage.write_success(output)}

    def release_job(self, peer: rpc.Peer, job: str, output_tmp: Optional[str] = None,
                    output_name: Optional[str] = None) -> dict:
        for attempt in list(self.attempts.values()):
            if attempt.spec.job == job:
                self._kill(attempt)
        slots = self.leases.release_job(job)
        if output_name:  # a cluster output: its temporary files are on our own disk
            output_tmp = os.path.join(catalog.output_dir(self.disk, output_name),
                                      "_temporary", job)
        if output_tmp and os.path.basename(os.path.normpath(output_tmp)) == job:
            shutil.rmtree(output_tmp, ignore_errors=True)
            parent = os.path.dirname(os.path.normpath(output_tmp))
            try:
                os.rmdir(parent)  # _temporary, once no job uses it
            except OSError:
                pass
        return {"released": len(slots)}

    # ------------------------------------------------------------------ attempts

    async def _supervise(self, attempt: RunningAttempt, sock: socket.socket) -> None:
        fields = {**attempt.fields(), "BLFS_NODE": self.name}
        sock.setblocking(False)
        reader, writer = await asyncio.open_unix_connection(sock=sock)
        stream = FrameStream(reader, writer)
        try:
            while True:  # in order: a task's reports must reach the master as it sent them
                answer = await rpc.respond(self.task_handlers, attempt, await stream.read(),
                                           f"task {attempt.id}")
                if answer is not None:
                    await stream.write(answer)
        except (ConnectionClosed, ProtocolError):
            pass
        except Exception:  # a bug of ours: end the attempt, and still reap and report it
            log.exception("supervising %s failed", attempt.id, extra=fields)
            if attempt.failure is None:
                attempt.failure = Failure(kind=FailureKind.CRASHED,
                                          error="its worker could not serve it")
            self._kill(attempt)
            attempt.killed = False  # report the failure above, not a kill by request
        finally:
            await stream.close()
        status = await _wait_exit(attempt.pid)
        self.attempts.pop(attempt.id, None)
        attempt.finished.set()
        if attempt.done is not None and status == 0 and not attempt.killed:
            # its slots stay leased: they hold the output until the job is released
            log.info("%s succeeded", attempt.id, extra=fields)
            await self._tell_master(attempt.id, AttemptState.SUCCEEDED,
                                    Success(result=attempt.done))
            return
        self.leases.release_attempt(attempt.id)
        if attempt.killed:
            info = Failure(kind=FailureKind.KILLED, error="killed")
        elif attempt.failure is not None:
            info = attempt.failure
        else:
            info = Failure(kind=FailureKind.CRASHED,
                           error=f"task process {_describe_status(status)}")
        if info.kind == FailureKind.KILLED:
            log.info("%s killed", attempt.id, extra=fields)
        else:
            log.warning("%s failed (%s): %s", attempt.id, info.kind, info.error, extra=fields)
        await self._tell_master(attempt.id, AttemptState.FAILED, info)

    async def _lease(self, attempt: RunningAttempt) -> dict:
        return {"slot": self.leases.lease(attempt.id)}

    async def _task_ensure_view(self, attempt: RunningAttempt, node: str,
                                generation: int) -> bool:
        await self._ensure_view(node, generation)
        return True

    async def _task_fresh_file(self, attempt: RunningAttempt, node: str, file: str, size: int,
                               crc: Optional[int] = None) -> bool:
        await self._fresh_file(node, file, size, crc)
        return True

    async def _progress(self, attempt: RunningAttempt, progress: float, status: str,
                        counters: dict) -> None:
        await self._tell_master(attempt.id, AttemptState.RUNNING,
                                Progress(progress=progress, status=status, counters=counters))

    def _done(self, attempt: RunningAttempt, result: TaskResult) -> None:
        attempt.done = result

    def _failed(self, attempt: RunningAttempt, kind: FailureKind, error: str,
                info: Optional[dict] = None) -> None:
        attempt.failure = Failure(kind=kind, error=error, info=info or {})

    async def _ensure_view(self, node: str, generation: int) -> None:
        """Remount our view of a peer's disk when its pool generation changed."""
        catalog.check_node(node)
        async with self._view_lock:
            if self._views.get(node) == generation:
                return
            disk = os.path.join(self.config.disks_root, node)
            try:
                await asyncio.get_running_loop().run_in_executor(
                    None, storage.ensure_generation, disk, generation)
            except OSError as exc:
                raise FetchError(f"cannot check the view of {disk}: {exc}") from None
            self._views[node] = generation

    async def fetch(self, peer: rpc.Peer, node: str, file: str, offset: int, length: int,
                    size: int, crc: Optional[int] = None) -> dict:
        """A chunk of a dataset's or output's file on any node, as our view shows it."""
        path = await self._fresh_file(node, file, size, crc)
        loop = asyncio.get_running_loop()
        try:
            data = await loop.run_in_executor(None, datafiles.read_chunk, path, offset,
                                              length)
        except OSError as exc:
            raise FetchError(f"cannot read {path}: {exc.strerror}") from None
        return {"data": data}

    async def _fresh_file(self, node: str, file: str, size: Any, crc: Any) -> str:
        """Our path of a file of cluster storage; for a file a peer wrote after we mounted
        its disk, checked against its record, remounting our view once if need be."""
        path = datafiles.resolve(self.config.disks_root, node, file)
        if node == self.name:
            return path  # our own read-write mount sees what we wrote
        if not isinstance(size, int) or not (crc is None or isinstance(crc, int)):
            raise ProtocolError("fresh_file needs an integer size and crc")
        key = (path, size, crc)
        if key in self._verified:
            return path
        loop = asyncio.get_running_loop()
        if await loop.run_in_executor(None, datafiles.mismatch, path, size, crc):
            await self._remount(node)
            why = await loop.run_in_executor(None, datafiles.mismatch, path, size, crc)
            if why:
                raise FetchError(f"{file} on {node} does not match its record ({size} "
                                 f"bytes, crc {crc}): our view shows {why}, even after a "
                                 "remount")
        self._verified.add(key)
        return path

    async def _remount(self, node: str) -> None:
        """Remount our view of a peer's disk; a busy view (open files) is tried again."""
        disk = os.path.join(self.config.disks_root, node)
        async with self._view_lock:
            await asyncio.get_running_loop().run_in_executor(None, storage.remount, disk, 10)
        log.info("remounted the view of %s to see new files", disk)

    async def _tell_master(self, attempt_id: str, state: AttemptState, info: Message) -> None:
        master = self.master
        if master is None:
            log.info("no master to tell that %s is %s", attempt_id, state)
            return
        try:
            await master.notify("attempt_update", attempt=attempt_id, state=state, info=info)
        except (ConnectionClosed, ProtocolError) as exc:
            log.warning("could not report %s %s to the master: %s", attempt_id, state, exc)


def _inside(path: str, directory: str) -> bool:
    return os.path.realpath(path).startswith(os.path.realpath(directory) + os.sep)


def _task_main(sock: socket.socket, spec: AttemptSpec, env: runtime.TaskEnv,
               worker_pid: int) -> None:
    """Entry of a forked task process. Never returns to the worker's code."""
    code = 1
    try:
        os.setsid()  # own process group, so a kill reaches anything the user started
        try:
            ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
        except (OSError, AttributeError):
            pass
        if os.getppid() != worker_pid:  # the worker died before the line above
            os._exit(1)
        for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGCHLD):
            signal.signal(sig, signal.SIG_DFL)
        signal.set_wakeup_fd(-1)
        keep = sock.fileno()
        os.closerange(3, keep)
        os.closerange(keep + 1, 65536)
        # the worker's journal connection is closed now: the task logs to stderr
        setup_logging("blfs-task", logging.WARNING, stream=sys.stderr)
        sock.setblocking(True)
        code = runtime.run_attempt(spec, env, runtime.Channel(sock))
    except BaseException:
        code = 1
    finally:
        os._exit(code)


async def _wait_exit(pid: int) -> int:
    """Wait for a child without threads: a pidfd becomes readable when it exits."""
    loop = asyncio.get_running_loop()
    try:
        pidfd = os.pidfd_open(pid)
    except ProcessLookupError:
        pidfd = -1
    if pidfd >= 0:
        done = loop.create_future()
        loop.add_reader(pidfd, lambda: done.done() or done.set_result(None))
        try:
            await done
        finally:
            loop.remove_reader(pidfd)
            os.close(pidfd)
    try:
        _, status = os.waitpid(pid, 0)
    except ChildProcessError:
        return -1
    return status


def _describe_status(status: int) -> str:
    if status < 0:
        return "vanished"
    if os.WIFSIGNALED(status):
        sig = os.WTERMSIG(status)
        return f"was killed by signal {sig} ({signal.Signals(sig).name})"
    return f"exited with status {os.WEXITSTATUS(status)} before reporting"


async def serve(config: Config, key: Optional[bytes]) -> None:
    worker = Worker(config, key)
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, worker.stopping.set)
    loop.add_signal_handler(signal.SIGHUP, lambda: asyncio.ensure_future(worker.reload_pool()))
    await worker.run()
