"""The wire protocol in isolation (docs/ARCHITECTURE.md, Wire protocol): framing, decoding, validation, FrameStream, auth.

No daemons here (see test_daemons_malformed.py); FrameStream and the handshakes run over real
socket pairs and real loopback TCP with asyncio streams.
"""
from __future__ import annotations

import asyncio
import dataclasses
import grp
import os
import socket
import struct

import msgpack
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from blfsd import auth, protocol, secure
from blfsd.errors import AuthError, ConnectionClosed, ProtocolError
from blfsd.messages import AttemptSpec, AttemptState, FailureKind, JobSpec, TaskResult
from blfsd.protocol import (MAX_FRAME, SCHEMAS, SESSION_LIMITS, Limits, decode, encode,
                            frame_length, validate)
from blfsd.transport import FrameStream

TIMEOUT = 5.0


def run(coro, timeout: float = TIMEOUT):
    """Run a coroutine to completion; a hang fails the test instead of blocking it."""
    return asyncio.run(asyncio.wait_for(coro, timeout))


def header(n: int) -> bytes:
    return struct.pack(">I", n)


# ------------------------------------------------------------------------------ encode/decode

def test_encode_decode_round_trip():
    msg = {"op": "hello", "id": 7, "version": 1, "role": "client", "name": "ünï",
           "info": {"blob": b"\x00\xff", "n": [1, 2.5, None, True, {"x": "y"}], "neg": -3}}
    frame = encode(msg)
    assert frame[:4] == header(len(frame) - 4)
    assert frame_length(frame[:4]) == len(frame) - 4
    back = decode(frame[4:])
    assert back == msg
    assert isinstance(back["info"]["blob"], bytes)  # bin stays bin, str stays str
    assert isinstance(back["name"], str)


def test_round_trip_of_helpers():
    for msg in (protocol.request("ping", 3, time=1.5), protocol.reply(3, {"ok": True}),
                protocol.error_reply(4, "bad_request", "nope"), protocol.request("jobs", 0)):
        assert decode(encode(msg)[4:]) == msg


_scalars = st.one_of(st.none(), st.booleans(), st.integers(-2**63, 2**64 - 1),
                     st.floats(allow_nan=False), st.text(max_size=20), st.binary(max_size=20))
_values = st.recursive(_scalars, lambda inner: st.one_of(
    st.lists(inner, max_size=3), st.dictionaries(st.text(max_size=6), inner, max_size=3)),
    max_leaves=6)


@settings(max_examples=100, deadline=None)
@given(op=st.text(max_size=12), msg_id=st.integers(0, 2**63 - 1),
       fields=st.dictionaries(st.text(max_size=8).filter(lambda k: k not in ("op", "id")),
                              _values, max_size=5))
def test_round_trip_property(op, msg_id, fields):
    msg = {"op": op, "id": msg_id, **fields}
    frame = encode(msg)
    assert frame_length(frame[:4]) == len(frame) - 4
    assert decode(frame[4:]) == msg


def test_frame_length_limits():
    assert frame_length(header(1)) == 1
    assert frame_length(header(MAX_FRAME)) == MAX_FRAME
    with pytest.raises(ProtocolError):
        frame_length(header(0))
    with pytest.raises(ProtocolError):
        frame_length(header(MAX_FRAME + 1))
    with pytest.raises(ProtocolError):
        frame_length(header(0xFFFFFFFF))
    assert frame_length(header(100), limit=100) == 100
    with pytest.raises(ProtocolError):
        frame_length(header(101), limit=100)


@pytest.mark.parametrize("body", [
    b"\xc1",                      # a byte msgpack never uses
    b"\x92\x01",                  # truncated array
    b"\x81\xa2op",                # truncated map
    b"\x80\x80",                  # extra data after a map
    b"\xdb\xff\xff\xff\xff",      # str32 announcing 4 GiB
    b"\x81\x90\x01",              # a map keyed by a list (unhashable)
    b"\x81\x80\x01",              # a map keyed by a map (unhashable)
    b"\x91" * 100_000 + b"\x90",  # nested far too deep
    b"",
    b"\xff" * 64,
    b"\xa3\xff\xfe\xfd",          # str with invalid UTF-8
], ids=lambda b: b[:8].hex() or "empty")
def test_decode_refuses_garbage(body):
    with pytest.raises(ProtocolError):
        decode(body)


