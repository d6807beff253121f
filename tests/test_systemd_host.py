"""systemd integration without systemd: socket activation and sd_notify on the host.

systemd is not PID 1 here, but `systemd-socket-activate` passes LISTEN_FDS/LISTEN_PID/
LISTEN_FDNAMES exactly as systemd does, and NOTIFY_SOCKET is just an AF_UNIX datagram socket
the test can create and read. The daemons run as real processes (`python -m blfsd`).

Also here: why blfs-worker.service must not have its own mount namespace (a kernel fact,
shown with two loop devices), and a static check of the unit files.
"""
from __future__ import annotations

import asyncio
import configparser
import contextlib
import gc
import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
from typing import Optional

import pytest

from blfsd import rpc

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
UNITS = os.path.join(REPO, "units")

MASTER_STATUS = re.compile(r"^\d+ workers?, \d+ jobs? running, \d+/\d+ tasks done$")
WORKER_STATUS = re.compile(r"^\d+ attempts? running, \d+/\d+ slots free, "
                           r"(master connected|waiting for the master)$")

needs_socket_activate = pytest.mark.skipif(
    shutil.which("systemd-socket-activate") is None,
    reason="systemd-socket-activate is missing (Debian package systemd)")


# ------------------------------------------------------------------------------ helpers

def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class NotifySocket:
    """The receiving end of sd_notify: what a service manager would read."""

    def __init__(self, path: str):
        self.path = path
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(path)
        self.messages: list = []  # (monotonic time, {KEY: value}) per datagram

    def close(self) -> None:
        self.sock.close()

    def _recv(self, timeout: float) -> Optional[dict]:
        self.sock.settimeout(max(0.001, timeout))
        try:
            data = self.sock.recv(65536)
        except socket.timeout:
            return None
        fields = dict(line.split("=", 1) for line in data.decode().splitlines() if "=" in line)
        self.messages.append((time.monotonic(), fields))
        return fields

    def wait_for(self, key: str, timeout: float = 15, value: Optional[str] = None) -> dict:
        """The next datagram carrying KEY (=value), reading everything before it."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            fields = self._recv(deadline - time.monotonic())
            if fields is not None and key in fields and (value is None or fields[key] == value):
                return fields
        raise AssertionError(f"no {key}{'=' + value if value else ''} within {timeout} s; "
                             f"got {[m for _, m in self.messages]}")

    def drain(self, seconds: float) -> list:
        end = time.monotonic() + seconds
        got = []
        while time.monotonic() < end:
            fields = self._recv(end - time.monotonic())
            if fields is not None:
                got.append(fields)
        return got

    def all(self, key: str) -> list:
        return [m[key] for _, m in self.messages if key in m]


@pytest.fixture
def notify(tmp_path):
    n = NotifySocket(str(tmp_path / "notify.sock"))
    yield n
    n.close()


class Daemon:
    """A daemon process the test started, always stopped (by its PID) at the end."""

    def __init__(self, argv: list, env: dict, log: str):
        self.log_path = log
        self._log = open(log, "wb")
        self.proc = subprocess.Popen(argv, cwd=REPO, env=env, stdin=subprocess.DEVNULL,
                                     stdout=self._log, stderr=subprocess.STDOUT)

    def log(self) -> str:
        self._log.flush()
        with open(self.log_path, "rb") as f:
            return f.read().decode(errors="replace")

    def python_pid(self, timeout: float = 10) -> int:
        """The daemon's PID: systemd-socket-activate execs it in place on the first
        connection (so LISTEN_PID is right): our child's PID, once it runs Python."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                with open(f"/proc/{self.proc.pid}/cmdline", "rb") as f:
                    argv0 = f.read().split(b"\0")[0]
                if os.path.basename(argv0) != b"systemd-socket-activate":
                    return self.proc.pid
            except OSError:
                pass
            time.sleep(0.05)
        raise AssertionError(f"the daemon did not start; log:\n{self.log()}")

    def terminate(self, timeout: float = 15) -> int:
        self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            raise AssertionError(f"no exit within {timeout} s of SIGTERM; log:\n{self.log()}")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)
        self._log.close()


@contextlib.contextmanager
def daemon(argv: list, env_extra: dict, tmp_path, name: str):
    env = dict(os.environ, **env_extra)
    for var in ("LISTEN_PID", "LISTEN_FDS", "LISTEN_FDNAMES", "WATCHDOG_USEC", "WATCHDOG_PID",
                "JOURNAL_STREAM", "NOTIFY_SOCKET"):
        if var not in env_extra:
            env.pop(var, None)
    d = Daemon(argv, env, str(tmp_path / f"{name}.log"))
    try:
        yield d
    finally:
        d.stop()


