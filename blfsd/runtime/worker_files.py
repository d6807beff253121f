"""Every file a task reads or writes: opened by its worker, passed as a descriptor.

The task runs as a user that may open nothing on the disks (docs/ARCHITECTURE.md,
"Security"); it asks its worker over its socket (taskchannel.TaskEnd) and gets
descriptors back. A refusal comes back as the error that says whose fault it is.
"""
from __future__ import annotations

import os
from typing import Any, BinaryIO, Optional

from ..errors import (DiskFull, FetchError, PathRefused, PoolExhausted, RemoteError,
                      StorageError)
from ..messages import SegmentLocation
from ..taskchannel import TaskEnd, close_all


class WorkerFiles:
    """What a task gets from its worker: a slot to write, the device to flush, its split,
    peers' slots to read, its output file."""

    def __init__(self, chan: TaskEnd):
        self.chan = chan
        self._device: Optional[int] = None  # -1: there is none (--local)

    def _fd(self, op: str, **fields: Any) -> tuple[dict, int]:
        result, fds = self.chan.call_fds(op, **fields)
        if len(fds) != 1:
            close_all(fds)
            raise StorageError(f"{op}: the worker passed {len(fds)} descriptors, not one")
        return result, fds[0]

    def lease(self, scratch: bool = False) -> tuple[int, int]:
        """A slot of our pool (its number, and a descriptor to write it); a scratch slot
        is the worker's again as soon as this attempt ends."""
        try:
            result, fd = self._fd("lease", scratch=True) if scratch else self._fd("lease")
        except RemoteError as exc:
            raise PoolExhausted(str(exc)) from None
        return result["slot"], fd

    def release_scratch(self, slots: list[int]) -> None:
        """Give back scratch slots before the attempt ends (their runs were merged)."""
        self.chan.notify("release_scratch", slots=slots)

    def more_input(self) -> dict:
        """An early reduce's input that finished since it last asked (within seconds)."""
        return self.chan.call("more_input")

    def flush_device(self) -> None:
        """fsync the block device under our pool (after the slots: storage rule 3)."""
        if self._device is None:
            _, fds = self.chan.call_fds("device")
            self._device = fds[0] if fds else -1
        if self._device >= 0:
            os.fsync(self._device)

    def split(self) -> BinaryIO:
        """The first map's split, open for reading."""
        try:
            _, fd = self._fd("open_split")
        except RemoteError as exc:
            raise refused(exc) from None
        return os.fdopen(fd, "rb")

    def slot(self, loc: SegmentLocation) -> int:
        """A slot to read a segment from (O_DIRECT), through a view current for its pool
        generation."""
        try:
            return self._fd("open_slot", node=loc.node, slot=loc.slot,
                            generation=loc.generation)[1]
        except RemoteError as exc:
            raise FetchError(exc.args[0], map_task=loc.map_task, node=loc.node) from None

    def output(self) -> tuple[int, dict]:
        """The file a last-stage task writes its part to: its descriptor, and {path,
        target, file} (where it is, where the commit moves it, and for a cluster output
        its name relative to our disk)."""
        try:
            result, fd = self._fd("create_output")
        except RemoteError as exc:
            raise refused(exc) from None
        return fd, result


def refused(exc: RemoteError) -> StorageError:
    """The worker's refusal to open a file, as the error that says whose fault it is."""
    for kind in (DiskFull, PathRefused):
        if exc.code == kind.code:
            return kind(str(exc))
    return StorageError(str(exc))
