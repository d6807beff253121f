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
import sys
import time
from typing import Optional

from .. import rpc, scheduler as sch
from ..aio import Budget, TaskSet, Ticking
from ..catalog import Catalog
from ..config import MASTER_PORT, Config
from ..config import load as load_config
from ..errors import BlfsError, DaemonFailed
from ..messages import FINISHED
from ..scheduler import JobEnded
from ..systemd import Notifier, listen_fds
from ..transport import format_address, parse_address
from .announced import Announced
from .datasets import Datasets
from .executor import Executor
from .jobs import Jobs, status_line
from .links import WorkerLinks
from .logs import AttemptOutputs

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
            speculation=config.speculation, slow_start=min(1.0, max(0.0, config.slow_start))),
            epoch=secrets.token_hex(3))
        self.catalog = Catalog(config.state_dir)
        self.gate = config.gate()  # what strangers may cost us before they are known
        self.budget = Budget(config.request_memory)  # clients' requests held at once
        self.notifier = Notifier()
        self.stopping = asyncio.Event()
        # requests in flight: launches, kills, commits, releases
        self.work = TaskSet("a request of the master")
        # tasks that run as long as the master does: if one dies, the master cannot go on
        self.loops = TaskSet("a loop of the master", on_crash=self._cannot_go_on)
        self.ticking = Ticking("the master's tick (timeouts, speculation, placement)")
        self.failed: Optional[str] = None  # why the master must exit non-zero
        self.fatal = asyncio.Event()
        self.links = WorkerLinks(config, key, name, self.sched, self.stopping,
                                 self.execute, self.changed)
        self.jobs = Jobs(config, self.sched, self.catalog, self.execute)
        self.executor = Executor(self.sched, self.links, self.catalog, self.work,
                                 self._job_ended, self.changed, self.jobs.record_result)
        self.datasets = Datasets(self.catalog, self.links, self.sched, self.work)
        self.outputs = AttemptOutputs(self.jobs, self.links)
        self.announced = Announced(config, self.links)
        self.client_handlers = {"ping": rpc.ping, **self.jobs.handlers,
                                **self.datasets.handlers, **self.outputs.handlers}
        self.announcer_handlers = {"ping": rpc.ping, **self.announced.handlers}
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
                await self._serve_socket(sock, systemds=True)
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

    def reload(self) -> None:
        """SIGHUP (`systemctl reload blfs-master`): re-read the nodes of the configuration
        file. New ones are dialled; those that left are drained, never cut off. A file
        that cannot be read changes nothing."""
        self.notifier.notify("RELOADING=1")
        try:
            nodes = self.announced.with_configured(load_config(self.config.path).nodes)
        except BlfsError as exc:
            log.error("reload: %s; the nodes stay as they were", exc)
        else:
            added, removed = self.links.reload(nodes)
            self.config.nodes = nodes
            log.info("reload: %d workers configured; dialling %s; draining %s", len(nodes),
                     ", ".join(added) or "none", ", ".join(removed) or "none")
        self.notifier.notify("READY=1")

    async def _serve_socket(self, sock: socket.socket, systemds: bool = False) -> None:
        """Serve clients on a socket (ours, or one systemd passed: `systemds`)."""
        sock.setblocking(False)
        if sock.family == socket.AF_UNIX:
            # Python 3.13 (Debian 13) removes a Unix server's path when the server closes;
            # the path of a socket systemd passed is the socket unit's, not ours to remove.
            keep = {"cleanup_socket": False} if systemds and sys.version_info >= (3, 13) \
                else {}
            server = await asyncio.start_unix_server(self._on_connect, sock=sock, **keep)
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

    def _tick(self) -> None:
        """One tick's work: time passes for the scheduler, old finished jobs retire."""
        now = time.monotonic()
        self.execute(self.sched.tick(now), reschedule=False)
        self.jobs.retire(now)
        self.notifier.status(status_line(self.sched))  # sent only when it changed

    async def _ticker(self) -> None:
        """Tick (timeouts, speculation), STATUS and the watchdog. A failed tick is logged
        and the next one runs; the watchdog is fed only while ticks succeed, and after a
        minute of nothing but failures the master exits non-zero (systemd restarts it)."""
        watchdog = Notifier.watchdog_interval()
        last_ping = 0.0
        while not self.stopping.is_set():
            await asyncio.sleep(TICK)
            now = time.monotonic()
            if not self.ticking.run(self._tick, now):
                if self.ticking.hopeless(now):
                    self._cannot_go_on(RuntimeError(f"every tick failed for "
                                                    f"{self.ticking.give_up:.0f} s"))
                    return
                continue
            if watchdog and now - last_ping >= watchdog:
                self.notifier.notify("WATCHDOG=1")
                last_ping = now

    def _cannot_go_on(self, exc: BaseException) -> None:
        """A loop of the master died or is hopeless: stop, and exit non-zero."""
        if self.failed is None:
            self.failed = f"{type(exc).__name__}: {exc}"
            log.critical("the master cannot go on (%s); exiting so that it is restarted",
                         self.failed)
        self.fatal.set()

    async def _on_connect(self, reader: asyncio.StreamReader,
                          writer: asyncio.StreamWriter) -> None:
        """A client connection, served until it ends."""
        peer = await rpc.accept_connection(reader, writer, self.key, "master", self.name,
                                           self.client_handlers, self.config.group,
                                           roles=("client", "worker"), gate=self.gate,
                                           budget=self.budget)
        if peer is not None:
            if peer.role == "worker":  # a worker that announces itself: nothing else
                peer.handlers = self.announcer_handlers
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
    """`blfs master`: run until SIGTERM or SIGINT; SIGHUP re-reads [nodes.*]."""
    master = Master(config, key)
    loop = asyncio.get_running_loop()
    done = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, done.set)
    loop.add_signal_handler(signal.SIGHUP, master.reload)
    await master.start()
    signalled = asyncio.ensure_future(done.wait())
    fatal = asyncio.ensure_future(master.fatal.wait())
    await asyncio.wait([signalled, fatal], return_when=asyncio.FIRST_COMPLETED)
    for waiter in (signalled, fatal):
        waiter.cancel()
    await master.stop()
    if master.failed:
        raise DaemonFailed(f"the master stopped: {master.failed}")