@pytest.mark.parametrize("value", [[1, 2], "op", 5, None, True, b"x", 1.5],
                         ids=lambda v: type(v).__name__)
def test_decode_refuses_non_map(value):
    with pytest.raises(ProtocolError, match="map"):
        decode(msgpack.packb(value, use_bin_type=True))


@pytest.mark.parametrize("msg", [
    {"op": 5, "id": 1},
    {"op": None, "id": 1},
    {"op": b"ping", "id": 1},
    {"op": ["ping"], "id": 1},
    {"op": "ping", "id": True},
    {"op": "ping", "id": False},
    {"op": "ping", "id": "1"},
    {"op": "ping", "id": 1.0},
    {"op": "ping", "id": None},
    {"id": 1},                      # a reply with neither result nor error
    {"id": "1", "result": 1},       # a reply whose id is not an integer
    {"result": 1},                  # a reply without an id
    {},
    {b"op": "ping", b"id": 1},      # keys must be str
    {1: 2},
])
def test_decode_refuses_bad_messages(msg):
    with pytest.raises(ProtocolError):
        decode(msgpack.packb(msg, use_bin_type=True))


def test_decode_accepts_requests_replies_notifications():
    assert decode(encode({"op": "ping", "id": 1})[4:]) == {"op": "ping", "id": 1}
    assert decode(encode({"op": "ping"})[4:]) == {"op": "ping"}  # id 0: a notification
    assert decode(encode({"id": 2, "result": None})[4:]) == {"id": 2, "result": None}
    assert decode(encode({"id": 3, "error": {"code": "x", "message": "y"}})[4:])["id"] == 3


def test_decode_refuses_bool_id_in_reply():
    with pytest.raises(ProtocolError):
        decode(msgpack.packb({"id": True, "result": "forged"}))


@settings(max_examples=500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(max_size=256))
def test_decode_random_bytes_only_protocol_error(data):
    try:
        msg = decode(data)
    except ProtocolError:
        return
    assert isinstance(msg, dict)


@settings(max_examples=200, deadline=None)
@given(st.one_of(_values, st.dictionaries(st.sampled_from(["op", "id", "result", "error",
                                                          "version", "job", "time"]),
                                          _values, max_size=5)))
def test_decode_and_validate_arbitrary_structures(value):
    """Whatever well-formed msgpack arrives, only ProtocolError comes out of decode+validate."""
    try:
        msg = decode(msgpack.packb(value, use_bin_type=True))
        if "op" in msg:
            validate(msg)
    except ProtocolError:
        pass


@settings(max_examples=200, deadline=None)
@given(op=st.sampled_from(sorted(SCHEMAS)),
       fields=st.dictionaries(st.sampled_from(sorted({f.rstrip("?") for s in SCHEMAS.values()
                                                      for f in s})), _values, max_size=4))
def test_validate_fuzz_known_ops(op, fields):
    try:
        validate({"op": op, "id": 1, **fields})
    except ProtocolError:
        pass


# ------------------------------------------------------------------------------ validate

_SPLIT = {"path": "/in", "start": 0, "end": 1}
_SAMPLE = {int: 1, str: "s", dict: {}, list: [], bytes: b"x", bool: True, (int, float): 1.5,
           (str, type(None)): None, (int, type(None)): None,
           JobSpec: {"name": "n", "job_file": "j.py", "source": "", "class": "J", "args": [],
                     "input_format": "lines", "splits": [_SPLIT], "output": "/out"},
           AttemptSpec: {"id": "j/m-00000/0", "job": "j", "task": "m-00000", "kind": "map",
                         "index": 0, "attempt": 0, "source": "", "job_file": "j.py",
                         "class": "J", "input_format": "lines", "reducers": 1,
                         "output": "/out", "split": _SPLIT},
           TaskResult: {"counters": {}}, AttemptState: "running", FailureKind: "user"}


def _valid(op: str, with_optional: bool) -> dict:
    msg = {"op": op, "id": 1}
    for field, typ in SCHEMAS[op].items():
        if field.endswith("?") and not with_optional:
            continue
        msg[field.rstrip("?")] = _SAMPLE[typ]
    return msg


@pytest.mark.parametrize("op", sorted(SCHEMAS))
def test_validate_accepts_every_op_with_and_without_optionals(op):
    validate(_valid(op, with_optional=True))
    validate(_valid(op, with_optional=False))


