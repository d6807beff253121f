"""The socket between a worker and one of its task processes: frames, and descriptors.

The same framing as the network (4-byte length + msgpack map, protocol.py), without
encryption (a socketpair between a parent and its child). Replies may carry open file
descriptors (SCM_RIGHTS): that is how a task that may open nothing on the disks gets its
split, its slots, peers' slots and its output file from its worker.

`TaskEnd` is the task's blocking side; `WorkerEnd` the worker's asyncio side.
"""
from __future__ import annotations

import array
import asyncio
import os
import socket
from typing import Any, Optional, Sequence

from . import protocol
from .errors import ConnectionClosed, RemoteError

MAX_FDS = 8  # descriptors one reply may carry


class WithFds:
    """A handler's result that carries open descriptors to the task. They are closed here
    once sent: the task has its own copies then."""

    def __init__(self, result: Any, fds: Sequence[int]):
        self.result = result
        self.fds = list(fds)

    def close(self) -> None:
        close_all(self.fds)


class TaskEnd:
    """The task's end: blocking calls to its worker, and notifications."""

    def __init__(self, sock: socket.socket):
        self.sock = sock
        self._next = 1
        self._fds: list = []

    def send(self, msg: dict) -> None:
        self.sock.sendall(protocol.encode(msg))

    def notify(self, op: str, **fields: Any) -> None:
        """A report that gets no answer (id 0)."""
        self.send(protocol.request(op, 0, **fields))

    def call(self, op: str, **fields: Any) -> Any:
        return self.call_fds(op, **fields)[0]

    def call_fds(self, op: str, **fields: Any) -> tuple[Any, list]:
        """The result of a request, and the descriptors its reply carried (ours to close)."""
        msg_id, self._next = self._next, self._next + 1
        self.send(protocol.request(op, msg_id, **fields))
        answer, fds = self._read()
        if "error" in answer:
            for fd in fds:
                _close(fd)
            raise RemoteError(answer["error"]["code"], answer["error"]["message"])
        return answer["result"], fds

    def _read(self) -> tuple[dict, list]:
        self._fds = []
        header = self._exact(protocol.LENGTH.size)
        msg = protocol.decode(self._exact(protocol.frame_length(header)))
        fds, self._fds = self._fds, []
        return msg, fds

    def _exact(self, n: int) -> bytes:
        buf = bytearray()
        while len(buf) < n:
            part, fds, _, _ = socket.recv_fds(self.sock, n - len(buf), MAX_FDS)
            self._fds.extend(fds)
            if not part:
                raise ConnectionError("the worker went away")
            buf += part
        return bytes(buf)


class WorkerEnd:
    """The worker's end: reads a task's requests, answers them with or without fds."""

    def __init__(self, sock: socket.socket):
        sock.setblocking(False)
        self.sock = sock
        self._buf = bytearray()
        self._loop = asyncio.get_running_loop()
        self._lock = asyncio.Lock()

    async def read(self) -> dict:
        """The task's next message; ConnectionClosed at EOF, ProtocolError on a bad one."""
        header = await self._exact(protocol.LENGTH.size)
        return protocol.decode(await self._exact(protocol.frame_length(header)))

    async def _exact(self, n: int) -> bytes:
        while len(self._buf) < n:
            try:
                data = await self._loop.sock_recv(self.sock, max(65536, n - len(self._buf)))
            except (ConnectionError, OSError) as exc:
                raise ConnectionClosed("the task's socket failed") from exc
            if not data:
                raise ConnectionClosed("the task closed its socket")
            self._buf += data
        out = bytes(self._buf[:n])
        del self._buf[:n]
        return out

    async def reply(self, msg_id: int, result: Any, fds: Sequence[int] = ()) -> None:
        await self.write(protocol.reply(msg_id, result), fds)

    async def write(self, msg: dict, fds: Sequence[int] = ()) -> None:
        """Send a frame; the descriptors travel with its first byte (and stay ours)."""
        data = memoryview(protocol.encode(msg))
        async with self._lock:
            if fds:
                anc = [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", fds))]
                while True:
                    try:
                        sent = self.sock.sendmsg([data], anc)
                        break
                    except BlockingIOError:
                        await self._writable()
                    except (ConnectionError, OSError) as exc:
                        raise ConnectionClosed("the task's socket failed") from exc
                data = data[sent:]
            if data:
                try:
                    await self._loop.sock_sendall(self.sock, data)
                except (ConnectionError, OSError) as exc:
                    raise ConnectionClosed("the task's socket failed") from exc

    async def _writable(self) -> None:
        done = self._loop.create_future()
        self._loop.add_writer(self.sock, lambda: done.done() or done.set_result(None))
        try:
            await done
        finally:
            self._loop.remove_writer(self.sock)

    def close(self) -> None:
        self.sock.close()


def _close(fd: int) -> None:
    try:
        os.close(fd)
    except OSError:
        pass


def close_all(fds: Optional[Sequence[int]]) -> None:
    for fd in fds or ():
        _close(fd)
