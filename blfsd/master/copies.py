"""Files of cluster storage as the master moves them: a chunk read from whichever worker
can serve it (a holder from its own disk, else any worker through its view of a holder's
disk), and a whole file copied onto another worker's disk (output replicas)."""
from __future__ import annotations

import asyncio

from .. import catalog as cat
from ..datafiles import CHUNK
from ..errors import BlfsError, ConnectionClosed, StorageError
from . import placement
from .links import WorkerLinks

DATA_LIMIT = 60.0  # seconds for a worker to store or read one chunk


async def read_chunk(links: WorkerLinks, record: dict, offset: int, length: int) -> bytes:
    """Up to `length` bytes at `offset` of a stored file (its catalog record)."""
    last: BaseException = ConnectionClosed("no worker is connected to the master")
    for server, node in placement.read_plan(cat.holders(record), links.connected()):
        try:
            reply = await links.call(server, "fetch", limit=DATA_LIMIT, node=node,
                                     file=record["file"], offset=offset, length=length,
                                     size=record["size"], crc=record.get("crc"))
            return reply["data"]
        except (BlfsError, asyncio.TimeoutError) as exc:
            last = exc
    raise last if isinstance(last, BlfsError) else ConnectionClosed(str(last))


async def copy_to(links: WorkerLinks, record: dict, target: str, kind: str, name: str,
                  index: int) -> None:
    """Copy a stored file onto `target`'s disk, at the same place; its size and crc32 are
    checked against the record."""
    offset, size = 0, record["size"]
    while True:
        data = await read_chunk(links, record, offset, CHUNK) if offset < size else b""
        if not data and offset < size:
            raise StorageError(f"{record['file']} ends at {offset} of {size} bytes")
        offset += len(data)
        last = offset >= size
        stored = await links.call(target, "store", limit=DATA_LIMIT, kind=kind, name=name,
                                  index=index, offset=offset - len(data), data=data,
                                  last=last)
        if last:
            break
    if (stored["file"], stored["size"], stored["crc"]) != \
            (record["file"], size, record.get("crc", stored["crc"])):
        raise StorageError(f"the copy of {record['file']} on {target} differs")
