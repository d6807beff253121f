"""The master's links to its workers: one dialled connection per configured worker, with
sync, heartbeats and re-dial, and what the workers send back (attempt reports, new pools).

Workers come and go for the scheduler only through its own API (worker_up, worker_down,
update_worker, attempt_*); the actions that come back go to the executor.
"""
from __future__ import annotations

import asyncio
import logging
import time
from typing import Any, Awaitable, Callable, Optional

from .. import rpc
from ..aio import TaskSet
from ..config import WORKER_PORT, Config, Node
from ..errors import BlfsError, ConnectionClosed, NotFound, ProtocolError
from ..messages import AttemptState, Failure, FailureKind, Progress, Success
from ..scheduler import Attempt, Scheduler, more_input
from .placement import roomiest_first

log = logging.getLogger("blfs.master")

USAGE = ("free_slots", "disk_free", "disk_bytes")  # what a worker's pong refreshes
SEND_LIMIT = 30.0  # seconds for a request to a worker (launch, commit, release, drop...)
INPUT_WAIT = 3.0  # seconds an early reduce's request for more input is held at most
REPORTS = {AttemptState.RUNNING: Progress, AttemptState.SUCCEEDED: Success,
           AttemptState.FAILED: Failure}


def log_fields(a: Attempt) -> dict:
    """The journal fields of an attempt's log lines."""
    return {"BLFS_JOB": a.task.job.id, "BLFS_TASK": a.task.name, "BLFS_ATTEMPT": a.number,
            "BLFS_NODE": a.worker}


