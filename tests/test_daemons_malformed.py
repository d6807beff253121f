"""Malformed input against real daemons over real sockets (docs/ARCHITECTURE.md, Wire protocol).

"Malformed input of any kind (bad length, bad msgpack, unknown op, wrong types, huge values)
gets an error reply or a dropped connection, a log line, and nothing else: the daemon stays up."

One real Master (in-process, its own event loop in a thread, listening on a Unix socket and on
loopback TCP) and one real worker process (`python -m blfsd worker --local-root ...`, which
announces its address by sd_notify) are started once for the module; every test below throws
something bad at them with raw sockets and then checks that they still serve correct requests.
"""
from __future__ import annotations

import asyncio
import os
import secrets
import signal
import socket
import struct
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from typing import Callable, Optional

import msgpack
import pytest

from blfsd import auth, protocol, rpc, secure
from blfsd.config import Config
from blfsd.errors import AuthError, RemoteError
from blfsd.master import Master

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TIMEOUT = 5.0          # any single socket operation; a hang fails instead of blocking
DROP_TIMEOUT = 3.0     # how long a daemon may take to hang up on a bad connection
MAX = protocol.MAX_FRAME


# ------------------------------------------------------------------------------ raw client

class Dropped(Exception):
    pass


class Raw:
    """A blocking socket speaking frames by hand, every operation under a timeout.
    After a TCP handshake (`authenticate`), frames are sealed with the session's keys."""

    def __init__(self, sock: socket.socket):
        self.sock = sock
        self.protection: Optional[secure.Protection] = None
        sock.settimeout(TIMEOUT)

    @classmethod
    def tcp(cls, address: tuple) -> "Raw":
        return cls(socket.create_connection(address, timeout=TIMEOUT))

    @classmethod
    def unix(cls, path: str) -> "Raw":
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.settimeout(TIMEOUT)
        s.connect(path)
        return cls(s)

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def sealed(self, body: bytes) -> bytes:
        """One frame holding `body`, sealed if the session is protected."""
        if self.protection is None:
            return struct.pack(">I", len(body)) + body
        head = struct.pack(">I", len(body) + secure.TAG_BYTES)
        return head + self.protection.seal(head, body)

    def frame(self, msg: dict) -> None:
        self.send(self.sealed(msgpack.packb(msg, use_bin_type=True)))

    def _exact(self, n: int) -> bytes:
        buf = bytearray()
        while len(buf) < n:
            try:
                chunk = self.sock.recv(min(n - len(buf), 1 << 20))
            except ConnectionResetError:
                chunk = b""
            if not chunk:
                raise Dropped(f"connection closed after {len(buf)} of {n} bytes")
            buf += chunk
        return bytes(buf)

    def read(self) -> dict:
        head = self._exact(4)
        (n,) = struct.unpack(">I", head)
        assert 0 < n <= MAX + secure.TAG_BYTES, f"daemon sent a frame of {n} bytes"
        body = self._exact(n)
        if self.protection is not None:
            body = self.protection.open(head, body)
        return msgpack.unpackb(body, raw=False, strict_map_key=False)

    def call(self, msg: dict) -> dict:
        self.frame(msg)
        return self.read()

    def expect_dropped(self, timeout: float = DROP_TIMEOUT) -> bytes:
        """Wait for the daemon to hang up; what it sent before that is returned."""
        self.sock.settimeout(timeout)
        got = bytearray()
        try:
            while True:
                try:
                    chunk = self.sock.recv(65536)
                except ConnectionResetError:
                    break
                if not chunk:
                    break
                got += chunk
        except socket.timeout:
            pytest.fail(f"the daemon did not drop the connection within {timeout} s "
                        f"(received {bytes(got[:80])!r})")
        finally:
            self.sock.settimeout(TIMEOUT)
        return bytes(got)

    def close(self) -> None:
        self.sock.close()


class Refused(Exception):
    """The server answered our hello with an error."""


@dataclass
class Opening:
    """A client's half-done handshake: its hello sent, the server's hello read."""
    client: secure.Hello
    server: secure.Hello
    answer: dict
    keys: secure.Handshake


def begin(raw: Raw, key: bytes, role: str = "client", name: str = "t") -> Opening:
    """Send a real hello (fresh nonce and X25519 share) and read the server's hello."""
    eph = secure.Ephemeral()
    client = secure.Hello(protocol.VERSION, role, name, secrets.token_bytes(32), eph.share)
    raw.frame({"op": "hello", "id": 1, **client.fields()})
    answer = raw.read()
    if "error" in answer:
        raise Refused(answer["error"])
    server = secure.Hello.from_message(answer["result"])
    keys = secure.handshake(key, eph.shared_secret(server.share), client, server)
    return Opening(client, server, answer, keys)


