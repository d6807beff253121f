"""The worker's side of cluster storage: writing split files, reading any node's files.

Files of datasets and outputs are created after the peers mounted the disk, so a peer's
view may not show them (a directory block cached before they existed) or may show stale
blocks. Every such file is recorded with its size and crc32; a reader that is not the
owner checks both and remounts its view once when they differ (docs/ARCHITECTURE.md, Cluster storage).
"""
from __future__ import annotations

import contextlib
import os
import shutil
import zlib
from dataclasses import dataclass
from typing import Optional

from . import catalog, storage
from .errors import ProtocolError

CHUNK = 4 << 20  # bytes per put/read message: well under the frame limit


@dataclass
class _Upload:
    fd: int
    tmp: str
    final: str
    size: int = 0
    crc: int = 0


class Uploads:
    """Files being written on our own disk: a put's splits, or copies of an output's parts
    (output replicas)."""

    def __init__(self, disk: str, device: Optional[str]):
        self.disk = disk
        self.device = device
        self.open: dict[tuple[str, str, int], _Upload] = {}

    def write(self, name: str, index: int, offset: int, data: bytes,
              last: bool, kind: str = catalog.DATASETS) -> Optional[dict]:
        """Append a chunk; on the last one make the file durable and return its record."""
        key = (kind, name, index)
        up = self.open.get(key)
        if up is None:
            if offset != 0:
                raise ProtocolError(f"split {index} of {name} was not started")
            final = catalog.stored_path(self.disk, kind, name, index)
            os.makedirs(os.path.dirname(final), exist_ok=True)
            tmp = os.path.join(os.path.dirname(final), "." + os.path.basename(final) + ".part")
            up = _Upload(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644), tmp, final)
            self.open[key] = up
        if offset != up.size:
            raise ProtocolError(f"split {index} of {name}: chunk at {offset}, expected "
                                f"{up.size}")
        view = memoryview(data)
        while view:
            view = view[os.write(up.fd, view):]
        up.size += len(data)
        up.crc = zlib.crc32(data, up.crc)
        if not last:
            return None
        del self.open[key]
        try:
            os.fsync(up.fd)
        finally:
            os.close(up.fd)
        os.rename(up.tmp, up.final)
        storage.fsync_dir(os.path.dirname(up.final))
        storage.publish_metadata(self.disk, self.device)  # for peers' noload mounts
        return {"file": os.path.relpath(up.final, self.disk), "size": up.size, "crc": up.crc}

    def abort_all(self) -> list:
        """A new master session knows of no put or copy in progress: drop every one (the
        names of the puts)."""
        for key in [k for k in self.open if k[0] != catalog.DATASETS]:
            up = self.open.pop(key)  # half a copy of a part: only that file goes
            os.close(up.fd)
            with contextlib.suppress(FileNotFoundError):
                os.unlink(up.tmp)
        names = sorted({name for _, name, _ in self.open})
        for name in names:
            self.abort(name)
        return names

    def abort(self, name: str) -> None:
        """Forget a put that failed: close its files and remove what it wrote."""
        for key in [k for k in self.open if k[:2] == (catalog.DATASETS, name)]:
            os.close(self.open.pop(key).fd)
        drop(self.disk, catalog.DATASETS, name)


def drop(disk: str, kind: str, name: str) -> bool:
    """Remove a dataset's or output's files from our own disk."""
    path = catalog.area(disk, kind, name)
    if not os.path.isdir(path):
        return False
    shutil.rmtree(path)
    storage.fsync_dir(os.path.dirname(path))
    return True


def checksum(path: str) -> tuple[int, int]:
    """(size, crc32) of a whole file."""
    crc = size = 0
    with open(path, "rb", buffering=0) as f:
        while True:
            block = f.read(CHUNK)
            if not block:
                return size, crc
            size += len(block)
            crc = zlib.crc32(block, crc)


def mismatch(path: str, size: int, crc: Optional[int]) -> Optional[str]:
    """Why our view does not show this file as recorded (None: it does)."""
    try:
        seen = os.stat(path).st_size
        if seen != size:
            return f"{seen} bytes"
        if crc is not None:
            seen_crc = checksum(path)[1]
            if seen_crc != crc:
                return f"crc {seen_crc}"
        return None
    except OSError as exc:
        return exc.strerror or str(exc)


def read_chunk(path: str, offset: int, length: int) -> bytes:
    fd = os.open(path, os.O_RDONLY)
    try:
        return os.pread(fd, min(length, CHUNK), offset)
    finally:
        os.close(fd)


def resolve(disks_root: str, node: str, file: str) -> str:
    """Where this host sees a file of cluster storage: `file` is relative to its node's
    disk (so the path is right whatever disks_root a host uses), and never leaves the
    datasets and outputs (a client must not read anything else on a host)."""
    catalog.check_node(node)
    parts = os.path.normpath(file).split(os.sep) if isinstance(file, str) else []
    if (len(parts) < 3 or parts[0] not in (catalog.DATASETS, catalog.OUTPUTS)
            or ".." in parts or os.path.isabs(file)):
        raise ProtocolError(f"{str(file)[:200]!r} is not a file of cluster storage")
    return os.path.join(disks_root, node, *parts)
