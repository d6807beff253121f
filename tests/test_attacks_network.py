"""Attacks on the wire protocol, against real daemons over real sockets.

A master and a worker run as processes here, with one cluster key. The attacker is this
test: it never reads the key (an unprivileged user on a node cannot: 0640 root:blfs), it
only binds ports, dials, relays, records, replays and tampers with bytes:

- the reflection relay of the old challenge-response: pose as a stopped worker, let the
  master dial us, and relay its handshake to its own client port (as is, or rewritten so
  that each side sees the role and name it expects);
- a recorded session of a real client replayed to the master;
- a man in the middle between a real client and the master that flips a byte, drops a
  frame or replays one, in either direction;
- 500 idle connections that never finish a handshake.

In every case: refused or ended, no job accepted, nothing executed (twice), daemons up.
"""
from __future__ import annotations

import asyncio
import json
import os
import re
import select
import shutil
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Callable

import msgpack
import pytest

from blfsd import auth, rpc
from blfsd.errors import BlfsError

from cluster_helpers import REPO, Daemon, free_port

TIMEOUT = 10.0
HANDSHAKE_TIMEOUT = 3.0  # the daemons' hello deadline in this module (the default)


# ------------------------------------------------------------------------------ daemons

class Pair:
    """A real master and one real worker (w0), plus a node (w1) whose address nobody
    serves: the port that an attacker on that node binds."""

    def __init__(self, base: Path):
        self.base = base
        self.root = base / "w0"
        self.root.mkdir()
        self.key_file = self.root / "cluster.key"  # where `worker --local-root` looks
        self.key = auth.generate_key(str(self.key_file))
        self.master_port, self.w1_port = free_port(), free_port()
        self.socket = str(base / "master.sock")
        # where the job's tasks (an unprivileged user) may leave their mark
        self.shared = Path(tempfile.mkdtemp(prefix="blfs-attacks-", dir="/var/tmp"))
        os.chmod(self.shared, 0o1777)
        self.marker = self.shared / "pwned"
        common = (f"[cluster]\nkey_file = \"{self.key_file}\"\n"
                  f"handshake_timeout = {HANDSHAKE_TIMEOUT}\n")
        worker_cfg = base / "w0.toml"
        worker_cfg.write_text(common)
        env = {k: v for k, v in os.environ.items()
               if k not in ("NOTIFY_SOCKET", "LISTEN_PID", "LISTEN_FDS", "BLFS_CONFIG")}
        env["PYTHONPATH"] = str(REPO)
        self.env = env
        self.worker = Daemon("w0", [sys.executable, "-m", "blfsd", "--config", str(worker_cfg),
                                    "worker", "--local-root", str(self.root), "--name", "w0",
                                    "--slots", "8", "--slot-size", str(1 << 20)],
                             base / "w0.log", env)
        self.w0_port = self._wait_listening()
        self.master_cfg = base / "master.toml"
        self.master_cfg.write_text(
            common + "[master]\n"
            f"socket = \"{self.socket}\"\nlisten = \"127.0.0.1:{self.master_port}\"\n"
            f"state_dir = \"{base / 'state'}\"\nheartbeat_interval = 0.5\n"
            f"[nodes.w0]\naddress = \"127.0.0.1:{self.w0_port}\"\n"
            f"[nodes.w1]\naddress = \"127.0.0.1:{self.w1_port}\"\n")
        self.master = Daemon("master", [sys.executable, "-m", "blfsd", "--config",
                                        str(self.master_cfg), "master"], base / "master.log", env)
        self.wait(lambda: self.workers().get("w0") is True, "w0 up")

    def _wait_listening(self) -> int:
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            found = re.search(r"worker w0 listening on 127\.0\.0\.1:(\d+)", self.worker.log_tail())
            if found:
                return int(found.group(1))
            assert self.worker.alive(), self.worker.log_tail()
            time.sleep(0.05)
        raise AssertionError("w0 did not start:\n" + self.worker.log_tail())

    def blfs(self, *args: str, timeout: float = 60) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "blfsd", "--config", str(self.master_cfg),
                               *args], cwd=str(REPO), env=self.env, capture_output=True,
                              text=True, timeout=timeout)

    def jobs(self) -> list:
        done = self.blfs("jobs", "--json", "--master", self.socket)
        assert done.returncode == 0, done.stderr
        return json.loads(done.stdout)

    def workers(self) -> dict:
        done = self.blfs("workers", "--json", "--master", self.socket)
        return {w["name"]: w["alive"] for w in json.loads(done.stdout)} \
            if done.returncode == 0 else {}

    def wait(self, ok: Callable[[], bool], what: str, timeout: float = 20) -> None:
        deadline = time.monotonic() + timeout
        while not ok():
            assert self.master.alive(), self.master.log_tail()
            if time.monotonic() > deadline:
                raise AssertionError(f"timed out waiting for {what}\n{self.master.log_tail()}")
            time.sleep(0.1)

    def alive(self) -> None:
        assert self.master.alive(), self.master.log_tail()
        assert self.worker.alive(), self.worker.log_tail()

    def close(self) -> None:
        self.master.stop()
        self.worker.stop()
        shutil.rmtree(self.shared, ignore_errors=True)


