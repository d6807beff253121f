"""A real blfs cluster on one machine: one master and N workers, each its own OS process,
talking over loopback TCP, with each worker's shuffle disk an ext4 image on loop devices.

Disk layout (docs/ARCHITECTURE.md, Storage rules; tests/loopdev.py): worker wi owns image
i. Every (viewer, disk) pair gets its OWN loop device, so every view has its own page cache
and inode/dentry cache, exactly as N hosts attached to N iSCSI LUNs:

    <viewroot_i>/wi   image i through loop (i,i), read-write   (wi's own disk)
    <viewroot_i>/wj   image j through loop (i,j), ro,noload    (wi's view of wj's disk)

The pool is prepared on each own disk, and the block device flushed, BEFORE any peer view of
that disk is mounted (storage rule 1): a peer view never sees the pool change shape.

Everything is torn down by ``LoopCluster.close()`` even when a step fails: the daemons this
object started are stopped by PID (SIGTERM, then SIGKILL of the process and of the process
group it leads), then ``loopdev.Resources`` unmounts, detaches and deletes in reverse order.

Use it as a context manager from a fixture::

    @pytest.fixture
    def cluster(tmp_path):
        with LoopCluster(tmp_path, workers=3) as c:
            yield c
"""
from __future__ import annotations

import json
import mmap
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Optional

try:
    import loopdev
    from loopdev import Resources, mount_options
except ImportError:  # tests/ imported as a package
    from tests import loopdev
    from tests.loopdev import Resources, mount_options

from blfsd import auth, storage

REPO = Path(__file__).resolve().parent.parent
EXAMPLES = REPO / "examples"


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nobody listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _tail(path: Path, n: int = 3000) -> str:
    try:
        return path.read_text(errors="replace")[-n:]
    except OSError as exc:
        return f"({path}: {exc})"


