"""Segment formats 2 (crc32) and 3 (crc32c): written, read and attacked; and which one a
cluster writes (checksums.choose, Scheduler.segment_format)."""
from __future__ import annotations

import os
import zlib

import pytest

from blfsd import checksums, storage
from blfsd.errors import FetchError
from blfsd.scheduler import Launch, Scheduler
from blfsd.storage import SegmentId, SegmentReader, SegmentSink, SlotLeases, prepare_pool

from test_scheduler import make_spec  # noqa: E402  (tests/ is on sys.path)

SLOT = 1 << 16
needs_crc32c = pytest.mark.skipif(not checksums.readable(checksums.CRC32C),
                                  reason="no crc32c module here (pip install crc32c)")


def test_a_cluster_writes_crc32c_only_when_every_live_worker_wants_it_first():
    fast, slow, old = [3, 2], [2, 3], None
    assert checksums.choose([fast, fast, fast]) == checksums.CRC32C
    assert checksums.choose([fast, old]) == checksums.CRC32  # an older release
    assert checksums.choose([fast, slow]) == checksums.CRC32  # crc32c without the instruction
    assert checksums.choose([fast, [2]]) == checksums.CRC32  # no crc32c module
    assert checksums.choose([]) == checksums.CRC32


def test_a_node_wants_crc32c_first_exactly_when_it_runs_on_the_cpus_instruction():
    said = checksums.formats()
    assert checksums.CRC32 in said
    assert (said[0] == checksums.CRC32C) == checksums.hardware()
    assert all(checksums.readable(f) for f in said)


def _pool(tmp_path):
    disk = str(tmp_path / "disk")
    os.makedirs(disk)
    manifest, _ = prepare_pool(disk, "node-a", 4, SLOT, durable=False)
    return disk, manifest


def _write(disk, manifest, sid, payload, fmt, leases=None):
    leases = leases or SlotLeases(manifest.slot_count)
    sink = SegmentSink.on_disk(disk, "node-a", manifest.generation, SLOT,
                               lambda: leases.lease(f"{sid.job}/m/{sid.partition}"), fmt=fmt)
    sink.write(sid, payload)
    (loc,) = sink.commit()
    sink.close()
    return loc


def _flip(disk, loc, at: int, mask: int = 0xFF) -> None:
    with open(storage.slot_path(disk, loc.slot), "r+b") as f:
        f.seek(loc.offset + at)
        b = f.read(1)
        f.seek(loc.offset + at)
        f.write(bytes([b[0] ^ mask]))


def _header(disk, loc) -> storage.Header:
    with open(storage.slot_path(disk, loc.slot), "rb") as f:
        f.seek(loc.offset)
        return storage.decode_header(f.read(storage.HEADER_SIZE))


@needs_crc32c
def test_segments_of_both_formats_are_written_with_their_checksum_and_read_by_one_reader(
        tmp_path):
    import crc32c
    disk, manifest = _pool(tmp_path)
    a, b = SegmentId("j", 1, 0, 0), SegmentId("j", 1, 0, 1)
    pa, pb = os.urandom(5000), os.urandom(7000)
    leases = SlotLeases(manifest.slot_count)
    la = _write(disk, manifest, a, pa, checksums.CRC32, leases)
    lb = _write(disk, manifest, b, pb, checksums.CRC32C, leases)
    assert la.slot != lb.slot
    assert la.crc == zlib.crc32(pa) and _header(disk, la).format == 2
    assert lb.crc == crc32c.crc32c(pb) and _header(disk, lb).format == 3
    assert lb.crc != zlib.crc32(pb)
    reader = SegmentReader.on_disks(lambda node: disk, allow_buffered=True)
    try:
        assert bytes(reader.read(la, a)[0]) == pa
        assert bytes(reader.read(lb, b)[0]) == pb
        assert bytes(reader.read(la, a)[0]) == pa  # the buffer is reused, never stale
    finally:
        reader.close()