@pytest.fixture
def pair(tmp_path):
    p = Pair(tmp_path)
    try:
        yield p
    finally:
        p.close()


def marker_job(pair: Pair) -> dict:
    """A job whose map leaves a file behind: proof that it ran, and how often."""
    data = pair.base / "in.txt"
    data.write_text("x\n")
    source = ("import os\nfrom blfsd import Job\n\n\nclass Mark(Job):\n"
              "    def map(self, key, value):\n"
              f"        with open({str(pair.marker)!r}, 'a') as f:\n"
              "            f.write('ran\\n')\n"
              "        yield value, 1\n")
    return {"name": "mark", "job_file": "mark.py", "source": source, "class": "Mark",
            "args": [], "input_format": "lines",
            "splits": [{"path": str(data), "start": 0, "end": 2}],
            "output": str(pair.base / f"out-{time.monotonic_ns()}"), "reducers": 1}


def runs(pair: Pair) -> int:
    try:
        return pair.marker.read_text().count("ran")
    except FileNotFoundError:
        return 0


# ------------------------------------------------------------------------------ framing

def read_frame(sock: socket.socket) -> bytes:
    """One whole frame (header and body) from a blocking socket; b"" at EOF."""
    head = _exact(sock, 4)
    if len(head) < 4:
        return b""
    (n,) = struct.unpack(">I", head)
    body = _exact(sock, n)
    return head + body if len(body) == n else b""


def _exact(sock: socket.socket, n: int) -> bytes:
    buf = bytearray()
    while len(buf) < n:
        try:
            chunk = sock.recv(n - len(buf))
        except (ConnectionError, OSError):
            break
        if not chunk:
            break
        buf += chunk
    return bytes(buf)


def plain(frame: bytes) -> dict:
    return msgpack.unpackb(frame[4:], raw=False, strict_map_key=False)


def framed(msg: dict) -> bytes:
    body = msgpack.packb(msg, use_bin_type=True)
    return struct.pack(">I", len(body)) + body


def hung_up(sock: socket.socket, timeout: float = 5.0) -> bool:
    """True when the other side closes the connection (whatever it sent before)."""
    sock.settimeout(timeout)
    try:
        while True:
            if not sock.recv(65536):
                return True
    except (ConnectionError, OSError):
        return True
    except socket.timeout:
        return False


# ------------------------------------------------------------------------------ relay

def _await_dial(listener: socket.socket, timeout: float = 15.0) -> socket.socket:
    listener.settimeout(timeout)
    conn, _ = listener.accept()
    conn.settimeout(TIMEOUT)
    return conn


@pytest.mark.parametrize("rewrite", [False, True], ids=["as-is", "rewritten"])
def test_reflection_relay_is_refused(pair, rewrite):
    """The attack of the old protocol: we hold w1's port; the master dials us; we relay its
    handshake to the master's own client port and try to get a session there."""
    listener = socket.create_server(("127.0.0.1", pair.w1_port))
    try:
        dial = _await_dial(listener)  # the master, re-dialling w1 as it always does
    finally:
        listener.close()
    client_hello = plain(read_frame(dial))
    assert client_hello["op"] == "hello" and client_hello["role"] == "master"
    to_master = socket.create_connection(("127.0.0.1", pair.master_port), timeout=TIMEOUT)
    try:
        forged = dict(client_hello, role="client", name="w1") if rewrite else client_hello
        to_master.sendall(framed(forged))
        answer = read_frame(to_master)
        if not rewrite:
            # the master's client port serves clients, not a peer claiming to be a master
            assert "error" in plain(answer) and plain(answer)["error"]["code"] == "auth"
            assert hung_up(to_master)
        else:
            server_hello = plain(answer)["result"]
            assert server_hello["role"] == "master" and "proof" in server_hello
            # pass the master's proof to its dialler, dressed as worker w1
            dial.sendall(framed({"id": 1, "result": dict(server_hello, role="worker",
                                                         name="w1")}))
            back = plain(read_frame(dial))
            # the dialler's transcript differs (roles, names): the proof fails there
            assert back == {"op": "abort", "id": 0, "reason": "proof"}
            assert hung_up(dial)
            # and without the dialler's proof, we cannot finish at the client port either
            to_master.sendall(framed({"op": "finish", "id": 2, "proof": b"\0" * 32}))
            assert hung_up(to_master)
    finally:
        to_master.close()
        dial.close()
    assert pair.jobs() == [] and runs(pair) == 0
    assert not pair.workers().get("w1"), "the impostor never became worker w1"
    log = pair.master.log_tail(1 << 20)
    assert "refused connection from 127.0.0.1" in log
    pair.alive()


