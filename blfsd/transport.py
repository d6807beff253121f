"""Moving frames over asyncio streams (TCP or Unix). No message semantics here.

Once a TCP handshake is done (auth.py), every frame body is sealed by the session's
record protection (secure.Protection): the length prefix stays in the clear and is
authenticated as the record's associated data.
"""
from __future__ import annotations

import asyncio
import socket
from typing import Optional

from . import protocol
from .aio import Budget
from .errors import ConnectionClosed, ProtocolError
from .protocol import Limits
from .secure import TAG_BYTES, Protection


class FrameStream:
    """A connection that reads and writes whole protocol frames."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                 limits: Limits = protocol.SESSION_LIMITS):
        self.reader = reader
        self.writer = writer
        self.limits = limits
        self.protection: Optional[Protection] = None
        self._write_lock = asyncio.Lock()
        self.budget: Optional[Budget] = None  # a daemon's, for what its peers send it
        self.last_cost = 0  # what the frame read last holds of the budget (see release)

    @property
    def max_frame(self) -> int:
        return self.limits.frame

    def protect(self, protection: Protection, limits: Limits = protocol.SESSION_LIMITS) -> None:
        """From now on every frame is sealed (both ways), and the session's limits hold."""
        self.protection = protection
        self.limits = limits

    @property
    def socket(self) -> Optional[socket.socket]:
        return self.writer.get_extra_info("socket")

    @property
    def is_unix(self) -> bool:
        sock = self.socket
        return sock is not None and sock.family == socket.AF_UNIX

    def peer_host(self) -> str:
        """The peer's address without its port ("unix" for a Unix socket)."""
        if self.is_unix:
            return "unix"
        addr = self.writer.get_extra_info("peername")
        return str(addr[0]) if addr else "?"

    def peer_label(self) -> str:
        if self.is_unix:
            return "unix"
        addr = self.writer.get_extra_info("peername")
        return f"{addr[0]}:{addr[1]}" if addr else "?"

    async def read(self) -> dict:
        """The next message; ConnectionClosed at EOF, ProtocolError on a bad frame."""
        try:
            header = await self.reader.readexactly(protocol.LENGTH.size)
        except (asyncio.IncompleteReadError, ConnectionError) as exc:
            raise ConnectionClosed("connection closed") from exc
        sealed = self.protection is not None
        n = protocol.frame_length(header, self.limits.frame + (TAG_BYTES if sealed else 0))
        # Room first, for the most the frame can cost once decoded (else we wait, and the
        # peer's data waits in the kernel); once decoded, what it really costs.
        reserved = protocol.most_cost(n, self.limits) if self.budget is not None else 0
        if self.budget is not None:
            await self.budget.acquire(reserved)
        try:
            body = await self.reader.readexactly(n)
            if self.protection is not None:
                body = self.protection.open(header, body)
            msg, cost = protocol.decode_counted(body, self.limits)
        except BaseException as exc:
            self.release(reserved)
            if isinstance(exc, (asyncio.IncompleteReadError, ConnectionError)):
                raise ConnectionClosed("connection closed in the middle of a frame") from exc
            raise
        if self.budget is not None:
            self.budget.charge(cost - reserved)
        self.last_cost = cost if self.budget is not None else 0
        return msg

    def release(self, cost: int) -> None:
        """The frame that cost this (last_cost when read) is dealt with."""
        if self.budget is not None and cost:
            self.budget.release(cost)

    async def write(self, msg: dict) -> None:
        body = protocol.pack(msg)
        if len(body) > self.limits.frame:
            raise ProtocolError(f"refusing to send a frame of {len(body)} bytes")
        async with self._write_lock:  # sealing in wire order: sequence numbers must match
            if self.protection is not None:
                header = protocol.LENGTH.pack(len(body) + TAG_BYTES)
                body = self.protection.seal(header, body)
            else:
                header = protocol.LENGTH.pack(len(body))
            try:
                # one write, so one segment: a lone 4-byte header would leave the body
                # waiting on the peer's delayed ACK (40 ms per round trip on loopback)
                self.writer.write(header + body)
                await self.writer.drain()
            except (ConnectionError, RuntimeError) as exc:
                raise ConnectionClosed(str(exc) or "connection lost") from exc

    async def close(self) -> None:
        if self.writer.is_closing():
            return
        self.writer.close()
        try:
            await self.writer.wait_closed()
        except (ConnectionError, OSError):
            pass


def format_address(host: str, port: int) -> str:
    """host:port, with IPv6 hosts in brackets ([::]:7071), as parse_address reads it."""
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def parse_address(text: str, default_port: int) -> tuple[str, int]:
    """'host:port', 'host', '[::1]:7070' or ':7070' to (host, port)."""
    text = text.strip()
    if text.startswith("["):
        host, _, rest = text[1:].partition("]")
        port = rest.lstrip(":")
        return host, int(port) if port else default_port
    if text.count(":") == 1:
        host, port = text.split(":")
        return host or "0.0.0.0", int(port)
    return text, default_port


async def open_stream(address: str, default_port: int = 7070,
                      timeout: float = 5.0) -> FrameStream:
    """Dial a Unix socket path (anything with a '/') or a TCP host:port."""
    try:
        if "/" in address:
            coro = asyncio.open_unix_connection(address)
        else:
            host, port = parse_address(address, default_port)
            if not 0 < port < 65536:
                raise ValueError(f"port {port} out of range")
            coro = asyncio.open_connection(host, port)
    except ValueError as exc:
        raise ConnectionClosed(f"cannot reach {address}: bad address ({exc})") from None
    try:
        reader, writer = await asyncio.wait_for(coro, timeout)
    except (OSError, OverflowError, asyncio.TimeoutError) as exc:
        raise ConnectionClosed(f"cannot reach {address}: {exc.__class__.__name__}"
                               f"{': ' + exc.strerror if getattr(exc, 'strerror', None) else ''}"
                               ) from exc
    sock = writer.get_extra_info("socket")
    if sock is not None and sock.family in (socket.AF_INET, socket.AF_INET6):
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return FrameStream(reader, writer)
