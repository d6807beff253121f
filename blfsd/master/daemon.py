"""The master daemon: its listeners, the ticker, readiness and STATUS for systemd, and the
wiring of the services that do the work (links, executor, jobs, datasets)."""
from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import secrets
import signal
import socket
import time
from typing import Optional

from .. import rpc, scheduler as sch
from ..aio import TaskSet
from ..catalog import Catalog
from ..config import MASTER_PORT, Config
from ..messages import FINISHED
from ..scheduler import JobEnded
from ..systemd import Notifier, listen_fds
from ..transport import format_address, parse_address
from .datasets import Datasets
from .executor import Executor
from .jobs import Jobs, status_line
from .links import WorkerLinks

log = logging.getLogger("blfs.master")

TICK = 0.2  # seconds between the scheduler's ticks (timeouts, speculation)
STOP_GRACE = 2.0  # seconds for kills and releases in flight to reach the workers


class Master:
    """One master: the scheduler's state, and the services around it.

    Clients (the Unix socket, or TCP with the cluster key) are served from the table
    `client_handlers`; the workers' connections, which the master dials, from
    `links.handlers`. Every decision is the scheduler's; `executor` carries them out.
    """

    def __init__(self, config: Config, key: Optional[bytes], name: str = "master"):
        self.config = config
        self.key = key
        self.name = name
        # attempt ids carry this session's epoch (see Scheduler)
        self.sched = sch.Scheduler(sch.Settings(
            max_attempts=config.max_attempts, task_timeout=config.task_timeout,
            speculation=config.speculation), epoch=secrets.token_hex(3))
        self.catalog = Catalog(config.state_dir)
        self.gate = config.gate()  # what strangers may cost us before they are known
        self.notifier = Notifier()
        self.stopping = asyncio.Event()
        self.work = TaskSet()  # requests in flight: launches, kills, commits, releases
        self.loops = TaskSet()  # tasks that run as long as the master does
        self.links = WorkerLinks(config, key, name, self.sched, self.stopping,
                                 self.execute, self.changed)
        self.executor = Executor(self.sched, self.links, self.catalog, self.work,
                                 self._job_ended, self.changed)
        self.jobs = Jobs(config, self.sched, self.catalog, self.execute)
        self.datasets = Datasets(self.catalog, self.links, self.sched, self.work)
        self.client_handlers = {"ping": rpc.ping, **self.jobs.handlers,
                                **self.datasets.handlers}
        self.servers: list = []
        self.unix_path: Optional[str] = None
        self.tcp_address: Optional[str] = None

    def execute(self, actions: list, reschedule: bool = True) -> None:
        """The scheduler's actions, carried out (see Executor.execute)."""
        self.executor.execute(actions, reschedule)

    async def changed(self) -> None:
        """Something a client may wait for changed: STATUS, and every `wait`."""
        self.notifier.status(status_line(self.sched))
        await self.jobs.wake()

    def _job_ended(self, action: JobEnded) -> None:
        """A job ended: its final record, and the datasets submit put for it only."""
        self.jobs.ended(action)
        self.datasets.remove_temporary(self.sched.jobs[action.job].spec.temp_datasets)

    # ------------------------------------------------------------------ start/stop

    async def start(self, listen_unix: bool = True, listen_tcp: bool = True) -> None:
        """Resume recorded jobs, listen (on systemd's sockets if it passed any), dial every
        worker, start ticking; then READY=1."""
        self.jobs.restore()
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
        self.links.start(self.loops)
        self.loops.spawn(self._ticker())
        log.info("master ready: %d workers configured", len(self.config.nodes))
        self.notifier.notify("READY=1", f"STATUS={status_line(self.sched)}")

    async def _serve_socket(self, sock: socket.socket) -> None:
        """Serve clients on a socket (ours, or one systemd passed)."""
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
        """Stop serving, let requests in flight reach the workers, then hang up on all."""
        self.notifier.notify("STOPPING=1")
        self.stopping.set()
        for server in self.servers:
            server.close()
        # let in-flight messages (kills, releases) reach the workers before we hang up
        if len(self.work):
            await asyncio.wait(list(self.work), timeout=STOP_GRACE)
        everything = list(self.work) + list(self.loops)
        for task in everything:
            task.cancel()
        await self.links.close_all()
        await asyncio.gather(*everything, return_exceptions=True)

    async def _ticker(self) -> None:
        """Time passes for the scheduler (timeouts, speculation); STATUS and the watchdog."""
        watchdog = Notifier.watchdog_interval()
        last_ping = 0.0
        while not self.stopping.is_set():
            await asyncio.sleep(TICK)
            self.execute(self.sched.tick(time.monotonic()), reschedule=False)
            self.notifier.status(status_line(self.sched))  # sent only when it changed
            if watchdog and time.monotonic() - last_ping >= watchdog:
                self.notifier.notify("WATCHDOG=1")
                last_ping = time.monotonic()

    async def _on_connect(self, reader: asyncio.StreamReader,
                          writer: asyncio.StreamWriter) -> None:
        """A client connection, served until it ends."""
        peer = await rpc.accept_connection(reader, writer, self.key, "master", self.name,
                                           self.client_handlers, self.config.group,
                                           roles=("client",), gate=self.gate)
        if peer is not None:
            await peer.serve()
            await self.datasets.abandon(peer)  # the client went away in the middle of a put


def _bind_unix(path: str) -> socket.socket:
    """Our own Unix socket (when not socket-activated): replace a stale one, keep 0660."""
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with contextlib.suppress(FileNotFoundError):
        os.unlink(path)
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    old = os.umask(0o117)
    try:
        sock.bind(path)
    finally:
        os.umask(old)
    sock.listen(64)
    return sock


async def serve(config: Config, key: Optional[bytes]) -> None:
    """`blfs master`: run until SIGTERM or SIGINT."""
    master = Master(config, key)
    loop = asyncio.get_running_loop()
    done = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, done.set)
    await master.start()
    await done.wait()
    await master.stop()