@pytest.mark.parametrize("op,field", [(op, f) for op, s in sorted(SCHEMAS.items())
                                      for f in s if not f.endswith("?")])
def test_validate_refuses_missing_field(op, field):
    msg = _valid(op, with_optional=True)
    del msg[field]
    with pytest.raises(ProtocolError, match=f"missing field {field!r}"):
        validate(msg)


def test_validate_refuses_unknown_op():
    for op in ("nope", "", "HELLO", "challenge", "auth", "__class__", "x" * 10_000):
        with pytest.raises(ProtocolError, match="unknown op"):
            validate({"op": op, "id": 1})


@pytest.mark.parametrize("msg", [
    {"op": "hello", "version": "1", "role": "client", "name": "c"},
    {"op": "hello", "version": 1.0, "role": "client", "name": "c"},
    {"op": "hello", "version": True, "role": "client", "name": "c"},   # bool is not an int
    {"op": "hello", "version": 1, "role": b"client", "name": "c"},
    {"op": "hello", "version": 1, "role": "client", "name": None},
    {"op": "hello", "version": 2, "role": "client", "name": "c", "nonce": []},
    {"op": "hello", "version": 2, "role": "client", "name": "c", "share": None},
    {"op": "ping", "time": "now"},
    {"op": "ping", "time": True},                                      # bool is not a number
    {"op": "ping", "time": None},
    {"op": "status", "job": 5},
    {"op": "status", "job": b"j"},
    {"op": "cancel", "job": None},
    {"op": "wait", "job": "j", "version": True},
    {"op": "wait", "job": "j", "version": 1.5},
    {"op": "wait", "job": "j", "version": 1, "timeout": "1"},
    {"op": "wait", "job": "j", "version": 1, "timeout": False},
    {"op": "submit", "spec": []},
    {"op": "submit", "spec": "x"},
    {"op": "launch", "attempt": []},
    {"op": "kill", "attempt": 3},
    {"op": "commit", "attempt": "a", "source": "s", "target": 1},
    {"op": "release_job", "job": "j", "output_tmp": 5},
    {"op": "sync", "held": {}},
    {"op": "sync", "held": None},
    {"op": "attempt_update", "attempt": "a", "state": 1},
    {"op": "pool_changed", "generation": False, "slots": 1},
    {"op": "pool_changed", "generation": 1, "slots": "1"},
], ids=lambda m: f"{m['op']}-" + "-".join(f"{k}={type(v).__name__}" for k, v in m.items()
                                           if k != "op"))
def test_validate_refuses_wrong_types(msg):
    with pytest.raises(ProtocolError, match="must be"):
        validate({**msg, "id": 1})


def test_validate_optional_fields():
    validate({"op": "status", "id": 1})
    validate({"op": "status", "id": 1, "job": None})
    validate({"op": "status", "id": 1, "job": "j"})
    validate({"op": "ping", "id": 1})
    validate({"op": "ping", "id": 1, "time": 3})
    validate({"op": "ping", "id": 1, "time": 3.25})
    validate({"op": "release_job", "id": 1, "job": "j"})
    validate({"op": "release_job", "id": 1, "job": "j", "output_tmp": None})
    validate({"op": "wait", "id": 1, "job": "j", "version": 0, "timeout": 2})
    validate({"op": "hello", "id": 1, "version": 2, "role": "r", "name": "n",
              "nonce": b"n" * 32, "share": b"s" * 32})
    # unknown extra fields are ignored, not refused
    validate({"op": "jobs", "id": 1, "extra": [1, 2]})


# ------------------------------------------------------------------------------ FrameStream

def _limits(max_frame: int) -> Limits:
    return dataclasses.replace(SESSION_LIMITS, frame=max_frame)


async def _stream_pair(max_frame: int = MAX_FRAME):
    """A FrameStream on one end of a real socket pair, and the raw socket at the other."""
    ours, theirs = socket.socketpair()
    reader, writer = await asyncio.open_unix_connection(sock=ours)
    theirs.setblocking(False)
    return FrameStream(reader, writer, _limits(max_frame)), theirs


async def _send(sock: socket.socket, data: bytes) -> None:
    await asyncio.get_running_loop().sock_sendall(sock, data)