def activate(listen: list, env: dict, command: list) -> list:
    """systemd-socket-activate ARGS: it passes only the environment named with -E."""
    argv = ["systemd-socket-activate"]
    for address in listen:
        argv += ["-l", address]
    for key, value in env.items():
        argv += ["-E", f"{key}={value}"]
    return argv + command


def write_key(path) -> bytes:
    key = secrets.token_hex(32).encode()
    with open(path, "wb") as f:
        f.write(key + b"\n")
    os.chmod(path, 0o600)
    return key


def master_config(tmp_path, *, socket_path: str, listen: str) -> str:
    key = tmp_path / "cluster.key"
    if not key.exists():
        write_key(key)
    path = tmp_path / "blfs.toml"
    path.write_text(f"""\
[cluster]
key_file = "{key}"

[master]
socket = "{socket_path}"
listen = "{listen}"
state_dir = "{tmp_path / 'state'}"
""")
    return str(path)


def blfs_cli(*args: str, timeout: float = 30) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items()
           if k not in ("NOTIFY_SOCKET", "LISTEN_PID", "LISTEN_FDS", "LISTEN_FDNAMES")}
    return subprocess.run([sys.executable, "-m", "blfsd", *args], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=timeout)


def rpc_call(address: str, key: Optional[bytes], op: str, default_port: int = 7070,
             timeout: float = 10, expect_role: str = "master") -> tuple:
    """(hello, result) of one request over a fresh connection, without any retry."""
    async def go():
        peer, hello = await rpc.connect(address, key, "client", "systemd-test",
                                        expect_role=expect_role,
                                        default_port=default_port, timeout=timeout)
        reader = asyncio.ensure_future(peer.serve())
        try:
            return hello, await peer.call(op, limit=timeout)
        finally:
            await peer.close()
            reader.cancel()
            with contextlib.suppress(BaseException):
                await reader
    return asyncio.run(asyncio.wait_for(go(), timeout * 2))


def refused(host: str, port: int) -> bool:
    try:
        socket.create_connection((host, port), timeout=2).close()
    except ConnectionRefusedError:
        return True
    return False


def python_cmd(*args: str) -> list:
    return [sys.executable, "-m", "blfsd", *args]


# ------------------------------------------------------------------------------ the master

@needs_socket_activate
def test_master_serves_on_activated_sockets(tmp_path, notify):
    """LISTEN_FDS adoption: the master serves on the Unix and TCP sockets it was given, binds
    neither of its configured ones, and leaves the activated Unix socket in place at exit."""
    sock_path = str(tmp_path / "activated.sock")
    port, other_port = free_port(), free_port()
    config = master_config(tmp_path, socket_path=str(tmp_path / "configured.sock"),
                           listen=f"127.0.0.1:{other_port}")
    key = (tmp_path / "cluster.key").read_bytes().strip()
    argv = activate([sock_path, f"127.0.0.1:{port}"],
                    {"NOTIFY_SOCKET": notify.path, "PYTHONPATH": REPO},
                    python_cmd("--config", config, "master"))
    with daemon(argv, {}, tmp_path, "master") as d:
        deadline = time.monotonic() + 10
        while not os.path.exists(sock_path):  # systemd-socket-activate made it
            assert time.monotonic() < deadline, d.log()
            time.sleep(0.05)
        # the first connection starts the daemon, which finds it waiting in the backlog
        done = blfs_cli("workers", "--master", sock_path)
        assert done.returncode == 0, done.stderr + d.log()
        assert done.stdout.startswith("WORKER")
        pid = d.python_pid()
        ready = notify.wait_for("READY")
        assert ready["READY"] == "1" and MASTER_STATUS.match(ready["STATUS"]), ready
        hello, workers = rpc_call(f"127.0.0.1:{port}", key, "workers")  # TCP, with the key exchange
        assert hello["role"] == "master" and workers == []
        done = blfs_cli("workers", "--master", f"127.0.0.1:{port}", "--key",
                        str(tmp_path / "cluster.key"))
        assert done.returncode == 0, done.stderr
        # it bound nothing of its own
        assert not os.path.exists(tmp_path / "configured.sock")
        assert refused("127.0.0.1", other_port)
        assert pid == d.proc.pid
        code = d.terminate()
        assert code == 0, d.log()
        notify.drain(0.2)
        assert notify.all("STOPPING") == ["1"]
        # an activated socket belongs to whoever made it: never unlinked by the daemon
        assert os.path.exists(sock_path)
        assert "Traceback" not in d.log(), d.log()


