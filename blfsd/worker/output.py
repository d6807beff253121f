"""What a task process writes to its stdout and stderr: read from a pipe as it comes,
kept bounded (the first and the last bytes, and how much was left out between them),
never copied into the worker's own log."""
from __future__ import annotations

import asyncio
import os

HEAD = 16 << 10
TAIL = 48 << 10


class OutputTail:
    """The output of one task process: its beginning and its end, at most HEAD + TAIL
    bytes, however much it writes."""

    def __init__(self, fd: int):
        self.fd = fd
        self.head = bytearray()
        self.tail = bytearray()
        self.total = 0
        self._done = asyncio.Event()
        os.set_blocking(fd, False)
        asyncio.get_running_loop().add_reader(fd, self._read)

    def _read(self) -> None:
        try:
            data = os.read(self.fd, 65536)
        except BlockingIOError:
            return
        except OSError:
            data = b""
        if not data:
            self._close()
            return
        self.total += len(data)
        room = HEAD - len(self.head)
        if room > 0:
            self.head += data[:room]
            data = data[room:]
        self.tail += data
        if len(self.tail) > TAIL:
            del self.tail[:len(self.tail) - TAIL]

    def _close(self) -> None:
        if self._done.is_set():
            return
        asyncio.get_running_loop().remove_reader(self.fd)
        os.close(self.fd)
        self._done.set()

    async def closed(self, timeout: float) -> None:
        """Wait until every writer is gone (the task and what it left); then stop anyway."""
        try:
            await asyncio.wait_for(self._done.wait(), timeout)
        except asyncio.TimeoutError:
            self._close()

    @property
    def omitted(self) -> int:
        return self.total - len(self.head) - len(self.tail)

    def text(self) -> str:
        """All that was kept, with a line saying how much was left out in the middle."""
        middle = f"\n[... {self.omitted} bytes of output left out ...]\n" \
            if self.omitted > 0 else ""
        return (bytes(self.head).decode(errors="replace") + middle
                + bytes(self.tail).decode(errors="replace"))

    def last_lines(self, n: int) -> str:
        lines = [line for line in self.text().strip().splitlines() if line.strip()]
        return " | ".join(lines[-n:])[-500:]
