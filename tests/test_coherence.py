"""Two hosts on one disk, without cache coherence: why the storage rules exist (docs/ARCHITECTURE.md, Storage rules).

One ext4 image file, two loop devices over it. View A (loop A, mounted read-write) is the
disk's owner; view B (loop B, mounted ``ro,noload``) is a peer. Each loop device has its own
page cache and each mount its own inode/dentry cache: exactly two hosts attached to one
iSCSI LUN.

First the failure modes the design avoids are shown to be real on this kernel (if the kernel
ever behaved otherwise these tests fail loudly: the design relies on them). Then the blfs path
(pool prepared before the peer mounts, aligned segments, fsync(slot)+fsync(device), O_DIRECT
reads with checksums, generations and remounts) is shown to read exactly what was written.
"""
from __future__ import annotations

import itertools
import mmap
import os
import random
import re
import subprocess
import threading
import time
from dataclasses import dataclass

import pytest

try:
    from loopdev import Resources, mount_options, root, run
except ImportError:  # tests/ imported as a package
    from tests.loopdev import Resources, mount_options, root, run

from blfsd import mounts, storage
from blfsd.errors import FetchError
from blfsd.storage import (ALIGN, HEADER_SIZE, SegmentId, SegmentReader, SegmentSink,
                           encode_header, ensure_generation, fsync_device, prepare_pool,
                           read_manifest, slot_path)

# `root` (loopdev) skips with a reason without root/losetup/mkfs.ext4; pytest.mark.root is
# the marker registered in pyproject.toml, so `-m "not root"` deselects these tests.
pytestmark = [pytest.mark.root, root]

SLOT = 64 * 1024
NODE = "host-a"


@dataclass
class Views:
    res: Resources
    image: str
    dev_a: str
    dev_b: str
    a: str  # host A's own disk, read-write
    b: str  # host B's view of A's disk, read-only

    def mount_b(self) -> None:
        self.res.mount(self.dev_b, self.b, "ro,noload")

    def flush_a(self) -> None:
        fsync_device(self.dev_a)


@pytest.fixture
def views(tmp_path):
    with Resources(str(tmp_path)) as res:
        image = res.image(64 << 20)
        dev_a = res.loop(image)
        dev_b = res.loop(image)
        a = res.mountpoint("host-a")
        b = res.mountpoint("host-b")
        res.mount(dev_a, a)
        yield Views(res, image, dev_a, dev_b, a, b)


# ------------------------------------------------------------------------------ helpers

def write_durable(path: str, data: bytes, offset: int = 0, create: bool = False) -> None:
    """pwrite, fsync(file); when creating, fsync the directory too."""
    flags = os.O_WRONLY | (os.O_CREAT if create else 0)
    fd = os.open(path, flags, 0o644)
    try:
        assert os.pwrite(fd, data, offset) == len(data)
        os.fsync(fd)
    finally:
        os.close(fd)
    if create:
        storage.fsync_dir(os.path.dirname(path))


def buffered_read(path: str, offset: int, length: int) -> bytes:
    fd = os.open(path, os.O_RDONLY)
    try:
        return os.pread(fd, length, offset)
    finally:
        os.close(fd)


def direct_read(path: str, offset: int, length: int) -> bytes:
    """O_DIRECT read of an aligned range into page-aligned (mmap) memory."""
    assert offset % ALIGN == 0
    size = storage.align_up(length)
    fd = os.open(path, os.O_RDONLY | os.O_DIRECT)
    buf = mmap.mmap(-1, size)
    try:
        n = os.preadv(fd, [buf], offset)
        return bytes(buf[:min(n, length)])
    finally:
        buf.close()
        os.close(fd)


# ----------------------------------------------------- 1. the failure modes being avoided

