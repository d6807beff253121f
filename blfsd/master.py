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
from typing import Any, Optional

from . import rpc, scheduler as sch
from .config import MASTER_PORT, WORKER_PORT, Config, Node
from .errors import BlfsError, Conflict, ConnectionClosed, NotFound, ProtocolError
from .state import JobStore
from .systemd import Notifier, listen_fds
from .transport import format_address, parse_address

log = logging.getLogger("blfs.master")

TICK = 0.2


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
        self.notifier = Notifier()
        self.changed = asyncio.Condition()
        self.stopping = asyncio.Event()
        self._tasks: set = set()
        self._loops: set = set()  # tasks that run for the master's whole life
        self.servers: list = []
        self.unix_path: Optional[str] = None
        self.tcp_address: Optional[str] = None

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
            if job.state not in sch.FINISHED:
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
        running = [j for j in self.sched.jobs.values() if j.state not in sch.FINISHED]
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
            self.sched.submit(job_id, record["spec"], time.monotonic())

    def _persist(self, job_id: str) -> None:
        job = self.sched.jobs[job_id]
        record: dict = {"job": job_id, "spec": job.spec, "submitted": job.submitted}
        if job.state in sch.FINISHED:
            record["status"] = self.sched.job_status(job_id)
            record["spec"] = {k: v for k, v in job.spec.items() if k != "source"}
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
                                                handler=self._from_worker,
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
                                       held=[list(h) for h in self.sched.held_slots(node.name)],
                                       generation_of={})
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
                    worker.info["free_slots"] = pong.get("free_slots")
            except asyncio.TimeoutError:
                log.warning("worker %s missed its heartbeat", name, extra={"BLFS_NODE": name})
                await peer.close()
                return
            except BlfsError:
                return

    async def _from_worker(self, peer: rpc.Peer, msg: dict) -> Any:
        if msg["op"] == "ping":
            return {"time": time.time()}
        if msg["op"] == "pool_changed":
            worker = self.sched.workers.get(peer.name)
            if worker is not None:
                worker.info.update(generation=msg["generation"], slots=msg["slots"])
            log.warning("worker %s announces pool generation %d (%d slots)", peer.name,
                        msg["generation"], msg["slots"], extra={"BLFS_NODE": peer.name})
            return None
        if msg["op"] != "attempt_update":
            raise ProtocolError(f"a master does not take {msg['op']!r} from a worker")
        attempt, state, info = msg["attempt"], msg["state"], msg.get("info") or {}
        a = self.sched.attempts.get(attempt)
        if a is not None and a.worker != peer.name:
            raise ProtocolError(f"{attempt} does not run on {peer.name}")
        now = time.monotonic()
        if state == "running":
            counters = info.get("counters")
            self.sched.attempt_progress(attempt, now, float(info.get("progress", 0) or 0),
                                        str(info.get("status", "")),
                                        counters if isinstance(counters, dict) else None)
            await self._changed()
        elif state == "succeeded":
            result = info.get("result")
            if not isinstance(result, dict):
                raise ProtocolError("a succeeded attempt needs a result")
            self.execute(self.sched.attempt_succeeded(attempt, result, now))
        elif state == "failed":
            kind = str(info.get("kind", sch.CRASHED))
            error = str(info.get("error", ""))
            if a is not None and kind != sch.KILLED:
                log.warning("attempt %s failed on %s (%s): %s", attempt, peer.name, kind,
                            error, extra=_fields(a))
            self.execute(self.sched.attempt_failed(attempt, kind, error, now,
                                                   info.get("info") or {}))
        else:
            raise ProtocolError(f"unknown attempt state {state!r}")
        return None

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
        job = self.sched.jobs[spec["job"]]
        full = dict(spec)
        for field in ("source", "job_file", "class", "args", "input_format", "output"):
            full[field] = job.spec[field]
        full["reducers"] = len(job.reduces)
        peer = self.peers.get(action.worker)
        log.info("launching %s on %s", spec["id"], action.worker,
                 extra={"BLFS_JOB": spec["job"], "BLFS_TASK": spec["task"],
                        "BLFS_ATTEMPT": spec["attempt"], "BLFS_NODE": action.worker})
        try:
            if peer is None:
                raise ConnectionClosed(f"worker {action.worker} is not connected")
            await peer.call("launch", limit=30, attempt=full)
        except (ConnectionClosed, asyncio.TimeoutError) as exc:
            # it may have started all the same: make sure it does not run beside its retry
            self._spawn(self._send(action.worker, "kill", attempt=spec["id"]))
            self.execute(self.sched.attempt_failed(spec["id"], sch.LOST,
                                                   f"launch failed: {exc or 'timeout'}",
                                                   time.monotonic()))
        except BlfsError as exc:  # refused by the worker, or too big to send
            self.execute(self.sched.attempt_failed(spec["id"], sch.CRASHED,
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
        """Move every part into place, then write _SUCCESS: the job's output is final."""
        job = self.sched.jobs[action.job]
        output = job.spec["output"]
        done: list = []
        try:
            for worker, attempt, source, target in action.parts:
                done.append((worker, target))  # before: a timed-out rename may have happened
                await self._on_worker(worker, "commit", _rename, source, target,
                                      attempt=attempt, source=source, target=target)
            # _SUCCESS by a worker too: the master may run with a read-only view of outputs
            last = action.parts[-1][0] if action.parts else ""
            await self._on_worker(last, "success", _write_success, output, output=output)
        except (BlfsError, OSError, asyncio.TimeoutError) as exc:
            for worker, target in done:
                try:
                    await self._on_worker(worker, "uncommit", _unlink, target, target=target)
                except (BlfsError, OSError, asyncio.TimeoutError):
                    log.error("could not take back %s after a failed commit", target)
            log.error("commit of job %s failed: %s", action.job, exc,
                      extra={"BLFS_JOB": action.job})
            self.execute(self.sched.commit_failed(action.job, str(exc), time.monotonic()))
            return
        self.execute(self.sched.commit_done(action.job, time.monotonic()))

    async def _on_worker(self, worker: str, op: str, fallback: Any, *args: Any,
                         **fields: Any) -> None:
        """An output operation on the worker that holds the file; here, if it is gone
        and the file system is shared with us (--local, or a shared output directory)."""
        peer = self.peers.get(worker)
        if peer is not None:
            await peer.call(op, limit=30, **fields)
        else:
            fallback(*args)

    def _release(self, action: sch.Release) -> None:
        job = self.sched.jobs[action.job]
        tmp = os.path.join(job.spec["output"], "_temporary", job.id)
        self._spawn(self._release_everywhere(job.id, action.workers, tmp))

    async def _release_everywhere(self, job_id: str, workers: list, tmp: str) -> None:
        """Workers kill the job's attempts and free its slots; then no one writes to tmp."""
        results = await asyncio.gather(*(self._send(w, "release_job", job=job_id,
                                                    output_tmp=tmp) for w in workers))
        for worker, result in zip(workers, results):
            peer = self.peers.get(worker)
            if result is None and peer is not None:
                # its leases would leak: reconnect, and the sync rebuilds its lease table
                log.warning("worker %s did not release job %s; reconnecting", worker, job_id)
                await peer.close()
        shutil.rmtree(tmp, ignore_errors=True)  # what a lost worker could not remove
        try:
            os.rmdir(os.path.dirname(tmp))
        except OSError:
            pass

    def _job_ended(self, action: sch.JobEnded) -> None:
        job = self.sched.jobs[action.job]
        elapsed = (job.finished - job.started) if job.started else 0.0
        level = logging.INFO if action.state == sch.SUCCEEDED else logging.WARNING
        log.log(level, "job %s %s after %.2f s%s", action.job, action.state, elapsed,
                f": {action.error}" if action.error else "", extra={"BLFS_JOB": action.job})
        self._persist(action.job)

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
                                           self._from_client, self.config.group)
        if peer is not None:
            await peer.serve()

    async def _from_client(self, peer: rpc.Peer, msg: dict) -> Any:
        op = msg["op"]
        if op == "ping":
            return {"time": time.time()}
        if op == "submit":
            return self.submit(msg["spec"])
        if op == "status":
            return self.status(msg.get("job"))
        if op == "jobs":
            return self.list_jobs()
        if op == "workers":
            return self.list_workers()
        if op == "cancel":
            self._job(msg["job"])
            self.execute(self.sched.cancel(msg["job"], time.monotonic()))
            return self.status(msg["job"])
        if op == "wait":
            timeout = msg.get("timeout") or 30
            if not 0 < timeout <= 60:  # also refuses NaN
                raise ProtocolError("wait: timeout must be in (0, 60]")
            return await self.wait(msg["job"], msg["version"], float(timeout))
        raise ProtocolError(f"a master does not serve {op!r} to clients")

    def _job(self, job_id: str) -> sch.JobState:
        job = self.sched.jobs.get(job_id)
        if job is None:
            raise NotFound(f"no job {job_id[:80]}")
        return job

    def submit(self, spec: dict) -> dict:
        spec = _check_spec(spec)
        output = spec["output"]
        if os.path.exists(os.path.join(output, "_SUCCESS")):
            raise Conflict(f"output {output} already holds a finished job's _SUCCESS")
        for other in self.sched.jobs.values():
            if other.state not in sch.FINISHED and other.spec["output"] == output:
                raise Conflict(f"job {other.id} is already writing to {output}")
        if not spec.get("reducers"):
            alive = sum(1 for w in self.sched.workers.values() if w.alive)
            spec["reducers"] = self.config.default_reducers or max(1, alive)
        job_id = new_job_id()
        spec["submitted_at"] = time.time()  # wall clock: survives a restart, orders jobs
        job = self.sched.submit(job_id, spec, time.monotonic())
        self._persist(job_id)
        log.info("accepted job %s (%s): %d maps, %d reduces, output %s", job_id,
                 spec.get("name"), len(job.maps), len(job.reduces), output,
                 extra={"BLFS_JOB": job_id})
        self.execute([])
        return {"job": job_id, "status": self.sched.job_status(job_id)}

    def status(self, job_id: Optional[str]) -> dict:
        if job_id is None:
            return {"status": self.status_line(), "jobs": self.list_jobs(),
                    "workers": self.list_workers()}
        if job_id in self.history and job_id not in self.sched.jobs:
            return self.history[job_id]
        self._job(job_id)
        return self.sched.job_status(job_id)

    def list_jobs(self) -> list:
        rows = [dict(s, counters=None) for s in self.history.values()]
        for job in sorted(self.sched.jobs.values(), key=lambda j: j.submitted):
            s = self.sched.job_status(job.id)
            rows.append({k: s[k] for k in ("job", "name", "state", "maps", "reduces",
                                           "progress", "error", "output")})
        return rows

    def list_workers(self) -> list:
        return [{"name": w.name, "alive": w.alive, "parallelism": w.parallelism,
                 "running": len(w.running), "info": w.info}
                for w in sorted(self.sched.workers.values(), key=lambda w: w.name)]

    async def wait(self, job_id: str, version: int, timeout: float) -> dict:
        """Long poll: the job's status as soon as it differs from `version`."""
        job = self._job(job_id)
        deadline = time.monotonic() + min(timeout, 60.0)
        async with self.changed:
            while job.version == version and job.state not in sch.FINISHED:
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


def _check_spec(spec: dict) -> dict:
    needed = {"name": str, "job_file": str, "source": str, "class": str, "args": list,
              "input_format": str, "splits": list, "output": str}
    for field, typ in needed.items():
        if not isinstance(spec.get(field), typ):
            raise ProtocolError(f"submit: spec field {field!r} must be {typ.__name__}")
    if not all(isinstance(a, str) for a in spec["args"]):
        raise ProtocolError("submit: args must be strings")
    for s in spec["splits"]:
        if not (isinstance(s, dict) and isinstance(s.get("path"), str)
                and _is_int(s.get("start")) and _is_int(s.get("end"))
                and 0 <= s["start"] <= s["end"]):
            raise ProtocolError("submit: each split needs path, start and end")
    if not spec["splits"]:
        raise ProtocolError("submit: the input is empty")
    if not os.path.isabs(spec["output"]):
        raise ProtocolError("submit: the output must be an absolute path")
    reducers = spec.get("reducers")
    if reducers is not None and (not _is_int(reducers) or not 1 <= reducers <= 10000):
        raise ProtocolError("submit: reducers must be an integer from 1 to 10000")
    timeout = spec.get("task_timeout")
    if timeout is not None and (not _is_number(timeout) or not 0 < timeout < 1e9):
        raise ProtocolError("submit: task_timeout must be a positive number")
    attempts = spec.get("max_attempts")
    if attempts is not None and (not _is_int(attempts) or not 1 <= attempts <= 1000):
        raise ProtocolError("submit: max_attempts must be an integer from 1 to 1000")
    return dict(spec)


def _is_int(x: Any) -> bool:
    return isinstance(x, int) and not isinstance(x, bool)


def _is_number(x: Any) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool)


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


def _write_success(output: str) -> None:
    path = os.path.join(output, "_SUCCESS")
    with open(path, "w") as f:
        f.flush()
        os.fsync(f.fileno())


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