def test_framestream_reads_frames_split_across_writes():
    async def main():
        stream, raw = await _stream_pair()
        msgs = [{"op": "ping", "id": i, "pad": "x" * (i * 1000)} for i in range(1, 6)]
        data = b"".join(encode(m) for m in msgs)
        got = []

        async def reader():
            for _ in msgs:
                got.append(await stream.read())

        task = asyncio.ensure_future(reader())
        # split at awkward places: inside headers, inside bodies, across frame boundaries
        cuts = [0, 1, 3, 4, 5, 17, 900, 1005, 1006, 4000, 9000, len(data)]
        for a, b in zip(cuts, cuts[1:]):
            await _send(raw, data[a:b])
            await asyncio.sleep(0.01)
        await asyncio.wait_for(task, 2)
        assert got == msgs
        # then EOF between frames is ConnectionClosed
        raw.close()
        with pytest.raises(ConnectionClosed):
            await stream.read()
        await stream.close()
    run(main())


class _RecordingWriter:
    """A stand-in StreamWriter that keeps every write() it is given."""

    def __init__(self) -> None:
        self.writes: list = []

    def write(self, data: bytes) -> None:
        self.writes.append(bytes(data))

    async def drain(self) -> None:
        pass


def test_framestream_writes_each_frame_in_one_write():
    """Header and body go to the transport together: a 4-byte header written alone is a
    segment of its own, and the body then waits on the peer's delayed ACK (Nagle), 40 ms
    per round trip on loopback (issue 13: the tiny job's RPCs)."""
    async def main():
        writer = _RecordingWriter()
        stream = FrameStream(asyncio.StreamReader(), writer)  # type: ignore[arg-type]
        msg = {"op": "ping", "id": 1, "pad": "x" * 100}
        await stream.write(msg)
        assert writer.writes == [encode(msg)]
    run(main())


def test_framestream_refuses_oversized_header_without_reading_body():
    async def main():
        stream, raw = await _stream_pair()
        # only the header: if read() waited for the 16 MiB + 1 body, this would time out
        await _send(raw, header(MAX_FRAME + 1))
        with pytest.raises(ProtocolError, match="frame length"):
            await asyncio.wait_for(stream.read(), 1.0)
        await stream.close()
        raw.close()

        stream, raw = await _stream_pair(max_frame=100)
        await _send(raw, header(101) + b"\x80" * 101)
        with pytest.raises(ProtocolError):
            await asyncio.wait_for(stream.read(), 1.0)
        # the body was left unread: what follows the header is still in the buffer
        assert stream.reader._buffer[:1] == b"\x80"
        await stream.close()
        raw.close()
    run(main())


def test_framestream_zero_length_and_garbage():
    async def main():
        for data in (header(0), header(3) + b"\xc1\xc1\xc1", encode({"id": 1}),
                     header(3) + msgpack.packb([1, 2])):
            stream, raw = await _stream_pair()
            await _send(raw, data)
            with pytest.raises(ProtocolError):
                await asyncio.wait_for(stream.read(), 1.0)
            await stream.close()
            raw.close()
    run(main())


def test_framestream_eof_mid_frame_is_connection_closed():
    async def main():
        for partial in (b"\x00\x00", header(10) + b"\x81\xa2"):
            stream, raw = await _stream_pair()
            await _send(raw, partial)
            raw.close()
            with pytest.raises(ConnectionClosed):
                await asyncio.wait_for(stream.read(), 1.0)
            await stream.close()
    run(main())


def test_framestream_write_round_trip_and_refuses_oversized():
    async def main():
        a_sock, b_sock = socket.socketpair()
        a = FrameStream(*await asyncio.open_unix_connection(sock=a_sock), _limits(1000))
        b = FrameStream(*await asyncio.open_unix_connection(sock=b_sock), _limits(1000))
        assert a.is_unix and a.peer_label() == "unix"
        await a.write({"op": "ping", "id": 1, "blob": b"\x00" * 900})
        assert (await b.read())["blob"] == b"\x00" * 900
        with pytest.raises(ProtocolError, match="refusing"):
            await a.write({"op": "ping", "id": 2, "blob": b"\x00" * 1000})
        # nothing of the refused frame was sent: the next frame arrives intact
        await a.write({"op": "ping", "id": 3})
        assert await asyncio.wait_for(b.read(), 1.0) == {"op": "ping", "id": 3}
        await a.close()
        await b.close()
    run(main())


# ------------------------------------------------------------------------------ auth

KEY = b"k" * 64
OTHER = b"o" * 64