def test_file_created_on_a_after_b_mounted_is_invisible_on_b(views):
    os.mkdir(os.path.join(views.a, "dir"))
    write_durable(os.path.join(views.a, "dir", "before"), b"before", create=True)
    views.flush_a()
    views.mount_b()
    # B looks at the directory, as any reader does.
    assert os.listdir(os.path.join(views.b, "dir")) == ["before"]
    assert buffered_read(os.path.join(views.b, "dir", "before"), 0, 100) == b"before"

    write_durable(os.path.join(views.a, "dir", "after"), b"after", create=True)
    views.flush_a()
    assert os.path.exists(os.path.join(views.a, "dir", "after"))

    assert not os.path.exists(os.path.join(views.b, "dir", "after")), \
        "kernel changed: a file created on A after B mounted is visible on B"
    assert "after" not in os.listdir(os.path.join(views.b, "dir"))
    with pytest.raises(FileNotFoundError):
        open(os.path.join(views.b, "dir", "after"), "rb")
    # Only a fresh mount of B sees it.
    run("umount", views.b)
    views.mount_b()
    assert buffered_read(os.path.join(views.b, "dir", "after"), 0, 100) == b"after"


def test_buffered_read_on_b_is_stale_and_o_direct_is_not(views):
    path_a = os.path.join(views.a, "data")
    path_b = os.path.join(views.b, "data")
    old = bytes([0x11]) * (16 * ALIGN)
    write_durable(path_a, old, create=True)
    views.flush_a()
    views.mount_b()
    block = 5 * ALIGN
    # B reads the block once, buffered: B's page cache now holds the old block.
    assert buffered_read(path_b, block, ALIGN) == old[:ALIGN]

    new = os.urandom(ALIGN)
    write_durable(path_a, new, offset=block)  # fsync(file)
    views.flush_a()                            # fsync(/dev/loopA)
    assert buffered_read(path_a, block, ALIGN) == new

    stale = buffered_read(path_b, block, ALIGN)
    assert stale == old[:ALIGN], \
        "kernel changed: a buffered read on B returned A's new bytes (or something else)"
    assert direct_read(path_b, block, ALIGN) == new, \
        "an O_DIRECT read on B did not return the bytes A made durable"
    # And the page cache of B still holds the stale block afterwards: O_DIRECT bypassed it.
    assert buffered_read(path_b, block, ALIGN) == old[:ALIGN]


# ----------------------------------------------------------------------- 2. the blfs path

