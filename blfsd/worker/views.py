"""The worker's views of its peers' disks (mounted `ro,noload` by blfs-iscsi), made current
before they are read: no peer cache can be trusted (docs/ARCHITECTURE.md, Storage rules).

- For segments, a view is current for the pool generation it was checked at; a location
  of another generation remounts it first (storage.ensure_generation).
- For files of cluster storage (datasets, outputs), created after the view was mounted,
  the view must show the file as recorded (size, crc32); if it does not, it is remounted
  once. A checked file stays checked: files are immutable once recorded.

Remounts are serialized: two tasks must not unmount a view under each other.
"""
from __future__ import annotations

import asyncio
import logging
import os
from typing import Optional

from .. import catalog, datafiles, storage
from ..errors import FetchError

log = logging.getLogger("blfs.worker")

REMOUNT_TRIES = 10  # a view with files open is busy: tried again, 0.3 s apart


class PeerViews:
    """Every node's disk under disks_root, as this host sees it."""

    def __init__(self, disks_root: str, own: str):
        self.disks_root = disks_root
        self.own = own
        self._lock = asyncio.Lock()
        self._generations: dict[str, int] = {}  # node -> generation its view was checked at
        self._verified: set = set()  # (path, size, crc) of files our views show intact

    def disk(self, node: str) -> str:
        """Where this host sees node's disk."""
        return os.path.join(self.disks_root, node)

    async def ensure(self, node: str, generation: int) -> None:
        """Remount our view of a peer's disk when its pool generation changed."""
        catalog.check_node(node)
        async with self._lock:
            if self._generations.get(node) == generation:
                return
            disk = self.disk(node)
            try:
                await asyncio.get_running_loop().run_in_executor(
                    None, storage.ensure_generation, disk, generation)
            except OSError as exc:
                raise FetchError(f"cannot check the view of {disk}: {exc}") from None
            self._generations[node] = generation

    async def fresh_file(self, node: str, file: str, size: int, crc: Optional[int]) -> str:
        """Our path of a file of cluster storage; for a file a peer wrote after we mounted
        its disk, checked against its record, remounting our view once if need be."""
        path = datafiles.resolve(self.disks_root, node, file)
        if node == self.own:
            return path  # our own read-write mount sees what we wrote
        key = (path, size, crc)
        if key in self._verified:
            return path
        loop = asyncio.get_running_loop()
        if await loop.run_in_executor(None, datafiles.mismatch, path, size, crc):
            await self._remount(node)
            why = await loop.run_in_executor(None, datafiles.mismatch, path, size, crc)
            if why:
                raise FetchError(f"{file} on {node} does not match its record ({size} "
                                 f"bytes, crc {crc}): our view shows {why}, even after a "
                                 "remount")
        self._verified.add(key)
        return path

    async def _remount(self, node: str) -> None:
        """Remount our view of a peer's disk; a busy view (open files) is tried again."""
        disk = self.disk(node)
        async with self._lock:
            await asyncio.get_running_loop().run_in_executor(None, storage.remount, disk,
                                                             REMOUNT_TRIES)
        log.info("remounted the view of %s to see new files", disk)
