"""asyncio helpers shared by the daemons."""
from __future__ import annotations

import asyncio
import logging
import time
from typing import Any, Awaitable, Callable, Optional

log = logging.getLogger("blfs.aio")


class TaskSet:
    """Background tasks held until they end (asyncio keeps only weak references to tasks,
    so a task nobody holds can be collected in the middle of its work).

    A task that ends with an exception is logged with its traceback, never dropped in
    silence; `on_crash` (if given) hears of it too: for tasks that must run as long as
    the daemon does, a crash means the daemon cannot go on."""

    def __init__(self, what: str = "a background task",
                 on_crash: Optional[Callable[[BaseException], None]] = None) -> None:
        self.tasks: set[asyncio.Task] = set()
        self.what = what
        self.on_crash = on_crash

    def spawn(self, coro: Awaitable[Any]) -> asyncio.Task:
        task = asyncio.ensure_future(coro)
        self.tasks.add(task)
        task.add_done_callback(self._done)
        return task

    def _done(self, task: asyncio.Task) -> None:
        self.tasks.discard(task)
        if task.cancelled():
            return
        exc = task.exception()
        if exc is None:
            return
        log.error("%s failed: %s", self.what, exc, exc_info=exc)
        if self.on_crash is not None:
            self.on_crash(exc)

    def __iter__(self):
        return iter(list(self.tasks))

    def __len__(self) -> int:
        return len(self.tasks)


class Ticking:
    """The health of a periodic loop: each round's work either succeeds or raises.

    A failed round is logged with its traceback (the same error again only every
    `quiet` seconds) and the loop goes on. `healthy` says whether the last round worked:
    only then may the loop feed systemd's watchdog, so that a loop whose real work has
    stopped gets the daemon restarted. `hopeless` says it has failed for `give_up`
    seconds in a row: the daemon should exit non-zero."""

    def __init__(self, what: str, give_up: float = 60.0, quiet: float = 10.0):
        self.what = what
        self.give_up = give_up
        self.quiet = quiet
        self.failing_since: Optional[float] = None
        self.failures = 0
        self._last_said = (None, float("-inf"))

    @property
    def healthy(self) -> bool:
        return self.failing_since is None

    def hopeless(self, now: float) -> bool:
        return self.failing_since is not None and now - self.failing_since > self.give_up

    def run(self, work: Callable[[], Any], now: Optional[float] = None) -> bool:
        """One round of work; False (logged) when it raised."""
        now = time.monotonic() if now is None else now
        try:
            work()
        except Exception as exc:
            self.failures += 1
            if self.failing_since is None:
                self.failing_since = now
            said, when = self._last_said
            if repr(exc) != said or now - when >= self.quiet:
                log.error("%s failed (%d times so far); it goes on: %s", self.what,
                          self.failures, exc, exc_info=exc)
                self._last_said = (repr(exc), now)
            return False
        self.failing_since = None
        return True


class Budget:
    """Bytes a daemon may hold for requests it has read and not yet answered, shared by
    all its connections (protocol.ENTRY_COST says what a decoded frame costs).

    A connection waits for room before it reads a frame's body (room for the most the
    frame can cost once decoded), so that when the budget is spent the rest wait in the
    kernel's socket buffers, not in our memory. One frame always gets in when nothing is
    held (a frame may be larger than the budget)."""

    def __init__(self, limit: int):
        self.limit = limit
        self.used = 0
        self.peak = 0
        self._room = asyncio.Condition()

    async def acquire(self, n: int) -> None:
        async with self._room:
            await self._room.wait_for(lambda: self.used == 0 or self.used + n <= self.limit)
            self.charge(n)

    def charge(self, n: int) -> None:
        """Hold `n` bytes more (or fewer, if negative) at once."""
        self.used += n
        self.peak = max(self.peak, self.used)
        if n < 0:
            asyncio.ensure_future(self._wake())

    def release(self, n: int) -> None:
        self.used -= n
        asyncio.ensure_future(self._wake())

    async def _wake(self) -> None:
        async with self._room:
            self._room.notify_all()
