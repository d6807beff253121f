"""What a stranger may cost a daemon before it has proved that it holds the key.

A `Gate` bounds the connections that are still in their handshake: in all, and from one
source address. When it is full, the oldest handshake (from the same address if that one
is over its share, else the oldest of all) is dropped to make room: a flood of idle
connections then only churns itself, while a real client, whose handshake takes a few
milliseconds, gets through. Every handshake also has a deadline (rpc.accept).

Refusals are logged through a `RefusalLog`: a few lines with their reasons, then one
summary per window, so that a flood cannot fill the journal.
"""
from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter, OrderedDict
from typing import Callable, Optional

log = logging.getLogger("blfs.admission")

MAX_HANDSHAKES = 64
MAX_HANDSHAKES_PER_SOURCE = 16
HANDSHAKE_DEADLINE = 3.0
REFUSAL_LOG_BURST = 10


class Ticket:
    """One connection's place in the gate while it runs its handshake."""

    def __init__(self, gate: "Gate", source: str, close: Callable[[], None]):
        self.gate = gate
        self.source = source
        self.close = close
        self.evicted = False

    def done(self) -> None:
        """The handshake ended (either way): give the place back."""
        self.gate._release(self)

    def evict(self) -> None:
        self.evicted = True
        self.gate._release(self)
        self.close()


class Gate:
    """Bounds concurrent handshakes; drops the oldest when full."""

    def __init__(self, total: int = MAX_HANDSHAKES, per_source: int = MAX_HANDSHAKES_PER_SOURCE,
                 deadline: float = HANDSHAKE_DEADLINE, refusals: Optional["RefusalLog"] = None):
        self.total = max(1, total)
        self.per_source = max(1, min(per_source, self.total))
        self.deadline = deadline
        self.refusals = refusals or RefusalLog()
        self._pending: "OrderedDict[int, Ticket]" = OrderedDict()  # oldest first
        self._by_source: Counter = Counter()

    def admit(self, source: str, close: Callable[[], None]) -> Ticket:
        """A place for a new connection, making room first if the gate is full."""
        if self._by_source[source] >= self.per_source:
            self._oldest(source).evict()
        elif len(self._pending) >= self.total:
            self._oldest(None).evict()
        ticket = Ticket(self, source, close)
        self._pending[id(ticket)] = ticket
        self._by_source[source] += 1
        return ticket

    def refused(self, source: str, reason: str, node: str = "") -> None:
        self.refusals.refused(source, reason, node)

    @property
    def pending(self) -> int:
        return len(self._pending)

    def _oldest(self, source: Optional[str]) -> Ticket:
        return next(t for t in self._pending.values() if source is None or t.source == source)

    def _release(self, ticket: Ticket) -> None:
        if self._pending.pop(id(ticket), None) is not None:
            self._by_source[ticket.source] -= 1
            if self._by_source[ticket.source] <= 0:
                del self._by_source[ticket.source]


class RefusalLog:
    """At most `burst` lines per `window` seconds, then one line that sums up the rest."""

    def __init__(self, burst: int = REFUSAL_LOG_BURST, window: float = 10.0,
                 logger: logging.Logger = log):
        self.burst = burst
        self.window = window
        self.log = logger
        self._started = 0.0
        self._lines = 0
        self._held: Counter = Counter()
        self._flush: Optional[asyncio.TimerHandle] = None

    def refused(self, source: str, reason: str, node: str = "") -> None:
        now = time.monotonic()
        if now - self._started >= self.window:
            self.flush()
            self._started, self._lines = now, 0
        if self._lines < self.burst:
            self._lines += 1
            self.log.warning("refused connection from %s: %s", source, reason,
                             extra={"BLFS_NODE": node} if node else None)
            return
        self._held[reason] += 1
        if self._flush is None:
            try:
                loop = asyncio.get_running_loop()
            except RuntimeError:
                return
            self._flush = loop.call_later(self._started + self.window - now, self.flush)

    def flush(self) -> None:
        """Say how many refusals were held back, and why."""
        if self._flush is not None:
            self._flush.cancel()
            self._flush = None
        if not self._held:
            return
        total = sum(self._held.values())
        reasons = "; ".join(f"{n} x {why}" for why, n in self._held.most_common(5))
        self.log.warning("refused %d more connections in the last %.0f s: %s", total,
                         self.window, reasons)
        self._held.clear()
