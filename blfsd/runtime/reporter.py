"""A task's reports to its worker: progress, status and counters, now and then."""
from __future__ import annotations

import time

from ..job import Job
from ..taskchannel import TaskEnd

REPORT_EVERY = 0.5  # seconds between progress reports (they also prove we are alive)


class Reporter:
    """Sends progress, status and counters now and then; built-in counters live here too.

    The counters and the status are those of the task's Job object (the user's
    increment_counter and set_status, or mrjob's, which reach it through its context)."""

    def __init__(self, chan: TaskEnd, job: Job):
        self.chan = chan
        self.job = job
        self.last = 0.0
        self.progress = 0.0
        self._times: dict[str, float] = {}
        job._touch = lambda: self.maybe(self.progress)  # counters and status prove life

    def count(self, name: str, n: int) -> None:
        """A built-in counter of the blfs group (map_input_records, ...)."""
        g = self.job._counters.setdefault("blfs", {})
        g[name] = g.get(name, 0) + n

    def add_time(self, name: str, seconds: float) -> None:
        """A time counter of the blfs group (map_ms, ...): integer milliseconds, as every
        counter is an int, from a sum kept exact here."""
        total = self._times[name] = self._times.get(name, 0.0) + seconds
        self.job._counters.setdefault("blfs", {})[name] = int(total * 1000)

    def maybe(self, progress: float) -> None:
        """Report progress at most every REPORT_EVERY seconds, or when the status changed."""
        self.progress = progress
        now = time.monotonic()
        if now - self.last >= REPORT_EVERY or self.job._status_changed:
            self.last = now
            self.job._status_changed = False
            self.chan.notify("progress", progress=progress, status=self.job._status,
                             counters=self.job._counters)