def authenticate(raw: Raw, key: bytes, role: str = "client", name: str = "t") -> dict:
    """The client side of the TCP handshake, by hand. Returns the server's hello; the
    connection is protected afterwards. With a wrong key, a wrong proof is sent anyway."""
    opening = begin(raw, key, role, name)
    raw.frame({"op": "finish", "id": 2, "proof": opening.keys.client_proof()})
    if opening.answer["result"].get("proof") == opening.keys.server_proof:
        raw.protection = opening.keys.protection(is_client=True)
        assert raw.read() == {"id": 2, "result": {}}, "the server's first sealed frame"
    return opening.answer["result"]


def hello(role: str = "client", name: str = "t", version: int = protocol.VERSION,
          **extra) -> dict:
    return {"op": "hello", "id": 1, "version": version, "role": role, "name": name, **extra}


# ------------------------------------------------------------------------------ daemons

@dataclass
class Daemon:
    kind: str                         # "master" or "worker"
    key: bytes
    tcp: tuple                        # (host, port)
    unix: Optional[str]               # the master's Unix socket
    alive: Callable[[], None]         # raises unless a correct request is served
    log_has: Callable[[str], bool]    # whether the daemon logged a line containing text
    transports: list = field(default_factory=list)


class MasterThread:
    """A real Master on its own event loop in a background thread."""

    def __init__(self, tmp):
        self.key = secrets.token_hex(32).encode()
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, name="master", daemon=True)
        self.thread.start()
        # every refusal logged: the tests below check each one's reason
        cfg = Config(master_socket=str(tmp / "master.sock"), master_listen="127.0.0.1:0",
                     state_dir="", nodes=[], group="blfs", refusal_log_burst=1 << 30)

        async def make() -> Master:
            m = Master(cfg, self.key)
            await m.start()
            return m

        self.master: Master = self.run(make())
        host, port = self.master.tcp_address.rsplit(":", 1)
        self.tcp = (host, int(port))
        self.unix = self.master.unix_path

    def run(self, coro, timeout: float = 10.0):
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def stop(self) -> None:
        async def down():
            await self.master.stop()
            me = asyncio.current_task()
            rest = [t for t in asyncio.all_tasks() if t is not me]
            for t in rest:
                t.cancel()
            await asyncio.gather(*rest, return_exceptions=True)

        try:
            self.run(down())
        finally:
            self.loop.call_soon_threadsafe(self.loop.stop)
            self.thread.join(5)
            if not self.thread.is_alive():
                self.loop.close()


def arun(coro, timeout: float = TIMEOUT * 2):
    return asyncio.run(asyncio.wait_for(coro, timeout))


async def _rpc_session(address: str, key: Optional[bytes], role: str, default_port: int):
    peer, result = await rpc.connect(address, key, role, "t", default_port=default_port,
                                     expect_role="worker" if default_port == 7071 else "master",
                                     timeout=TIMEOUT)
    serving = asyncio.ensure_future(peer.serve())  # so that replies are read
    return peer, result, serving


def master_alive(m: MasterThread) -> None:
    """The master serves `jobs` and `status` over its Unix socket, and `ping` over TCP."""
    assert m.thread.is_alive()

    async def check():
        peer, result, serving = await _rpc_session(m.unix, None, "client", 7070)
        try:
            assert result["role"] == "master" and result["version"] == protocol.VERSION
            assert await peer.call("jobs", limit=TIMEOUT) == []
            status = await peer.call("status", limit=TIMEOUT)
            assert status["jobs"] == [] and status["workers"] == []
        finally:
            await peer.close()
            await serving
        host, port = m.tcp
        peer, result, serving = await _rpc_session(f"{host}:{port}", m.key, "client", 7070)
        try:
            assert "time" in await peer.call("ping", limit=TIMEOUT)
        finally:
            await peer.close()
            await serving

    arun(check())
    assert m.master.sched.jobs == {}  # nothing malformed ever became a job


@pytest.fixture(scope="module")
def master_daemon(tmp_path_factory):
    m = MasterThread(tmp_path_factory.mktemp("master"))
    try:
        yield m
    finally:
        m.stop()


@dataclass
class WorkerProcess:
    proc: subprocess.Popen
    key: bytes
    tcp: tuple
    name: str
    log_path: str

    def log_text(self) -> str:
        with open(self.log_path, "r", errors="replace") as f:
            return f.read()

    def log_has(self, text: str, timeout: float = 2.0) -> bool:
        deadline = time.monotonic() + timeout
        while True:
            if text in self.log_text():
                return True
            if time.monotonic() > deadline:
                return False
            time.sleep(0.05)


def worker_ping(w: WorkerProcess, role: str = "master") -> dict:
    async def check():
        peer, result, serving = await _rpc_session(f"{w.tcp[0]}:{w.tcp[1]}", w.key, role, 7071)
        try:
            assert result == {"version": protocol.VERSION, "role": "worker", "name": w.name}
            return await peer.call("ping", limit=TIMEOUT)
        finally:
            await peer.close()
            await serving

    return arun(check())