class Daemon:
    """One daemon process we started: its PID, its log file, and how to stop it."""

    def __init__(self, name: str, argv: list, log: Path, env: dict):
        self.name = name
        self.argv = argv
        self.log = log
        self._log_file = open(log, "wb")
        # Own session: the daemon leads its own process group, so that stopping it can also
        # reach task processes it forked, without touching anything else on the machine.
        self.proc = subprocess.Popen(argv, cwd=str(REPO), env=env, stdin=subprocess.DEVNULL,
                                     stdout=self._log_file, stderr=subprocess.STDOUT,
                                     start_new_session=True)
        self.pid = self.proc.pid

    def alive(self) -> bool:
        return self.proc.poll() is None

    def log_tail(self, n: int = 3000) -> str:
        if not self._log_file.closed:  # the child writes to the file itself; this is ours
            self._log_file.flush()
        return _tail(self.log, n)

    def stop(self, timeout: float = 8.0) -> None:
        if self.proc.poll() is None:
            try:
                self.proc.send_signal(signal.SIGTERM)
            except ProcessLookupError:
                pass
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        try:  # leftovers in the group this daemon led (the group id is its PID)
            os.killpg(self.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
        self._log_file.close()


class LoopCluster:
    """N workers on loop-device disks and a master, each a separate process."""

    def __init__(self, base, workers: int = 3, image_size: int = 64 << 20,
                 slot_size: int = 1 << 20, slots: int = 8, parallelism: int = 2,
                 heartbeat_interval: float = 0.5, path_user: str = "root",
                 task_memory: str = "2G", master_cluster: str = "",
                 announcing: tuple = (), accept_announced: bool = True,
                 worker_extra: str = ""):
        self.base = Path(base)
        self.n = workers
        self.image_size = image_size
        self.slot_size = slot_size
        self.slots = slots
        self.parallelism = parallelism
        self.heartbeat_interval = heartbeat_interval
        self.path_user = path_user
        self.task_memory = task_memory
        self.master_cluster = master_cluster  # more lines for the master's [cluster]
        self.worker_extra = worker_extra  # more lines for each worker's [worker]
        # workers left out of the master's [nodes.*] that announce themselves to it
        self.announcing = set(announcing)
        self.accept_announced = accept_announced
        self.master_port = free_port()
        self.res = Resources(str(self.base))
        self.tag = self.res.tag
        self.names = [f"w{i}" for i in range(workers)]
        self.images: list[str] = []
        self.devices: dict[tuple[int, int], str] = {}  # (viewer, disk) -> /dev/loopN
        self.viewroots: list[Path] = []
        self.ports: list[int] = []
        self.manifests: list[storage.Manifest] = []
        self.daemons: list[Daemon] = []
        self.restarts: list[Daemon] = []  # masters stopped by restart_master
        self.key_file = self.base / f"cluster-{self.tag}.key"
        self.socket = str(self.base / f"m-{self.tag}.sock")
        self.master_cfg: Optional[Path] = None
        self.worker_cfgs: list[Path] = []
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
        env.pop("NOTIFY_SOCKET", None)
        env.pop("LISTEN_FDS", None)
        env.pop("LISTEN_PID", None)
        env.pop("BLFS_CONFIG", None)
        self.env = env

    # ------------------------------------------------------------------ lifecycle

    def __enter__(self) -> "LoopCluster":
        try:
            self.build_disks()
            self.write_configs()
            self.start()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        errors = []
        for d in reversed(self.daemons):  # master first (it was started last)
            try:
                d.stop()
            except Exception as exc:  # keep going: the disks must still be released
                errors.append(f"stop {d.name} (pid {d.pid}): {exc}")
        self.daemons.clear()
        try:
            self.res.close()
        except Exception as exc:
            errors.append(str(exc))
        if errors:
            raise RuntimeError("cluster teardown: " + "; ".join(errors))

    # ------------------------------------------------------------------ disks

    def disk(self, viewer: int, owner: int) -> Path:
        """Where worker `viewer` sees worker `owner`'s disk."""
        return self.viewroots[viewer] / self.names[owner]

    def build_disks(self) -> None:
        n = self.n
        self.images = [self.res.image(self.image_size) for _ in range(n)]
        for i in range(n):
            root = self.base / f"view{i}-{self.tag}"
            self.viewroots.append(root)
            for j in range(n):
                (root / self.names[j]).mkdir(parents=True)
        # Every (viewer, disk) pair has its own loop device.
        for i in range(n):
            for j in range(n):
                self.devices[(i, j)] = self.res.loop(self.images[j], read_only=(i != j))
        # Own disks first, read-write; pools prepared and flushed to the device...
        for i in range(n):
            own = str(self.disk(i, i))
            self.res.mount(self.devices[(i, i)], own)
            manifest, changed = storage.prepare_pool(own, self.names[i], self.slots,
                                                     self.slot_size)
            assert changed, f"{own}: a fresh disk already had a pool"
            self.manifests.append(manifest)
            # fsync(block device): metadata of the new pool reaches the image itself, so a
            # ro,noload mount (no journal replay) sees the finished pool.
            storage.fsync_device(self.devices[(i, i)])
        # ...and only then the peer views.
        for i in range(n):
            for j in range(n):
                if i != j:
                    self.res.mount(self.devices[(i, j)], str(self.disk(i, j)), "ro,noload")

    def detach_disk(self, owner: int) -> None:
        """Worker `owner`'s disk is lost: every host's mount of it is unmounted and its
        loop devices detached, so no node can read anything on it any more."""
        for viewer in range(self.n):
            loopdev.run("umount", str(self.disk(viewer, owner)))
            device = self.devices[(viewer, owner)]
            loopdev.detach(device, os.path.realpath(self.images[owner]))
            assert loopdev.loop_backing_file(device) is None, f"{device} still attached"

    # ------------------------------------------------------------------ configs

    def write_configs(self) -> None:
        auth.generate_key(str(self.key_file))
        self.ports = []
        for i, name in enumerate(self.names):
            port = free_port()
            while port in self.ports:
                port = free_port()
            self.ports.append(port)
            work = self.base / f"work-{name}-{self.tag}"
            work.mkdir()
            cfg = self.base / f"{name}-{self.tag}.toml"
            announce = name in self.announcing
            cfg.write_text(
                "[cluster]\n"
                f'key_file = "{self.key_file}"\n'
                + (f'master = "127.0.0.1:{self.master_port}"\n' if announce else "") +
                "[worker]\n"
                f'name = "{name}"\n'
                # announcing: on every interface, so its address is the route's source
                + (f'listen = "0.0.0.0:{port}"\nannounce = true\n' if announce
                   else f'listen = "127.0.0.1:{port}"\n') +
                f'disks_root = "{self.viewroots[i]}"\n'
                f'work_dir = "{work}"\n'
                f"parallelism = {self.parallelism}\n"
                # the tests' inputs and outputs are root's, in pytest's root-only
                # directories: this cluster uses them with root's rights (the default,
                # the task user's, is tested by tests/test_containment.py)
                f'path_user = "{self.path_user}"\n'
                f'task_memory = "{self.task_memory}"\n'
                f"{self.worker_extra}"
                "[pool]\n"
                f"slot_size = {self.slot_size}\n"
                f"slots = {self.slots}\n")
            self.worker_cfgs.append(cfg)
        state = self.state_dir = self.base / f"state-{self.tag}"
        nodes = "".join(f'[nodes.{name}]\naddress = "127.0.0.1:{port}"\n'
                        for name, port in zip(self.names, self.ports)
                        if name not in self.announcing)
        self.master_cfg = self.base / f"master-{self.tag}.toml"
        self.master_cfg.write_text(
            "[cluster]\n"
            f'key_file = "{self.key_file}"\n'
            + self.master_cluster +
            "[master]\n"
            f'socket = "{self.socket}"\n'
            f'listen = "127.0.0.1:{self.master_port if self.announcing else 0}"\n'
            f"accept_announced = {str(self.accept_announced).lower()}\n"
            f'state_dir = "{state}"\n'
            f"heartbeat_interval = {self.heartbeat_interval}\n"
            "heartbeat_timeout = 10.0\n"
            + nodes)

    def listen_host(self, name: str) -> str:
        return "0.0.0.0" if name in self.announcing else "127.0.0.1"

    # ------------------------------------------------------------------ daemons

    def _daemon(self, name: str, cfg: Path, role: str) -> Daemon:
        argv = [sys.executable, "-m", "blfsd", "--config", str(cfg), role]
        d = Daemon(name, argv, self.base / f"{name}-{self.tag}.log", self.env)
        self.daemons.append(d)
        return d

    def start(self, timeout: float = 20.0) -> None:
        workers = [self._daemon(name, cfg, "worker")
                   for name, cfg in zip(self.names, self.worker_cfgs)]
        deadline = time.monotonic() + timeout
        for d, port in zip(workers, self.ports):
            while True:
                if not d.alive():
                    raise AssertionError(f"worker {d.name} exited ({d.proc.returncode}):\n"
                                         f"{d.log_tail()}")
                # Its own log line, rather than a probe connection (which it would log as
                # a refused, unauthenticated peer).
                if f"worker {d.name} listening on {self.listen_host(d.name)}:{port}" in \
                        d.log_tail(1 << 20):
                    break
                if time.monotonic() > deadline:
                    raise AssertionError(f"worker {d.name} not listening on {port} after "
                                         f"{timeout} s:\n{d.log_tail()}")
                time.sleep(0.05)
        self.master = self._daemon("master", self.master_cfg, "master")
        self.wait_workers_up(deadline)

    def wait_workers_up(self, deadline: float) -> list:
        rows: list = []
        last = ""
        while time.monotonic() < deadline:
            for d in self.daemons:
                if not d.alive():
                    raise AssertionError(f"{d.name} exited ({d.proc.returncode}):\n"
                                         f"{d.log_tail()}")
            if os.path.exists(self.socket):
                proc = self.blfs("workers", "--json", check=False)
                if proc.returncode == 0:
                    rows = json.loads(proc.stdout)
                    if sorted(r["name"] for r in rows if r["alive"]) == self.names:
                        return rows
                last = proc.stdout + proc.stderr
            time.sleep(0.2)
        raise AssertionError(f"not all workers up: {rows} {last}\n--- master log\n"
                             f"{self.master.log_tail()}")

    def restart_worker(self, index: int, timeout: float = 30.0) -> Daemon:
        """SIGKILL worker `index` (its tasks are left to the next session to clean up, as
        after a crash), start it again and wait for the master to have it back."""
        old = next(d for d in self.daemons if d.name == self.names[index])
        old.proc.send_signal(signal.SIGKILL)
        old.proc.wait(10)
        old.stop()
        position = self.daemons.index(old)
        new = Daemon(self.names[index], old.argv, old.log.with_suffix(".2.log"), self.env)
        self.daemons[position] = new
        self.wait_workers_up(time.monotonic() + timeout)
        return new

    def restart_master(self, kill: bool = True, timeout: float = 30.0) -> Daemon:
        """SIGKILL the master (no goodbye, nothing more written; SIGTERM with kill=False),
        start a new one on the same configuration and wait for every worker to sync."""
        old = self.master
        old.proc.send_signal(signal.SIGKILL if kill else signal.SIGTERM)
        old.proc.wait(10)
        old.stop()
        self.daemons.remove(old)
        self.master = self._daemon(f"master{len(self.restarts) + 2}", self.master_cfg,
                                   "master")
        self.restarts.append(old)
        self.wait_workers_up(time.monotonic() + timeout)
        return self.master

    # ------------------------------------------------------------------ the command line

    def blfs(self, *args: str, check: bool = True, timeout: float = 60.0,
             master: bool = True) -> subprocess.CompletedProcess:
        """`blfs --config MASTER_CFG ARGS --master SOCKET` (for submit, --master goes before
        a `--`, so put job arguments in args after it yourself)."""
        args = list(args)
        if master:
            cut = args.index("--") if "--" in args else len(args)
            args[cut:cut] = ["--master", self.socket]
        argv = [sys.executable, "-m", "blfsd", "--config", str(self.master_cfg), *args]
        try:
            proc = subprocess.run(argv, cwd=str(REPO), env=self.env, capture_output=True,
                                  text=True, timeout=timeout, stdin=subprocess.DEVNULL)
        except subprocess.TimeoutExpired:
            raise AssertionError(f"{' '.join(argv)}: no exit after {timeout} s\n"
                                 f"{self.logs()}") from None
        if check and proc.returncode != 0:
            raise AssertionError(f"{' '.join(argv)} exited {proc.returncode}\n"
                                 f"--- stdout\n{proc.stdout[-3000:]}\n"
                                 f"--- stderr\n{proc.stderr[-3000:]}\n{self.logs()}")
        return proc

    def logs(self, n: int = 2500) -> str:
        return "\n".join(f"--- {d.name} log (pid {d.pid})\n{d.log_tail(n)}" for d in self.daemons)

    def job_id_for(self, output: str) -> str:
        rows = json.loads(self.blfs("jobs", "--json").stdout)
        ids = [r["job"] for r in rows if r.get("output") == os.path.abspath(output)]
        assert len(ids) == 1, f"jobs writing {output}: {rows}"
        return ids[0]

    def free_slots(self, timeout: float = 5.0) -> list:
        """Free slots per worker once every slot is free, or as they are at the deadline
        (the master learns them from heartbeats, a moment after they change)."""
        deadline = time.monotonic() + timeout
        while True:
            free = [r["info"]["free_slots"]
                    for r in json.loads(self.blfs("workers", "--json").stdout)]
            if free == [self.slots] * self.n or time.monotonic() > deadline:
                return free
            time.sleep(0.2)

    def status(self, job: str) -> dict:
        return json.loads(self.blfs("status", job, "--json").stdout)

    # ------------------------------------------------------------------ reading disks

    def segment_headers(self, owner: int, viewer: int) -> list[dict]:
        """Every segment header in `owner`'s pool, read through `viewer`'s view of that disk
        with O_DIRECT (as a reducer on `viewer` reads it). Slots are walked from offset 0,
        segment after segment at 4 KiB-aligned offsets, until no header is found."""
        disk = str(self.disk(viewer, owner))
        found = []
        buf = mmap.mmap(-1, storage.ALIGN)
        try:
            for slot in range(self.slots):
                fd = os.open(storage.slot_path(disk, slot), os.O_RDONLY | os.O_DIRECT)
                try:
                    offset = 0
                    while offset + storage.HEADER_SIZE <= self.slot_size:
                        n = os.preadv(fd, [buf], offset)
                        if n < storage.HEADER_SIZE or buf[:8] != storage.MAGIC:
                            break
                        sid, flags, length, crc, fmt = storage.decode_header(
                            bytes(buf[:storage.HEADER_SIZE]))
                        found.append({"slot": slot, "offset": offset, "job": sid.job,
                                      "map_task": sid.map_task, "attempt": sid.attempt,
                                      "partition": sid.partition, "length": length,
                                      "format": fmt})
                        offset = storage.align_up(offset + storage.HEADER_SIZE + length)
                finally:
                    os.close(fd)
        finally:
            buf.close()
        return found

    def mount_options(self, viewer: int, owner: int) -> Optional[str]:
        return mount_options(str(self.disk(viewer, owner)))
