"""Who may talk to a daemon: the key exchange on TCP (secure.py), SO_PEERCRED on Unix.

The first exchange of every connection states the protocol version, the role and the name
of each side. On TCP it is a key exchange whose proofs bind all of that (secure.py says
how); afterwards every frame is protected. On the Unix socket the kernel says who the peer
is (SO_PEERCRED: root, our own user, or a member of the group `blfs`).
"""
from __future__ import annotations

import grp
import os
import pwd
import secrets
import socket
import struct
from dataclasses import dataclass
from typing import Callable, Collection, Optional

from . import protocol, secure
from .errors import AuthError, ConfigError, ConnectionClosed, ProtocolError, RemoteError
from .transport import FrameStream

NONCE_BYTES = secure.NONCE_BYTES
AUTH_TIMEOUT = 3.0  # seconds a new connection has for its whole handshake


def load_key(path: str) -> bytes:
    try:
        with open(path, "rb") as f:
            key = f.read().strip()
    except OSError as exc:
        raise ConfigError(f"cannot read the cluster key {path}: {exc.strerror}") from None
    if len(key) < 16:
        raise ConfigError(f"the cluster key {path} is too short (at least 16 bytes)")
    return key


def generate_key(path: str) -> bytes:
    """Write a new random key, readable by the owner only."""
    key = secrets.token_hex(32).encode()
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(key + b"\n")
    return key


@dataclass(frozen=True)
class PeerIdentity:
    """Who is at the other end, as it stated (Unix) or proved (TCP) in the handshake."""

    role: str
    name: str
    version: int = protocol.VERSION


def _check_version(msg: dict) -> Optional[str]:
    version = msg.get("version")
    if version != protocol.VERSION:
        return f"protocol version {str(version)[:20]} is not {protocol.VERSION}"
    return None


async def server_handshake(stream: FrameStream, key: Optional[bytes], me: PeerIdentity,
                           roles: Collection[str]) -> PeerIdentity:
    """Take the dialling peer's hello; on TCP run the key exchange, check its proof, and
    switch the stream to protected records. Raises AuthError or ProtocolError."""
    msg = await stream.read()
    msg_id = msg.get("id", 0)
    if msg.get("op") != "hello":
        raise ProtocolError("the first request must be hello")
    protocol.validate(msg)
    wrong_version = _check_version(msg)
    if wrong_version:
        await stream.write(protocol.error_reply(msg_id, "version", wrong_version))
        raise ProtocolError(f"peer speaks {wrong_version}")
    client = _unix_hello(msg) if stream.is_unix else secure.Hello.from_message(msg)
    if client.role not in roles:
        why = f"role {client.role!r} may not connect here"
        await stream.write(protocol.error_reply(msg_id, "auth", why))
        raise AuthError(why)
    if stream.is_unix:  # SO_PEERCRED already said who it is; nothing to prove
        await stream.write(protocol.reply(msg_id, _identity_fields(me)))
        return PeerIdentity(client.role, client.name)
    if key is None:
        raise ProtocolError("no cluster key configured: TCP peers cannot be checked")
    eph = secure.Ephemeral()
    server = secure.Hello(protocol.VERSION, me.role, me.name,
                          secrets.token_bytes(secure.NONCE_BYTES), eph.share)
    hs = secure.handshake(key, eph.shared_secret(client.share), client, server)
    await stream.write(protocol.reply(msg_id, dict(server.fields(), proof=hs.server_proof)))
    finish = await stream.read()
    if finish.get("op") == "abort":
        raise AuthError(_ABORTED.get(finish.get("reason"), "the peer gave up the handshake"))
    if finish.get("op") != "finish":
        raise ProtocolError("expected finish during authentication")
    hs.check_client_proof(finish.get("proof"))
    stream.protect(hs.protection(is_client=False))
    await stream.write(protocol.reply(finish.get("id", 0), {}))  # sealed: the keys work
    return PeerIdentity(client.role, client.name, client.version)


_ABORTED = {"proof": "wrong cluster key (the peer could not verify our proof)",
            "identity": "the peer expected another role or name"}