def test_segments_written_on_a_read_exactly_on_b(views, monkeypatch):
    device_syncs = []
    real_fsync_device = storage.fsync_device

    def counting_fsync_device(device):
        device_syncs.append(device)
        return real_fsync_device(device)

    monkeypatch.setattr(storage, "fsync_device", counting_fsync_device)
    slot_count = 8
    manifest, changed = prepare_pool(views.a, NODE, slot_count, SLOT)
    assert changed
    views.flush_a()
    views.mount_b()  # B mounts only after preparation (storage rule 1)
    assert read_manifest(views.b) == manifest
    assert storage.block_device_of(views.a) == views.dev_a

    rng = random.Random(20240611)
    round_robin = itertools.cycle(range(slot_count))
    pending = []  # slots leased in order; peek at the next ones to poison B's cache

    def lease() -> int:
        return pending.pop(0) if pending else next(round_robin)

    reader = SegmentReader.on_disks(lambda node: {NODE: views.b}[node], allow_buffered=False)
    cycles = 240
    stale_direct = 0          # O_DIRECT reads that did not return the bytes just written
    poisoned_segments = 0     # segments whose region B had read buffered before the write
    stale_buffered = 0        # ... where a buffered read on B then returned old bytes
    places = {}
    try:
        for cycle in range(cycles):
            n_segments = rng.choice((1, 1, 2, 3))
            sizes = [rng.choice((rng.randrange(0, 3000), rng.randrange(0, SLOT - HEADER_SIZE)))
                     for _ in range(n_segments)]
            poison = cycle % 3 == 0
            if poison:
                # B reads, buffered, the slots this cycle is about to use: its page cache now
                # holds their old contents (zeros or earlier segments).
                while len(pending) < n_segments:
                    pending.append(next(round_robin))
                for slot in pending[:n_segments]:
                    buffered_read(slot_path(views.b, slot), 0, SLOT)

            sink = SegmentSink.on_disk(views.a, NODE, manifest.generation, SLOT, lease,
                               device=views.dev_a)
            written = []
            for i, size in enumerate(sizes):
                sid = SegmentId("coherence", map_task=cycle, attempt=cycle % 4, partition=i)
                payload = rng.randbytes(size)
                sink.write(sid, payload)
                written.append((sid, payload))
            locations = sink.commit()  # fsync(slot) for each slot, then fsync(/dev/loopA)
            sink.close()

            for loc, (sid, payload) in zip(locations, written):
                key = (loc.slot, loc.offset)
                places[key] = places.get(key, 0) + 1
                try:
                    got, _ = reader.read(loc, sid)
                except FetchError:
                    got = None
                if got != payload:
                    stale_direct += 1
                if poison:
                    poisoned_segments += 1
                    region = buffered_read(slot_path(views.b, loc.slot), loc.offset,
                                           loc.length)
                    if region != encode_header(sid, payload) + payload:
                        stale_buffered += 1
    finally:
        reader.close()

    assert stale_direct == 0, f"{stale_direct} stale O_DIRECT reads in {cycles} cycles"
    assert device_syncs == [views.dev_a] * cycles  # one fsync(/dev/loopA) per commit
    # The same slots and offsets were reused many times, so B's cache was really stale...
    assert max(places.values()) >= 10
    assert poisoned_segments > 50
    # ... and a buffered read would have returned wrong bytes (the test has teeth).
    assert stale_buffered > poisoned_segments // 2, (stale_buffered, poisoned_segments)


# ------------------------------------------------------------- 3. zeros really written

def test_prepared_slots_have_no_unwritten_extents(views):
    manifest, _ = prepare_pool(views.a, NODE, 6, 1 << 20)
    views.flush_a()
    for slot in range(manifest.slot_count):
        path = slot_path(views.a, slot)
        out = run("filefrag", "-v", path).stdout
        extents = [line for line in out.splitlines() if re.match(r"\s*\d+:\s+\d+\.\.", line)]
        assert extents, f"filefrag found no extents in {path}:\n{out}"
        assert "unwritten" not in out, f"{path} has unwritten extents:\n{out}"
        assert direct_read(path, 0, 1 << 20) == bytes(1 << 20)
    # The check has teeth: fallocate (which prepare_pool must never use) makes unwritten
    # extents, and filefrag reports them.
    fallocated = os.path.join(views.a, "fallocated")
    fd = os.open(fallocated, os.O_WRONLY | os.O_CREAT, 0o644)
    try:
        os.posix_fallocate(fd, 0, 1 << 20)
        os.fsync(fd)
    finally:
        os.close(fd)
    assert "unwritten" in run("filefrag", "-v", fallocated).stdout


# ------------------------------------------------------------------- 4. generations

