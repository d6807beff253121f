"""Dispatch: requests and replies over a FrameStream, in both directions at once.

A Peer owns one authenticated connection. Incoming requests are dispatched through a
handler table, {op: handler}: `dispatch` checks the op's fields against protocol.SCHEMAS
and calls `handler(peer, **fields)` (a handler may be a coroutine function); outgoing calls
wait for the reply with their id. The worker's task connections use `respond` too.
(A single function handler(peer, msg) for every op, checked the same way, also works:
small tools and tests use one.)
"""
from __future__ import annotations

import asyncio
import inspect
import itertools
import logging
import time as _clock
from typing import Any, Awaitable, Callable, Mapping, Optional

from . import auth, protocol
from .aio import TaskSet
from .errors import BlfsError, ConnectionClosed, ProtocolError, RemoteError
from .transport import FrameStream, open_stream

log = logging.getLogger("blfs.rpc")

Handlers = Mapping[str, Callable[..., Any]]
Handler = Any  # what accept() and connect() pass on to a Peer: a table, or one function
HANDSHAKE_FRAME = 64 << 10  # authentication and hello need far less


async def dispatch(handlers: Handler, context: Any, msg: dict) -> Any:
    """The result of a request's handler, called with its checked fields; ProtocolError
    for an op that is unknown, or not served by this table."""
    op = msg["op"]
    if not isinstance(handlers, Mapping):  # one function for every op: handler(peer, msg)
        protocol.validate(msg)
        result = handlers(context, msg)
        return await result if inspect.isawaitable(result) else result
    handler = handlers.get(op)
    if handler is None:
        if op in protocol.SCHEMAS:
            raise ProtocolError(f"this connection does not serve {op!r}")
        raise ProtocolError(f"unknown op {op[:64]!r}")
    result = handler(context, **protocol.fields(msg))
    return await result if inspect.isawaitable(result) else result


async def respond(handlers: Handler, context: Any, msg: dict, who: str) -> Optional[dict]:
    """The reply frame to a request (None for a notification, id 0): its handler's result,
    or the error a BlfsError names. Any other exception is a bug of ours: it propagates."""
    msg_id = msg.get("id", 0)
    try:
        answer = protocol.reply(msg_id, await dispatch(handlers, context, msg))
    except BlfsError as exc:
        if isinstance(exc, ProtocolError):
            log.warning("bad request from %s: %.300s", who, exc)
        answer = protocol.error_reply(msg_id, exc.code, str(exc))
    return answer if msg_id else None


def ping(peer: "Peer", time: Optional[float] = None) -> dict:
    """The answer to `ping` on a daemon's connections: our clock (the caller's is unused)."""
    return {"time": _clock.time()}


class Peer:
    """One live connection: call() the other side, and serve its requests from a table."""

    def __init__(self, stream: FrameStream, handlers: Optional[Handler], name: str = "?",
                 role: str = "?"):
        self.stream = stream
        self.handlers: Handler = handlers or {}
        self.name = name
        self.role = role
        self.info: dict = {}
        self._ids = itertools.count(1)
        self._pending: dict[int, asyncio.Future] = {}
        self._tasks = TaskSet()
        self.closed = asyncio.Event()

    async def call(self, op: str, limit: Optional[float] = None, **fields: Any) -> Any:
        """Send a request and wait (at most `limit` seconds) for its reply."""
        msg_id = next(self._ids)
        fut = asyncio.get_running_loop().create_future()
        self._pending[msg_id] = fut
        try:
            await self.stream.write(protocol.request(op, msg_id, **fields))
            return await asyncio.wait_for(fut, limit)
        finally:
            self._pending.pop(msg_id, None)

    async def notify(self, op: str, **fields: Any) -> None:
        """Send a request that gets no reply (id 0)."""
        await self.stream.write(protocol.request(op, 0, **fields))

    async def serve(self) -> None:
        """Read until the connection ends; never raises for the peer's mistakes."""
        try:
            while True:
                msg = await self.stream.read()
                if "op" in msg:
                    self._tasks.spawn(self._handle(msg))
                else:
                    self._settle(msg)
        except ConnectionClosed:
            pass
        except ProtocolError as exc:
            log.warning("dropping %s %s (%s): %s", self.role, self.name,
                        self.stream.peer_label(), exc)
        finally:
            await self.close()

    def _settle(self, msg: dict) -> None:
        """A reply: complete the call that waits for it (if any still does)."""
        fut = self._pending.get(msg["id"])
        if fut is None or fut.done():
            return
        if "error" in msg:
            err = msg["error"] if isinstance(msg["error"], dict) else {}
            fut.set_exception(RemoteError(str(err.get("code", "error")),
                                          str(err.get("message", "?"))))
        else:
            fut.set_result(msg["result"])

    async def _handle(self, msg: dict) -> None:
        """Serve one request (in a task of its own) and send its reply, if it wants one."""
        msg_id = msg.get("id", 0)
        try:
            answer = await respond(self.handlers, self, msg, f"{self.role} {self.name}")
        except Exception as exc:  # a bug of ours must not take the daemon down
            log.exception("internal error handling %r from %s", msg.get("op"), self.name)
            answer = protocol.error_reply(msg_id, "internal", f"internal error: {exc}")
        if msg_id:
            try:
                await self.stream.write(answer)
            except ProtocolError:  # the reply itself is too big: say so, briefly
                await self._write_quietly(protocol.error_reply(
                    msg_id, "internal", "the reply exceeds the frame size limit"))
            except ConnectionClosed as exc:
                log.debug("reply to %s lost: %s", self.name, exc)

    async def _write_quietly(self, msg: dict) -> None:
        try:
            await self.stream.write(msg)
        except (ConnectionClosed, ProtocolError) as exc:
            log.debug("reply to %s lost: %s", self.name, exc)

    async def close(self) -> None:
        """Hang up; calls still waiting for a reply fail with ConnectionClosed."""
        if self.closed.is_set():
            return
        self.closed.set()
        for fut in self._pending.values():
            if not fut.done():
                fut.set_exception(ConnectionClosed(f"connection to {self.name} closed"))
        await self.stream.close()