async def client_handshake(stream: FrameStream, key: Optional[bytes], me: PeerIdentity,
                           expect_role: str, expect_name: Optional[str] = None) -> PeerIdentity:
    """Say hello; on TCP run the key exchange, check that the server is the role and name
    we dialled and holds the key, prove that we do, and switch to protected records."""
    def expected(peer: PeerIdentity) -> None:
        if peer.role != expect_role or (expect_name is not None and peer.name != expect_name):
            raise AuthError(f"the peer is {peer.role} {peer.name!r}, not "
                            f"{expect_role} {expect_name or ''}".rstrip())
    try:
        if stream.is_unix:
            await stream.write(protocol.request("hello", 1, **_identity_fields(me)))
            peer = _unix_hello(_result(await stream.read()))
            expected(peer)
            return peer
        return await _client_key_exchange(stream, key, me, expected)
    except ConnectionClosed:
        raise AuthError("the peer closed the connection during authentication") from None


async def _client_key_exchange(stream: FrameStream, key: Optional[bytes], me: PeerIdentity,
                               expected: Callable[[PeerIdentity], None]) -> PeerIdentity:
    if key is None:
        raise AuthError("a cluster key is needed for TCP")
    eph = secure.Ephemeral()
    client = secure.Hello(protocol.VERSION, me.role, me.name,
                          secrets.token_bytes(secure.NONCE_BYTES), eph.share)
    await stream.write(protocol.request("hello", 1, **client.fields()))
    result = _result(await stream.read())
    server = secure.Hello.from_message(result)
    peer = PeerIdentity(server.role, server.name, server.version)
    hs = secure.handshake(key, eph.shared_secret(server.share), client, server)
    reason = "identity"  # tell the server why we give up: it logs the reason
    try:
        expected(peer)
        reason = "proof"
        hs.check_server_proof(result.get("proof"))
    except AuthError as exc:
        await stream.write(protocol.request("abort", 0, reason=reason))
        if reason == "proof":
            raise AuthError(f"{peer.role} {peer.name!r} {exc} (is it the same key on both "
                            "sides?)") from None
        raise
    await stream.write(protocol.request("finish", 2, proof=hs.client_proof()))
    stream.protect(hs.protection(is_client=True))
    _result(await stream.read())  # the server's first sealed frame: it took our proof
    return peer


def _result(answer: dict) -> dict:
    """The result of a handshake reply, or the error it carries as an exception."""
    if "error" in answer:
        err = answer["error"] if isinstance(answer["error"], dict) else {}
        code = str(err.get("code", "error"))
        message = str(err.get("message", "refused"))[:300]
        raise AuthError(message) if code == "auth" else RemoteError(code, message)
    result = answer.get("result")
    if not isinstance(result, dict):
        raise ProtocolError("expected a hello in answer")
    return result


def _identity_fields(me: PeerIdentity) -> dict:
    return {"version": protocol.VERSION, "role": me.role, "name": me.name}


def _unix_hello(msg: dict) -> PeerIdentity:
    role, name = msg.get("role"), msg.get("name")
    if not (isinstance(role, str) and isinstance(name, str) and role and name
            and len(role) <= 32 and len(name) <= 128):
        raise ProtocolError("a hello needs a role and a name")
    return PeerIdentity(role, name, protocol.VERSION)


_UCRED = struct.Struct("3i")


def peer_credentials(sock: socket.socket) -> tuple[int, int, int]:
    """(pid, uid, gid) of the process at the other end of a Unix socket."""
    data = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, _UCRED.size)
    return _UCRED.unpack(data)


def uid_allowed(uid: int, gid: int, group: str = "blfs") -> bool:
    """Root, our own user, or a member of the group may use the local socket."""
    if uid in (0, os.getuid()):
        return True
    try:
        allowed_gid = grp.getgrnam(group).gr_gid
    except KeyError:
        return False
    if gid == allowed_gid:
        return True
    try:
        user = pwd.getpwuid(uid).pw_name
        return allowed_gid in os.getgrouplist(user, gid)
    except KeyError:
        return False


def check_unix_peer(sock: socket.socket, group: str = "blfs") -> int:
    pid, uid, gid = peer_credentials(sock)
    if not uid_allowed(uid, gid, group):
        raise AuthError(f"uid {uid} (pid {pid}) is neither root nor in group {group}")
    return uid