def test_master_ready_only_when_it_accepts(tmp_path, notify):
    """READY=1 (with STATUS=) is sent once both listeners accept: connecting right after it,
    without any retry, works on the Unix socket and on TCP. STOPPING=1 on SIGTERM."""
    sock_path = str(tmp_path / "master.sock")
    port = free_port()
    config = master_config(tmp_path, socket_path=sock_path, listen=f"127.0.0.1:{port}")
    key = (tmp_path / "cluster.key").read_bytes().strip()
    with daemon(python_cmd("--config", config, "master"), {"NOTIFY_SOCKET": notify.path},
                tmp_path, "master") as d:
        ready = notify.wait_for("READY")
        _, unix_reply = rpc_call(sock_path, None, "workers")
        hello, tcp_reply = rpc_call(f"127.0.0.1:{port}", key, "workers")
        assert unix_reply == [] and tcp_reply == [] and hello["role"] == "master"
        assert ready["READY"] == "1"
        assert MASTER_STATUS.match(ready["STATUS"]), ready
        # nothing else announced readiness before that (one READY per life)
        assert notify.all("READY") == ["1"]
        assert d.terminate() == 0, d.log()
        notify.drain(0.2)
        assert notify.all("STOPPING") == ["1"]
        assert notify.all("READY") == ["1"]


@pytest.mark.parametrize("role", ["master", "worker"])
def test_watchdog_pings_from_the_event_loop(tmp_path, notify, role):
    """WATCHDOG_USEC set: WATCHDOG=1 at least every half period; none for another PID."""
    if role == "master":
        config = master_config(tmp_path, socket_path=str(tmp_path / "m.sock"),
                               listen=f"127.0.0.1:{free_port()}")
        argv = python_cmd("--config", config, "master")
    else:
        root = tmp_path / "node"
        root.mkdir()
        write_key(root / "cluster.key")
        argv = python_cmd("worker", "--local-root", str(root), "--name", "w1", "--slots", "2",
                          "--slot-size", str(1 << 20))
    with daemon(argv, {"NOTIFY_SOCKET": notify.path, "WATCHDOG_USEC": "600000"},
                tmp_path, role) as d:
        notify.wait_for("READY")
        start = time.monotonic()
        got = notify.drain(1.5)
        pings = [t for t, m in notify.messages if m.get("WATCHDOG") == "1" and t >= start]
        assert len(pings) >= 4, (got, d.log())  # every 0.3 s or sooner
        gaps = [b - a for a, b in zip(pings, pings[1:])]
        assert max(gaps) < 0.6, gaps
        assert d.terminate() == 0, d.log()
    # a WATCHDOG_PID naming another process means the pings are not ours to send
    n2 = NotifySocket(str(tmp_path / "notify2.sock"))
    try:
        env = {"NOTIFY_SOCKET": n2.path, "WATCHDOG_USEC": "600000", "WATCHDOG_PID": "1"}
        with daemon(argv, env, tmp_path, role + "2") as d:
            n2.wait_for("READY")
            n2.drain(1.0)
            assert n2.all("WATCHDOG") == []
            assert d.terminate() == 0, d.log()
    finally:
        n2.close()


# ------------------------------------------------------------------------------ the worker

@needs_socket_activate
def test_worker_serves_on_activated_socket(tmp_path, notify):
    """The worker adopts the TCP socket it is given (its READY=1 names that address), says
    READY=1 only once its pool is usable, reports STATUS=, and STOPPING=1 on SIGTERM."""
    root = tmp_path / "node"
    root.mkdir()
    key = write_key(root / "cluster.key")
    port = free_port()
    argv = activate([f"127.0.0.1:{port}"],
                    {"NOTIFY_SOCKET": notify.path, "PYTHONPATH": REPO},
                    python_cmd("worker", "--local-root", str(root), "--name", "w1",
                               "--slots", "3", "--slot-size", str(1 << 20)))
    with daemon(argv, {}, tmp_path, "worker") as d:
        deadline = time.monotonic() + 10
        while refused("127.0.0.1", port):  # wait for systemd-socket-activate to listen
            assert time.monotonic() < deadline, d.log()
            time.sleep(0.05)
        hello, pong = rpc_call(f"127.0.0.1:{port}", key, "ping", default_port=port,
                               expect_role="worker")
        assert hello["name"] == "w1" and hello["role"] == "worker"
        assert pong["free_slots"] == 3 and pong["running"] == 0
        d.python_pid()
        ready = notify.wait_for("READY")
        assert ready["BLFS_LISTEN"] == f"127.0.0.1:{port}", ready
        assert ready["BLFS_NAME"] == "w1"
        assert WORKER_STATUS.match(ready["STATUS"]), ready
        assert ready["STATUS"].endswith("3/3 slots free, waiting for the master")
        # READY=1 came after the pool was prepared (a usable pool is part of being ready)
        assert (root / "disks" / "w1" / "pool" / "MANIFEST").exists()
        assert d.terminate() == 0, d.log()
        notify.drain(0.2)
        assert notify.all("STOPPING") == ["1"]
        assert "Traceback" not in d.log(), d.log()


