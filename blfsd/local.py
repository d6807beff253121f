"""The embedded cluster of `blfs submit --local`: a master and N worker processes here.

Same code path as a real cluster: workers are separate processes speaking the real
protocol over loopback TCP with a throw-away key, each with its own directory "disk"
and a prepared pool of slots. Everything is torn down when the context ends.
"""
from __future__ import annotations

import asyncio
import ctypes
import logging
import os
import shutil
import signal
import socket
import sys
import tempfile
import time
from typing import Optional

from . import auth
from .config import Config, Node
from .errors import BlfsError
from .master import Master

log = logging.getLogger("blfs.local")

PR_SET_PDEATHSIG = 1
START_TIMEOUT = 60.0


def _die_with_parent() -> None:
    """In a local worker (before exec): go when the blfs command that started us goes."""
    ctypes.CDLL(None).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)


def pool_shape(input_bytes: int, splits: int, workers: int) -> tuple[int, int]:
    """(slot count, slot size) for each local worker: room for the job's map output.

    Every map attempt needs a slot of its own, so small splits get small slots; in all,
    three times the input: map output (which can outgrow its input), the reduces' merge
    passes (runtime/merging.py: up to their partition again), and room for retries.
    The slots are sparse files: room that is not written costs nothing.
    """
    split = input_bytes // max(1, splits)
    slot_size = min(16 << 20, max(1 << 20, (split // 2 + 4095) // 4096 * 4096))
    per_worker = 3 * input_bytes // max(1, workers) + 8 * slot_size
    maps_per_worker = -(-splits // max(1, workers))
    count = max(2 * maps_per_worker + 8, -(-per_worker // slot_size))
    return min(count, 65536), slot_size


class LocalCluster:
    """The cluster of `blfs submit --local`: an async context manager.

    Entering it starts N worker processes (`python -m blfsd worker --local-root ...`, each
    with a directory disk and a sparse pool sized for the job: pool_shape), waits for their
    READY=1 with their addresses, then runs a Master in this process on a Unix socket in the
    temporary root (`socket_path`). Leaving it cancels any unfinished job, stops everything
    and removes the root. Logs go to ROOT/logs, not to the user's terminal."""
    def __init__(self, workers: int, input_bytes: int = 0, splits: int = 1, parallelism: int = 0,
                 task_timeout: Optional[float] = None, max_attempts: Optional[int] = None,
                 spill_records: Optional[int] = None, heartbeat_timeout: float = 5.0,
                 slow_start: Optional[float] = None):
        self.n = max(1, workers)
        self.input_bytes = input_bytes
        self.splits = splits
        self.parallelism = parallelism
        self.task_timeout = task_timeout
        self.max_attempts = max_attempts
        self.spill_records = spill_records
        self.heartbeat_timeout = heartbeat_timeout
        self.slow_start = slow_start  # [master] slow_start of the user's configuration
        self.root = ""
        self.procs: list = []
        self.master: Optional[Master] = None
        self.socket_path = ""
        self._log_handler: Optional[logging.Handler] = None

    async def __aenter__(self) -> "LocalCluster":
        try:
            await self._start()
        except BaseException:
            await self._stop()
            raise
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self._stop()

    async def _start(self) -> None:
        """Key, workers, their addresses, then the master (__aenter__ stops it all on a failure)."""
        self.root = tempfile.mkdtemp(prefix="blfs-local-")
        # traversable, not listable: task processes (another user) reach their scratch
        # directories below by path; every file here keeps its own mode (the key is 0600)
        os.chmod(self.root, 0o711)
        key_path = os.path.join(self.root, "cluster.key")
        key = auth.generate_key(key_path)
        os.makedirs(os.path.join(self.root, "logs"))
        notify_path = os.path.join(self.root, "notify.sock")
        notify = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        notify.bind(notify_path)
        notify.setblocking(False)
        slots, slot_size = pool_shape(self.input_bytes, self.splits, self.n)
        try:
            for i in range(self.n):
                self.procs.append(await self._spawn(f"w{i}", key_path, notify_path, slots,
                                                    slot_size))
            addresses = await self._wait_ready(notify)
        finally:
            notify.close()
        cfg = Config(cluster_key=key_path, master_socket=os.path.join(self.root, "master.sock"),
                     master_listen="", state_dir="", heartbeat_interval=0.5,
                     heartbeat_timeout=self.heartbeat_timeout,
                     nodes=[Node(name, addr) for name, addr in sorted(addresses.items())])
        if self.task_timeout:
            cfg.task_timeout = self.task_timeout
        if self.max_attempts:
            cfg.max_attempts = self.max_attempts
        if self.slow_start is not None:
            cfg.slow_start = self.slow_start
        # the embedded master logs next to its workers, not onto the user's terminal
        handler = logging.FileHandler(os.path.join(self.root, "logs", "master.log"))
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
        self._log_handler = handler
        blfs_log = logging.getLogger("blfs")
        self._log_was = (blfs_log.level, blfs_log.propagate)  # put back when we stop
        blfs_log.addHandler(handler)
        blfs_log.setLevel(logging.INFO)
        blfs_log.propagate = False
        self.master = Master(cfg, key, name="local-master")
        await self.master.start(listen_unix=True, listen_tcp=False)
        self.socket_path = cfg.master_socket
        await self._wait_workers_connected()

    async def _spawn(self, name: str, key_path: str, notify_path: str, slots: int,
                     slot_size: int) -> asyncio.subprocess.Process:
        """One worker process, its output in ROOT/logs/NAME.log; it dies with us."""
        cmd = [sys.executable, "-m", "blfsd", "worker", "--local-root", self.root,
               "--name", name, "--slots", str(slots), "--slot-size", str(slot_size)]
        if self.parallelism:
            cmd += ["--parallelism", str(self.parallelism)]
        if self.spill_records:
            cmd += ["--spill-records", str(self.spill_records)]
        env = dict(os.environ, NOTIFY_SOCKET=notify_path)
        for var in ("LISTEN_PID", "LISTEN_FDS", "LISTEN_FDNAMES", "JOURNAL_STREAM",
                    "WATCHDOG_USEC", "WATCHDOG_PID"):
            env.pop(var, None)
        logfile = open(os.path.join(self.root, "logs", f"{name}.log"), "wb")
        try:
            return await asyncio.create_subprocess_exec(
                *cmd, env=env, stdin=asyncio.subprocess.DEVNULL, stdout=logfile,
                stderr=logfile, preexec_fn=_die_with_parent)
        finally:
            logfile.close()

    async def _wait_ready(self, notify: socket.socket) -> dict:
        """Each worker says READY=1 with its address once its pool and listener are up."""
        loop = asyncio.get_running_loop()
        addresses: dict = {}
        deadline = time.monotonic() + START_TIMEOUT
        while len(addresses) < self.n:
            for i, proc in enumerate(self.procs):
                if proc.returncode is not None:
                    raise BlfsError(f"local worker w{i} exited during start-up: "
                                    f"{self._log_tail(f'w{i}')}")
            left = deadline - time.monotonic()
            if left <= 0:
                raise BlfsError("local workers did not become ready in time")
            try:
                data = await asyncio.wait_for(loop.sock_recv(notify, 4096), min(left, 0.5))
            except asyncio.TimeoutError:
                continue
            fields = dict(line.split("=", 1) for line in data.decode().splitlines()
                          if "=" in line)
            if fields.get("READY") == "1" and "BLFS_LISTEN" in fields:
                addresses[fields["BLFS_NAME"]] = fields["BLFS_LISTEN"]
        return addresses

    async def _wait_workers_connected(self) -> None:
        """Until the master has synced with every worker."""
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            alive = [w for w in self.master.sched.workers.values() if w.alive]
            if len(alive) == self.n:
                return
            await asyncio.sleep(0.01)
        raise BlfsError("the local master could not reach its workers")

    def _log_tail(self, name: str) -> str:
        """The last line a worker logged (why it did not start)."""
        try:
            with open(os.path.join(self.root, "logs", f"{name}.log"), "rb") as f:
                lines = f.read().decode(errors="replace").strip().splitlines()
            return lines[-1] if lines else "no output"
        except OSError:
            return "no log"

    async def _stop(self) -> None:
        """Cancel unfinished jobs, stop the master and the workers, remove the root."""
        if self.master is not None:
            # interrupted: no job may leave temporary files or half a commit behind
            self.master.cancel_all("the local cluster is stopping")
            await self.master.stop()
        for proc in self.procs:
            if proc.returncode is None:
                try:
                    proc.send_signal(signal.SIGTERM)
                except ProcessLookupError:
                    pass
        for proc in self.procs:
            try:
                await asyncio.wait_for(proc.wait(), 10)
            except asyncio.TimeoutError:
                proc.kill()
                await proc.wait()
        if self._log_handler is not None:
            blfs_log = logging.getLogger("blfs")
            blfs_log.removeHandler(self._log_handler)
            level, blfs_log.propagate = self._log_was
            blfs_log.setLevel(level)
            self._log_handler.close()
        if self.root:
            shutil.rmtree(self.root, ignore_errors=True)