def test_blind_relay_then_an_injected_submit_is_refused(pair):
    """Relay bytes blindly between the master's dial and its client port until they fall
    silent (whatever handshake that is), then use the client-port connection for our own
    `submit`. (On the old protocol this is how the attacker got its job run as root.)"""
    listener = socket.create_server(("127.0.0.1", pair.w1_port))
    try:
        dial = _await_dial(listener)
    finally:
        listener.close()
    to_master = socket.create_connection(("127.0.0.1", pair.master_port), timeout=TIMEOUT)
    try:
        _relay(dial, to_master, quiet=1.0)
        dial.close()
        try:
            to_master.sendall(framed({"op": "submit", "id": 99, "spec": marker_job(pair)}))
        except OSError:
            pass  # already hung up on us
        assert hung_up(to_master)
    finally:
        to_master.close()
        dial.close()
    time.sleep(1.0)
    assert pair.jobs() == [] and runs(pair) == 0
    assert not pair.workers().get("w1")
    pair.alive()


def _relay(a: socket.socket, b: socket.socket, quiet: float) -> None:
    """Copy bytes both ways until neither side says anything for `quiet` seconds, or one
    side closes."""
    peers = {a: b, b: a}
    while True:
        ready, _, _ = select.select([a, b], [], [], quiet)
        if not ready:
            return
        for src in ready:
            try:
                data = src.recv(65536)
            except OSError:
                data = b""
            if not data:
                return
            peers[src].sendall(data)


# ------------------------------------------------------------------------------ replay and MITM

class Proxy:
    """A man in the middle between one client and the master, frame by frame.

    `tamper(direction, index, frame)` returns the frames to pass on in place of the
    index-th frame of that direction ("up": client to master, "down": back)."""

    def __init__(self, target: int, tamper: Callable[[str, int, bytes], list]):
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.target = target
        self.tamper = tamper
        self.recorded: dict = {"up": [], "down": []}
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        self.listener.settimeout(TIMEOUT)
        try:
            client, _ = self.listener.accept()
        except OSError:
            return
        server = socket.create_connection(("127.0.0.1", self.target), timeout=TIMEOUT)
        ways = [threading.Thread(target=self._forward, args=(client, server, "up")),
                threading.Thread(target=self._forward, args=(server, client, "down"))]
        for t in ways:
            t.start()
        for t in ways:
            t.join()
        client.close()
        server.close()

    def _forward(self, src: socket.socket, dst: socket.socket, direction: str) -> None:
        src.settimeout(TIMEOUT * 3)
        index = 0
        try:
            while True:
                frame = read_frame(src)
                if not frame:
                    break
                self.recorded[direction].append(frame)
                for out in self.tamper(direction, index, frame):
                    dst.sendall(out)
                index += 1
        except OSError:
            pass
        for s in (src, dst):
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    def close(self) -> None:
        self.listener.close()
        self.thread.join(TIMEOUT)


async def _session(port: int, key: bytes, calls: list) -> list:
    """Run calls [(op, fields)] over one authenticated client connection; each result, or
    its exception. A call without an answer times out and the next one is still made (so
    that a dropped frame shows); a closed connection ends the list."""
    peer, _ = await rpc.connect(f"127.0.0.1:{port}", key, "client", "t", expect_role="master",
                                timeout=TIMEOUT)
    serving = asyncio.ensure_future(peer.serve())
    out: list = []
    try:
        for op, fields in calls:
            try:
                out.append(await peer.call(op, limit=3.0, **fields))
            except asyncio.TimeoutError as exc:
                out.append(exc)
            except BlfsError as exc:
                out.append(exc)
                break
    finally:
        await peer.close()
        await serving
    return out


# Client frames: 0 hello, 1 finish, then 2 jobs, 3 submit, 4 jobs.
SUBMIT_FRAME = 3