# ------------------------------------------------------------------------------ the units

NAMESPACE_OPTIONS = {
    # every one of these gives the service a mount namespace of its own (systemd.exec(5))
    "ProtectSystem", "ProtectHome", "PrivateTmp", "PrivateDevices", "PrivateMounts",
    "ReadWritePaths", "ReadOnlyPaths", "InaccessiblePaths", "ExecPaths", "NoExecPaths",
    "TemporaryFileSystem", "BindPaths", "BindReadOnlyPaths", "ProtectKernelTunables",
    "ProtectKernelModules", "ProtectKernelLogs", "ProtectControlGroups", "ProtectProc",
    "ProcSubset", "MountFlags", "RootDirectory", "RootImage", "MountAPIVFS", "DynamicUser",
    "PrivateUsers", "LogNamespace", "ProtectClock",
}


def unit(name: str) -> configparser.RawConfigParser:
    parser = configparser.RawConfigParser(strict=False, delimiters=("=",),
                                          comment_prefixes=("#", ";"), empty_lines_in_values=False)
    parser.optionxform = str
    with open(os.path.join(UNITS, name)) as f:
        parser.read_file(f)
    return parser


def test_unit_files_say_what_the_design_says():
    ms, mv = unit("blfs-master.socket"), unit("blfs-master.service")
    ws, wv = unit("blfs-worker.socket"), unit("blfs-worker.service")
    with open(os.path.join(UNITS, "blfs-master.socket")) as f:
        listens = re.findall(r"^ListenStream=(.*)$", f.read(), re.M)
    assert listens == ["/run/blfs/master.sock", "7070"]
    assert ms["Socket"]["SocketGroup"] == "blfs" and ms["Socket"]["SocketMode"] == "0660"
    assert ws["Socket"]["ListenStream"] == "7071"
    for svc in (mv, wv):
        s = svc["Service"]
        assert s["Type"] == "notify" and s["NotifyAccess"] == "main"
        assert s["Restart"] == "on-failure" and s["WatchdogSec"]
        assert "RuntimeDirectory" not in s  # /run/blfs outlives the services
        assert s["NoNewPrivileges"] == "yes"
        assert s["RestrictAddressFamilies"] == "AF_UNIX AF_INET AF_INET6 AF_NETLINK"
    assert mv["Service"]["ExecStart"] == "/usr/bin/blfs master"
    assert wv["Service"]["ExecStart"] == "/usr/bin/blfs worker"
    assert mv["Service"]["StateDirectory"] == "blfs/master"
    from blfsd.config import Config
    assert Config().state_dir == "/var/lib/blfs/master"
    assert mv["Service"]["User"] == "blfs" and mv["Service"]["CapabilityBoundingSet"] == ""
    assert mv["Service"]["ProtectSystem"] == "strict"
    assert "User" not in wv["Service"]  # root, see the unit's comment
    assert "blfs-iscsi.service" in wv["Unit"]["Requires"].split()
    assert "blfs-iscsi.service" in wv["Unit"]["After"].split()
    assert wv["Unit"]["RequiresMountsFor"] == "/var/lib/blfs/disks"
    # the worker remounts peer views: it must stay in the host's mount namespace
    assert not NAMESPACE_OPTIONS & set(wv["Service"]), NAMESPACE_OPTIONS & set(wv["Service"])
    with open(os.path.join(UNITS, "blfs.tmpfiles")) as f:
        assert re.search(r"^d /run/blfs\s", f.read(), re.M)
    with open(os.path.join(UNITS, "blfs.sysusers")) as f:
        users = f.read()
    assert re.search(r"^u blfs\s", users, re.M)
    assert re.search(r"^u blfs-task\s", users, re.M)  # whom task attempts run as
    assert wv["Service"]["Delegate"] == "yes"  # the worker makes a cgroup per attempt


