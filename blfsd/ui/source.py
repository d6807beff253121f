"""What the status page reads: the master's replies to `jobs`, `status` and `workers`,
through one ordinary client connection (the same as `blfs status` opens), re-dialled when
it is lost. The daemons open no port for the page."""
from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from typing import Any, Awaitable, Callable, Optional

from .. import rpc
from ..errors import AuthError, BlfsError, ConnectionClosed, RemoteError
from ..messages import FINISHED

QUERY_LIMIT = 10.0  # seconds a reply of the master may take before the page gives up
FACTS_KEPT = 5000  # finished jobs whose metrics facts are remembered (they never change)
PEER_READ_COUNTERS = ("shuffle_read_bytes",)  # blfs counters of bytes read from the pools


class MasterGone(BlfsError):
    """The master cannot be reached (or did not answer): the page says so in one line."""


@dataclass
class JobFacts:
    """What the metrics need of one job's full status (kept for finished jobs)."""

    failed_by_kind: dict = field(default_factory=dict)
    peer_bytes_read: int = 0

    @classmethod
    def of(cls, status: dict) -> "JobFacts":
        kinds: dict = {}
        # every attempt's row says how it failed (failed_attempts keeps the last 20 only)
        rows = [a for a in status.get("attempts") or [] if a.get("state") == "failed"]
        for kind in ([str(a.get("why", "?")) for a in rows] if "attempts" in status else
                     [str(f.get("kind", "?")) for f in status.get("failed_attempts") or []]):
            kinds[kind] = kinds.get(kind, 0) + 1
        blfs = (status.get("counters") or {}).get("blfs") or {}
        read = sum(int(blfs.get(name, 0)) for name in PEER_READ_COUNTERS)
        return cls(kinds, read)


@dataclass
class Snapshot:
    """The cluster at one moment, as /metrics exposes it."""

    jobs: list
    workers: list
    facts: dict  # job id -> JobFacts


Connect = Callable[[], Awaitable[rpc.Peer]]


class MasterSource:
    """A lazily dialled client connection to the master, and the queries of the page."""

    def __init__(self, connect: Connect, address: str):
        self.connect = connect
        self.address = address
        self.peer: Optional[rpc.Peer] = None
        self.lock = asyncio.Lock()  # one dial at a time
        self.facts: dict[str, JobFacts] = {}

    async def call(self, op: str, **fields: Any) -> Any:
        """One request; MasterGone when the master cannot be reached or does not answer.
        An error reply of the master (RemoteError: no such job) passes through."""
        peer = await self._peer()
        try:
            return await peer.call(op, limit=QUERY_LIMIT, **fields)
        except RemoteError:
            raise
        except (BlfsError, OSError, asyncio.TimeoutError) as exc:
            await self._drop(peer)
            raise MasterGone(f"the master at {self.address} did not answer: "
                             f"{exc or type(exc).__name__}") from None

    async def _peer(self) -> rpc.Peer:
        async with self.lock:
            if self.peer is None or self.peer.closed.is_set():
                try:
                    self.peer = await self.connect()
                except (ConnectionClosed, AuthError, OSError, asyncio.TimeoutError) as exc:
                    self.peer = None
                    raise MasterGone(f"the master at {self.address} cannot be reached: "
                                     f"{exc or type(exc).__name__}") from None
            return self.peer

    async def _drop(self, peer: rpc.Peer) -> None:
        if self.peer is peer:
            self.peer = None
        await peer.close()

    async def close(self) -> None:
        if self.peer is not None:
            await self._drop(self.peer)

    async def snapshot(self) -> Snapshot:
        """Jobs, workers, and the facts of every job (finished ones asked for once)."""
        jobs = await self.call("jobs")
        workers = await self.call("workers")
        facts = {}
        for row in jobs:
            facts[row["job"]] = await self._facts(row)
        for gone in set(self.facts) - set(facts):  # pruned by the master: forget them too
            del self.facts[gone]
        return Snapshot(jobs, workers, facts)

    async def _facts(self, row: dict) -> JobFacts:
        known = self.facts.get(row["job"])
        if known is not None:
            return known
        try:
            status = await self.call("status", job=row["job"])
        except RemoteError:  # ended and retired between the two requests
            return JobFacts()
        facts = JobFacts.of(status)
        if status.get("state") in FINISHED and len(self.facts) < FACTS_KEPT:
            self.facts[row["job"]] = facts
        return facts


class JobClock:
    """The master's clock, as well as a client can tell: job times are the master's
    monotonic seconds, so the picture of a running job ends at an estimate of its now
    (the latest time seen in the job, moved on by our own clock since)."""

    def __init__(self) -> None:
        self.offsets: dict[str, float] = {}

    def now(self, status: dict) -> Optional[float]:
        if status.get("state") in FINISHED:
            self.offsets.pop(status.get("job"), None)
            return None  # the picture ends with the job
        seen = [float(t) for t in [status.get("started")] + [
            t for a in status.get("attempts") or [] for t in (a.get("started"),
                                                              a.get("finished"))] if t]
        if not seen:
            return None
        here = time.monotonic()
        offset = self.offsets.setdefault(status["job"], here - max(seen))
        return max(max(seen), here - offset)