def test_ensure_generation_remounts_a_stale_view(views, monkeypatch):
    remounts = []
    real_remount = storage.remount

    def counting_remount(path):
        remounts.append(path)
        return real_remount(path)

    monkeypatch.setattr(storage, "remount", counting_remount)
    m1, _ = prepare_pool(views.a, NODE, 4, SLOT)
    views.flush_a()
    views.mount_b()
    assert read_manifest(views.b) == m1
    assert ensure_generation(views.b, m1.generation) == m1
    assert remounts == [], "the current generation must not remount"

    m2, changed = prepare_pool(views.a, NODE, 6, SLOT)  # a new generation on A
    views.flush_a()
    assert changed and m2.generation != m1.generation
    # B's view is still the old one: old manifest (even read with O_DIRECT), no new slots.
    assert read_manifest(views.b, direct=True) == m1
    assert read_manifest(views.b, direct=False) == m1
    assert not os.path.exists(slot_path(views.b, 4))
    assert not os.path.exists(slot_path(views.b, 5))

    assert ensure_generation(views.b, m2.generation) == m2
    assert remounts == [views.b]
    assert read_manifest(views.b) == m2
    assert read_manifest(views.b, direct=False) == m2
    assert sorted(n for n in os.listdir(os.path.join(views.b, "pool"))
                  if n.startswith("slot-")) == [f"slot-{i:05d}" for i in range(6)]
    options = mount_options(views.b).split(",")
    assert "ro" in options
    assert mounts.mount_at(views.b).source == views.dev_b

    # A segment in a new slot written on A reads back on B.
    sid = SegmentId("gen", 1, 0, 0)
    payload = os.urandom(10000)
    sink = SegmentSink.on_disk(views.a, NODE, m2.generation, SLOT, lambda: 5, device=views.dev_a)
    sink.write(sid, payload)
    (loc,) = sink.commit()
    sink.close()
    reader = SegmentReader.on_disks(lambda node: views.b)
    try:
        assert reader.read(loc, sid) == (payload, 0)
    finally:
        reader.close()

    # A generation the disk does not have: remount, then a clear fetch failure.
    with pytest.raises(FetchError, match="generation"):
        ensure_generation(views.b, m2.generation + 1000)
    assert read_manifest(views.b) == m2


def test_remount_refuses_to_pretend_while_another_namespace_pins_the_view(views):
    """A view also mounted in another mount namespace keeps its superblock, and with it its
    stale caches, across our umount and mount: remount says so instead of pretending."""
    os.makedirs(os.path.join(views.a, "data"))
    views.flush_a()
    views.mount_b()
    os.listdir(views.b)  # B's caches now hold the old root directory
    # another mount namespace copies B's mount (as a container starting up does)
    pin = subprocess.Popen(["unshare", "-m", "--propagation", "private", "sleep", "60"])
    try:
        deadline = time.monotonic() + 10
        while views.b not in open(f"/proc/{pin.pid}/mountinfo").read():
            assert time.monotonic() < deadline, "the namespace did not copy the mount"
            time.sleep(0.02)
        new = os.path.join(views.a, "data", "new")
        write_durable(new, b"x" * 5000, create=True)
        storage.publish_metadata(views.a, views.dev_a)
        with pytest.raises(FetchError, match="another mount namespace"):
            storage.remount(views.b)
        assert mounts.mount_at(views.b).source == views.dev_b  # still mounted, read-only
        with pytest.raises(OSError):  # and still stale: the proof that the warning is due
            open(os.path.join(views.b, "data", "new"), "rb").read()
    finally:
        pin.kill()
        pin.wait()
    storage.remount(views.b)  # nobody pins it now: fresh caches, the file is there
    with open(os.path.join(views.b, "data", "new"), "rb") as f:
        assert f.read() == b"x" * 5000


def test_remount_of_a_busy_view_is_tried_again_then_refused(views):
    """Something open on a view makes umount fail (busy): remount tries again, and
    succeeds once it is closed; when it never is, a FetchError says why. The view stays
    mounted read-only either way."""
    views.mount_b()
    held = os.open(views.b, os.O_RDONLY | os.O_DIRECTORY)
    closer = threading.Timer(0.3, os.close, (held,))
    try:
        with pytest.raises(FetchError, match=f"cannot remount {re.escape(views.b)}: .*busy"):
            storage.remount(views.b, tries=3, pause=0.05)
        assert mounts.mount_at(views.b).source == views.dev_b
        closer.start()
        storage.remount(views.b, tries=50, pause=0.05)
    finally:
        if closer.ident is None:
            os.close(held)  # the timer never started
        else:
            closer.join()
    assert mounts.mount_at(views.b).source == views.dev_b
    assert "ro" in mount_options(views.b).split(",")