async def accept(stream: FrameStream, key: Optional[bytes], my_role: str, my_name: str,
                 handler: Handler, unix_group: str = "blfs") -> Peer:
    """Server side of a new connection: authenticate, then take the peer's hello."""
    stream.max_frame = HANDSHAKE_FRAME  # a stranger gets no room until it is known
    if stream.is_unix:
        auth.check_unix_peer(stream.socket, unix_group)
    else:
        if key is None:
            raise ProtocolError("no cluster key configured: TCP peers cannot be checked")
        await asyncio.wait_for(auth.server_handshake(stream, key), auth.AUTH_TIMEOUT)
    msg = await asyncio.wait_for(stream.read(), auth.AUTH_TIMEOUT)
    if msg.get("op") != "hello":
        raise ProtocolError("the first request must be hello")
    protocol.validate(msg)
    if msg["version"] != protocol.VERSION:
        await stream.write(protocol.error_reply(
            msg.get("id", 0), "version",
            f"protocol version {msg['version']} is not {protocol.VERSION}"))
        raise ProtocolError(f"peer speaks protocol version {msg['version']}")
    stream.max_frame = protocol.MAX_FRAME
    peer = Peer(stream, handler, name=msg["name"], role=msg["role"])
    peer.info = msg.get("info") or {}
    await stream.write(protocol.reply(msg.get("id", 0),
                                      {"version": protocol.VERSION, "role": my_role,
                                       "name": my_name}))
    return peer


async def connect(address: str, key: Optional[bytes], my_role: str, my_name: str,
                  handler: Optional[Handler] = None, info: Optional[dict] = None,
                  default_port: int = 7070, timeout: float = 5.0) -> tuple[Peer, dict]:
    """Client side: dial, authenticate (TCP), say hello. Returns the peer and its hello."""
    stream = await open_stream(address, default_port, timeout)
    try:
        if not stream.is_unix:
            if key is None:
                raise auth.AuthError("a cluster key is needed to talk to " + address)
            await asyncio.wait_for(auth.client_handshake(stream, key), timeout)
        await stream.write(protocol.request("hello", 1, version=protocol.VERSION,
                                            role=my_role, name=my_name, info=info or {}))
        answer = await asyncio.wait_for(stream.read(), timeout)
    except asyncio.TimeoutError:
        await stream.close()
        raise ConnectionClosed(f"{address} did not answer in time") from None
    except BaseException:
        await stream.close()
        raise
    if "error" in answer:
        await stream.close()
        raise RemoteError(answer["error"].get("code", "error"), answer["error"].get("message"))
    result = answer.get("result") or {}
    peer = Peer(stream, handler, name=result.get("name", address), role=result.get("role", "?"))
    return peer, result


async def accept_connection(reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                            key: Optional[bytes], my_role: str, my_name: str,
                            handler: Handler, unix_group: str = "blfs") -> Optional[Peer]:
    """A daemon's new connection: the authenticated Peer, or None (refused and logged)."""
    stream = FrameStream(reader, writer)
    try:
        return await accept(stream, key, my_role, my_name, handler, unix_group)
    except (BlfsError, asyncio.TimeoutError, OSError) as exc:
        log.warning("refused connection from %s: %s", stream.peer_label(),
                    exc or exc.__class__.__name__, extra={"BLFS_NODE": my_name})
        await stream.close()
        return None