def worker_alive(w: WorkerProcess) -> None:
    assert w.proc.poll() is None, f"worker exited: {w.proc.returncode}\n{w.log_text()[-3000:]}"
    answer = worker_ping(w)
    assert answer["running"] == 0, "no attempt may ever have been launched"
    assert answer["free_slots"] == 4


@pytest.fixture(scope="module")
def worker_daemon(tmp_path_factory):
    root = tmp_path_factory.mktemp("worker")
    key = auth.generate_key(str(root / "cluster.key"))
    notify_path = str(root / "notify.sock")
    notify = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    notify.bind(notify_path)
    log_path = str(root / "worker.log")
    env = dict(os.environ, NOTIFY_SOCKET=notify_path)
    for var in ("LISTEN_PID", "LISTEN_FDS", "LISTEN_FDNAMES", "WATCHDOG_USEC", "JOURNAL_STREAM"):
        env.pop(var, None)
    config = root / "blfs.toml"  # every refusal logged: the tests check each one's reason
    config.write_text(f"[cluster]\nrefusal_log_burst = {1 << 30}\n")
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "blfsd", "--config", str(config), "worker", "--local-root",
             str(root), "--name", "w0", "--slots", "4", "--slot-size", str(1 << 20)],
            cwd=REPO, env=env, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT)
    try:
        fields: dict = {}
        deadline = time.monotonic() + 20
        while "READY" not in fields:
            left = deadline - time.monotonic()
            if left <= 0 or proc.poll() is not None:
                with open(log_path, errors="replace") as f:
                    pytest.fail(f"the worker did not become ready: {f.read()[-3000:]}")
            notify.settimeout(min(left, 0.5))
            try:
                data = notify.recv(65536).decode()
            except socket.timeout:
                continue
            for line in data.splitlines():
                k, _, v = line.partition("=")
                fields[k] = v
        assert fields["READY"] == "1"
        assert fields["BLFS_NAME"] == "w0"
        host, port = fields["BLFS_LISTEN"].rsplit(":", 1)
        yield WorkerProcess(proc, key, (host, int(port)), "w0", log_path)
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(5)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(5)
        notify.close()


@pytest.fixture(params=["master", "worker"])
def daemon(request, caplog) -> Daemon:
    if request.param == "master":
        m: MasterThread = request.getfixturevalue("master_daemon")

        def log_has(text: str) -> bool:
            return any(text in r.getMessage() for r in caplog.records
                       if r.name.startswith("blfs") and r.levelname == "WARNING")

        d = Daemon("master", m.key, m.tcp, m.unix, lambda: master_alive(m), log_has,
                   ["unix", "tcp"])
    else:
        w: WorkerProcess = request.getfixturevalue("worker_daemon")
        d = Daemon("worker", w.key, w.tcp, None, lambda: worker_alive(w), w.log_has, ["tcp"])
    yield d
    d.alive()  # after every test: the daemon is up and answers correctly


def connect(d: Daemon, transport: str) -> Raw:
    return Raw.unix(d.unix) if transport == "unix" else Raw.tcp(d.tcp)


def open_at(d: Daemon, transport: str, stage: str) -> Raw:
    """A connection brought to `stage`: start (nothing said yet), midauth (TCP: our hello
    sent and the server's read, no proof yet), or session (handshake done)."""
    raw = connect(d, transport)
    if stage == "midauth":
        assert transport == "tcp", "Unix sockets have no key exchange"
        assert begin(raw, d.key).answer["result"]["role"] == d.kind
    elif stage == "session" and transport == "tcp":
        assert authenticate(raw, d.key)["role"] == d.kind and raw.protection is not None
    elif stage == "session":
        answer = raw.call(hello())
        assert answer == {"id": 1, "result": {"version": protocol.VERSION, "role": d.kind,
                                               "name": answer["result"]["name"]}}
    return raw


STAGES = [("unix", "start"), ("unix", "session"),
          ("tcp", "start"), ("tcp", "midauth"), ("tcp", "session")]
TRANSPORTS = {"master": ["unix", "tcp"], "worker": ["tcp"]}


def targets(*, stages: bool = True):
    """Parametrize over (daemon, transport[, stage]) as each daemon offers them."""
    if stages:
        combos = [(d, t, s) for d in ("master", "worker") for t, s in STAGES
                  if t in TRANSPORTS[d]]
        return pytest.mark.parametrize("daemon,transport,stage", combos, indirect=["daemon"],
                                       ids=["-".join(c) for c in combos])
    combos = [(d, t) for d in ("master", "worker") for t in TRANSPORTS[d]]
    return pytest.mark.parametrize("daemon,transport", combos, indirect=["daemon"],
                                   ids=["-".join(c) for c in combos])


# ------------------------------------------------------------------------------ bad frames

