"""The master daemon: accepts jobs, drives the scheduler, talks to every worker."""
from __future__ import annotations

import asyncio
import logging
import os
import secrets
import shutil
import signal
import socket
import time
from dataclasses import dataclass, field
from typing import Any, Optional

from . import catalog as cat, rpc, scheduler as sch, storage
from .catalog import DATASETS, OUTPUTS, Catalog
from .config import MASTER_PORT, WORKER_PORT, Config, Node
from .errors import BlfsError, Conflict, ConnectionClosed, NotFound, ProtocolError
from .messages import (FINISHED, AttemptState, Failure, FailureKind, JobSpec, JobState,
                       Progress, Success)
from .state import JobStore
from .systemd import Notifier, listen_fds
from .transport import format_address, parse_address

log = logging.getLogger("blfs.master")

TICK = 0.2
USAGE = ("free_slots", "disk_free", "disk_bytes")  # what a worker's pong refreshes


@dataclass
class Put:
    """A `blfs put` in progress: where each split goes, and what has been stored."""
    name: str
    client: rpc.Peer
    nodes: list
    stored: dict = field(default_factory=dict)  # index -> {node, path, size, crc}


def new_job_id() -> str:
    return time.strftime("%Y%m%d-%H%M%S-") + secrets.token_hex(2)


