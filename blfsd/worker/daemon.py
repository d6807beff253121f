"""The worker daemon: its listener, readiness and STATUS for systemd, the master's session
(sync, release), and the wiring of the services that do the work (attempts, files,
views of the peers' disks)."""
from __future__ import annotations

import asyncio
import functools
import logging
import signal
import socket
from typing import Any, Callable, Optional

from .. import checksums, rpc
from ..aio import Budget
from ..config import WORKER_PORT, Config
from ..errors import ConnectionClosed, ProtocolError
from ..messages import AttemptState, Message, ShippedFile
from ..systemd import Notifier, listen_fds
from ..transport import format_address, parse_address
from . import announce
from .attempts import Attempts
from .disk import OwnDisk
from .files import Files
from .views import PeerViews

log = logging.getLogger("blfs.worker")

STOP_GRACE = 5.0  # seconds for killed attempts to be reaped at shutdown


class Worker:
    """One worker: this node's disk and pool, its attempts, and the master's session.

    Anyone who may connect can `ping` (blfs-iscsi asks it what the pool holds); every
    other request is for the master that connected last, and comes from `handlers`.
    """

    def __init__(self, config: Config, key: Optional[bytes]):
        self.config = config
        self.key = key
        self.name = config.worker_name
        self.disk = OwnDisk(config)
        self.views = PeerViews(config.disks_root, self.name)
        self.attempts = Attempts(config, self.disk, self.views, self.tell_master,
                                 self.ask_job_files, self.ask_input)
        self.files = Files(self.disk, self.views, self.attempts.containment.paths)
        self.master: Optional[rpc.Peer] = None
        self.gate = config.gate()  # what strangers may cost us before they are known
        self.budget = Budget(config.request_memory)  # clients' requests held at once
        self.notifier = Notifier()
        self.servers: list = []
        self.stopping = asyncio.Event()
        self.address = ""
        for_master = {"sync": self.sync, "release_job": self.release_job,
                      "release_attempts": self.release_attempts,
                      **self.attempts.handlers, **self.files.handlers}
        self.handlers = {"ping": self.ping,
                         **{op: self._master_only(op, fn) for op, fn in for_master.items()}}

    def _master_only(self, op: str, handler: Callable[..., Any]) -> Callable[..., Any]:
        """The handler, for the master that connected last only."""
        @functools.wraps(handler)
        def guarded(peer: rpc.Peer, **fields: Any) -> Any:
            if peer is not self.master:
                raise ProtocolError(f"{op} is only for the master")
            return handler(peer, **fields)
        return guarded

    # ------------------------------------------------------------------ start/stop

    def open_pool(self) -> None:
        self.disk.open()
        self.files.open()

    async def start(self) -> None:
        """Check (or, for --local, prepare) the pool, listen, then READY=1."""
        self.open_pool()
        activated = [s for _, s in listen_fds()]
        if activated:
            socks = activated
        else:
            host, port = parse_address(self.config.worker_listen, WORKER_PORT)
            socks = [socket.create_server((host, port), reuse_port=False)]
        for sock in socks:
            sock.setblocking(False)
            self.servers.append(await asyncio.start_server(self._on_connect, sock=sock))
        name = socks[0].getsockname()
        self.address = format_address(*name[:2]) if isinstance(name, tuple) else str(name)
        m = self.disk.manifest
        log.info("worker %s listening on %s, pool generation %d, %d slots",
                 self.name, self.address, m.generation, m.slot_count,
                 extra={"BLFS_NODE": self.name})
        self.notifier.notify("READY=1", f"STATUS={self.status_line()}",
                             f"BLFS_LISTEN={self.address}", f"BLFS_NAME={self.name}")

    async def reload_pool(self) -> None:
        """SIGHUP: adopt a pool that blfs-iscsi changed, and announce its new generation.

        Segments written under the old generation can no longer be trusted: readers see
        the generation differ, remount their view, and the maps whose output is gone run
        again. New attempts lease slots of the new pool.
        """
        manifest = self.disk.reload()
        if manifest is None or self.master is None:
            return
        try:
            await self.master.notify("pool_changed", generation=manifest.generation,
                                     slots=manifest.slot_count)
        except (ConnectionClosed, ProtocolError) as exc:
            log.warning("could not announce the new pool: %s", exc)

    def status_line(self) -> str:
        leases, manifest = self.disk.leases, self.disk.manifest
        free = leases.free_count() if leases else 0
        total = manifest.slot_count if manifest else 0
        master = "master connected" if self.master else "waiting for the master"
        return (f"{len(self.attempts.running)} attempts running, {free}/{total} slots free, "
                f"{master}")

    async def run(self) -> None:
        """Serve until `stopping` is set; STATUS and the watchdog meanwhile."""
        await self.start()
        announcing = (asyncio.ensure_future(announce.keep_announcing(
            self.config, self.key, self.name, self.address, lambda: self.master is not None,
            self.stopping)) if self.config.announce else None)
        watchdog = Notifier.watchdog_interval()
        while not self.stopping.is_set():
            try:
                await asyncio.wait_for(self.stopping.wait(), watchdog or 5.0)
            except asyncio.TimeoutError:
                pass
            if watchdog:
                self.notifier.notify("WATCHDOG=1")
            self.notifier.status(self.status_line())
        if announcing is not None:
            announcing.cancel()
            await asyncio.gather(announcing, return_exceptions=True)
        await self.shutdown()

    async def shutdown(self) -> None:
        """Stop accepting work, leave the master's session, kill every attempt (the master
        re-runs them: lost with their worker, never reported as failures of the job)."""
        self.notifier.notify("STOPPING=1")
        for server in self.servers:
            server.close()
        master, self.master = self.master, None
        if master:
            await master.close()
        self.attempts.terminate_all()
        await self.attempts.wait_all(STOP_GRACE)
        self.attempts.close()

    # ------------------------------------------------------------------ the master

    async def _on_connect(self, reader: asyncio.StreamReader,
                          writer: asyncio.StreamWriter) -> None:
        """A connection; a master's replaces the previous master's session."""
        peer = await rpc.accept_connection(reader, writer, self.key, "worker", self.name,
                                           self.handlers, self.config.group,
                                           roles=("master", "client"), gate=self.gate,
                                           budget=self.budget)
        if peer is None:
            return
        if peer.role == "master":  # a new master session replaces the old one
            if self.master is not None:
                await self.master.close()
            self.master = peer
            log.info("master %s connected from %s", peer.name, peer.stream.peer_label())
        await peer.serve()
        if self.master is peer:
            self.master = None
            log.info("master %s disconnected", peer.name)

    async def tell_master(self, attempt_id: str, state: AttemptState, info: Message) -> None:
        """An attempt report to the master (attempt_update); lost if none is connected."""
        master = self.master
        if master is None:
            log.info("no master to tell that %s is %s", attempt_id, state)
            return
        try:
            await master.notify("attempt_update", attempt=attempt_id, state=state, info=info)
        except (ConnectionClosed, ProtocolError) as exc:
            log.warning("could not report %s %s to the master: %s", attempt_id, state, exc)

    def ping(self, peer: rpc.Peer, time: Optional[float] = None) -> dict:
        """Anyone's ping: our clock and usage (blfs-iscsi asks what the pool holds)."""
        return {**rpc.ping(peer), **self.usage()}

    def usage(self) -> dict:
        """Free slots, room on our disk, attempts running (refreshed by every ping)."""
        return {**self.disk.usage(), "running": len(self.attempts.running)}

    def sync(self, peer: rpc.Peer, held: list) -> dict:
        """A (new) master session: forget everything it does not know about. `held` lists
        the [slot, attempt] leases it still counts on (map outputs of live jobs)."""
        self.attempts.terminate_all()
        self.disk.leases.reset([(item[0], item[1]) for item in held
                                if isinstance(item, list) and len(item) == 2
                                and isinstance(item[0], int) and isinstance(item[1], str)])
        for name in self.files.uploads.abort_all():
            log.warning("dropped dataset %s: its put was cut short by a new master session",
                        name)
        return {"name": self.name, "parallelism": self.config.cpu_parallelism(),
                "segment_formats": checksums.formats(), **self.disk.describe(),
                **self.usage()}

    def release_job(self, peer: rpc.Peer, job: str, output_tmp: Optional[str] = None,
                    output_name: Optional[str] = None) -> dict:
        """The job ended: kill its attempts, free its slots, remove its temporary output."""
        self.attempts.terminate_all(job)
        slots = self.disk.leases.release_job(job)
        self.files.remove_temporary(job, output_tmp, output_name)
        self.attempts.job_files.forget(job)
        self.attempts.logs.prune()
        return {"released": len(slots)}

    def release_attempts(self, peer: rpc.Peer, attempts: list) -> dict:
        """A pipeline's middle stage is done with: free its attempts' slots."""
        slots = [s for a in attempts if isinstance(a, str)
                 for s in self.disk.leases.release_attempt(a)]
        log.info("released the slots of %d attempts of a finished stage (%d slots)",
                 len(attempts), len(slots), extra={"BLFS_NODE": self.name})
        return {"released": len(slots)}

    async def ask_job_files(self, job: str) -> list:
        """The files shipped with a job, from the master."""
        if self.master is None:
            raise ConnectionClosed("no master to ask for the job's files")
        answer = await self.master.call("job_files", limit=60, job=job)
        return [ShippedFile.from_wire(f) for f in answer.get("files", [])]


    async def ask_input(self, attempt: str) -> dict:
        """An early reduce's new input (its producers that finished since it last asked)."""
        if self.master is None:
            raise ConnectionClosed("no master to ask for the attempt's input")
        return await self.master.call("attempt_input", limit=30, attempt=attempt)


async def serve(config: Config, key: Optional[bytes]) -> None:
    """`blfs worker`: run until SIGTERM or SIGINT; SIGHUP re-reads the pool."""
    worker = Worker(config, key)
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, worker.stopping.set)
    loop.add_signal_handler(signal.SIGHUP, lambda: asyncio.ensure_future(worker.reload_pool()))
    await worker.run()
