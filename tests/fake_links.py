"""The master's links to workers, without sockets: requests go straight to each worker's
real `Files` service (blfsd.worker.files) on a directory disk of its own, so that the
master's services can be tested against real files, with faults injected where wanted."""
from __future__ import annotations

import asyncio
import inspect
import os
from typing import Any, Callable, Optional

from blfsd.config import Config
from blfsd.errors import BlfsError, ConnectionClosed
from blfsd.sandbox import PathAccess
from blfsd.worker.disk import OwnDisk
from blfsd.worker.files import Files
from blfsd.worker.views import PeerViews


def worker_files(root: str, name: str) -> Files:
    """A worker's Files service on ROOT/NAME (a directory disk, no pool, no device)."""
    disk = OwnDisk(Config(worker_name=name, disks_root=root))
    os.makedirs(disk.path, exist_ok=True)
    files = Files(disk, PeerViews(root, name), PathAccess(None))  # paths with our rights
    files.open()
    return files


class FakeLinks:
    """Like master.links.WorkerLinks: call, send, peers, connected, reconnect.

    `fault(worker, op, fields)` may return an exception to raise instead of the request
    (before it reaches the worker), or "after" with an exception to raise once the worker
    did it (a reply lost on the way back)."""

    def __init__(self, root: str, names: list,
                 fault: Optional[Callable[[str, str, dict], Any]] = None):
        self.files = {n: worker_files(root, n) for n in names}
        self.peers: dict = {n: object() for n in names}
        self.nodes: dict = {n: None for n in names}  # the configured nodes (their disks)
        self.fault = fault or (lambda worker, op, fields: None)
        self.calls: list = []

    def disk(self, name: str) -> str:
        return self.files[name].disk.path

    def connected(self) -> list:
        return sorted(self.peers)

    async def call(self, worker: str, op: str, limit: float = 30, **fields: Any) -> Any:
        if worker not in self.peers:
            raise ConnectionClosed(f"worker {worker} is not connected")
        self.calls.append((worker, op, fields))
        fault = self.fault(worker, op, fields)
        after = isinstance(fault, tuple) and fault[0] == "after"
        if isinstance(fault, BaseException):
            raise fault
        result = await self._serve(worker, op, fields)
        if after:
            raise fault[1]
        return result

    async def _serve(self, worker: str, op: str, fields: dict) -> Any:
        if op == "release_job":  # the worker daemon's: only its file part matters here
            self.files[worker].remove_temporary(fields["job"], fields.get("output_tmp"),
                                                fields.get("output_name"))
            return {"released": 0}
        if op == "kill":
            return {"killed": False}
        result = self.files[worker].handlers[op](None, **fields)
        return await result if inspect.isawaitable(result) else result

    async def send(self, worker: str, op: str, **fields: Any) -> Any:
        try:
            return await self.call(worker, op, **fields)
        except (BlfsError, asyncio.TimeoutError):
            return None

    async def reconnect(self, worker: str) -> None:
        self.calls.append((worker, "reconnect", {}))

    def ops(self, op: str) -> list:
        """(worker, fields) of every request `op` made so far."""
        return [(w, f) for w, o, f in self.calls if o == op]
