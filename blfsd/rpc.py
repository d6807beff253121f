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
from typing import Any, Callable, Collection, Mapping, Optional

from . import auth, protocol
from .admission import Gate, Ticket
from .aio import Budget, TaskSet
from .errors import BlfsError, ConnectionClosed, ProtocolError, RemoteError
from .transport import FrameStream, open_stream

log = logging.getLogger("blfs.rpc")

MAX_IN_FLIGHT = 8  # requests of one connection served at once (a client pipelining more waits)

Handlers = Mapping[str, Callable[..., Any]]
Handler = Any  # what accept() and connect() pass on to a Peer: a table, or one function


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
        self._tasks = TaskSet(f"a request of {role} {name}")
        # requests of this peer being served at once: beyond, we stop reading its frames
        # (only for peers we never call back: a limit on a link whose requests wait for
        # our calls' replies on the same connection could stop it for good)
        self._in_flight: Optional[asyncio.Semaphore] = None
        self.closed = asyncio.Event()

    def bound(self, budget: Optional[Budget], in_flight: int = MAX_IN_FLIGHT) -> None:
        """Hold what this peer sends to a budget and to `in_flight` requests at once (for
        clients: a daemon never waits for a client's answer while serving it)."""
        self.stream.budget = budget
        self._in_flight = asyncio.Semaphore(in_flight)

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
                cost = self.stream.last_cost
                if "op" in msg:
                    if self._in_flight is not None:
                        await self._in_flight.acquire()
                    self._tasks.spawn(self._handle(msg, cost))
                else:
                    self._settle(msg)
                    self.stream.release(cost)
                # not held while we wait for the next frame (its budget is given back)
                msg = None
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

    async def _handle(self, msg: dict, cost: int = 0) -> None:
        """Serve one request (in a task of its own) and send its reply, if it wants one;
        then its frame's room in the budget and in this peer's requests is given back."""
        try:
            await self._answer(msg)
        finally:
            if self._in_flight is not None:
                self._in_flight.release()
            self.stream.release(cost)

    async def _answer(self, msg: dict) -> None:
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


async def accept(stream: FrameStream, key: Optional[bytes], me: auth.PeerIdentity,
                 handler: Handler, roles: Collection[str], unix_group: str = "blfs",
                 timeout: float = auth.AUTH_TIMEOUT) -> Peer:
    """Server side of a new connection: the handshake (within `timeout`), then a Peer.
    Until the peer has proved who it is, frames are held to the handshake's limits."""
    stream.limits = protocol.HANDSHAKE_LIMITS  # a stranger gets no room until it is known
    if stream.is_unix:
        auth.check_unix_peer(stream.socket, unix_group)
    peer = await asyncio.wait_for(auth.server_handshake(stream, key, me, roles), timeout)
    stream.limits = protocol.SESSION_LIMITS
    return Peer(stream, handler, name=peer.name, role=peer.role)


async def connect(address: str, key: Optional[bytes], my_role: str, my_name: str,
                  handler: Optional[Handler] = None, *, expect_role: str,
                  expect_name: Optional[str] = None, default_port: int = 7070,
                  timeout: float = 5.0) -> tuple[Peer, dict]:
    """Client side: dial, run the handshake, check that the other end is who we dialled.
    Returns the peer and what it said of itself (version, role, name)."""
    stream = await open_stream(address, default_port, timeout)
    stream.limits = protocol.HANDSHAKE_LIMITS
    me = auth.PeerIdentity(my_role, my_name)
    try:
        peer = await asyncio.wait_for(
            auth.client_handshake(stream, key, me, expect_role, expect_name), timeout)
    except asyncio.TimeoutError:
        await stream.close()
        raise ConnectionClosed(f"{address} did not answer in time") from None
    except BaseException:
        await stream.close()
        raise
    stream.limits = protocol.SESSION_LIMITS
    return (Peer(stream, handler, name=peer.name, role=peer.role),
            {"version": peer.version, "role": peer.role, "name": peer.name})


async def accept_connection(reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                            key: Optional[bytes], my_role: str, my_name: str,
                            handler: Handler, unix_group: str = "blfs",
                            roles: Collection[str] = ("client",),
                            gate: Optional[Gate] = None,
                            budget: Optional[Budget] = None) -> Optional[Peer]:
    """A daemon's new connection: the authenticated Peer, or None (refused and logged).

    The gate bounds how many connections may be in their handshake at once (in all, and
    from one address); a full gate drops the oldest to make room for the newest."""
    stream = FrameStream(reader, writer)
    gate = gate or Gate()
    ticket = gate.admit(stream.peer_host(), writer.transport.abort)
    try:
        peer = await accept(stream, key, auth.PeerIdentity(my_role, my_name), handler,
                            roles, unix_group, gate.deadline)
        if peer.role in ("client", "worker"):  # what it sends from now on counts against
            peer.bound(budget)  # the daemon's budget (a master that dials us is not bound)
        return peer
    except (BlfsError, asyncio.TimeoutError, OSError) as exc:
        gate.refused(stream.peer_label(), _why(exc, ticket, gate.deadline), my_name)
        await stream.close()
        return None
    finally:
        ticket.done()


def _why(exc: BaseException, ticket: "Ticket", deadline: float) -> str:
    """The reason for a refusal, in words (a TimeoutError says nothing by itself)."""
    if ticket.evicted:
        return "dropped to make room for newer connections (too many handshakes at once)"
    if isinstance(exc, asyncio.TimeoutError):
        return f"no complete handshake within {deadline:g} s"
    text = str(exc)
    return text if text else exc.__class__.__name__