@pytest.mark.root
def test_remount_in_private_namespace_keeps_stale_view(tmp_path):
    """Why blfs-worker.service has no ProtectSystem=/PrivateTmp=/...: a peer view remounted
    inside a private mount namespace reuses the superblock the host's mount keeps alive, with
    its stale caches; remounted in the host's namespace, it sees the peer's new file."""
    if os.geteuid() != 0 or not all(shutil.which(t) for t in ("unshare", "losetup",
                                                                 "mkfs.ext4")):
        pytest.skip("needs root, unshare, losetup and mkfs.ext4")
    img = tmp_path / "disk.img"
    with open(img, "wb") as f:
        f.truncate(32 << 20)
    subprocess.run(["mkfs.ext4", "-q", "-F", str(img)], check=True)
    own, view = tmp_path / "own", tmp_path / "view"
    own.mkdir()
    view.mkdir()
    loops: list = []
    mounted: list = []
    try:
        for _ in range(2):
            loops.append(subprocess.run(["losetup", "-f", "--show", str(img)], check=True,
                                        capture_output=True, text=True).stdout.strip())
        subprocess.run(["mount", loops[0], str(own)], check=True)
        mounted.append(own)
        subprocess.run(["mount", "-o", "ro,noload", loops[1], str(view)], check=True)
        mounted.append(view)
        assert os.listdir(view) == ["lost+found"]  # the view has read the root directory
        (own / "new-segment").write_text("peer wrote this after we mounted")
        fd = os.open(own / "new-segment", os.O_RDONLY)
        os.fsync(fd)
        os.close(fd)
        fd = os.open(loops[0], os.O_RDONLY)
        os.fsync(fd)
        os.close(fd)
        assert "new-segment" not in os.listdir(view)  # the stale view (test_coherence.py)
        private = subprocess.run(
            ["unshare", "-m", "--propagation", "slave", "sh", "-c",
             f"umount {view} && mount -o ro,noload {loops[1]} {view} && ls {view}"],
            check=True, capture_output=True, text=True).stdout.split()
        assert "new-segment" not in private  # still stale inside a private namespace
        subprocess.run(["umount", str(view)], check=True)
        subprocess.run(["mount", "-o", "ro,noload", loops[1], str(view)], check=True)
        assert (view / "new-segment").read_text() == "peer wrote this after we mounted"
    finally:
        for m in reversed(mounted):
            subprocess.run(["umount", str(m)], capture_output=True)
        for loop in loops:
            subprocess.run(["losetup", "-d", loop], capture_output=True)


# ------------------------------------------------------------------------------ findings

SLEEPY_JOB = """\
import time
from blfsd import Job


class Sleepy(Job):
    def setup(self):
        time.sleep(1.0)

    def map(self, key, value):
        yield value, 1

    def reduce(self, key, values):
        yield key, sum(values)
"""


@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")
def test_worker_keeps_supervising_an_attempt_across_gc(tmp_path):
    from blfsd import worker as workermod
    from blfsd.messages import AttemptSpec
    from blfsd.cli import _daemon_config, build_parser

    root = tmp_path / "node"
    root.mkdir()
    write_key(root / "cluster.key")
    (tmp_path / "in.txt").write_text("a\nb\n")
    args = build_parser().parse_args(["worker", "--local-root", str(root), "--name", "w1",
                                      "--slots", "2", "--slot-size", str(1 << 20)])
    cfg = _daemon_config(args)
    spec = {"id": "j/m-00000/0", "job": "j", "task": "m-00000", "kind": "map", "index": 0,
            "attempt": 0, "source": SLEEPY_JOB, "job_file": "sleepy.py", "class": "Sleepy",
            "args": [], "reducers": 1, "input_format": "lines",
            "output": str(tmp_path / "out"),
            "split": {"path": str(tmp_path / "in.txt"), "start": 0, "end": 4}}

    async def go() -> bool:
        w = workermod.Worker(cfg, None)
        w.open_pool()
        started = await w.attempts.launch(None, AttemptSpec.from_wire(spec))
        assert started["pid"] > 0 and spec["id"] in w.attempts.running
        await asyncio.sleep(0.3)  # the supervisor waits for the task's first message
        gc.collect()
        deadline = time.monotonic() + 5
        while w.attempts.running and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        for attempt in list(w.attempts.running.values()):  # do not leave the task behind
            w.attempts.terminate(attempt)
            with contextlib.suppress(ChildProcessError):
                os.waitpid(attempt.pid, 0)
        return not w.attempts.running

    assert asyncio.run(go()), "the attempt finished but its supervisor never saw it"
