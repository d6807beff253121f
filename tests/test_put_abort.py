"""Puts through the master (blfsd.master.datasets) to the workers' real Files services on
directory disks (tests/fake_links.py): a put abandoned at any point, by the client or with
its connection, leaves nothing on any disk and nothing in the catalog."""
from __future__ import annotations

import asyncio
import os

import pytest

from blfsd.aio import TaskSet
from blfsd.catalog import DATASETS, Catalog
from blfsd.errors import Conflict, NotFound, ProtocolError
from blfsd.master.datasets import Datasets
from blfsd.scheduler import Scheduler

from fake_links import FakeLinks

CLIENT, OTHER = object(), object()  # two client connections


def service(tmp_path, fault=None) -> tuple[Datasets, FakeLinks]:
    links = FakeLinks(str(tmp_path / "disks"), ["w1", "w2", "w3"], fault)
    return Datasets(Catalog(None), links, Scheduler(), TaskSet()), links


def left_on_disks(links: FakeLinks) -> list:
    """Every file or directory under any worker's data/ (hidden .part files included)."""
    found = []
    for name in links.files:
        for root, dirs, files in os.walk(os.path.join(links.disk(name), "data")):
            found += [os.path.join(root, x) for x in dirs + files]
    return found


async def begin(ds: Datasets, splits: int = 4) -> tuple[str, list]:
    begun = ds.put_begin(CLIENT, "books", splits, splits * 10)
    return begun["put"], begun["nodes"]


def chunk(ds: Datasets, token: str, index: int, data: bytes, last: bool, offset: int = 0):
    return ds.put_data(CLIENT, token, index, offset, data, last)


def test_a_whole_put_is_recorded_with_every_split(tmp_path):
    async def go():
        ds, links = service(tmp_path)
        token, nodes = await begin(ds, 4)
        assert nodes == ["w1", "w2", "w3", "w1"]  # round robin, roomiest first
        for i in range(4):
            await chunk(ds, token, i, b"line\n", last=False)
            await chunk(ds, token, i, b"more\n", last=True, offset=5)
        entry = ds.put_end(CLIENT, token)
        assert [(s["node"], s["file"], s["size"]) for s in entry["splits"]] == [
            (n, f"data/books/split-{i:05d}", 10) for i, n in enumerate(nodes)]
        assert ds.catalog.has(DATASETS, "books") and ds.puts == {}
    asyncio.run(go())


def test_a_put_with_two_replicas_stores_each_split_on_two_workers(tmp_path):
    async def go():
        ds, links = service(tmp_path)
        begun = ds.put_begin(CLIENT, "books", 3, 30, replicas=2)
        assert begun["replicas"] == [["w1", "w2"], ["w2", "w3"], ["w3", "w1"]]
        for i in range(3):
            await chunk(ds, begun["put"], i, f"line {i}\n".encode(), last=True)
        entry = ds.put_end(CLIENT, begun["put"])
        assert [(s["node"], s["replicas"]) for s in entry["splits"]] == [
            ("w1", ["w1", "w2"]), ("w2", ["w2", "w3"]), ("w3", ["w3", "w1"])]
        for i, nodes in enumerate(begun["replicas"]):
            for n in nodes:
                with open(os.path.join(links.disk(n), "data", "books",
                                       f"split-{i:05d}"), "rb") as f:
                    assert f.read() == f"line {i}\n".encode()
        (row,) = ds.ls(CLIENT)
        assert row["replicas"] == 2 and row["nodes"] == ["w1", "w2", "w3"]
        dropped = await ds.remove(CLIENT, "books")
        assert dropped["nodes"] == ["w1", "w2", "w3"] and left_on_disks(links) == []
    asyncio.run(go())