def _flip(frame: bytes) -> bytes:
    mutated = bytearray(frame)
    mutated[len(frame) // 2] ^= 0x40
    return bytes(mutated)


@pytest.mark.parametrize("attack", ["flip-up", "drop-up", "replay-up", "flip-down"])
def test_tampered_frames_end_the_connection_and_nothing_runs_twice(pair, attack):
    def tamper(direction: str, index: int, frame: bytes) -> list:
        if attack == "flip-down" and direction == "down" and index == 3:
            return [_flip(frame)]  # the master's answer to `submit`
        if direction != "up" or index != SUBMIT_FRAME or attack == "flip-down":
            return [frame]
        return {"flip-up": [_flip(frame)], "drop-up": [], "replay-up": [frame, frame]}[attack]

    proxy = Proxy(pair.master_port, tamper)
    try:
        spec = marker_job(pair)
        results = asyncio.run(_session(proxy.port, pair.key, [
            ("jobs", {}), ("submit", {"spec": spec}), ("jobs", {})]))
    finally:
        proxy.close()
    assert results[0] == []
    assert any(isinstance(r, BlfsError) for r in results), results  # the connection ended
    accepted = {"flip-up": 0, "drop-up": 0, "replay-up": 1, "flip-down": 1}[attack]
    pair.wait(lambda: all(j["state"] in ("succeeded", "failed") for j in pair.jobs()),
              "the jobs to end")
    assert len(pair.jobs()) == accepted
    assert runs(pair) == accepted, "a request was executed more (or less) often than sent"
    if attack != "flip-down":  # the master saw the bad frame (else the client did)
        assert "failed authentication" in pair.master.log_tail(1 << 20)
    pair.alive()


def test_a_recorded_session_replayed_is_refused(pair):
    """Record a real client's session (submit of a job), then play its bytes again to the
    master: the master's new nonce and key share make the old proof worthless."""
    proxy = Proxy(pair.master_port, lambda d, i, f: [f])
    try:
        results = asyncio.run(_session(proxy.port, pair.key, [
            ("submit", {"spec": marker_job(pair)})]))
    finally:
        proxy.close()
    assert results and not isinstance(results[0], BaseException), results
    pair.wait(lambda: pair.jobs()[0]["state"] == "succeeded", "the real job")
    assert runs(pair) == 1
    replay = socket.create_connection(("127.0.0.1", pair.master_port), timeout=TIMEOUT)
    try:
        replay.sendall(proxy.recorded["up"][0])   # the old hello
        assert "result" in plain(read_frame(replay))  # a fresh server hello
        for frame in proxy.recorded["up"][1:]:    # the old proof, then the sealed submit
            try:
                replay.sendall(frame)
            except OSError:
                break
        assert hung_up(replay)
    finally:
        replay.close()
    time.sleep(0.5)
    assert len(pair.jobs()) == 1 and runs(pair) == 1
    assert re.search(r"refused connection from 127\.0\.0\.1:\d+: wrong cluster key",
                     pair.master.log_tail(1 << 20))
    pair.alive()


# ------------------------------------------------------------------------------ flood

WITHIN = 0.8 * HANDSHAKE_TIMEOUT  # a real client's whole session among the idle ones


@pytest.mark.parametrize("target", ["master", "worker"])
def test_500_idle_connections_do_not_lock_out_a_real_client(pair, target):
    port = pair.master_port if target == "master" else pair.w0_port
    daemon = pair.master if target == "master" else pair.worker
    before = daemon.log_tail(1 << 22).count("refused")
    idle = [socket.create_connection(("127.0.0.1", port), timeout=TIMEOUT) for _ in range(500)]
    try:
        started = time.monotonic()

        async def serve_me() -> dict:
            role = "master" if target == "master" else "worker"
            peer, hello = await rpc.connect(f"127.0.0.1:{port}", pair.key, "client", "real",
                                            expect_role=role, timeout=WITHIN)
            serving = asyncio.ensure_future(peer.serve())
            try:
                return await peer.call("ping", limit=WITHIN)
            finally:
                await peer.close()
                await serving

        assert "time" in asyncio.run(asyncio.wait_for(serve_me(), WITHIN))
        took = time.monotonic() - started
        # every idle connection is closed by the deadline (most much earlier: a full gate
        # drops its oldest handshake to make room)
        time.sleep(HANDSHAKE_TIMEOUT + 1.0)
        still_open = [s for s in idle if not hung_up(s, timeout=0.01)]
        assert still_open == [], f"{len(still_open)} idle connections still open"
    finally:
        for s in idle:
            s.close()
    # before the idle handshakes' deadline: the gate made room, no deadline had to pass
    # (a bound from the daemon's own rule, not a speed; generous for a loaded CI machine)
    assert took < HANDSHAKE_TIMEOUT
    time.sleep(0.5)
    lines = daemon.log_tail(1 << 22).count("refused") - before
    assert 1 <= lines <= 3 * 10, f"{lines} log lines about refused connections"
    pair.alive()
