"""blfsd.storage without root: pools, segment format, sink/reader, leases (docs/ARCHITECTURE.md, Storage rules).

Everything here runs in tmp_path directories. Reads use allow_buffered=True so the tests
also pass where the temporary directory is tmpfs (which refuses O_DIRECT); the O_DIRECT
path across two views of one disk is tested in test_coherence.py.
"""
from __future__ import annotations

import os
import random
import zlib

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from blfsd import storage
from blfsd.errors import FetchError, PoolExhausted, StorageError
from blfsd.storage import (ALIGN, HEADER_SIZE, MANIFEST, Manifest, SegmentId, SegmentReader,
                           SegmentSink, SlotLeases, SlotWriter, check_pool, decode_header,
                           encode_header, prepare_pool, read_manifest, slot_path)

SLOT = 64 * 1024


def manifest_path(disk) -> str:
    return os.path.join(str(disk), "pool", MANIFEST)


def slot_files(disk) -> list[str]:
    return sorted(n for n in os.listdir(os.path.join(str(disk), "pool"))
                  if n.startswith("slot-"))


def assert_prepared_slot(path: str, size: int) -> None:
    st_ = os.stat(path)
    assert st_.st_size == size
    # Not sparse: every block is allocated (written zeros, not holes).
    assert st_.st_blocks * 512 >= size, f"{path} is sparse ({st_.st_blocks} blocks)"
    with open(path, "rb") as f:
        data = f.read()
    assert data == bytes(size), f"{path} is not zero-filled"


# ------------------------------------------------------------------------------- pools

def test_prepare_pool_creates_zero_filled_slots_and_manifest(tmp_path):
    manifest, changed = prepare_pool(str(tmp_path), "node-a", 4, SLOT)
    assert changed is True
    assert manifest.node == "node-a"
    assert (manifest.slot_count, manifest.slot_size) == (4, SLOT)
    assert manifest.generation > 0
    assert slot_files(tmp_path) == [f"slot-{i:05d}" for i in range(4)]
    for i in range(4):
        assert_prepared_slot(slot_path(str(tmp_path), i), SLOT)
    # The manifest on disk says the same, read buffered and with O_DIRECT (if available).
    assert read_manifest(str(tmp_path), direct=False) == manifest
    assert read_manifest(str(tmp_path), direct=True) == manifest
    assert check_pool(str(tmp_path)) == manifest
    assert not os.path.exists(manifest_path(tmp_path) + ".new")


def test_prepare_pool_writes_manifest_last(tmp_path, monkeypatch):
    """While slots are written the MANIFEST says "preparing" (so no pool is claimed);
    it is rewritten "ready" (by rename) after all slots."""
    events = []
    real_write_zeros = storage._write_zeros
    real_rename = os.rename

    def spy_write_zeros(path, size, durable, fill=True):
        m = storage.read_manifest(str(tmp_path), direct=False)
        assert not m.ready, "MANIFEST claims a ready pool mid-preparation"
        assert storage.check_pool(str(tmp_path)) is None
        events.append(("slot", os.path.basename(path)))
        return real_write_zeros(path, size, durable, fill)

    def spy_rename(src, dst, *a, **kw):
        events.append(("rename", os.path.basename(str(dst))))
        return real_rename(src, dst, *a, **kw)

    monkeypatch.setattr(storage, "_write_zeros", spy_write_zeros)
    monkeypatch.setattr(storage.os, "rename", spy_rename)
    prepare_pool(str(tmp_path), "n", 3, SLOT)
    assert events == [("rename", MANIFEST), ("slot", "slot-00000"), ("slot", "slot-00001"),
                      ("slot", "slot-00002"), ("rename", MANIFEST)]
    assert storage.read_manifest(str(tmp_path), direct=False).ready
    # And by the clock: the manifest is not older than any slot.
    m_mtime = os.stat(manifest_path(tmp_path)).st_mtime_ns
    for i in range(3):
        assert os.stat(slot_path(str(tmp_path), i)).st_mtime_ns <= m_mtime


