"""Cluster storage as clients see it: puts, reads of outputs, ls and rm.

The master decides where each split goes and relays every chunk to its worker, which
writes the file on its own disk; the catalog records a dataset only once every split is
stored. A put that is abandoned (by the client, or with its connection) is removed from
every worker it touched. Reads go to the worker that wrote the part or, when it is down,
to any connected worker through its view of that disk.
"""
from __future__ import annotations

import asyncio
import logging
import secrets
from dataclasses import dataclass, field

from .. import catalog as cat, rpc
from ..aio import TaskSet
from ..catalog import DATASETS, OUTPUTS, Catalog
from ..errors import Conflict, ConnectionClosed, NotFound, ProtocolError, StorageError
from ..scheduler import Scheduler
from . import copies, placement
from .links import WorkerLinks

log = logging.getLogger("blfs.master")

DATA_LIMIT = copies.DATA_LIMIT


@dataclass
class Put:
    """A `blfs put` in progress: which workers keep each split (its replicas, the first
    being the split's node), and what each of them has stored."""
    name: str
    client: rpc.Peer
    holders: list  # index -> [node, ...]
    stored: dict = field(default_factory=dict)  # (index, node) -> {file, size, crc}

    def nodes(self) -> list[str]:
        return sorted({n for nodes in self.holders for n in nodes})

    def missing(self) -> set[int]:
        """The splits some replica of which is not stored yet."""
        return {i for i, nodes in enumerate(self.holders) for n in nodes
                if (i, n) not in self.stored}

    def split(self, index: int) -> dict:
        """Split `index` as the catalog records it: every replica the same bytes."""
        nodes = self.holders[index]
        copies = [self.stored[index, n] for n in nodes]
        if any((c["size"], c["crc"]) != (copies[0]["size"], copies[0]["crc"])
               for c in copies):
            raise StorageError(f"the replicas of split {index} of {self.name} differ")
        return dict(copies[0], node=nodes[0], replicas=nodes)