def test_an_aborted_replicated_put_leaves_nothing_on_either_copy(tmp_path):
    async def go():
        ds, links = service(tmp_path)
        begun = ds.put_begin(CLIENT, "books", 3, 30, replicas=3)
        await chunk(ds, begun["put"], 0, b"line\n", last=True)
        await chunk(ds, begun["put"], 1, b"half", last=False)
        assert len(left_on_disks(links)) >= 6
        with pytest.raises(ProtocolError, match="2 splits are not complete"):
            ds.put_end(CLIENT, begun["put"])
        await ds.put_abort(CLIENT, begun["put"])
        assert left_on_disks(links) == [] and not ds.catalog.has(DATASETS, "books")
    asyncio.run(go())


@pytest.mark.parametrize("stage", ["begun", "half-a-split", "some-splits", "all-but-end"])
def test_an_aborted_put_leaves_nothing_on_any_disk(tmp_path, stage):
    async def go():
        ds, links = service(tmp_path)
        token, nodes = await begin(ds, 4)
        done = {"begun": 0, "half-a-split": 0, "some-splits": 2, "all-but-end": 4}[stage]
        for i in range(done):
            await chunk(ds, token, i, b"x\n", last=True)
        if stage == "half-a-split":
            await chunk(ds, token, 1, b"x\n", last=False)  # an open .part file
        assert stage == "begun" or left_on_disks(links)
        await ds.put_abort(CLIENT, token)
        assert left_on_disks(links) == []
        assert not ds.catalog.has(DATASETS, "books") and ds.puts == {}
        assert sorted(w for w, _ in links.ops("abort_put")) == ["w1", "w2", "w3"]
        for files in links.files.values():
            assert files.uploads.open == {}  # no descriptor left open either
        with pytest.raises(NotFound):
            ds.put_end(CLIENT, token)
    asyncio.run(go())


def test_a_client_that_goes_away_abandons_its_puts_only(tmp_path):
    async def go():
        ds, links = service(tmp_path)
        token, _ = await begin(ds, 2)
        await chunk(ds, token, 0, b"x\n", last=True)
        other = ds.put_begin(OTHER, "other", 1, 2)["put"]
        await ds.put_data(OTHER, other, 0, 0, b"y\n", True)
        await ds.abandon(CLIENT)
        assert list(ds.puts) == [other]
        assert [os.path.relpath(p, tmp_path) for p in left_on_disks(links)] == [
            "disks/w1/data/other", "disks/w1/data/other/split-00000"]
    asyncio.run(go())


def test_a_chunk_that_arrives_after_the_abort_is_removed_too(tmp_path):
    """The worker stored a chunk while the client gave up: the master tells it to drop."""
    async def go():
        ds, links = service(tmp_path)
        token, _ = await begin(ds, 2)
        serve = links._serve

        async def store_then_abort(worker, op, fields):
            result = await serve(worker, op, fields)
            if op == "store" and fields["index"] == 1:  # on its way back: the client quits
                await ds.put_abort(CLIENT, token)
            return result

        links._serve = store_then_abort
        await chunk(ds, token, 0, b"x\n", last=True)
        with pytest.raises(Conflict, match="was abandoned"):
            await chunk(ds, token, 1, b"x\n", last=True)
        assert left_on_disks(links) == []
        assert [w for w, _ in links.ops("abort_put")].count("w2") == 2  # once more for it
    asyncio.run(go())


def test_a_put_refuses_what_it_cannot_store(tmp_path):
    async def go():
        ds, links = service(tmp_path)
        token, _ = await begin(ds, 2)
        with pytest.raises(Conflict, match="already exists"):  # being put
            ds.put_begin(OTHER, "books", 1, 1)
        with pytest.raises(ProtocolError, match="no split 7"):
            await chunk(ds, token, 7, b"x", last=True)
        with pytest.raises(NotFound):  # another connection's put
            await ds.put_data(OTHER, token, 0, 0, b"x", True)
        with pytest.raises(ProtocolError, match="2 splits are not complete"):
            ds.put_end(CLIENT, token)
        with pytest.raises(ProtocolError, match="splits must be from 1 to 100000"):
            ds.put_begin(CLIENT, "none", 0, 0)
        del links.peers["w2"]
        with pytest.raises(Exception, match="w2 went away during the put"):
            await chunk(ds, token, 1, b"x", last=True)
    asyncio.run(go())