async def _pair():
    a_sock, b_sock = socket.socketpair()
    a = FrameStream(*await asyncio.open_unix_connection(sock=a_sock))
    b = FrameStream(*await asyncio.open_unix_connection(sock=b_sock))
    return a, b


async def _tcp_pair():
    """Two FrameStreams joined by real loopback TCP."""
    accepted: asyncio.Future = asyncio.get_running_loop().create_future()

    async def on_conn(r, w):
        accepted.set_result(FrameStream(r, w))

    server = await asyncio.start_server(on_conn, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    client = FrameStream(*await asyncio.open_connection("127.0.0.1", port))
    srv = await asyncio.wait_for(accepted, 2)
    server.close()
    return srv, client


SERVER = auth.PeerIdentity("worker", "w1")
CLIENT = auth.PeerIdentity("master", "m")


def _handshakes(srv, cli, server_key=KEY, client_key=KEY, roles=("master",),
                expect_role="worker", expect_name="w1"):
    return asyncio.gather(auth.server_handshake(srv, server_key, SERVER, roles),
                          auth.client_handshake(cli, client_key, CLIENT, expect_role,
                                                expect_name),
                          return_exceptions=True)


@pytest.mark.parametrize("pair", [_pair, _tcp_pair], ids=["unix", "tcp"])
def test_handshake_same_key_succeeds(pair):
    async def main():
        srv, cli = await pair()
        s, c = await _handshakes(srv, cli)
        assert s == auth.PeerIdentity("master", "m") and c == auth.PeerIdentity("worker", "w1")
        # on TCP every later frame is protected; on a Unix socket none is
        assert (srv.protection is not None) == (not srv.is_unix)
        assert (cli.protection is not None) == (not cli.is_unix)
        # the connection carries ordinary frames afterwards, both ways
        await cli.write({"op": "ping", "id": 1})
        assert await srv.read() == {"op": "ping", "id": 1}
        await srv.write({"id": 1, "result": {"time": 1.5}})
        assert await cli.read() == {"id": 1, "result": {"time": 1.5}}
        await srv.close()
        await cli.close()
    run(main())


def test_handshake_different_keys_fail_on_both_sides():
    async def main():
        srv, cli = await _tcp_pair()
        s, c = await _handshakes(srv, cli, client_key=OTHER)
        assert isinstance(s, AuthError) and "wrong cluster key" in str(s), s
        assert isinstance(c, AuthError) and "could not prove" in str(c), c
        assert srv.protection is None and cli.protection is None
        await srv.close()
        await cli.close()
    run(main())


def test_client_refuses_server_without_the_key():
    """Mutual: a server that cannot prove the key (a made-up proof) is refused, and the
    client never sends a proof of its own to it."""
    async def main():
        srv, cli = await _tcp_pair()
        sent = []

        async def impostor():
            hello = await srv.read()
            await srv.write({"id": hello["id"], "result": {
                "version": protocol.VERSION, "role": "worker", "name": "w1",
                "nonce": os.urandom(32), "share": secure.Ephemeral().share,
                "proof": b"\x00" * 32}})
            sent.append(await srv.read())

        s, c = await asyncio.gather(impostor(), auth.client_handshake(cli, KEY, CLIENT, "worker"),
                                    return_exceptions=True)
        assert s is None
        assert isinstance(c, AuthError) and "could not prove" in str(c)
        assert sent == [{"op": "abort", "id": 0, "reason": "proof"}]
        await srv.close()
        await cli.close()
    run(main())


@pytest.mark.parametrize("hello", [
    {"op": "auth", "id": 1, "version": protocol.VERSION, "role": "master", "name": "m"},
    {"op": "hello", "id": 1, "version": protocol.VERSION, "role": "master", "name": "m"},
    {"op": "hello", "id": 1, "version": protocol.VERSION, "role": "master", "name": "m",
     "nonce": b"n" * 31, "share": b"s" * 32},
    {"op": "hello", "id": 1, "version": protocol.VERSION, "role": "master", "name": "m",
     "nonce": "n" * 32, "share": b"s" * 32},
    {"op": "hello", "id": 1, "version": protocol.VERSION, "role": "", "name": "m",
     "nonce": b"n" * 32, "share": b"s" * 32},
], ids=["not-hello", "no-nonce", "short-nonce", "str-nonce", "empty-role"])
def test_server_drops_malformed_hello(hello):
    async def main():
        srv, cli = await _tcp_pair()
        await cli.write(hello)
        with pytest.raises(ProtocolError):
            await auth.server_handshake(srv, KEY, SERVER, ("master",))
        await srv.close()
        await cli.close()
    run(main())


def test_server_refuses_a_wrong_version_with_a_reason():
    async def main():
        srv, cli = await _tcp_pair()
        await cli.write({"op": "hello", "id": 1, "version": 1, "role": "master", "name": "m"})
        with pytest.raises(ProtocolError, match="version 1"):
            await auth.server_handshake(srv, KEY, SERVER, ("master",))
        answer = await cli.read()
        assert answer["error"]["code"] == "version"
        await srv.close()
        await cli.close()
    run(main())


def test_server_refuses_a_role_it_does_not_serve():
    async def main():
        srv, cli = await _tcp_pair()
        s, c = await _handshakes(srv, cli, roles=("client",))
        assert isinstance(s, AuthError) and "role 'master' may not connect" in str(s)
        assert isinstance(c, AuthError) and "role 'master' may not connect" in str(c)
        await srv.close()
        await cli.close()
    run(main())


@pytest.mark.parametrize("expect", [("master", None), ("worker", "w2")])
def test_client_refuses_a_server_that_is_not_who_it_dialled(expect):
    async def main():
        srv, cli = await _tcp_pair()
        s, c = await _handshakes(srv, cli, expect_role=expect[0], expect_name=expect[1])
        assert isinstance(c, AuthError) and "not " + expect[0] in str(c), c
        assert isinstance(s, (AuthError, ConnectionClosed)), s
        assert cli.protection is None
        await srv.close()
        await cli.close()
    run(main())


def test_server_handshake_peer_closing_is_connection_closed():
    async def main():
        srv, cli = await _tcp_pair()
        await cli.close()  # the client goes away before saying anything
        with pytest.raises(ConnectionClosed):
            await auth.server_handshake(srv, KEY, SERVER, ("master",))
        await srv.close()
    run(main())


def test_client_handshake_peer_closing_is_auth_error():
    async def main():
        srv, cli = await _tcp_pair()
        await srv.close()
        with pytest.raises(AuthError):
            await auth.client_handshake(cli, KEY, CLIENT, "worker")
        await cli.close()
    run(main())


def test_generate_and_load_key(tmp_path):
    path = str(tmp_path / "cluster.key")
    key = auth.generate_key(path)
    assert os.stat(path).st_mode & 0o777 == 0o600
    assert auth.load_key(path) == key and len(key) == 64
    with pytest.raises(FileExistsError):
        auth.generate_key(path)


def test_uid_allowed():
    assert auth.uid_allowed(0, 0)
    assert auth.uid_allowed(os.getuid(), os.getgid())
    assert auth.uid_allowed(os.getuid(), 12345, group="no-such-group-blfs-test")
    if os.getuid() != 65534:
        # nobody, not in a group that does not exist
        assert not auth.uid_allowed(65534, 65534, group="no-such-group-blfs-test")
        # ... but a member (by primary gid) of the named group is allowed
        try:
            name = grp.getgrgid(65534).gr_name
        except KeyError:
            return
        assert auth.uid_allowed(65534, 65534, group=name)
        # an unknown uid whose primary gid is not the group is refused
        assert not auth.uid_allowed(4_000_000, 4_000_000, group=name)


def test_check_unix_peer_over_socketpair():
    a, b = socket.socketpair()
    try:
        pid, uid, gid = auth.peer_credentials(a)
        assert (pid, uid, gid) == (os.getpid(), os.getuid(), os.getgid())
        assert auth.check_unix_peer(a) == os.getuid()
    finally:
        a.close()
        b.close()


# ------------------------------------------------------------------------------ rpc.Peer

def test_peer_call_sends_the_wait_timeout_field():
    from blfsd import rpc

    async def main():
        ours, theirs = await _pair()
        peer = rpc.Peer(ours, None)
        call = asyncio.ensure_future(peer.call("wait", job="j", version=3, timeout=2.5))
        try:
            msg = await asyncio.wait_for(theirs.read(), 2)
        finally:
            call.cancel()
            await asyncio.gather(call, return_exceptions=True)
            await peer.close()
            await theirs.close()
        validate(msg)
        assert msg.get("timeout") == 2.5, f"sent {msg}"
    run(main())