def framed(body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + body


def _nested(depth: int):
    value: object = 1
    for _ in range(depth):
        value = [value]
    return value


# Headers alone (checked before any body is read), and bodies (sealed in a session, so that
# they reach the decoder rather than failing authentication).
BAD_HEADERS = {
    "over-limit": struct.pack(">I", MAX + secure.TAG_BYTES + 1),  # must not wait for a body
    "max-u32": b"\xff\xff\xff\xff",
    "zero-length": b"\x00\x00\x00\x00",
}
BAD_BODIES = {
    "garbage-msgpack": b"\xc1\xff\x00\xc1\x92\x01",
    "truncated-msgpack": b"\x93\x01\x02",       # an array of 3 holding 2
    "non-map": msgpack.packb([1, 2, 3]),
    "op-not-str": msgpack.packb({"op": 5, "id": 1}),
    "id-is-bool": msgpack.packb({"op": "ping", "id": True}),
    "reply-without-result": msgpack.packb({"id": 1}),
    "nested-too-deep": msgpack.packb({"op": "ping", "id": 1, "x": _nested(40)}),
}


@targets()
@pytest.mark.parametrize("bad", sorted(BAD_HEADERS) + sorted(BAD_BODIES))
def test_bad_frame_drops_connection(daemon, transport, stage, bad):
    raw = open_at(daemon, transport, stage)
    try:
        raw.send(BAD_HEADERS[bad] if bad in BAD_HEADERS else raw.sealed(BAD_BODIES[bad]))
        assert raw.expect_dropped() == b"", "a bad frame gets no reply, only a hang-up"
    finally:
        raw.close()
    expected = "dropping client" if stage == "session" else "refused connection"
    assert daemon.log_has(expected), f"no warning {expected!r} logged"


def test_a_flipped_bit_in_a_sealed_frame_drops_the_connection(daemon):
    """Inside a protected session a frame that fails authentication ends the connection;
    the request it carried is never served. (Only TCP is sealed: on a Unix socket the
    kernel vouches for the peer.)"""
    raw = open_at(daemon, "tcp", "session")
    try:
        frame = bytearray(raw.sealed(msgpack.packb({"op": "ping", "id": 5})))
        frame[6] ^= 0x01
        raw.send(bytes(frame))
        assert raw.expect_dropped() == b""
    finally:
        raw.close()
    assert daemon.log_has("failed authentication")


@targets()
def test_half_frame_then_close(daemon, transport, stage):
    raw = open_at(daemon, transport, stage)
    frame = raw.sealed(protocol.pack(hello()))
    raw.send(frame[:len(frame) // 2])
    raw.close()
    raw = open_at(daemon, transport, stage)  # a header cut in two, too
    raw.send(frame[:2])
    raw.close()


def test_stalled_half_frame_does_not_block_others(daemon):
    stalled = [open_at(daemon, t, s) for t, s in STAGES if t in daemon.transports]
    try:
        for raw in stalled:
            raw.send(struct.pack(">I", 1000) + b"\x80" * 10)
        daemon.alive()  # everyone else is served meanwhile
    finally:
        for raw in stalled:
            raw.close()


def test_unauthenticated_stall_is_dropped(master_daemon):
    """A TCP client that never finishes its handshake is hung up on at the deadline."""
    gate = master_daemon.master.gate
    saved, gate.deadline = gate.deadline, 0.5  # the master reads it for each connection
    try:
        raw = Raw.tcp(master_daemon.tcp)
        try:
            begin(raw, master_daemon.key)
            raw.send(struct.pack(">I", 100) + b"\x80")  # half a frame, then nothing
            raw.expect_dropped(timeout=3.0)
        finally:
            raw.close()
    finally:
        gate.deadline = saved
    master_alive(master_daemon)


# ------------------------------------------------------------------------------ authentication

@pytest.mark.parametrize("op", ["hello", "submit", "launch", "jobs", "ping"])
def test_request_before_authentication_is_dropped(daemon, op):
    msgs = {"hello": hello(role="master"),  # a hello without nonce and key share
            "submit": {"op": "submit", "id": 1, "spec": {}},
            "launch": {"op": "launch", "id": 1, "attempt": {}},
            "jobs": {"op": "jobs", "id": 1},
            "ping": {"op": "ping", "id": 1}}
    raw = Raw.tcp(daemon.tcp)
    try:
        raw.frame(msgs[op])
        assert raw.expect_dropped() == b"", "nothing may come back"
    finally:
        raw.close()
    assert daemon.log_has("refused connection")


def test_wrong_key_is_denied_and_dropped(daemon):
    raw = Raw.tcp(daemon.tcp)
    try:
        answer = authenticate(raw, secrets.token_hex(32).encode())
        assert raw.protection is None, "the server's proof cannot pass with another key"
        assert answer["role"] == daemon.kind
        assert raw.expect_dropped() == b""
    finally:
        raw.close()
    assert daemon.log_has("wrong cluster key")


def test_wrong_key_then_requests_are_never_served(daemon):
    """A client that ignores the refusal and carries on gets nothing at all."""
    raw = Raw.tcp(daemon.tcp)
    try:
        authenticate(raw, b"x" * 64)
        try:
            raw.frame({"op": "jobs", "id": 3})
            raw.frame({"op": "launch", "id": 4, "attempt": {}})
        except (BrokenPipeError, ConnectionResetError):
            pass
        assert raw.expect_dropped() == b""
    finally:
        raw.close()


@pytest.mark.parametrize("mangle", ["short-proof", "str-proof", "no-proof",
                                    "reflected-server-proof", "proof-of-another-connection"])
def test_malformed_or_borrowed_proof_is_dropped(daemon, mangle):
    """Only the proof made for this connection's transcript passes: not the server's own
    proof sent back, not a valid proof taken from another connection (a replay)."""
    other = Raw.tcp(daemon.tcp)
    try:
        elsewhere = begin(other, daemon.key).keys.client_proof()
    finally:
        other.close()
    raw = Raw.tcp(daemon.tcp)
    try:
        opening = begin(raw, daemon.key)
        good = opening.keys.client_proof()
        msg = {"short-proof": {"op": "finish", "id": 2, "proof": good[:31]},
               "str-proof": {"op": "finish", "id": 2, "proof": good.hex()},
               "no-proof": {"op": "finish", "id": 2},
               "reflected-server-proof": {"op": "finish", "id": 2,
                                          "proof": opening.answer["result"]["proof"]},
               "proof-of-another-connection": {"op": "finish", "id": 2, "proof": elsewhere},
               }[mangle]
        raw.frame(msg)
        assert raw.expect_dropped() == b""
    finally:
        raw.close()
    assert daemon.log_has("refused connection")


def test_rpc_connect_with_wrong_key_fails(daemon):
    host, port = daemon.tcp
    with pytest.raises(AuthError):
        arun(rpc.connect(f"{host}:{port}", b"w" * 64, "master", "m", default_port=7071,
                         expect_role=daemon.kind))


# ------------------------------------------------------------------------------ hello

@targets(stages=False)
@pytest.mark.parametrize("version", [0, 1, 3, 2**32, -1])
def test_hello_wrong_version(daemon, transport, version):
    raw = open_at(daemon, transport, "start")
    try:
        answer = raw.call(hello(version=version, nonce=b"n" * 32, share=b"s" * 32))
        assert answer["id"] == 1 and answer["error"]["code"] == "version"
        assert "result" not in answer
        assert raw.expect_dropped() == b""
    finally:
        raw.close()
    assert daemon.log_has("protocol version")


@targets(stages=False)
@pytest.mark.parametrize("msg", [
    hello(version="2"), hello(version=True), hello(version=2.0), hello(name=None),
    hello(role=5), hello(nonce="n" * 32), {"op": "hello", "id": 1, "version": 2},
    {"op": "jobs", "id": 1}, {"op": "ping", "id": 1}, {"op": "launch", "id": 1, "attempt": {}},
    {"op": "nope", "id": 1}, {"id": 1, "result": {"version": 2}},
], ids=lambda m: "-".join(f"{k}={v!r}"[:20] for k, v in m.items() if k != "id"))
def test_bad_or_missing_hello_is_dropped(daemon, transport, msg):
    raw = open_at(daemon, transport, "start")
    try:
        raw.frame(msg)
        assert raw.expect_dropped() == b"", "no reply, and certainly no result"
    finally:
        raw.close()


@targets(stages=False)
def test_a_role_the_daemon_does_not_serve_is_refused(daemon, transport):
    """The master's listeners serve clients, a worker's serve its master and clients: a
    peer claiming another role is refused in the handshake, with the reason."""
    refused = "master" if daemon.kind == "master" else "worker"
    raw = open_at(daemon, transport, "start")
    try:
        if transport == "tcp":
            with pytest.raises(Refused) as err:
                begin(raw, daemon.key, role=refused)
            assert err.value.args[0]["code"] == "auth"
        else:
            answer = raw.call(hello(role=refused))
            assert answer["error"]["code"] == "auth"
        assert raw.expect_dropped() == b""
    finally:
        raw.close()
    assert daemon.log_has(f"role {refused!r} may not connect here")


# ------------------------------------------------------------------------------ in a session

@targets(stages=False)
def test_unknown_op_gets_error_and_connection_stays_usable(daemon, transport):
    raw = open_at(daemon, transport, "session")
    try:
        for i, op in enumerate(["nope", "", "HELLO", "challenge", "auth", "__init__",
                                "x" * 1000], start=10):
            answer = raw.call({"op": op, "id": i, "junk": [1, {"a": b"b"}]})
            assert answer["id"] == i
            assert answer["error"]["code"] == "bad_request", answer
            assert "unknown op" in answer["error"]["message"]
        # a notification with an unknown op gets no reply at all; the next call still works
        raw.frame({"op": "nope", "id": 0})
        raw.frame({"op": "nope"})
        answer = raw.call({"op": "ping", "id": 99})
        assert answer["id"] == 99 and "time" in answer["result"]
    finally:
        raw.close()
    assert daemon.log_has("bad request")


WRONG_TYPES = [
    {"op": "ping", "time": "now"},
    {"op": "ping", "time": True},
    {"op": "status", "job": 5},
    {"op": "cancel", "job": None},
    {"op": "cancel"},
    {"op": "wait", "job": "j", "version": True},
    {"op": "wait", "job": "j", "version": "1"},
    {"op": "wait", "job": "j", "version": 1, "timeout": "soon"},
    {"op": "submit", "spec": []},
    {"op": "launch", "attempt": "rm -rf /"},
    {"op": "kill", "attempt": 1},
    {"op": "commit", "attempt": "a", "source": b"s", "target": "t"},
    {"op": "release_job", "job": "j", "output_tmp": 3},
    {"op": "sync", "held": "all"},
    {"op": "attempt_update", "attempt": "a", "state": None},
    {"op": "hello", "version": "1", "role": "client", "name": "t"},
    {"op": "put_begin", "name": 7, "splits": 1, "size": 1},
    {"op": "put_data", "put": "p", "index": 0, "offset": 0, "data": "text", "last": True},
    {"op": "put_data", "put": "p", "index": 0, "offset": 0, "data": b"x", "last": 1},
    {"op": "read", "name": "o", "part": "0", "offset": 0, "length": 10},
    {"op": "remove", "name": None},
    {"op": "store", "name": "c", "index": 0, "offset": 0, "data": [], "last": True},
    {"op": "fetch", "node": "w0", "file": 5, "offset": 0, "length": 1, "size": 1},
]


@targets(stages=False)
def test_wrong_field_types_get_error_replies(daemon, transport):
    raw = open_at(daemon, transport, "session")
    try:
        for i, msg in enumerate(WRONG_TYPES, start=100):
            answer = raw.call({**msg, "id": i})
            assert answer["id"] == i and "result" not in answer, (msg, answer)
            assert answer["error"]["code"] == "bad_request", (msg, answer)
        assert "time" in raw.call({"op": "ping", "id": 1})["result"]
    finally:
        raw.close()


def test_many_bad_requests_pipelined(daemon):
    """A burst of bad requests written at once: each gets its own error, in any order."""
    raw = open_at(daemon, "tcp", "session")
    try:
        n = 200
        raw.send(b"".join(raw.sealed(protocol.pack({**WRONG_TYPES[i % len(WRONG_TYPES)],
                                                    "id": 1000 + i}))
                          for i in range(n)))
        ids = set()
        for _ in range(n):
            answer = raw.read()
            assert answer["error"]["code"] == "bad_request"
            ids.add(answer["id"])
        assert ids == set(range(1000, 1000 + n))
    finally:
        raw.close()


HUGE = MAX - 64  # a string that leaves room in the frame for the rest of the message


@pytest.mark.parametrize("msg", [
    {"op": "ping", "time": "x" * HUGE},
    {"op": "status", "job": b"x" * HUGE},
    {"op": "kill", "attempt": ["x" * 1000] * (HUGE // 1003)},
    {"op": "submit", "spec": {"name": "x" * HUGE}},
], ids=["ping-time-str", "status-job-bytes", "kill-attempt-list", "submit-spec-name"])
def test_huge_value_within_frame_limit_gets_error_reply(daemon, msg):
    raw = open_at(daemon, "tcp", "session")
    try:
        frame = protocol.encode({**msg, "id": 7})
        assert len(frame) - 4 <= MAX
        answer = raw.call({**msg, "id": 7})
        assert answer["id"] == 7 and answer["error"]["code"] == "bad_request"
        assert len(answer["error"]["message"]) < 4096
        assert "time" in raw.call({"op": "ping", "id": 8})["result"]
    finally:
        raw.close()


def test_hello_is_limited_before_the_peer_is_known(daemon):
    """Until the handshake is done, frames are tiny (4 KiB, short strings, shallow): a
    stranger cannot make a daemon hold megabytes per connection."""
    raw = open_at(daemon, "tcp", "start")
    try:
        assert authenticate(raw, daemon.key, name="n" * 100)["role"] == daemon.kind
        assert "time" in raw.call({"op": "ping", "id": 3})["result"]
    finally:
        raw.close()
    for big in (hello(name="n" * 5000, nonce=b"n" * 32, share=b"s" * 32),
                hello(nonce=b"n" * 32, share=b"s" * 32, pad=b"x" * (HUGE - 2000))):
        raw = open_at(daemon, "tcp", "start")
        try:
            with pytest.raises((Dropped, ConnectionError)):  # refused, maybe mid-send
                raw.call(big)
        finally:
            raw.close()


@pytest.mark.parametrize("daemon,which", [("master", "unknown-op"), ("master", "cancel-job"),
                                           ("worker", "unknown-op")],
                         indirect=["daemon"], ids=["master-unknown-op", "master-cancel-job",
                                                   "worker-unknown-op"])
def test_huge_echoed_value_still_gets_an_answer(daemon, which):
    msg = {"unknown-op": {"op": "x" * (MAX - 16), "id": 7},
           "cancel-job": {"op": "cancel", "id": 7, "job": "x" * (MAX - 32)}}[which]
    assert len(protocol.encode(msg)) - 4 <= MAX
    raw = open_at(daemon, "tcp", "session")
    try:
        raw.frame(msg)
        raw.sock.settimeout(2.0)  # a 16 MiB reply crosses loopback in milliseconds
        try:
            answer = raw.read()
        except socket.timeout:
            pytest.fail("no reply and no hang-up: the request was silently lost")
        except Dropped:
            return  # a dropped connection is an acceptable answer
        assert answer["id"] == 7 and "error" in answer
    finally:
        raw.close()


def test_reply_shaped_frames_are_ignored(daemon):
    """Replies to calls nobody made (or forged ids) are not requests: ignored, no crash."""
    raw = open_at(daemon, "tcp", "session")
    try:
        raw.frame({"id": 1, "result": "unsolicited"})
        raw.frame({"id": 2**63, "error": "not a map"})
        raw.frame({"id": -5, "error": {"code": 1, "message": None}})
        assert "time" in raw.call({"op": "ping", "id": 3})["result"]
    finally:
        raw.close()


def _valid_spec(tmp_path) -> dict:
    data = tmp_path / "in.txt"
    data.write_text("a b\n")
    return {"name": "n", "job_file": "job.py", "source": "pass\n", "class": "Job", "args": [],
            "input_format": "text", "splits": [{"path": str(data), "start": 0, "end": 4}],
            "output": str(tmp_path / "out")}


async def _submit_to_fresh_master(tmp_path, spec: dict):
    """Submit to a master of its own (no workers: an accepted job just waits), then stop it."""
    m = Master(Config(master_socket=str(tmp_path / "m.sock"), master_listen="", state_dir="",
                      nodes=[]), None)
    await m.start()
    try:
        peer, _, serving = await _rpc_session(m.unix_path, None, "client", 7070)
        try:
            return await peer.call("submit", limit=TIMEOUT, spec=spec)
        finally:
            await peer.close()
            await serving
    finally:
        await m.stop()


def test_submit_with_valid_spec_is_accepted(tmp_path):
    """The control for the test below: the same spec with proper types is a job."""
    answer = arun(_submit_to_fresh_master(tmp_path, _valid_spec(tmp_path)))
    assert answer["status"]["state"] in ("pending", "running") and answer["job"]


@pytest.mark.parametrize("field,value", [("reducers", True), ("task_timeout", True),
                                         ("split-start", False)])
def test_submit_refuses_bool_where_a_number_is_expected(tmp_path, field, value):
    spec = _valid_spec(tmp_path)
    if field == "split-start":
        spec["splits"][0]["start"] = value
    else:
        spec[field] = value
    with pytest.raises(RemoteError) as err:
        arun(_submit_to_fresh_master(tmp_path, spec))
    assert err.value.code == "bad_request"


# ------------------------------------------------------------------------------ worker only

MASTER_ONLY = [
    {"op": "launch", "attempt": {
        "id": "j-m0-a0", "job": "j", "task": "m0", "kind": "map", "index": 0, "attempt": 0,
        "source": "import os\nos.system('touch /tmp/blfs-pwned')\n", "job_file": "job.py",
        "class": "Job", "reducers": 1, "input_format": "text", "output": "/tmp/blfs-out",
        "split": {"path": "/etc/hostname", "start": 0, "end": 10}}},
    {"op": "sync", "held": []},
    {"op": "kill", "attempt": "j-m0-a0"},
    {"op": "commit", "attempt": "a", "source": "/tmp/x/part", "target": "/tmp/y/part"},
    {"op": "release_job", "job": "j"},
    {"op": "store", "name": "c", "index": 0, "offset": 0, "data": b"x", "last": True},
    {"op": "abort_put", "name": "c"},
    {"op": "drop", "kind": "data", "name": "c"},
    {"op": "fetch", "node": "w0", "file": "data/c/split-00000", "offset": 0, "length": 1,
     "size": 1},
]


@pytest.mark.parametrize("role", ["client", "worker", "Master", ""])
def test_worker_refuses_master_ops_from_non_master(worker_daemon, role):
    """A client (who holds the key) may ping a worker, nothing else; other roles are not
    even let in."""
    w = worker_daemon
    raw = Raw.tcp(w.tcp)
    try:
        if role != "client":
            with pytest.raises((Refused, Dropped)):  # "" is no role at all: dropped unanswered
                authenticate(raw, w.key, role=role)
            return
        assert authenticate(raw, w.key, role=role)["name"] == "w0"
        for i, msg in enumerate(MASTER_ONLY, start=1):
            answer = raw.call({**msg, "id": i})
            assert answer["id"] == i and "result" not in answer, answer
            assert answer["error"]["code"] == "bad_request"
            assert "only for the master" in answer["error"]["message"]
    finally:
        raw.close()
        worker_alive(w)


def test_worker_refuses_launch_from_non_master_while_a_master_is_connected(worker_daemon):
    w = worker_daemon

    async def main():
        host, port = w.tcp
        master, _, m_serving = await _rpc_session(f"{host}:{port}", w.key, "master", 7071)
        client, _, c_serving = await _rpc_session(f"{host}:{port}", w.key, "client", 7071)
        try:
            with pytest.raises(RemoteError) as err:
                await client.call("launch", limit=TIMEOUT, attempt=MASTER_ONLY[0]["attempt"])
            assert err.value.code == "bad_request"
            assert (await master.call("ping", limit=TIMEOUT))["running"] == 0
            # a malformed launch from the real master is refused too, without a fork
            with pytest.raises(RemoteError) as err:
                await master.call("launch", limit=TIMEOUT,
                                  attempt={"id": 5, "kind": "map", "source": "x"})
            assert err.value.code == "bad_request"
            assert (await master.call("ping", limit=TIMEOUT))["running"] == 0
        finally:
            for peer in (client, master):
                await peer.close()
            await asyncio.gather(m_serving, c_serving)

    arun(main())
    assert not os.path.exists("/tmp/blfs-pwned")
    worker_alive(w)


def test_worker_reads_only_cluster_storage_even_for_the_master(worker_daemon):
    """fetch, store and drop with names or paths that would leave a disk's data/ and
    output/ areas are refused; nothing outside them is read, written or removed."""
    w = worker_daemon

    async def main():
        host, port = w.tcp
        master, _, serving = await _rpc_session(f"{host}:{port}", w.key, "master", 7071)
        try:
            for node, file in (("w0", "data/../../../../etc/hostname"), ("w0", "/etc/hostname"),
                               ("w0", "pool/MANIFEST"), ("..", "data/x/y"), ("w0", "data")):
                with pytest.raises(RemoteError) as err:
                    await master.call("fetch", limit=TIMEOUT, node=node, file=file, offset=0,
                                      length=100, size=1, crc=None)
                assert err.value.code == "bad_request", (node, file, err.value)
            for name in ("../pool", "..", "a/b", ""):
                for op, fields in (("store", {"index": 0, "offset": 0, "data": b"x",
                                              "last": True}),
                                   ("drop", {"kind": "data"}), ("abort_put", {})):
                    with pytest.raises(RemoteError) as err:
                        await master.call(op, limit=TIMEOUT, name=name, **fields)
                    assert err.value.code in ("usage", "bad_request"), (op, name)
            with pytest.raises(RemoteError) as err:
                await master.call("drop", limit=TIMEOUT, kind="pool", name="x")
            assert err.value.code == "bad_request"
            # a chunk that does not follow the previous one is refused
            await master.call("store", limit=TIMEOUT, name="c", index=0, offset=0,
                              data=b"a\n", last=False)
            with pytest.raises(RemoteError) as err:
                await master.call("store", limit=TIMEOUT, name="c", index=0, offset=7,
                                  data=b"b\n", last=True)
            assert err.value.code == "bad_request"
            await master.call("abort_put", limit=TIMEOUT, name="c")
        finally:
            await master.close()
            await serving

    arun(main())
    disk = os.path.join(os.path.dirname(w.log_path), "disks", "w0")  # --local-root layout
    assert os.path.exists(os.path.join(disk, "pool", "MANIFEST"))
    assert not os.path.exists(os.path.join(disk, "data", "c"))
    worker_alive(w)


def test_master_storage_requests_with_bad_values(master_daemon):
    m = master_daemon

    async def main():
        client, _, serving = await _rpc_session(m.unix, None, "client", 7070)
        try:
            for op, fields, code in (
                    ("put_data", {"put": "nope", "index": 0, "offset": 0, "data": b"x",
                                  "last": True}, "not_found"),
                    ("put_end", {"put": "nope"}, "not_found"),
                    ("put_begin", {"name": "../x", "splits": 1, "size": 1}, "usage"),
                    ("put_begin", {"name": "x", "splits": 0, "size": 1}, "bad_request"),
                    ("read", {"name": "none", "part": 0, "offset": 0, "length": 9},
                     "not_found"),
                    ("dataset", {"name": "none"}, "not_found"),
                    ("remove", {"name": "none"}, "not_found")):
                with pytest.raises(RemoteError) as err:
                    await client.call(op, limit=TIMEOUT, **fields)
                assert err.value.code == code, (op, fields, err.value.code, err.value)
            assert await client.call("ls", limit=TIMEOUT) == []
        finally:
            await client.close()
            await serving

    arun(main())
    master_alive(m)


# ------------------------------------------------------------------------------ survivors

def test_master_still_serves_after_everything(master_daemon):
    master_alive(master_daemon)
    assert master_daemon.master.links.peers == {}


def test_worker_still_serves_after_everything(worker_daemon):
    worker_alive(worker_daemon)
    assert worker_daemon.proc.poll() is None
    answer = worker_ping(worker_daemon)
    assert answer["running"] == 0 and answer["free_slots"] == 4
    text = worker_daemon.log_text()
    assert "Traceback" not in text, text[-3000:]