class Master:
    def __init__(self, config: Config, key: Optional[bytes], name: str = "master"):
        self.config = config
        self.key = key
        self.name = name
        self.sched = sch.Scheduler(sch.Settings(
            max_attempts=config.max_attempts, task_timeout=config.task_timeout,
            speculation=config.speculation), epoch=secrets.token_hex(3))
        self.peers: dict[str, rpc.Peer] = {}
        self.history: dict[str, dict] = {}  # finished jobs from before a restart
        self.store = JobStore(config.state_dir)
        self.catalog = Catalog(config.state_dir)
        self.puts: dict[str, Put] = {}
        self.notifier = Notifier()
        self.changed = asyncio.Condition()
        self.stopping = asyncio.Event()
        self._tasks: set = set()
        self._loops: set = set()  # tasks that run for the master's whole life
        self.servers: list = []
        self.unix_path: Optional[str] = None
        self.tcp_address: Optional[str] = None
        self.client_handlers = {
            "ping": rpc.ping, "submit": self.submit, "status": self.status,
            "jobs": self.list_jobs, "workers": self.list_workers, "cancel": self.cancel,
            "wait": self.wait, "put_begin": self.put_begin, "put_data": self.put_data,
            "put_end": self.put_end, "put_abort": self.put_abort, "dataset": self.dataset,
            "output": self.output, "read": self.read, "ls": self.ls, "remove": self.remove}
        self.worker_handlers = {"ping": rpc.ping, "attempt_update": self.attempt_update,
                                "pool_changed": self.pool_changed}

    # ------------------------------------------------------------------ start/stop

    async def start(self, listen_unix: bool = True, listen_tcp: bool = True) -> None:
        self._restore()
        activated = listen_fds()
        if activated:
            for _, sock in activated:
                await self._serve_socket(sock)
        else:
            if listen_unix and self.config.master_socket:
                await self._serve_socket(_bind_unix(self.config.master_socket))
            if listen_tcp and self.config.master_listen:
                host, port = parse_address(self.config.master_listen, MASTER_PORT)
                await self._serve_socket(socket.create_server((host, port)))
        for node in self.config.nodes:
            self._loops.add(self._spawn(self._link(node)))
        self._loops.add(self._spawn(self._ticker()))
        log.info("master ready: %d workers configured", len(self.config.nodes))
        self.notifier.notify("READY=1", f"STATUS={self.status_line()}")

    async def _serve_socket(self, sock: socket.socket) -> None:
        sock.setblocking(False)
        if sock.family == socket.AF_UNIX:
            server = await asyncio.start_unix_server(self._on_connect, sock=sock)
            self.unix_path = sock.getsockname()
        else:
            server = await asyncio.start_server(self._on_connect, sock=sock)
            host, port = sock.getsockname()[:2]
            self.tcp_address = format_address(host, port)
        self.servers.append(server)

    def cancel_all(self, why: str) -> None:
        """End every job that is not finished (the embedded cluster is going away)."""
        for job_id, job in list(self.sched.jobs.items()):
            if job.state not in FINISHED:
                log.warning("cancelling job %s: %s", job_id, why, extra={"BLFS_JOB": job_id})
                self.execute(self.sched.cancel(job_id, time.monotonic()), reschedule=False)

    async def stop(self) -> None:
        self.notifier.notify("STOPPING=1")
        self.stopping.set()
        for server in self.servers:
            server.close()
        # let in-flight messages (kills, releases) reach the workers before we hang up
        pending = [t for t in self._tasks if t not in self._loops]
        if pending:
            await asyncio.wait(pending, timeout=2.0)
        for task in list(self._tasks):
            task.cancel()
        for peer in list(self.peers.values()):
            await peer.close()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    def _spawn(self, coro: Any) -> asyncio.Task:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    def status_line(self) -> str:
        alive = sum(1 for w in self.sched.workers.values() if w.alive)
        running = [j for j in self.sched.jobs.values() if j.state not in FINISHED]
        tasks = [t for j in running for t in j.tasks()]
        done = sum(1 for t in tasks if t.state == "succeeded")
        return (f"{alive} workers, {len(running)} job{'s' if len(running) != 1 else ''} "
                f"running, {done}/{len(tasks)} tasks done")

    # ------------------------------------------------------------------ persistence

    def _restore(self) -> None:
        """Re-run every job a previous master accepted but did not finish."""
        for record in self.store.load_all():
            job_id = record["job"]
            if record.get("status"):
                self.history[job_id] = record["status"]
                continue
            log.warning("resuming job %s accepted before a restart", job_id,
                        extra={"BLFS_JOB": job_id})
            try:
                spec = JobSpec.from_wire(record["spec"], f"job record {job_id}")
            except ProtocolError as exc:
                log.error("cannot resume job %s: %s", job_id, exc, extra={"BLFS_JOB": job_id})
                continue
            self.sched.submit(job_id, spec, time.monotonic())

    def _persist(self, job_id: str) -> None:
        job = self.sched.jobs[job_id]
        record: dict = {"job": job_id, "spec": job.spec.to_wire(), "submitted": job.submitted}
        if job.state in FINISHED:
            record["status"] = self.sched.job_status(job_id)
            del record["spec"]["source"]
        try:
            self.store.save(job_id, record)
        except OSError as exc:
            log.error("cannot save the state of job %s: %s", job_id, exc,
                      extra={"BLFS_JOB": job_id})

    # ------------------------------------------------------------------ workers

    async def _link(self, node: Node) -> None:
        """Keep one connection to a worker: dial, sync, heartbeat, and re-dial when lost."""
        delay, said = 0.1, False
        while not self.stopping.is_set():
            try:
                peer, hello = await rpc.connect(node.address, self.key, "master", self.name,
                                                handler=self.worker_handlers,
                                                default_port=WORKER_PORT)
            except (BlfsError, OSError) as exc:
                if not said:
                    log.warning("cannot reach worker %s at %s: %s", node.name, node.address,
                                exc, extra={"BLFS_NODE": node.name})
                    said = True
                await asyncio.sleep(delay)
                delay = min(delay * 2, 5.0)
                continue
            said, delay = False, 0.1
            if hello.get("name") != node.name:
                log.error("%s answers as %r, not %r", node.address, hello.get("name"),
                          node.name)
                await peer.close()
                await asyncio.sleep(5)
                continue
            serving = asyncio.ensure_future(peer.serve())
            try:
                info = await peer.call("sync", limit=10,
                                       held=[list(h) for h in self.sched.held_slots(node.name)])
            except (BlfsError, asyncio.TimeoutError) as exc:
                log.warning("worker %s did not sync: %s", node.name, exc)
                await peer.close()
                await serving
                continue
            self.peers[node.name] = peer
            log.info("worker %s up: %s slots free, parallelism %s", node.name,
                     info.get("free_slots"), info.get("parallelism"),
                     extra={"BLFS_NODE": node.name})
            self.execute(self.sched.worker_up(node.name, int(info.get("parallelism", 1)), info))
            beat = asyncio.ensure_future(self._heartbeat(node.name, peer))
            await serving
            beat.cancel()
            if self.peers.get(node.name) is peer:
                del self.peers[node.name]
            if not self.stopping.is_set():
                log.warning("worker %s lost", node.name, extra={"BLFS_NODE": node.name})
                self.execute(self.sched.worker_down(node.name, time.monotonic()))
                await asyncio.sleep(delay)

    async def _heartbeat(self, name: str, peer: rpc.Peer) -> None:
        while not peer.closed.is_set():
            await asyncio.sleep(self.config.heartbeat_interval)
            try:
                pong = await peer.call("ping", limit=self.config.heartbeat_timeout,
                                       time=time.time())
                worker = self.sched.workers.get(name)
                if worker is not None and isinstance(pong, dict):
                    worker.info.update({k: pong[k] for k in USAGE if k in pong})
            except asyncio.TimeoutError:
                log.warning("worker %s missed its heartbeat", name, extra={"BLFS_NODE": name})
                await peer.close()
                return
            except BlfsError:
                return

    def pool_changed(self, peer: rpc.Peer, generation: int, slots: int) -> None:
        worker = self.sched.workers.get(peer.name)
        if worker is not None:
            worker.info.update(generation=generation, slots=slots)
        log.warning("worker %s announces pool generation %d (%d slots)", peer.name,
                    generation, slots, extra={"BLFS_NODE": peer.name})

    async def attempt_update(self, peer: rpc.Peer, attempt: str, state: AttemptState,
                             info: Optional[dict] = None) -> None:
        info = info or {}
        a = self.sched.attempts.get(attempt)
        if a is not None and a.worker != peer.name:
            raise ProtocolError(f"{attempt} does not run on {peer.name}")
        now = time.monotonic()
        if state == AttemptState.RUNNING:
            p = Progress.from_wire(info, "attempt_update: info")
            self.sched.attempt_progress(attempt, now, float(p.progress), p.status, p.counters)
            await self._changed()
        elif state == AttemptState.SUCCEEDED:
            result = Success.from_wire(info, "attempt_update: info").result
            self.execute(self.sched.attempt_succeeded(attempt, result, now))
        elif state == AttemptState.FAILED:
            failure = Failure.from_wire(info, "attempt_update: info")
            if a is not None and failure.kind != FailureKind.KILLED:
                log.warning("attempt %s failed on %s (%s): %s", attempt, peer.name,
                            failure.kind, failure.error, extra=_fields(a))
            self.execute(self.sched.attempt_failed(attempt, failure.kind, failure.error, now,
                                                   failure.info))
        else:
            raise ProtocolError(f"unknown attempt state {state!r}")

    # ------------------------------------------------------------------ actions

    def execute(self, actions: list, reschedule: bool = True) -> None:
        """Carry out the scheduler's decisions. Never blocks; I/O goes to tasks."""
        if reschedule:
            actions = actions + self.sched.schedule(time.monotonic())
        for action in actions:
            if isinstance(action, sch.Launch):
                self._spawn(self._launch(action))
            elif isinstance(action, sch.Kill):
                self._spawn(self._send(action.worker, "kill", attempt=action.attempt))
            elif isinstance(action, sch.Commit):
                self._spawn(self._commit(action))
            elif isinstance(action, sch.Release):
                self._release(action)
            elif isinstance(action, sch.JobEnded):
                self._job_ended(action)
        if actions:
            self._spawn(self._changed())

    async def _changed(self) -> None:
        self.notifier.status(self.status_line())
        async with self.changed:
            self.changed.notify_all()

    async def _launch(self, action: sch.Launch) -> None:
        spec = action.attempt
        peer = self.peers.get(action.worker)
        log.info("launching %s on %s", spec.id, action.worker,
                 extra={"BLFS_JOB": spec.job, "BLFS_TASK": spec.task,
                        "BLFS_ATTEMPT": spec.attempt, "BLFS_NODE": action.worker})
        try:
            if peer is None:
                raise ConnectionClosed(f"worker {action.worker} is not connected")
            await peer.call("launch", limit=30, attempt=spec)
        except (ConnectionClosed, asyncio.TimeoutError) as exc:
            # it may have started all the same: make sure it does not run beside its retry
            self._spawn(self._send(action.worker, "kill", attempt=spec.id))
            self.execute(self.sched.attempt_failed(spec.id, FailureKind.LOST,
                                                   f"launch failed: {exc or 'timeout'}",
                                                   time.monotonic()))
        except BlfsError as exc:  # refused by the worker, or too big to send
            self.execute(self.sched.attempt_failed(spec.id, FailureKind.CRASHED,
                                                   f"launch failed: {exc}", time.monotonic()))

    async def _send(self, worker: str, op: str, **fields: Any) -> Any:
        peer = self.peers.get(worker)
        if peer is None:
            return None
        try:
            return await peer.call(op, limit=30, **fields)
        except (BlfsError, asyncio.TimeoutError) as exc:
            log.warning("%s to %s failed: %s", op, worker, exc)
            return None

    async def _commit(self, action: sch.Commit) -> None:
        """Move every part into place, then mark the output complete: _SUCCESS, or for a
        cluster output its record in the catalog."""
        job = self.sched.jobs[action.job]
        output, name = job.spec.output, job.spec.output_name
        done: list = []
        try:
            for worker, _, source, target in action.parts:
                done.append((worker, target))  # before: a timed-out rename may have happened
                await self._on_worker(worker, "commit", None if name else _rename,
                                      source, target, source=source, target=target)
            if name:
                self._record_output(job, name, action.parts)
            else:
                # _SUCCESS by a worker too: the master may have a read-only view of outputs
                last = action.parts[-1][0] if action.parts else ""
                await self._on_worker(last, "success", storage.write_success, output,
                                      output=output)
        except (BlfsError, OSError, asyncio.TimeoutError) as exc:
            for worker, target in done:
                try:
                    await self._on_worker(worker, "uncommit", None if name else _unlink,
                                          target, target=target)
                except (BlfsError, OSError, asyncio.TimeoutError):
                    log.error("could not take back %s after a failed commit", target)
            log.error("commit of job %s failed: %s", action.job, exc,
                      extra={"BLFS_JOB": action.job})
            self.execute(self.sched.commit_failed(action.job, str(exc), time.monotonic()))
            return
        self.execute(self.sched.commit_done(action.job, time.monotonic()))

    def _record_output(self, job: sch.ScheduledJob, name: str, parts: list) -> None:
        """A cluster output is complete once the catalog says where each part is."""
        files = []
        for task, (worker, _, _, _) in zip(job.reduces, parts):
            result = task.result
            files.append({"partition": task.index, "node": worker, "file": result.file,
                          "size": result.size or 0, "crc": result.crc})
        self.catalog.add(OUTPUTS, name, {"job": job.id, "parts": files})
        log.info("output %s recorded: %d parts", name, len(files), extra={"BLFS_JOB": job.id})

    async def _on_worker(self, worker: str, op: str, fallback: Any, *args: Any,
                         **fields: Any) -> None:
        """An output operation on the worker that holds the file; here, if it is gone
        and the file system is shared with us (--local, or a shared output directory)."""
        peer = self.peers.get(worker)
        if peer is not None:
            await peer.call(op, limit=30, **fields)
        elif fallback is not None:
            fallback(*args)
        else:
            raise ConnectionClosed(f"worker {worker} is not connected")

    def _release(self, action: sch.Release) -> None:
        job = self.sched.jobs[action.job]
        name = job.spec.output_name
        # a cluster output's temporary files are on each worker's own disk: they know where
        tmp = None if name else os.path.join(job.spec.output, "_temporary", job.id)
        self._spawn(self._release_everywhere(job.id, action.workers, tmp, name))

    async def _release_everywhere(self, job_id: str, workers: list, tmp: Optional[str],
                                  name: Optional[str]) -> None:
        """Workers kill the job's attempts and free its slots; then no one writes to tmp."""
        results = await asyncio.gather(*(self._send(w, "release_job", job=job_id,
                                                    output_tmp=tmp, output_name=name)
                                         for w in workers))
        for worker, result in zip(workers, results):
            peer = self.peers.get(worker)
            if result is None and peer is not None:
                # its leases would leak: reconnect, and the sync rebuilds its lease table
                log.warning("worker %s did not release job %s; reconnecting", worker, job_id)
                await peer.close()
        if tmp is None:
            return
        shutil.rmtree(tmp, ignore_errors=True)  # what a lost worker could not remove
        try:
            os.rmdir(os.path.dirname(tmp))
        except OSError:
            pass

    def _job_ended(self, action: sch.JobEnded) -> None:
        job = self.sched.jobs[action.job]
        elapsed = (job.finished - job.started) if job.started else 0.0
        level = logging.INFO if action.state == JobState.SUCCEEDED else logging.WARNING
        log.log(level, "job %s %s after %.2f s%s", action.job, action.state, elapsed,
                f": {action.error}" if action.error else "", extra={"BLFS_JOB": action.job})
        self._persist(action.job)
        for name in job.spec.temp_datasets:  # put by submit for this job only
            if self.catalog.has(DATASETS, name):
                self._spawn(self._remove(DATASETS, name))

    async def _ticker(self) -> None:
        watchdog = Notifier.watchdog_interval()
        last_ping = 0.0
        while not self.stopping.is_set():
            await asyncio.sleep(TICK)
            self.execute(self.sched.tick(time.monotonic()), reschedule=False)
            self.notifier.status(self.status_line())  # sent only when it changed
            if watchdog and time.monotonic() - last_ping >= watchdog:
                self.notifier.notify("WATCHDOG=1")
                last_ping = time.monotonic()

    # ------------------------------------------------------------------ clients

    async def _on_connect(self, reader: asyncio.StreamReader,
                          writer: asyncio.StreamWriter) -> None:
        peer = await rpc.accept_connection(reader, writer, self.key, "master", self.name,
                                           self.client_handlers, self.config.group)
        if peer is not None:
            await peer.serve()
            for token, put in list(self.puts.items()):
                if put.client is peer:  # the client went away in the middle of a put
                    await self.put_abort(peer, token)

    def cancel(self, peer: rpc.Peer, job: str) -> dict:
        self._job(job)
        self.execute(self.sched.cancel(job, time.monotonic()))
        return self.status(peer, job)

    # ------------------------------------------------------------------ cluster storage

    def _connected(self) -> list:
        """Connected workers, the roomiest disk first."""
        names = [n for n in sorted(self.peers) if n in self.sched.workers
                 and self.sched.workers[n].alive]
        return sorted(names, key=lambda n: -(self.sched.workers[n].info.get("disk_free") or 0))

    async def put_begin(self, peer: rpc.Peer, name: str, splits: int, size: int) -> dict:
        """Where each split of a new dataset goes: spread over the workers, roomiest first."""
        cat.check_name(name)
        if self.catalog.has(DATASETS, name) or any(p.name == name for p in self.puts.values()):
            raise Conflict(f"dataset {name!r} already exists (blfs rm {name} first)")
        if not 1 <= splits <= 100_000:
            raise ProtocolError("put_begin: splits must be from 1 to 100000")
        nodes = self._connected()
        if not nodes:
            raise ConnectionClosed("no worker is connected to the master")
        token = secrets.token_hex(8)
        self.puts[token] = Put(name, peer, [nodes[i % len(nodes)] for i in range(splits)])
        log.info("put %s: %d splits, %d bytes on %s", name, splits, size,
                 ", ".join(sorted(set(self.puts[token].nodes))))
        return {"put": token, "nodes": self.puts[token].nodes}

    def _put(self, peer: rpc.Peer, token: str) -> Put:
        put = self.puts.get(token)
        if put is None or put.client is not peer:
            raise NotFound("no such put in progress on this connection")
        return put

    async def put_data(self, peer: rpc.Peer, put: str, index: int, offset: int, data: bytes,
                       last: bool) -> Optional[dict]:
        session = self._put(peer, put)
        if not 0 <= index < len(session.nodes):
            raise ProtocolError(f"put_data: no split {index}")
        node = session.nodes[index]
        worker = self.peers.get(node)
        if worker is None:
            raise ConnectionClosed(f"worker {node} went away during the put")
        stored = await worker.call("store", limit=60, name=session.name, index=index,
                                   offset=offset, data=data, last=last)
        if self.puts.get(put) is not session:  # abandoned while this chunk was on its way
            await self._send(node, "abort_put", name=session.name)
            raise Conflict(f"the put of {session.name} was abandoned")
        if last:
            session.stored[index] = dict(stored, node=node)
        return None

    async def put_end(self, peer: rpc.Peer, put: str) -> dict:
        session = self._put(peer, put)
        if len(session.stored) != len(session.nodes):
            raise ProtocolError(f"put_end: {len(session.nodes) - len(session.stored)} "
                                "splits are not complete")
        del self.puts[put]
        splits = [session.stored[i] for i in range(len(session.nodes))]
        entry = self.catalog.add(DATASETS, session.name, {"splits": splits})
        log.info("dataset %s stored: %d splits, %d bytes", session.name, len(splits),
                 sum(s["size"] for s in splits))
        return entry

    async def put_abort(self, peer: rpc.Peer, put: str) -> None:
        session = self._put(peer, put)
        del self.puts[put]
        log.warning("put of %s abandoned; removing what was stored", session.name)
        await asyncio.gather(*(self._send(n, "abort_put", name=session.name)
                               for n in sorted(set(session.nodes))))

    async def dataset(self, peer: rpc.Peer, name: str) -> dict:
        return self.catalog.get(DATASETS, name)

    async def output(self, peer: rpc.Peer, name: str) -> dict:
        return self.catalog.get(OUTPUTS, name)

    async def read(self, peer: rpc.Peer, name: str, part: int, offset: int,
                   length: int) -> dict:
        """A chunk of an output's part, from its node, or through a peer's view of its disk
        when that node is down (the disk outlives its worker)."""
        parts = self.catalog.get(OUTPUTS, name)["parts"]
        if not 0 <= part < len(parts):
            raise NotFound(f"output {name} has no part {part}")
        f = parts[part]
        readers = [f["node"]] if f["node"] in self.peers else self._connected()
        last: Exception = ConnectionClosed("no worker is connected to the master")
        for node in readers:
            try:
                return await self.peers[node].call(
                    "fetch", limit=60, node=f["node"], file=f["file"], offset=offset,
                    length=length, size=f["size"], crc=f.get("crc"))
            except (BlfsError, asyncio.TimeoutError, KeyError) as exc:
                last = exc
        raise last if isinstance(last, BlfsError) else ConnectionClosed(str(last))

    async def ls(self, peer: rpc.Peer) -> list:
        return self.catalog.listing()

    async def remove(self, peer: rpc.Peer, name: str) -> dict:
        """Forget a dataset or output and delete its files (`blfs rm`)."""
        kind = DATASETS if self.catalog.has(DATASETS, name) else OUTPUTS
        entry = self.catalog.get(kind, name)
        for job in self.sched.jobs.values():
            if job.state not in FINISHED and name in job.spec.datasets + \
                    [job.spec.output_name]:
                raise Conflict(f"job {job.id} uses {name}")
        return await self._remove(kind, name, entry)

    async def _remove(self, kind: str, name: str, entry: Optional[dict] = None) -> dict:
        entry = entry or self.catalog.get(kind, name)
        self.catalog.remove(kind, name)
        files = entry.get("splits") or entry.get("parts") or []
        nodes = sorted({f["node"] for f in files})
        results = await asyncio.gather(*(self._send(n, "drop", kind=kind, name=name)
                                         for n in nodes))
        left = [n for n, r in zip(nodes, results) if r is None]
        if left:
            log.warning("%s removed, but its files stay on %s (not connected)", name,
                        ", ".join(left))
        return {"name": name, "kind": kind, "nodes": nodes, "left_on": left}

    def _job(self, job_id: str) -> sch.ScheduledJob:
        job = self.sched.jobs.get(job_id)
        if job is None:
            raise NotFound(f"no job {job_id[:80]}")
        return job

    def submit(self, peer: rpc.Peer, spec: JobSpec) -> dict:
        output = spec.output
        if spec.output_name:
            if self.catalog.has(OUTPUTS, output):
                raise Conflict(f"output {output} already exists (blfs rm {output} first)")
        elif os.path.exists(os.path.join(output, "_SUCCESS")):
            raise Conflict(f"output {output} already holds a finished job's _SUCCESS")
        for other in self.sched.jobs.values():
            if other.state not in FINISHED and other.spec.output == output:
                raise Conflict(f"job {other.id} is already writing to {output}")
        if not spec.reducers:
            alive = sum(1 for w in self.sched.workers.values() if w.alive)
            spec = spec.replace(reducers=self.config.default_reducers or max(1, alive))
        job_id = new_job_id()
        # wall clock: survives a restart, orders jobs
        spec = spec.replace(submitted_at=time.time())
        job = self.sched.submit(job_id, spec, time.monotonic())
        self._persist(job_id)
        log.info("accepted job %s (%s): %d maps, %d reduces, output %s", job_id,
                 spec.name, len(job.maps), len(job.reduces), output,
                 extra={"BLFS_JOB": job_id})
        self.execute([])
        return {"job": job_id, "status": self.sched.job_status(job_id)}

    def status(self, peer: rpc.Peer, job: Optional[str] = None) -> dict:
        job_id = job
        if job_id is None:
            return {"status": self.status_line(), "jobs": self.list_jobs(peer),
                    "workers": self.list_workers(peer)}
        if job_id in self.history and job_id not in self.sched.jobs:
            return self.history[job_id]
        self._job(job_id)
        return self.sched.job_status(job_id)

    def list_jobs(self, peer: rpc.Peer) -> list:
        rows = [dict(s, counters=None) for s in self.history.values()]
        for job in sorted(self.sched.jobs.values(), key=lambda j: j.submitted):
            s = self.sched.job_status(job.id)
            rows.append({k: s[k] for k in ("job", "name", "state", "maps", "reduces",
                                           "progress", "error", "output")})
        return rows

    def list_workers(self, peer: rpc.Peer) -> list:
        return [{"name": w.name, "alive": w.alive, "parallelism": w.parallelism,
                 "running": len(w.running), "info": w.info}
                for w in sorted(self.sched.workers.values(), key=lambda w: w.name)]

    async def wait(self, peer: rpc.Peer, job: str, version: int,
                   timeout: Optional[float] = None) -> dict:
        """Long poll: the job's status as soon as it differs from `version`."""
        timeout = timeout or 30
        if not 0 < timeout <= 60:  # also refuses NaN
            raise ProtocolError("wait: timeout must be in (0, 60]")
        job_id = job
        job = self._job(job_id)
        deadline = time.monotonic() + min(timeout, 60.0)
        async with self.changed:
            while job.version == version and job.state not in FINISHED:
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                try:
                    await asyncio.wait_for(self.changed.wait(), left)
                except asyncio.TimeoutError:
                    break
        return self.sched.job_status(job_id)


def _fields(a: sch.Attempt) -> dict:
    return {"BLFS_JOB": a.task.job.id, "BLFS_TASK": a.task.name, "BLFS_ATTEMPT": a.number,
            "BLFS_NODE": a.worker}


def _bind_unix(path: str) -> socket.socket:
    """Our own Unix socket (when not socket-activated): replace a stale one, keep 0660."""
    os.makedirs(os.path.dirname(path), exist_ok=True)
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    old = os.umask(0o117)
    try:
        sock.bind(path)
    finally:
        os.umask(old)
    sock.listen(64)
    return sock


def _unlink(path: str) -> None:
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass


def _rename(source: str, target: str) -> None:
    os.rename(source, target)


async def serve(config: Config, key: Optional[bytes]) -> None:
    master = Master(config, key)
    loop = asyncio.get_running_loop()
    done = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, done.set)
    await master.start()
    await done.wait()
    await master.stop()
