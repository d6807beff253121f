"""`blfs logs`: what a job's attempts wrote, fetched from the workers that ran them.

Each worker keeps every attempt's stdout and stderr, bounded (worker/output.py), in its
work_dir/logs; the master keeps each attempt's error (the traceback of a user failure) in
the job's status and record. A `logs` request puts both together, attempt by attempt,
asking the workers at once. The reply stays well under the frame limit: past
REPLY_OUTPUT bytes of output, the remaining attempts come without it (name one task).
"""
from __future__ import annotations

import asyncio
from typing import Any, Optional

from .. import rpc
from ..errors import BlfsError, NotFound
from .jobs import Jobs
from .links import WorkerLinks

MAX_ATTEMPTS = 100  # attempts in one reply (the last ones)
REPLY_OUTPUT = 4 << 20  # bytes of output in one reply
ASK_LIMIT = 10.0  # seconds a worker has to answer


class AttemptOutputs:
    """The client's `logs` request."""

    def __init__(self, jobs: Jobs, links: WorkerLinks):
        self.jobs = jobs
        self.links = links
        self.handlers = {"logs": self.logs}

    async def logs(self, peer: rpc.Peer, job: str, task: Optional[str] = None) -> dict:
        """Every attempt of the job (or of one task, or one attempt) with its worker, how
        it ended and why, its error, and its output as its worker kept it."""
        status = self.jobs.status(peer, job)
        rows = [a for a in status.get("attempts") or []
                if task is None or task in (a.get("task"), a.get("attempt"))]
        if task is not None and not rows:
            raise NotFound(f"job {job[:80]} has no task or attempt {task[:80]}")
        shown = rows[-MAX_ATTEMPTS:]
        items = await asyncio.gather(*(self._one(a) for a in shown))
        room = REPLY_OUTPUT
        for item in items:
            size = len(item.get("output") or "")
            if size > room:
                item["output"] = None
                item["omitted"] = "too much output in one reply: ask for this task alone"
            room -= min(size, room)
        return {"job": job, "attempts": list(items), "more": len(rows) - len(shown)}

    async def _one(self, a: dict) -> dict:
        item: dict[str, Any] = {k: a.get(k) for k in
                                ("attempt", "task", "worker", "state", "why", "error")}
        try:
            reply = await self.links.call(a["worker"], "attempt_log", limit=ASK_LIMIT,
                                          attempt=a["attempt"])
            item["output"] = reply.get("output")
        except (BlfsError, asyncio.TimeoutError) as exc:
            item["output"] = None
            item["unreachable"] = f"worker {a['worker']}: {exc or 'no answer'}"
        return item