def test_prepare_pool_second_call_is_a_noop(tmp_path, monkeypatch):
    first, changed = prepare_pool(str(tmp_path), "n", 3, SLOT)
    assert changed
    paths = [manifest_path(tmp_path)] + [slot_path(str(tmp_path), i) for i in range(3)]
    before = {p: (os.stat(p).st_mtime_ns, os.stat(p).st_ino) for p in paths}

    def no_writes(*a, **kw):
        raise AssertionError("a no-op prepare_pool wrote a slot")

    monkeypatch.setattr(storage, "_write_zeros", no_writes)
    second, changed = prepare_pool(str(tmp_path), "n", 3, SLOT)
    assert changed is False
    assert second == first
    assert second.generation == first.generation
    assert {p: (os.stat(p).st_mtime_ns, os.stat(p).st_ino) for p in paths} == before


def test_changed_slot_count_bumps_generation(tmp_path):
    disk = str(tmp_path)
    m1, _ = prepare_pool(disk, "n", 4, SLOT)
    m2, changed = prepare_pool(disk, "n", 6, SLOT)
    assert changed and m2.generation > m1.generation
    assert m2.slot_count == 6 and slot_files(tmp_path) == [f"slot-{i:05d}" for i in range(6)]
    for i in range(6):
        assert_prepared_slot(slot_path(disk, i), SLOT)
    m3, changed = prepare_pool(disk, "n", 2, SLOT)
    assert changed and m3.generation > m2.generation
    assert slot_files(tmp_path) == ["slot-00000", "slot-00001"]  # extra slots are removed
    assert read_manifest(disk, direct=False) == m3


def test_changed_slot_size_rewrites_slots(tmp_path):
    disk = str(tmp_path)
    m1, _ = prepare_pool(disk, "n", 2, SLOT)
    with open(slot_path(disk, 0), "r+b") as f:
        f.write(b"old bytes")
    m2, changed = prepare_pool(disk, "n", 2, 2 * SLOT)
    assert changed and m2.generation > m1.generation and m2.slot_size == 2 * SLOT
    for i in range(2):
        assert_prepared_slot(slot_path(disk, i), 2 * SLOT)


def test_changed_node_name_is_a_change(tmp_path):
    m1, _ = prepare_pool(str(tmp_path), "old", 2, SLOT)
    m2, changed = prepare_pool(str(tmp_path), "new", 2, SLOT)
    assert changed and m2.node == "new" and m2.generation > m1.generation


