"""Cluster storage pieces without a cluster: names, paths, split files, the master's record,
and cutting a file into whole-line splits for `blfs put`."""
from __future__ import annotations

import os
import zlib

import pytest
from hypothesis import given, settings, strategies as st

from blfsd import catalog, datafiles
from blfsd.catalog import DATASETS, OUTPUTS, Catalog
from blfsd.errors import Conflict, NotFound, ProtocolError, UsageError
from blfsd.inputs import line_cuts


@pytest.mark.parametrize("name", ["corpus", "a", "x.y-z_1", "9" * 100])
def test_good_names(name):
    assert catalog.is_name(name) and catalog.check_name(name) == name


@pytest.mark.parametrize("name", ["", ".hidden", "-x", "a/b", "..", "../etc", "a b", "x" * 101,
                                  "é", "a\n"])
def test_bad_names(name):
    assert not catalog.is_name(name)
    with pytest.raises(UsageError):
        catalog.check_name(name)


def test_resolve_stays_inside_datasets_and_outputs(tmp_path):
    root = str(tmp_path)
    assert datafiles.resolve(root, "w1", "data/c/split-00000") == \
        os.path.join(root, "w1", "data", "c", "split-00000")
    assert datafiles.resolve(root, "w1", "output/o/part-00001") == \
        os.path.join(root, "w1", "output", "o", "part-00001")
    for node, file in (("w1", "pool/slot-0000"), ("w1", "data/../../etc/passwd"),
                       ("w1", "/etc/passwd"), ("w1", "data"), ("../w1", "data/c/x"),
                       ("", "data/c/x"), ("w1", "output/../pool/MANIFEST")):
        with pytest.raises(ProtocolError):
            datafiles.resolve(root, node, file)


def test_upload_writes_a_durable_file_and_reports_it(tmp_path):
    disk = str(tmp_path / "w1")
    up = datafiles.Uploads(disk, None)
    assert up.write("c", 0, 0, b"one\n", last=False) is None
    # nothing visible under its final name before the last chunk
    assert os.listdir(os.path.join(disk, "data", "c")) == [".split-00000.part"]
    rec = up.write("c", 0, 4, b"two\n", last=True)
    assert rec == {"file": "data/c/split-00000", "size": 8, "crc": zlib.crc32(b"one\ntwo\n")}
    assert open(os.path.join(disk, rec["file"]), "rb").read() == b"one\ntwo\n"
    assert datafiles.mismatch(os.path.join(disk, rec["file"]), 8, rec["crc"]) is None
    assert datafiles.mismatch(os.path.join(disk, rec["file"]), 9, None) == "8 bytes"
    assert datafiles.mismatch(os.path.join(disk, rec["file"]), 8, 1).startswith("crc ")
    assert datafiles.mismatch(os.path.join(disk, "data/c/nope"), 8, None)


def test_upload_refuses_chunks_out_of_order(tmp_path):
    up = datafiles.Uploads(str(tmp_path), None)
    with pytest.raises(ProtocolError):
        up.write("c", 0, 5, b"x", last=True)  # never started
    up.write("c", 1, 0, b"abc", last=False)
    with pytest.raises(ProtocolError):
        up.write("c", 1, 2, b"x", last=True)  # overlaps


def test_abort_removes_everything_of_the_put(tmp_path):
    disk = str(tmp_path)
    up = datafiles.Uploads(disk, None)
    up.write("c", 0, 0, b"a\n", last=True)
    up.write("c", 1, 0, b"b", last=False)
    up.write("d", 0, 0, b"keep\n", last=True)
    up.abort("c")
    assert not os.path.exists(os.path.join(disk, "data", "c"))
    assert up.open == {}
    assert os.path.exists(os.path.join(disk, "data", "d", "split-00000"))
    assert datafiles.drop(disk, DATASETS, "d") is True
    assert datafiles.drop(disk, DATASETS, "d") is False


def test_a_new_master_session_drops_puts_in_progress(tmp_path):
    disk = str(tmp_path)
    up = datafiles.Uploads(disk, None)
    up.write("c", 0, 0, b"a\n", last=True)   # finished, but the put was not
    up.write("c", 1, 0, b"b", last=False)
    up.write("d", 0, 0, b"done\n", last=True)  # a dataset that is complete on this disk
    assert up.abort_all() == ["c"]
    assert not os.path.exists(os.path.join(disk, "data", "c"))
    assert os.path.exists(os.path.join(disk, "data", "d", "split-00000"))
    assert up.abort_all() == []


def test_a_copy_of_an_output_part_in_progress_goes_alone_with_a_new_session(tmp_path):
    disk = str(tmp_path)
    up = datafiles.Uploads(disk, None)
    rec = up.write("o", 1, 0, b"copied\n", last=True, kind=OUTPUTS)
    assert rec["file"] == "output/o/part-00001" and rec["size"] == 7
    up.write("o", 2, 0, b"half", last=False, kind=OUTPUTS)
    assert up.abort_all() == []  # no put was in progress
    assert sorted(os.listdir(os.path.join(disk, "output", "o"))) == ["part-00001"]


def test_catalog_survives_a_restart_and_refuses_duplicates(tmp_path):
    c = Catalog(str(tmp_path))
    c.add(DATASETS, "c", {"splits": [{"node": "w1", "file": "data/c/split-00000",
                                      "size": 8, "crc": 1}]})
    c.add(OUTPUTS, "o", {"job": "j1", "parts": [{"partition": 0, "node": "w2",
                                                 "file": "output/o/part-00000", "size": 3}]})
    with pytest.raises(Conflict):
        c.add(DATASETS, "c", {"splits": []})
    again = Catalog(str(tmp_path))
    assert again.get(DATASETS, "c")["splits"][0]["size"] == 8
    assert [(r["kind"], r["name"], r["files"], r["bytes"], r["nodes"]) for r in again.listing()] \
        == [("dataset", "c", 1, 8, ["w1"]), ("output", "o", 1, 3, ["w2"])]
    again.remove(OUTPUTS, "o")
    with pytest.raises(NotFound):
        Catalog(str(tmp_path)).get(OUTPUTS, "o")


def test_a_damaged_catalog_is_logged_not_fatal(tmp_path, caplog):
    (tmp_path / "catalog.msgpack").write_bytes(b"\xc1garbage")
    c = Catalog(str(tmp_path))
    assert c.listing() == []
    assert "cannot read the catalog" in caplog.text


@settings(max_examples=100, deadline=None)
@given(lines=st.lists(st.binary(max_size=30).map(lambda b: b.replace(b"\n", b"")), max_size=40),
       last_newline=st.booleans(), size=st.integers(1, 200))
def test_line_cuts_hold_whole_lines(tmp_path_factory, lines, last_newline, size):
    data = b"\n".join(lines) + (b"\n" if last_newline and lines else b"")
    path = tmp_path_factory.mktemp("cuts") / "f"
    path.write_bytes(data)
    cuts = line_cuts(str(path), size)
    assert b"".join(data[a:b] for a, b in cuts) == data
    assert all(a < b for a, b in cuts)
    for a, b in cuts[:-1]:
        assert data[b - 1:b] == b"\n"  # every cut but the last ends a line
        assert b - a >= min(size, len(data) - a)  # and is at least the size asked for
