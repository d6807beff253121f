"""Cluster storage: named datasets (`blfs put`) and named outputs, and where they live.

A dataset is a list of split files, each a run of whole lines on one worker's own disk; an
output is a list of part files, each on the worker that wrote it. The files sit on the
workers' shared disks outside the pool (`DISK/data/NAME/`, `DISK/output/NAME/`), so every
node finds them at the same path under `disks_root`, and a peer can still read them when
their owner is down. The master records which file is where (this module's `Catalog`, in
its StateDirectory); the workers write, read and remove the files (`blfsd.datafiles`).
"""
from __future__ import annotations

import logging
import os
import re
import time
from typing import Optional

import msgpack

from .errors import Conflict, NotFound, ProtocolError, UsageError
from .state import save_msgpack

log = logging.getLogger("blfs.catalog")

_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,99}\Z")
DATASETS, OUTPUTS = "data", "output"


def is_name(text: str) -> bool:
    """A cluster name: letters, digits, '.', '_', '-'; no '/', so never a path."""
    return bool(_NAME.match(text))


def check_name(text: str) -> str:
    """The name, or UsageError when it is not a valid cluster name."""
    if not is_name(text):
        raise UsageError(f"{text[:120]!r} is not a valid name (letters, digits, '.', '_', "
                         "'-', at most 100, starting with a letter or digit)")
    return text


def check_node(node: str) -> str:
    """A node name from the wire, before it becomes part of a path."""
    if not isinstance(node, str) or "/" in node or node in ("", ".", ".."):
        raise ProtocolError(f"bad node name {str(node)[:100]!r}")
    return node


def area(disk: str, kind: str, name: str) -> str:
    """The directory of a dataset or output on one node's disk."""
    if kind not in (DATASETS, OUTPUTS):
        raise ProtocolError(f"no storage area {str(kind)[:40]!r}")
    return os.path.join(disk, kind, check_name(name))


def split_path(disk: str, name: str, index: int) -> str:
    """Where split `index` of dataset `name` is on a disk."""
    return os.path.join(area(disk, DATASETS, name), f"split-{index:05d}")


def output_dir(disk: str, name: str) -> str:
    """Where the parts of cluster output `name` are on a disk."""
    return area(disk, OUTPUTS, name)


def stored_path(disk: str, kind: str, name: str, index: int) -> str:
    """Split `index` of a dataset, or part `index` of an output, on a disk."""
    if kind == DATASETS:
        return split_path(disk, name, index)
    return os.path.join(area(disk, kind, name), f"part-{index:05d}")


def holders(entry: dict) -> list[str]:
    """Every node that keeps a split or part: its replicas, else its one node."""
    return list(entry.get("replicas") or [entry["node"]])


class Catalog:
    """The master's record of datasets and outputs: one msgpack file, replaced atomically."""

    def __init__(self, directory: Optional[str]):
        self.path = os.path.join(directory, "catalog.msgpack") if directory else None
        self.entries: dict[str, dict] = {DATASETS: {}, OUTPUTS: {}}
        self._load()

    def _load(self) -> None:
        if not self.path or not os.path.exists(self.path):
            return
        try:
            with open(self.path, "rb") as f:
                data = msgpack.unpackb(f.read(), raw=False, strict_map_key=False)
            for kind in (DATASETS, OUTPUTS):
                self.entries[kind] = dict(data.get(kind) or {})
        except (OSError, ValueError, AttributeError, msgpack.UnpackException) as exc:
            log.error("cannot read the catalog %s (%s): starting with an empty one",
                      self.path, exc)

    def _save(self) -> None:
        if self.path:
            save_msgpack(self.path, self.entries)

    def get(self, kind: str, name: str) -> dict:
        """A dataset's or output's entry; NotFound when there is none."""
        entry = self.entries[kind].get(name)
        if entry is None:
            what = "dataset" if kind == DATASETS else "output"
            raise NotFound(f"no {what} named {name[:100]!r} (see blfs ls)")
        return entry

    def has(self, kind: str, name: str) -> bool:
        return name in self.entries[kind]

    def add(self, kind: str, name: str, entry: dict) -> dict:
        """Record a complete dataset or output (saved before this returns)."""
        if name in self.entries[kind]:
            raise Conflict(f"{name!r} already exists")
        entry = dict(entry, name=name, created=time.time())
        self.entries[kind][name] = entry
        self._save()
        return entry

    def remove(self, kind: str, name: str) -> dict:
        """Forget an entry (its files are removed by the workers)."""
        entry = self.get(kind, name)
        del self.entries[kind][name]
        self._save()
        return entry

    def listing(self) -> list:
        """One row per dataset and output, for `blfs ls`."""
        rows = []
        for kind in (DATASETS, OUTPUTS):
            for name, e in sorted(self.entries[kind].items()):
                files = (e.get("splits") if kind == DATASETS else e.get("parts")) or []
                rows.append({"kind": "dataset" if kind == DATASETS else "output",
                             "name": name, "files": len(files),
                             "bytes": sum(f.get("size", 0) for f in files),
                             "nodes": sorted({n for f in files for n in holders(f)}),
                             "replicas": min((len(holders(f)) for f in files), default=1),
                             "job": e.get("job"), "created": e.get("created")})
        return rows