@needs_crc32c
@pytest.mark.parametrize("attack", ["payload byte", "format 3 to 2", "checksum byte"])
def test_a_tampered_crc32c_segment_is_a_fetch_error(tmp_path, attack):
    disk, manifest = _pool(tmp_path)
    sid = SegmentId("j", 1, 0, 0)
    loc = _write(disk, manifest, sid, os.urandom(3000), checksums.CRC32C)
    if attack == "payload byte":
        _flip(disk, loc, storage.HEADER_SIZE + 1234, 0x01)
    elif attack == "format 3 to 2":  # then its crc32c would be checked as a crc32
        _flip(disk, loc, 9, 0x01)
        assert _header(disk, loc).format == 2
    else:
        _flip(disk, loc, 75, 0x80)
    _read_fails(disk, loc, sid, "checksum mismatch")


def _read_fails(disk, loc, sid, match: str) -> None:
    reader = SegmentReader.on_disks(lambda node: disk, allow_buffered=True)
    try:
        with pytest.raises(FetchError, match=match):
            reader.read(loc, sid)
    finally:
        reader.close()


def test_a_node_without_crc32c_says_so_rather_than_passing_a_segment_unchecked(
        tmp_path, monkeypatch):
    disk, manifest = _pool(tmp_path)
    sid = SegmentId("j", 1, 0, 0)
    payload = os.urandom(100)
    loc = _write(disk, manifest, sid, payload, checksums.CRC32)
    with open(storage.slot_path(disk, loc.slot), "r+b") as f:  # as a crc32c writer would
        f.seek(loc.offset)
        f.write(storage.encode_header(sid, payload, fmt=checksums.CRC32C, crc=loc.crc))
    monkeypatch.delitem(checksums._FUNCTIONS, checksums.CRC32C, raising=False)
    _read_fails(disk, loc, sid, "cannot check")


def test_the_master_has_attempts_write_the_format_every_live_worker_wants():
    s = Scheduler()
    s.worker_up("w1", 2, {"segment_formats": [3, 2]})
    s.worker_up("w2", 2, {"segment_formats": [3, 2]})
    s.submit("j1", make_spec(maps=4, reducers=1), 0.0)
    first = [a.attempt for a in s.schedule(0.0) if isinstance(a, Launch)]
    assert first and all(spec.segment_format == checksums.CRC32C for spec in first)
    s.worker_up("w3", 2, {})  # an older release: it would not read format 3
    assert s.segment_format() == checksums.CRC32
    s.worker_down("w3", 1.0)
    assert s.segment_format() == checksums.CRC32C
    s.worker_up("w2", 2, {"segment_formats": [2, 3]})  # came back with a slow crc32c
    assert s.segment_format() == checksums.CRC32
    # a spec for format 2 leaves the field out: a worker of an older release reads it
    s.worker_down("w2", 2.0)
    s.worker_up("w1", 2, {"segment_formats": [2]})
    s.submit("j2", make_spec(maps=4, reducers=1), 3.0)
    later = [a.attempt for a in s.schedule(3.0) if isinstance(a, Launch)]
    assert later and all("segment_format" not in spec.to_wire() for spec in later)


def test_a_sink_asked_for_a_format_it_cannot_compute_writes_format_2(tmp_path, monkeypatch):
    """A worker whose crc32c went away after it said it wanted format 3: its tasks still
    write segments every node reads, rather than failing."""
    disk, manifest = _pool(tmp_path)
    monkeypatch.delitem(checksums._FUNCTIONS, checksums.CRC32C, raising=False)
    sid = SegmentId("j", 1, 0, 0)
    payload = os.urandom(100)
    loc = _write(disk, manifest, sid, payload, checksums.CRC32C)
    assert _header(disk, loc).format == checksums.CRC32
    assert loc.crc == zlib.crc32(payload)