class WorkerLinks:
    """Connections to the workers of [nodes.*], and requests to them by name."""

    def __init__(self, config: Config, key: Optional[bytes], name: str, sched: Scheduler,
                 stopping: asyncio.Event, execute: Callable[[list], None],
                 changed: Callable[[], Awaitable[None]]):
        self.config = config
        self.key = key
        self.name = name
        self.sched = sched
        self.stopping = stopping
        self.execute = execute  # the scheduler's actions, to the executor
        self.changed = changed  # something a client may wait for has changed
        self.peers: dict[str, rpc.Peer] = {}
        self.nodes: dict[str, Node] = {n.name: n for n in config.nodes}  # dialled now
        self.tasks: Optional[TaskSet] = None
        self.handlers = {"ping": rpc.ping, "attempt_update": self.attempt_update,
                         "pool_changed": self.pool_changed, "job_files": self.job_files,
                         "attempt_input": self.attempt_input}

    # ------------------------------------------------------------------ requests

    async def call(self, worker: str, op: str, limit: float = SEND_LIMIT, **fields: Any) -> Any:
        """A request to a worker; ConnectionClosed when it is not connected."""
        peer = self.peers.get(worker)
        if peer is None:
            raise ConnectionClosed(f"worker {worker} is not connected")
        return await peer.call(op, limit=limit, **fields)

    async def send(self, worker: str, op: str, **fields: Any) -> Any:
        """A request that may fail: its result, or None (logged) when it did not happen."""
        if worker not in self.peers:
            return None
        try:
            return await self.call(worker, op, **fields)
        except (BlfsError, asyncio.TimeoutError) as exc:
            log.warning("%s to %s failed: %s", op, worker, exc)
            return None

    def connected(self) -> list[str]:
        """Connected live workers, the roomiest disk first."""
        alive = {n: self.sched.workers[n].info.get("disk_free") for n in self.peers
                 if n in self.sched.workers and self.sched.workers[n].alive
                 and not self.sched.workers[n].draining}
        return roomiest_first(alive)

    async def reconnect(self, worker: str) -> None:
        """Hang up on a worker (its next sync rebuilds what it lost track of)."""
        peer = self.peers.get(worker)
        if peer is not None:
            await peer.close()

    async def close_all(self) -> None:
        """Hang up on every worker (the master is stopping)."""
        for peer in list(self.peers.values()):
            await peer.close()

    # ------------------------------------------------------------------ the links

    def start(self, tasks: TaskSet) -> None:
        """One link per configured worker, for as long as it stays in the configuration."""
        self.tasks = tasks
        for node in self.nodes.values():
            tasks.spawn(self.keep(node))

    def reload(self, nodes: list) -> tuple[list, list]:
        """[nodes.*] as re-read (SIGHUP): a new node (or a new address) is dialled; a node
        that left is drained, then let go (see _let_go). Returns (added, removed) names."""
        wanted = {n.name: n for n in nodes}
        added = [n for n, node in wanted.items() if self.nodes.get(n) != node]
        removed = [n for n in self.nodes if n not in wanted]
        for name in added:
            self.add(wanted[name])
        for name in removed:
            self.sched.drain(name)
            if self.tasks is not None:
                self.tasks.spawn(self._let_go(name, self.nodes[name]))
        return added, removed

    def add(self, node: Node) -> None:
        """Dial a new node (or a node at a new address) and give it work."""
        self.nodes[node.name] = node
        self.sched.drain(node.name, False)
        if self.tasks is not None:
            self.tasks.spawn(self.keep(node))

    async def _let_go(self, name: str, node: Node) -> None:
        """Once a node that left the configuration is drained (nothing of it is needed any
        more), stop dialling it and hang up; unless it came back meanwhile."""
        while self.nodes.get(name) is node and not self.sched.drained(name):
            await asyncio.sleep(0.5)
        if self.nodes.get(name) is not node:
            return  # back in the configuration
        del self.nodes[name]
        self.sched.forget_worker(name)
        log.info("worker %s drained: no longer part of the cluster", name,
                 extra={"BLFS_NODE": name})
        await self.reconnect(name)

    async def keep(self, node: Node) -> None:
        """Keep one connection to a worker: dial, sync, heartbeat, and re-dial when lost."""
        delay = 0.1
        said = False  # a worker that cannot be reached is logged once, not at every dial
        while not self.stopping.is_set() and self.nodes.get(node.name) is node:
            try:
                peer = await self._dial(node)
            except (BlfsError, OSError) as exc:
                if not said:
                    log.warning("cannot reach worker %s at %s: %s", node.name, node.address,
                                exc, extra={"BLFS_NODE": node.name})
                    said = True
                await asyncio.sleep(delay)
                delay = min(delay * 2, 5.0)
                continue
            said, delay = False, 0.1
            if peer is None:
                await asyncio.sleep(5)
            elif await self._session(node.name, peer) and not self.stopping.is_set():
                await asyncio.sleep(delay)

    async def _dial(self, node: Node) -> Optional[rpc.Peer]:
        """A connection to the worker, or None when someone else answers at its address."""
        peer, hello = await rpc.connect(node.address, self.key, "master", self.name,
                                        handler=self.handlers, expect_role="worker",
                                        expect_name=node.name, default_port=WORKER_PORT)
        if hello.get("name") == node.name:
            return peer
        log.error("%s answers as %r, not %r", node.address, hello.get("name"), node.name)
        await peer.close()
        return None

    async def _session(self, name: str, peer: rpc.Peer) -> bool:
        """Sync, then serve the worker until the connection ends. False when it did not
        sync (it never counted as up)."""
        serving = asyncio.ensure_future(peer.serve())
        try:
            held = [list(h) for h in self.sched.held_slots(name)]
            info = await peer.call("sync", limit=10, held=held)
        except (BlfsError, asyncio.TimeoutError) as exc:
            log.warning("worker %s did not sync: %s", name, exc)
            await peer.close()
            await serving
            return False
        self.peers[name] = peer
        log.info("worker %s up: %s slots free, parallelism %s", name, info.get("free_slots"),
                 info.get("parallelism"), extra={"BLFS_NODE": name})
        self.execute(self.sched.worker_up(name, int(info.get("parallelism", 1)), info))
        beat = asyncio.ensure_future(self._heartbeat(name, peer))
        await serving
        beat.cancel()
        if self.peers.get(name) is peer:
            del self.peers[name]
        if not self.stopping.is_set() and name in self.nodes:
            log.warning("worker %s lost", name, extra={"BLFS_NODE": name})
            self.execute(self.sched.worker_down(name, time.monotonic()))
        return True

    async def _heartbeat(self, name: str, peer: rpc.Peer) -> None:
        """Ping every heartbeat_interval; a missed deadline hangs up (the worker is lost)."""
        while not peer.closed.is_set():
            await asyncio.sleep(self.config.heartbeat_interval)
            sent = time.monotonic()
            try:
                pong = await peer.call("ping", limit=self.config.heartbeat_timeout,
                                       time=time.time())
            except asyncio.TimeoutError:
                log.warning("worker %s missed its heartbeat", name, extra={"BLFS_NODE": name})
                await peer.close()
                return
            except BlfsError:
                return
            if isinstance(pong, dict):
                usage = {k: pong[k] for k in USAGE if k in pong}
                # measured here, not reported: `blfs workers` and blfs ui show it
                usage["heartbeat_rtt"] = round(time.monotonic() - sent, 6)
                self.sched.update_worker(name, usage)

    # ------------------------------------------------------------------ from the workers

    def job_files(self, peer: rpc.Peer, job: str) -> dict:
        """The files shipped with a job, for a worker that is about to run one of its
        attempts (it keeps them while the job lives)."""
        found = self.sched.jobs.get(job)
        if found is None:
            raise NotFound(f"no job {job[:80]}")
        return {"files": found.spec.files}

    async def attempt_input(self, peer: rpc.Peer, attempt: str) -> dict:
        """An early reduce's input that finished since it last asked: answered as soon as
        there is some (checked every 0.1 s, in constant time), else after INPUT_WAIT
        seconds with none."""
        deadline = time.monotonic() + INPUT_WAIT
        while True:
            news = more_input(self.sched, attempt, peer.name)
            if news is not None:
                return news
            if time.monotonic() >= deadline or self.stopping.is_set():
                return {"segments": [], "complete": False}
            await asyncio.sleep(0.1)

    def pool_changed(self, peer: rpc.Peer, generation: int, slots: int) -> None:
        """A worker adopted a new pool (SIGHUP): its generation and slots."""
        self.sched.update_worker(peer.name, {"generation": generation, "slots": slots})
        log.warning("worker %s announces pool generation %d (%d slots)", peer.name,
                    generation, slots, extra={"BLFS_NODE": peer.name})

    async def attempt_update(self, peer: rpc.Peer, attempt: str, state: AttemptState,
                             info: Optional[dict] = None) -> None:
        """An attempt's progress, success or failure, as its worker reports it."""
        report_type = REPORTS.get(state)
        if report_type is None:
            raise ProtocolError(f"unknown attempt state {state!r}")
        report = report_type.from_wire(info or {}, "attempt_update: info")
        a = self.sched.attempts.get(attempt)
        if a is not None and a.worker != peer.name:
            raise ProtocolError(f"{attempt} does not run on {peer.name}")
        now = time.monotonic()
        if isinstance(report, Progress):
            self.sched.attempt_progress(attempt, now, float(report.progress), report.status,
                                        report.counters)
            await self.changed()
        elif isinstance(report, Success):
            self.execute(self.sched.attempt_succeeded(attempt, report.result, now))
        else:
            if a is not None and report.kind != FailureKind.KILLED:
                log.warning("attempt %s failed on %s (%s): %s", attempt, peer.name,
                            report.kind, report.error, extra=log_fields(a))
            self.execute(self.sched.attempt_failed(attempt, report.kind, report.error, now,
                                                   report.info))
