"""The master's requests about files on this node: committing a job's output (and taking
it back), and cluster storage (storing a put's chunks, dropping, reading any node's file).

Nothing here touches the pool: slot files are only ever written by task processes.
"""
from __future__ import annotations

import asyncio
import os
from typing import Any, Callable, Optional

from .. import catalog, datafiles, rpc, storage
from ..sandbox import PathAccess
from ..errors import FetchError, NotFound, ProtocolError, StorageError
from .disk import OwnDisk
from .views import PeerViews


async def in_thread(fn: Callable[..., Any], *args: Any) -> Any:
    """Blocking file work (writes, fsyncs, freezes) off the event loop."""
    return await asyncio.get_running_loop().run_in_executor(None, fn, *args)


class Files:
    """Output commits and cluster storage on our own disk, reads through our views.

    A job's output at a path it named (not on our disk) is moved, taken back, marked
    complete and cleaned up with the path user's rights (`paths`), never with ours."""

    def __init__(self, disk: OwnDisk, views: PeerViews, paths: PathAccess):
        self.disk = disk
        self.views = views
        self.paths = paths
        self.uploads: Optional[datafiles.Uploads] = None  # once the disk is open
        self.handlers = {"commit": self.commit, "uncommit": self.uncommit,
                         "success": self.success, "store": self.store,
                         "abort_put": self.abort_put, "drop": self.drop, "fetch": self.fetch}

    def open(self) -> None:
        """Ready for puts, once the disk is open (its device is known)."""
        self.uploads = datafiles.Uploads(self.disk.path, self.disk.device)

    # ------------------------------------------------------------------ outputs

    async def commit(self, peer: rpc.Peer, source: str, target: str,
                     again: bool = False) -> dict:
        """Move a finished reduce output into place, atomically. `again`: a restarted
        master commits once more what its predecessor may have moved already."""
        if os.path.basename(source) != os.path.basename(target):
            raise ProtocolError("commit source and target must have the same file name")
        own = _inside(target, self.disk.path)
        move = _move_again if again else _move
        try:
            if own:
                move(source, target)
            else:
                self.paths.run(move, source, target)
        except FileNotFoundError:
            raise NotFound(f"nothing to commit at {source}") from None
        if own:
            # a cluster output part: its metadata in place, for peers' noload mounts
            await in_thread(storage.publish_metadata, self.disk.path, self.disk.device)
        return {"committed": target}

    def uncommit(self, peer: rpc.Peer, target: str) -> dict:
        """Take back a committed part of a job whose commit failed further on."""
        if not os.path.basename(target).startswith("part-"):
            raise ProtocolError("only part files can be taken back")
        self._as_owner(target, _unlink_quietly, target)
        return {"removed": target}

    def success(self, peer: rpc.Peer, output: str) -> dict:
        """The job's output is complete: _SUCCESS, durable, written last."""
        self._as_owner(output, storage.write_success, output)
        return {"written": os.path.join(output, "_SUCCESS")}

    def _as_owner(self, path: str, fn: Callable[..., Any], *args: Any) -> None:
        """fn(*args) with our rights on our own disk, else with the path user's."""
        if _inside(path, self.disk.path):
            fn(*args)
        else:
            self.paths.run(fn, *args)

    def remove_temporary(self, job: str, output_tmp: Optional[str],
                         output_name: Optional[str]) -> None:
        """A released job's OUTPUT/_temporary/JOB (never anything not named after it)."""
        if output_name:  # a cluster output: its temporary files are on our own disk
            output_tmp = os.path.join(catalog.output_dir(self.disk.path, output_name),
                                      "_temporary", job)
        if output_tmp and os.path.basename(os.path.normpath(output_tmp)) == job:
            self._as_owner(output_tmp, storage.remove_job_temporary, output_tmp)

    # ------------------------------------------------------------------ cluster storage

    async def store(self, peer: rpc.Peer, name: str, index: int, offset: int, data: bytes,
                    last: bool, kind: str = catalog.DATASETS) -> Optional[dict]:
        """A chunk of a split of a put (or of a copy of an output's part); the last one
        returns the stored file's record."""
        catalog.area(self.disk.path, kind, name)  # a known kind, a valid name
        try:
            return await in_thread(self.uploads.write, catalog.check_name(name), index,
                                   offset, data, last, kind)
        except OSError as exc:  # a full disk, most likely: one line for the user
            raise StorageError(f"storing on {self.disk.name}: {exc.strerror}") from None

    def abort_put(self, peer: rpc.Peer, name: str) -> None:
        """Forget a put: close its files and remove what it wrote here."""
        self.uploads.abort(catalog.check_name(name))

    def drop(self, peer: rpc.Peer, kind: str, name: str) -> dict:
        """Remove a dataset's or output's files from our own disk (`blfs rm`)."""
        return {"removed": datafiles.drop(self.disk.path, kind, catalog.check_name(name))}

    async def fetch(self, peer: rpc.Peer, node: str, file: str, offset: int, length: int,
                    size: int, crc: Optional[int] = None) -> dict:
        """A chunk of a dataset's or output's file on any node, as our view shows it."""
        path = await self.views.fresh_file(node, file, size, crc)
        try:
            data = await in_thread(datafiles.read_chunk, path, offset, length)
        except OSError as exc:
            raise FetchError(f"cannot read {path}: {exc.strerror}") from None
        return {"data": data}


def _move(source: str, target: str) -> None:
    """Rename a part into place, durably (its directory fsynced)."""
    os.rename(source, target)
    storage.fsync_dir(os.path.dirname(target))


def _move_again(source: str, target: str) -> None:
    """_move, unless it was done before."""
    if not storage.moved_before(source, target):
        _move(source, target)


def _unlink_quietly(path: str) -> None:
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass


def _inside(path: str, directory: str) -> bool:
    """Whether path is inside directory (after resolving links)."""
    return os.path.realpath(path).startswith(os.path.realpath(directory) + os.sep)