@pytest.mark.parametrize("damage", ["short", "sparse", "missing"])
def test_crash_mid_preparation_is_completed_by_next_call(tmp_path, damage):
    disk = str(tmp_path)
    m1, _ = prepare_pool(disk, "n", 4, SLOT)
    # A crash mid-preparation: no MANIFEST yet, and slot 2 not (fully) written.
    os.unlink(manifest_path(tmp_path))
    victim = slot_path(disk, 2)
    if damage == "short":
        os.truncate(victim, SLOT // 2 - 100)
    elif damage == "sparse":  # right size, but a hole: not prepared either
        os.truncate(victim, 0)
        os.truncate(victim, SLOT)
    else:
        os.unlink(victim)
    assert check_pool(disk) is None
    m2, changed = prepare_pool(disk, "n", 4, SLOT)
    assert changed is True
    assert m2.slot_count == 4
    assert m2.generation > 0
    for i in range(4):
        assert_prepared_slot(slot_path(disk, i), SLOT)
    assert check_pool(disk) == m2
    assert prepare_pool(disk, "n", 4, SLOT) == (m2, False)


def test_damaged_slot_with_manifest_present_is_repaired(tmp_path):
    disk = str(tmp_path)
    m1, _ = prepare_pool(disk, "n", 3, SLOT)
    os.truncate(slot_path(disk, 1), 100)
    assert check_pool(disk) is None
    m2, changed = prepare_pool(disk, "n", 3, SLOT)
    assert changed and m2.generation > m1.generation
    assert_prepared_slot(slot_path(disk, 1), SLOT)


def test_generation_after_crash_is_never_reused(tmp_path, monkeypatch):
    """Same clock second (or a clock stepped back): prepare 2 slots, crash while growing the
    pool to 4, finish the preparation. The finished 4-slot pool must not carry the
    generation of the old 2-slot pool, which a peer may have mounted."""
    disk = str(tmp_path)
    monkeypatch.setattr(storage.time, "time", lambda: 1_700_000_000.5)
    old, _ = prepare_pool(disk, "n", 2, SLOT)
    real_write_zeros = storage._write_zeros

    class PowerLoss(BaseException):
        pass

    def crash_on_slot_3(path, size, durable, fill=True):
        if path.endswith("slot-00003"):
            raise PowerLoss()  # simulated crash in the middle of the preparation
        return real_write_zeros(path, size, durable, fill)

    monkeypatch.setattr(storage, "_write_zeros", crash_on_slot_3)
    with pytest.raises(PowerLoss):
        prepare_pool(disk, "n", 4, SLOT)
    assert storage.check_pool(disk) is None  # no manifest claims a finished pool
    assert not storage.read_manifest(disk, direct=False).ready
    monkeypatch.setattr(storage, "_write_zeros", real_write_zeros)
    new, changed = prepare_pool(disk, "n", 4, SLOT)
    assert changed and new.slot_count == 4
    assert new.generation > old.generation, (
        f"4-slot pool got generation {new.generation}, the old 2-slot pool had "
        f"{old.generation}: a peer that mounted the old pool will not remount")


def test_prepare_pool_rejects_bad_slot_size(tmp_path):
    for size in (ALIGN + 1, 1000, 0, HEADER_SIZE):
        with pytest.raises(StorageError):
            prepare_pool(str(tmp_path), "n", 2, size)
    assert not os.path.exists(manifest_path(tmp_path))


def test_manifest_encode_decode_and_garbage():
    m = Manifest("node-7", 1234567890, 1 << 20, 17)
    assert Manifest.decode(m.encode()) == m
    assert Manifest.decode(m.encode() + bytes(4000)) == m  # zero padding of a direct read
    for bad in (b"", b"hello\n", b"blfs-pool 2\nnode x\n", b"blfs-pool 1\nnode x\n",
                b"blfs-pool 1\nnode x\ngeneration x\nslot_size 1\nslot_count 1\n"):
        with pytest.raises(StorageError):
            Manifest.decode(bad)


def test_check_pool_without_manifest(tmp_path):
    assert check_pool(str(tmp_path)) is None
    os.makedirs(tmp_path / "pool")
    (tmp_path / "pool" / MANIFEST).write_bytes(b"garbage")
    assert check_pool(str(tmp_path)) is None


# ----------------------------------------------------------------------------- headers

def test_header_round_trip():
    sid = SegmentId("job-20240101-abcdef", 17, 3, 9, run=2, seq=5)
    payload = os.urandom(1000)
    header = encode_header(sid, payload, flags=storage.FLAG_CANONICAL_ORDER)
    assert len(header) == HEADER_SIZE
    assert header[:8] == storage.MAGIC
    got, flags, length, crc, fmt = decode_header(header)
    assert fmt == storage.FORMAT == 2
    assert got == sid
    assert flags == storage.FLAG_CANONICAL_ORDER
    assert length == len(payload)
    assert crc == zlib.crc32(payload)


def test_header_job_id_limits():
    long_job = "j" * 32
    got, *_ = decode_header(encode_header(SegmentId(long_job, 0, 0, 0), b""))
    assert got.job == long_job
    with pytest.raises(StorageError):
        encode_header(SegmentId("j" * 33, 0, 0, 0), b"")


def test_decode_header_rejects_non_headers():
    with pytest.raises(StorageError):
        decode_header(bytes(HEADER_SIZE))
    good = bytearray(encode_header(SegmentId("j", 1, 0, 0), b"x"))
    good[9] ^= 0xFF  # format version
    with pytest.raises(StorageError):
        decode_header(bytes(good))


# ----------------------------------------------------------------------- sink / reader

@pytest.fixture
def pool(tmp_path):
    disk = str(tmp_path / "disk")
    os.makedirs(disk)
    manifest, _ = prepare_pool(disk, "node-a", 4, SLOT, durable=False)
    return disk, manifest


def make_sink(disk, manifest, leases: SlotLeases, attempt: str) -> SegmentSink:
    return SegmentSink.on_disk(disk, manifest.node, manifest.generation, manifest.slot_size,
                       lambda: leases.lease(attempt))


def make_reader(disk) -> SegmentReader:
    return SegmentReader.on_disks(lambda node: disk, allow_buffered=True)


def test_sink_writes_aligned_segments_and_leases_new_slots(pool):
    disk, manifest = pool
    leases = SlotLeases(manifest.slot_count)
    sink = make_sink(disk, manifest, leases, "job1/m-00000/0")
    rng = random.Random(1)
    sizes = [100, 5000, 0, 20000, 30000, 40000, 1, 4096 - HEADER_SIZE, 4096 - HEADER_SIZE + 1]
    segments = []
    for i, size in enumerate(sizes):
        sid = SegmentId("job1", 0, 0, partition=i)
        payload = rng.randbytes(size)
        sink.write(sid, payload)
        segments.append((sid, payload))
    locations = sink.commit()
    sink.close()
    assert len(locations) == len(sizes)
    # The payloads need more than one slot: new slots were leased as they filled up.
    assert len(sink.slots) > 1 and sink.slots == sorted(set(sink.slots))
    assert sorted(leases.holder) == sink.slots
    assert all(a == "job1/m-00000/0" for a in leases.holder.values())
    prev_end = {}
    for loc, (sid, payload) in zip(locations, segments):
        assert loc.offset % ALIGN == 0
        assert loc.length == HEADER_SIZE + len(payload)
        assert loc.offset + loc.length <= SLOT
        assert loc.crc == zlib.crc32(payload)
        assert loc.node == "node-a" and loc.generation == manifest.generation
        assert loc.partition == sid.partition
        # Segments in one slot are packed at the next aligned offset, never overlapping.
        if loc.slot in prev_end:
            assert loc.offset == storage.align_up(prev_end[loc.slot])
        else:
            assert loc.offset == 0
        prev_end[loc.slot] = loc.offset + loc.length
    reader = make_reader(disk)
    try:
        for loc, (sid, payload) in zip(locations, segments):
            got, flags = reader.read(loc, sid)
            assert got == payload and flags == 0
    finally:
        reader.close()


def test_sink_commit_with_no_segments(pool):
    disk, manifest = pool
    leases = SlotLeases(manifest.slot_count)
    sink = make_sink(disk, manifest, leases, "j/m/0")
    assert sink.commit() == []
    assert leases.holder == {}


def test_sink_rejects_payload_larger_than_a_slot(pool):
    disk, manifest = pool
    sink = make_sink(disk, manifest, SlotLeases(manifest.slot_count), "j/m/0")
    sink.write(SegmentId("j", 0, 0, 0), bytes(SLOT - HEADER_SIZE))  # exactly fits
    with pytest.raises(StorageError):
        sink.write(SegmentId("j", 0, 0, 1), bytes(SLOT - HEADER_SIZE + 1))
    sink.close()


def test_sink_never_grows_or_truncates_slots(pool):
    disk, manifest = pool
    before = {i: os.stat(slot_path(disk, i)) for i in range(4)}
    sink = make_sink(disk, manifest, SlotLeases(manifest.slot_count), "j/m/0")
    for p in range(8):  # two per slot: fills all four slots up to near their ends
        sink.write(SegmentId("j", 0, 0, p), os.urandom(SLOT // 3))
    assert sink.slots == [0, 1, 2, 3]
    sink.commit()
    sink.close()
    for i in range(4):
        after = os.stat(slot_path(disk, i))
        assert after.st_size == SLOT and after.st_ino == before[i].st_ino


def test_sink_raises_pool_exhausted(pool):
    disk, manifest = pool
    sink = make_sink(disk, manifest, SlotLeases(manifest.slot_count), "j/m/0")
    with pytest.raises(PoolExhausted):
        for p in range(100):
            sink.write(SegmentId("j", 0, 0, p), bytes(SLOT - HEADER_SIZE))
    sink.close()


def test_slot_writer_never_creates_a_slot(tmp_path):
    with pytest.raises(FileNotFoundError):
        SlotWriter.open(str(tmp_path), 0, SLOT)
    assert not os.path.exists(slot_path(str(tmp_path), 0))


def write_one(disk, manifest, sid, payload, flags=0):
    sink = make_sink(disk, manifest, SlotLeases(manifest.slot_count), f"{sid.job}/m/0")
    sink.write(sid, payload, flags)
    (loc,) = sink.commit()
    sink.close()
    return loc


def corrupt(disk, loc, at: int) -> None:
    """Flip every bit of one byte at `at` bytes into the segment."""
    path = slot_path(disk, loc.slot)
    with open(path, "r+b") as f:
        f.seek(loc.offset + at)
        b = f.read(1)
        f.seek(loc.offset + at)
        f.write(bytes([b[0] ^ 0xFF]))


def test_reader_returns_flags(pool):
    disk, manifest = pool
    sid = SegmentId("j", 1, 0, 2)
    loc = write_one(disk, manifest, sid, b"abc", flags=storage.FLAG_CANONICAL_ORDER)
    reader = make_reader(disk)
    assert reader.read(loc, sid) == (b"abc", storage.FLAG_CANONICAL_ORDER)
    reader.close()


@pytest.mark.parametrize("where", [0, 1, 1000, 2999])
def test_flipped_payload_byte_is_a_fetch_error(pool, where):
    disk, manifest = pool
    sid = SegmentId("j", 1, 0, 2)
    loc = write_one(disk, manifest, sid, os.urandom(3000))
    corrupt(disk, loc, HEADER_SIZE + where)
    reader = make_reader(disk)
    with pytest.raises(FetchError, match="checksum"):
        reader.read(loc, sid)
    reader.close()


@pytest.mark.parametrize("other", [
    SegmentId("other-job", 1, 0, 2),
    SegmentId("j", 9, 0, 2),            # other map task
    SegmentId("j", 1, 1, 2),            # other attempt
    SegmentId("j", 1, 0, 3),            # other partition
    SegmentId("j", 1, 0, 2, run=1),     # other spill run
    SegmentId("j", 1, 0, 2, seq=1),
])
def test_wrong_expected_segment_is_a_fetch_error(pool, other):
    disk, manifest = pool
    sid = SegmentId("j", 1, 0, 2)
    loc = write_one(disk, manifest, sid, os.urandom(500))
    reader = make_reader(disk)
    assert reader.read(loc, sid)[0]  # the right id reads fine
    with pytest.raises(FetchError):
        reader.read(loc, other)
    reader.close()


# Byte offsets into the header (">8sHH32sIIIIIQI", big-endian): magic 0-7, format 8-9,
# flags 10-11, job 12-43, map task 44-47, attempt 48-51, partition 52-55, run 56-59,
# seq 60-63, payload length 64-71, crc 72-75, zero padding 76-127.
_FIELDS = {"magic": 0, "magic-end": 7, "format": 9, "job": 12, "job-padding": 43,
           "map_task": 47, "attempt": 51, "partition": 55, "run": 59, "seq": 63,
           "length-low": 71, "length-high": 64, "crc-low": 75, "crc-high": 72}
_FLAGS_OFFSET = 11


@pytest.mark.parametrize("field", sorted(_FIELDS))
def test_flipped_header_byte_is_a_fetch_error(pool, field):
    disk, manifest = pool
    sid = SegmentId("j", 1, 0, 2)
    loc = write_one(disk, manifest, sid, os.urandom(500))
    corrupt(disk, loc, _FIELDS[field])
    reader = make_reader(disk)
    with pytest.raises(FetchError):
        reader.read(loc, sid)
    reader.close()


def test_flipped_header_flags_byte_is_a_fetch_error(pool):
    disk, manifest = pool
    sid = SegmentId("j", 1, 0, 2)
    loc = write_one(disk, manifest, sid, os.urandom(500))
    assert loc.flags == 0
    corrupt(disk, loc, _FLAGS_OFFSET)
    reader = make_reader(disk)
    try:
        with pytest.raises(FetchError):
            payload, flags = reader.read(loc, sid)
            print("corrupted flags accepted:", flags)
    finally:
        reader.close()


def test_location_crc_mismatch_is_a_fetch_error(pool):
    disk, manifest = pool
    sid = SegmentId("j", 1, 0, 2)
    loc = write_one(disk, manifest, sid, b"payload")
    reader = make_reader(disk)
    with pytest.raises(FetchError):
        reader.read(loc.replace(crc=loc.crc ^ 1), sid)
    with pytest.raises(FetchError):
        reader.read(loc.replace(length=loc.length + 1), sid)
    reader.close()


def test_unaligned_or_unwritten_location_is_a_fetch_error(pool):
    disk, manifest = pool
    sid = SegmentId("j", 1, 0, 2)
    loc = write_one(disk, manifest, sid, b"payload")
    reader = make_reader(disk)
    with pytest.raises(FetchError, match="unaligned"):
        reader.read(loc.replace(offset=loc.offset + 512), sid)
    with pytest.raises(FetchError):  # zeros: never written
        reader.read(loc.replace(offset=SLOT - ALIGN, length=HEADER_SIZE + 7), sid)
    with pytest.raises(FetchError):  # past the end of the slot
        reader.read(loc.replace(offset=SLOT), sid)
    with pytest.raises(FetchError):  # a slot that does not exist
        reader.read(loc.replace(slot=99), sid)
    reader.close()


def test_reader_refuses_buffered_fallback_unless_allowed(tmp_path, monkeypatch, caplog):
    """Where the file system refuses O_DIRECT, a peer reader must not silently read buffered."""
    disk = str(tmp_path)
    prepare_pool(disk, "n", 1, SLOT, durable=False)
    real_open = os.open
    monkeypatch.setattr(storage, "_direct_refused_said", False)  # restored afterwards

    def refuse_direct(path, flags, *a, **kw):
        if flags & os.O_DIRECT:
            raise OSError(22, "Invalid argument")
        return real_open(path, flags, *a, **kw)

    monkeypatch.setattr(storage.os, "open", refuse_direct)
    with pytest.raises(StorageError, match="O_DIRECT"):
        storage.open_for_read(slot_path(disk, 0), allow_buffered=False)
    with caplog.at_level("WARNING", logger="blfs.storage"):
        for _ in range(2):
            fd, direct = storage.open_for_read(slot_path(disk, 0), allow_buffered=True)
            os.close(fd)
            assert direct is False
    said = [r for r in caplog.records if "O_DIRECT" in r.getMessage()]
    assert len(said) == 1  # said once, not per read


@pytest.fixture(scope="module")
def shared_pool(tmp_path_factory):
    disk = str(tmp_path_factory.mktemp("prop-disk"))
    manifest, _ = prepare_pool(disk, "node-p", 3, SLOT, durable=False)
    reader = make_reader(disk)
    yield disk, manifest, reader
    reader.close()


@settings(max_examples=60, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(sizes=st.lists(st.integers(min_value=0, max_value=SLOT - HEADER_SIZE),
                      min_size=1, max_size=5),
       seed=st.integers(min_value=0, max_value=2**32 - 1))
def test_random_payload_sizes_round_trip(shared_pool, sizes, seed):
    disk, manifest, reader = shared_pool
    rng = random.Random(seed)
    leases = SlotLeases(manifest.slot_count)
    # At most slot_count segments that fill a slot each: never exhausts the pool.
    sizes = sizes[: manifest.slot_count]
    sink = make_sink(disk, manifest, leases, f"p{seed}/m/0")
    written = []
    for i, size in enumerate(sizes):
        sid = SegmentId(f"p{seed}", map_task=seed % 1000, attempt=i, partition=size % 7,
                        seq=i)
        payload = rng.randbytes(size)
        sink.write(sid, payload)
        written.append((sid, payload))
    locations = sink.commit()
    sink.close()
    for loc, (sid, payload) in zip(locations, written):
        assert loc.offset % ALIGN == 0
        got, _ = reader.read(loc, sid)
        assert got == payload


# ------------------------------------------------------------------------------ leases

def test_leases_until_exhausted():
    leases = SlotLeases(3)
    assert leases.free_count() == 3
    assert [leases.lease("j/m-0/0"), leases.lease("j/m-1/0"), leases.lease("j/m-1/0")] \
        == [0, 1, 2]
    assert leases.free_count() == 0
    with pytest.raises(PoolExhausted):
        leases.lease("j/m-2/0")
    assert isinstance(PoolExhausted("x"), StorageError)
    assert leases.holder == {0: "j/m-0/0", 1: "j/m-1/0", 2: "j/m-1/0"}


def test_release_attempt():
    leases = SlotLeases(4)
    for a in ("j/m-0/0", "j/m-1/0", "j/m-0/0", "j/m-0/1"):
        leases.lease(a)
    assert sorted(leases.release_attempt("j/m-0/0")) == [0, 2]
    assert leases.free_count() == 2
    assert leases.holder == {1: "j/m-1/0", 3: "j/m-0/1"}
    assert leases.release_attempt("j/m-0/0") == []
    assert leases.lease("j/m-5/0") == 0  # released slots are leased again
    assert leases.lease("j/m-5/0") == 2


def test_release_job_only_that_job():
    leases = SlotLeases(6)
    for a in ("j1/m-0/0", "j10/m-0/0", "j1/r-1/2", "j2/m-0/0", "j1x/m/0", "j1/m-3/0"):
        leases.lease(a)
    assert sorted(leases.release_job("j1")) == [0, 2, 5]
    assert leases.holder == {1: "j10/m-0/0", 3: "j2/m-0/0", 4: "j1x/m/0"}
    assert leases.release_job("j1") == []
    assert leases.free_count() == 3


def test_reset_and_resize():
    leases = SlotLeases(4)
    for _ in range(4):
        leases.lease("old/m/0")
    leases.reset([(1, "j/m-1/0"), (3, "j/m-3/0"), (7, "j/m-7/0"), (-1, "j/x/0")])
    assert leases.holder == {1: "j/m-1/0", 3: "j/m-3/0"}  # out-of-range slots dropped
    assert leases.free_count() == 2
    assert leases.lease("k/m/0") == 0
    leases.reset([])
    assert leases.free_count() == 4
    for _ in range(4):
        leases.lease("k/m/0")
    leases.resize(2)
    assert leases.holder == {0: "k/m/0", 1: "k/m/0"} and leases.free_count() == 0
    leases.resize(5)
    assert leases.free_count() == 3 and leases.lease("z/m/0") == 2


def test_local_pools_may_be_sparse(tmp_path):
    """fill=False (only --local: one kernel, no peers) makes sparse slots of the right size,
    and a ready manifest; the default never accepts such a pool as prepared."""
    disk = str(tmp_path)
    m, changed = prepare_pool(disk, "n", 4, SLOT, durable=False, fill=False)
    assert changed and m.ready and m.slot_count == 4
    for i in range(4):
        st = os.stat(slot_path(disk, i))
        assert st.st_size == SLOT and st.st_blocks * 512 < SLOT
    assert storage.check_pool(disk, fill=False) == m
    assert storage.check_pool(disk) is None  # a cluster would re-fill it
