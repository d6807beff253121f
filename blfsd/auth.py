"""Who may talk to a daemon: HMAC challenge-response on TCP, SO_PEERCRED on Unix sockets."""
from __future__ import annotations

import grp
import hashlib
import hmac
import os
import pwd
import secrets
import socket
import struct

from .errors import AuthError, ConfigError, ConnectionClosed, ProtocolError
from .transport import FrameStream

NONCE_BYTES = 32
_CONTEXT = b"blfs-auth-v1"
AUTH_TIMEOUT = 10.0


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


def _mac(key: bytes, who: bytes, first: bytes, second: bytes) -> bytes:
    return hmac.new(key, _CONTEXT + who + first + second, hashlib.sha256).digest()


async def _read_field(stream: FrameStream, op: str, field: str) -> bytes:
    msg = await stream.read()
    value = msg.get(field)
    if msg.get("op") != op or not isinstance(value, bytes) or len(value) > 64:
        raise ProtocolError(f"expected {op!r} with a {field!r} during authentication")
    return value


async def server_handshake(stream: FrameStream, key: bytes) -> None:
    """Prove that the dialling peer holds the key, and prove that we do too."""
    server_nonce = secrets.token_bytes(NONCE_BYTES)
    await stream.write({"op": "challenge", "nonce": server_nonce})
    msg = await stream.read()
    client_nonce, mac = msg.get("nonce"), msg.get("mac")
    if (msg.get("op") != "auth" or not isinstance(client_nonce, bytes)
            or not isinstance(mac, bytes) or len(client_nonce) != NONCE_BYTES):
        raise ProtocolError("malformed authentication response")
    if not hmac.compare_digest(mac, _mac(key, b"client", server_nonce, client_nonce)):
        await stream.write({"op": "denied"})
        raise AuthError("wrong cluster key")
    await stream.write({"op": "welcome",
                        "mac": _mac(key, b"server", client_nonce, server_nonce)})


async def client_handshake(stream: FrameStream, key: bytes) -> None:
    try:
        server_nonce = await _read_field(stream, "challenge", "nonce")
        client_nonce = secrets.token_bytes(NONCE_BYTES)
        await stream.write({"op": "auth", "nonce": client_nonce,
                            "mac": _mac(key, b"client", server_nonce, client_nonce)})
        msg = await stream.read()
    except ConnectionClosed:
        raise AuthError("the peer closed the connection during authentication") from None
    if msg.get("op") == "denied":
        raise AuthError("the peer refused our cluster key")
    mac = msg.get("mac")
    if msg.get("op") != "welcome" or not isinstance(mac, bytes) or not hmac.compare_digest(
            mac, _mac(key, b"server", client_nonce, server_nonce)):
        raise AuthError("the peer could not prove it holds the cluster key")


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