class Datasets:
    """The client's requests about datasets and outputs."""

    def __init__(self, catalog: Catalog, links: WorkerLinks, sched: Scheduler, tasks: TaskSet):
        self.catalog = catalog
        self.links = links
        self.sched = sched
        self.tasks = tasks
        self.puts: dict[str, Put] = {}
        self.handlers = {"put_begin": self.put_begin, "put_data": self.put_data,
                         "put_end": self.put_end, "put_abort": self.put_abort,
                         "dataset": self.dataset, "output": self.output, "read": self.read,
                         "ls": self.ls, "remove": self.remove}

    # ------------------------------------------------------------------ puts

    def put_begin(self, peer: rpc.Peer, name: str, splits: int, size: int,
                  replicas: int = 1) -> dict:
        """Where each split of a new dataset goes: spread over the workers, roomiest first,
        each on `replicas` different workers' disks."""
        cat.check_name(name)
        placement.check_dataset_name(name, self.catalog.has(DATASETS, name),
                                     any(p.name == name for p in self.puts.values()))
        if not 1 <= splits <= placement.MAX_PUT_SPLITS:
            raise ProtocolError(f"put_begin: splits must be from 1 to "
                                f"{placement.MAX_PUT_SPLITS}")
        holders = placement.split_nodes(self.links.connected(), splits, replicas,
                                        len(self.links.nodes))
        token = secrets.token_hex(8)
        session = self.puts[token] = Put(name, peer, holders)
        log.info("put %s: %d splits, %d bytes, %d replicas on %s", name, splits, size,
                 replicas, ", ".join(session.nodes()))
        return {"put": token, "nodes": [h[0] for h in holders], "replicas": holders}

    def _put(self, peer: rpc.Peer, token: str) -> Put:
        """The client's own put in progress with this token, or NotFound."""
        put = self.puts.get(token)
        if put is None or put.client is not peer:
            raise NotFound("no such put in progress on this connection")
        return put

    async def put_data(self, peer: rpc.Peer, put: str, index: int, offset: int, data: bytes,
                       last: bool) -> None:
        """Relay one chunk of a split to every worker that keeps a replica of it."""
        session = self._put(peer, put)
        if not 0 <= index < len(session.holders):
            raise ProtocolError(f"put_data: no split {index}")
        nodes = session.holders[index]
        for node in nodes:
            if node not in self.links.peers:
                raise ConnectionClosed(f"worker {node} went away during the put")
        stored = await asyncio.gather(*(self.links.call(
            node, "store", limit=DATA_LIMIT, name=session.name, index=index, offset=offset,
            data=data, last=last) for node in nodes))
        if self.puts.get(put) is not session:  # abandoned while this chunk was on its way
            await asyncio.gather(*(self.links.send(n, "abort_put", name=session.name)
                                   for n in nodes))
            raise Conflict(f"the put of {session.name} was abandoned")
        if last:
            session.stored.update({(index, n): r for n, r in zip(nodes, stored)})

    def put_end(self, peer: rpc.Peer, put: str) -> dict:
        """Every split is stored: record the dataset."""
        session = self._put(peer, put)
        missing = session.missing()
        if missing:
            raise ProtocolError(f"put_end: {len(missing)} splits are not complete")
        del self.puts[put]
        splits = [session.split(i) for i in range(len(session.holders))]
        entry = self.catalog.add(DATASETS, session.name, {"splits": splits})
        log.info("dataset %s stored: %d splits, %d bytes", session.name, len(splits),
                 sum(s["size"] for s in splits))
        return entry

    async def put_abort(self, peer: rpc.Peer, put: str) -> None:
        """Forget a put and remove what it stored, from every worker it was to use."""
        session = self._put(peer, put)
        del self.puts[put]
        log.warning("put of %s abandoned; removing what was stored", session.name)
        await asyncio.gather(*(self.links.send(n, "abort_put", name=session.name)
                               for n in session.nodes()))

    async def abandon(self, client: rpc.Peer) -> None:
        """A client went away: its puts in progress are abandoned."""
        for token, put in list(self.puts.items()):
            if put.client is client:
                await self.put_abort(client, token)

    # ------------------------------------------------------------------ reads

    def dataset(self, peer: rpc.Peer, name: str) -> dict:
        return self.catalog.get(DATASETS, name)

    def output(self, peer: rpc.Peer, name: str) -> dict:
        return self.catalog.get(OUTPUTS, name)

    def ls(self, peer: rpc.Peer) -> list:
        """`blfs ls`: one row per dataset and output."""
        return self.catalog.listing()

    async def read(self, peer: rpc.Peer, name: str, part: int, offset: int,
                   length: int) -> dict:
        """A chunk of an output's part, from a node that keeps it, or through a peer's view
        of its disk when that node is down (the disk outlives its worker)."""
        parts = self.catalog.get(OUTPUTS, name)["parts"]
        if not 0 <= part < len(parts):
            raise NotFound(f"output {name} has no part {part}")
        return {"data": await copies.read_chunk(self.links, parts[part], offset, length)}

    # ------------------------------------------------------------------ removal

    async def remove(self, peer: rpc.Peer, name: str) -> dict:
        """Forget a dataset or output and delete its files (`blfs rm`)."""
        kind = DATASETS if self.catalog.has(DATASETS, name) else OUTPUTS
        entry = self.catalog.get(kind, name)
        user = placement.user_of(name, self.sched.jobs.values())
        if user is not None:
            raise Conflict(f"job {user} uses {name}")
        return await self._drop(kind, name, entry)

    def remove_temporary(self, names: list) -> None:
        """Datasets that submit put for one job only, now that it ended."""
        for name in names:
            if self.catalog.has(DATASETS, name):
                self.tasks.spawn(self._drop(DATASETS, name, self.catalog.get(DATASETS, name)))

    async def _drop(self, kind: str, name: str, entry: dict) -> dict:
        """Forget a dataset or output, and have every node that holds files drop them."""
        self.catalog.remove(kind, name)
        files = entry.get("splits") or entry.get("parts") or []
        nodes = sorted({n for f in files for n in cat.holders(f)})
        results = await asyncio.gather(*(self.links.send(n, "drop", kind=kind, name=name)
                                         for n in nodes))
        left = [n for n, r in zip(nodes, results) if r is None]
        if left:
            log.warning("%s removed, but its files stay on %s (not connected)", name,
                        ", ".join(left))
        return {"name": name, "kind": kind, "nodes": nodes, "left_on": left}

