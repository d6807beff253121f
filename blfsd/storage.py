"""The shared-disk data path: pools of pre-allocated slots, segment writes, O_DIRECT reads.

Why it looks like this (docs/ARCHITECTURE.md, Storage rules): two hosts mounting one block device share no cache.
So a pool is written full of zeros once, before any peer mounts it; afterwards only bytes
inside slot files change; a writer fsyncs the slot and the block device before reporting;
a reader uses O_DIRECT so that its own page cache can never serve it stale bytes.
"""
from __future__ import annotations

import errno
import fcntl
import logging
import mmap
import os
import shutil
import struct
import subprocess
import time
from dataclasses import dataclass
from typing import Callable, Iterable, NamedTuple, Optional

from . import checksums
from .errors import FetchError, PoolExhausted, StorageError
from .messages import SegmentLocation
from .mounts import mount_at

log = logging.getLogger("blfs.storage")

ALIGN = 4096  # every segment starts at a multiple of this, and O_DIRECT reads use it
POOL_DIR = "pool"
MANIFEST = "MANIFEST"
_ZEROS = bytes(1 << 20)

# Segment header: magic, format, flags, stage, job id, map task, attempt, partition, run,
# seq, payload length, payload checksum; padded to HEADER_SIZE.
_HEADER = struct.Struct(">8sHHH32sIIIIIQI")
HEADER_SIZE = 128
MAGIC = b"BLFSSEG\x00"
# 2: the producer's stage in the header, crc32; 3: the same with crc32c (checksums.py)
FORMAT = checksums.CRC32
FORMATS = (checksums.CRC32, checksums.CRC32C)
FLAG_CANONICAL_ORDER = 1  # keys were not mutually comparable; sorted by canonical order
FLAG_MERGED = 2  # a reduce's own merge pass wrote it, into its scratch slots


def align_up(n: int, to: int = ALIGN) -> int:
    """n rounded up to a multiple of `to`."""
    return (n + to - 1) // to * to


# ---------------------------------------------------------------------------------- pools

@dataclass(frozen=True)
class Manifest:
    """A pool's MANIFEST: whose, which generation, its shape, and whether it is ready."""
    node: str
    generation: int
    slot_size: int
    slot_count: int
    ready: bool = True  # False while a preparation is under way (or was cut short)

    def encode(self) -> bytes:
        text = (f"blfs-pool 1\nnode {self.node}\ngeneration {self.generation}\n"
                f"slot_size {self.slot_size}\nslot_count {self.slot_count}\n"
                f"state {'ready' if self.ready else 'preparing'}\n")
        return text.encode()

    @classmethod
    def decode(cls, data: bytes) -> "Manifest":
        fields: dict[str, str] = {}
        for line in data.rstrip(b"\0").decode("utf-8", "replace").splitlines():
            key, _, value = line.partition(" ")
            fields[key] = value
        try:
            if fields.get("blfs-pool") != "1":
                raise ValueError("not a pool manifest")
            return cls(fields["node"], int(fields["generation"]), int(fields["slot_size"]),
                       int(fields["slot_count"]), fields.get("state", "ready") == "ready")
        except (KeyError, ValueError) as exc:
            raise StorageError(f"unreadable pool manifest: {exc}") from None


def pool_dir(disk: str) -> str:
    return os.path.join(disk, POOL_DIR)


def slot_path(disk: str, slot: int) -> str:
    return os.path.join(disk, POOL_DIR, f"slot-{slot:05d}")


def write_success(output: str) -> str:
    """An output is complete: an empty _SUCCESS, durable with its directory, written last."""
    path = os.path.join(output, "_SUCCESS")
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
    fsync_dir(output)
    return path


def moved_before(source: str, target: str) -> bool:
    """Whether a commit's rename was done already (a master before a restart did it)."""
    return not os.path.exists(source) and os.path.exists(target)


def remove_job_temporary(tmp: str) -> None:
    """Remove a job's OUTPUT/_temporary/JOB, and _temporary itself once no job uses it."""
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        os.rmdir(os.path.dirname(os.path.normpath(tmp)))
    except OSError:  # another job's attempts still write there
        pass


def fsync_dir(path: str) -> None:
    """Make a directory's entries durable (after a create or rename in it)."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _slot_ok(path: str, size: int, fill: bool = True) -> bool:
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return False
    # A sparse or short file is not prepared: its unwritten blocks would read as zeros
    # on peers forever (storage rule 1).
    return st.st_size == size and (st.st_blocks * 512 >= size or not fill)


def _write_zeros(path: str, size: int, durable: bool, fill: bool = True) -> None:
    """A slot full of zeros, by writing (fill=False: sparse, for --local only)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT, 0o644)
    try:
        written = 0 if fill else size
        while written < size:
            n = min(len(_ZEROS), size - written)
            written += os.pwrite(fd, _ZEROS[:n] if n < len(_ZEROS) else _ZEROS, written)
        os.ftruncate(fd, size)
        if durable:
            os.fsync(fd)
    finally:
        os.close(fd)


def check_pool(disk: str, fill: bool = True) -> Optional[Manifest]:
    """The manifest of a complete pool on our own disk, or None when it needs preparing."""
    try:
        manifest = read_manifest(disk, direct=False)
    except (FileNotFoundError, StorageError):
        return None
    if not manifest.ready:
        return None
    for slot in range(manifest.slot_count):
        if not _slot_ok(slot_path(disk, slot), manifest.slot_size, fill):
            return None
    return manifest


def prepare_pool(disk: str, node: str, slot_count: int, slot_size: int,
                 durable: bool = True, fill: bool = True) -> tuple[Manifest, bool]:
    """Make the pool on our own disk match the configuration. Returns (manifest, changed).

    fill=False (only for --local, where every "disk" is a directory of one kernel and
    there are no peers with caches of their own) makes sparse slots, which is instant.

    Idempotent: a complete pool of the right shape is left alone. Otherwise the MANIFEST
    first says "preparing" with a new generation, every slot is written with zeros (never
    fallocate), and the MANIFEST is rewritten "ready" last. A crash in the middle leaves
    no manifest that claims a finished pool, and the generation is never reused.
    """
    if slot_size % ALIGN or slot_size <= HEADER_SIZE:
        raise StorageError(f"slot size {slot_size} must be a multiple of {ALIGN}")
    current = check_pool(disk, fill)
    if (current is not None and current.slot_count == slot_count
            and current.slot_size == slot_size and current.node == node):
        return current, False
    pdir = pool_dir(disk)
    os.makedirs(pdir, exist_ok=True)
    generation = max(_previous_generation(disk) + 1, int(time.time()))
    _write_manifest(pdir, Manifest(node, generation, slot_size, slot_count, ready=False),
                    durable)
    for slot in range(slot_count):
        path = slot_path(disk, slot)
        if not _slot_ok(path, slot_size, fill):
            _write_zeros(path, slot_size, durable, fill)
        elif durable:
            # kept from a preparation that was cut short: its blocks may not be on disk yet
            fd = os.open(path, os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
    for extra in sorted(os.listdir(pdir)):
        if extra.startswith("slot-") and int(extra[5:]) >= slot_count:
            os.unlink(os.path.join(pdir, extra))
    manifest = Manifest(node, generation, slot_size, slot_count)
    _write_manifest(pdir, manifest, durable)
    return manifest, True


def _write_manifest(pdir: str, manifest: Manifest, durable: bool) -> None:
    """Replace the MANIFEST atomically (and durably unless told not to)."""
    path = os.path.join(pdir, MANIFEST)
    tmp = path + ".new"
    with open(tmp, "wb") as f:
        f.write(manifest.encode())
        if durable:
            f.flush()
            os.fsync(f.fileno())
    os.rename(tmp, path)
    if durable:
        fsync_dir(pdir)


def _previous_generation(disk: str) -> int:
    try:
        return read_manifest(disk, direct=False).generation
    except (OSError, StorageError):
        return 0


def read_manifest(disk: str, direct: bool = True) -> Manifest:
    """Read a pool manifest; direct=True bypasses our page cache (a peer's disk)."""
    path = os.path.join(pool_dir(disk), MANIFEST)
    if not direct:
        with open(path, "rb") as f:
            return Manifest.decode(f.read())
    fd, is_direct = open_for_read(path, allow_buffered=True)
    try:
        buf = mmap.mmap(-1, ALIGN)
        try:
            n = os.preadv(fd, [buf], 0)
            return Manifest.decode(bytes(buf[:n]))
        finally:
            buf.close()
    finally:
        os.close(fd)


# --------------------------------------------------------------------------- block devices

def block_device_of(path: str) -> Optional[str]:
    """The block device node a mount point is on, if the path is a mount of a block device."""
    if not os.path.ismount(path):
        return None
    dev = os.stat(path).st_dev
    candidates = []
    try:
        with open(f"/sys/dev/block/{os.major(dev)}:{os.minor(dev)}/uevent") as f:
            candidates += ["/dev/" + line.strip().split("=", 1)[1] for line in f
                           if line.startswith("DEVNAME=")]
    except OSError:
        pass
    found = mount_at(path)  # a container may have the device only under another name
    if found is not None:
        candidates.append(found.source)
    for device in candidates:
        try:
            if os.stat(device).st_rdev == dev:
                return device
        except OSError:
            continue
    return None


# ------------------------------------------------------------------------------- segments

@dataclass(frozen=True)
class SegmentId:
    """What a segment claims to be; the reader checks it against what it asked for. The
    producer is task `map_task` of stage `stage` (a map, or a pipeline's middle reduce)."""
    job: str
    map_task: int
    attempt: int
    partition: int
    run: int = 0
    seq: int = 0
    stage: int = 0


def encode_header(sid: SegmentId, payload: bytes, flags: int = 0, fmt: int = FORMAT,
                  crc: Optional[int] = None) -> bytes:
    """The 128-byte header of a segment with this payload, in format fmt (its checksum:
    crc, or computed here)."""
    job = sid.job.encode()
    if len(job) > 32:
        raise StorageError(f"job id {sid.job!r} is too long for a segment header")
    if fmt not in FORMATS:
        raise StorageError(f"no segment format {fmt}")
    if crc is None:
        crc = checksums.checksum(fmt, payload)
    head = _HEADER.pack(MAGIC, fmt, flags, sid.stage, job, sid.map_task, sid.attempt,
                        sid.partition, sid.run, sid.seq, len(payload), crc)
    return head + bytes(HEADER_SIZE - len(head))


class Header(NamedTuple):
    sid: SegmentId
    flags: int
    length: int  # of the payload
    crc: int  # its checksum, of the format's kind
    format: int


def decode_header(data: bytes) -> Header:
    """A segment's header; StorageError when it is not one."""
    (magic, fmt, flags, stage, job, map_task, attempt, partition, run, seq, length,
     crc) = _HEADER.unpack_from(data)
    if magic != MAGIC or fmt not in FORMATS:
        raise StorageError("not a segment header")
    sid = SegmentId(job.rstrip(b"\0").decode(errors="replace"), map_task, attempt, partition,
                    run, seq, stage)
    return Header(sid, flags, length, crc, fmt)


class SlotWriter:
    """Appends aligned segments to one leased slot, through a descriptor opened O_WRONLY
    (never O_TRUNC, never created: storage rule 2). Nothing is durable before flush()."""

    def __init__(self, fd: int, slot: int, slot_size: int):
        self.slot = slot
        self.slot_size = slot_size
        self.offset = 0
        self.fd = fd

    @classmethod
    def open(cls, disk: str, slot: int, slot_size: int) -> "SlotWriter":
        """A writer of a slot of a pool at a path (where we may open it ourselves)."""
        return cls(os.open(slot_path(disk, slot), os.O_WRONLY), slot, slot_size)

    def fits(self, payload_len: int) -> bool:
        """Whether a segment with this payload still fits in the slot."""
        return self.offset + HEADER_SIZE + payload_len <= self.slot_size

    def append(self, sid: SegmentId, payload: bytes, flags: int = 0,
               fmt: int = FORMAT) -> tuple[int, int, int]:
        """Write one segment in format fmt; returns (offset, total length, checksum)."""
        if not self.fits(len(payload)):
            raise StorageError(f"segment of {len(payload)} bytes does not fit in slot "
                               f"{self.slot}")
        crc = checksums.checksum(fmt, payload)  # once: it is in the header and returned
        header = encode_header(sid, payload, flags, fmt, crc)
        offset = self.offset
        total = HEADER_SIZE + len(payload)
        written = os.pwritev(self.fd, [header, payload], offset)
        if written != total:  # pwritev to a regular file is short only on error (ENOSPC)
            raise StorageError(f"short write to slot {self.slot}: {written} of {total} bytes")
        self.offset = min(align_up(offset + total), self.slot_size)
        return offset, total, crc

    def flush(self) -> None:
        """fsync the slot (the device is fsynced by the sink, once for all slots)."""
        os.fsync(self.fd)

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1


def fsync_device(device: Optional[str]) -> None:
    """Flush the block device under our disk, so that peers' O_DIRECT reads see the bytes."""
    if not device:
        return
    fd = os.open(device, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


FIFREEZE, FITHAW = 0xC0045877, 0xC0045878


def publish_metadata(mount: str, device: Optional[str]) -> None:
    """Put new files' metadata in place on the device, for peers' ro,noload mounts.

    A peer mounted without journal replay sees only what is in place. fsync(device) writes
    back the journal's committed buffers, but a buffer that a later transaction touches
    again (a neighbouring inode's atime, a directory block) is held back until that one
    commits: a peer could see a directory entry whose inode is not in place yet. Freezing
    the file system flushes the whole journal in place; it blocks writers for milliseconds.
    Outside a mount of our own (--local), fsync only.
    """
    if device and os.path.ismount(mount):
        fd = os.open(mount, os.O_RDONLY | os.O_DIRECTORY)
        try:
            fcntl.ioctl(fd, FIFREEZE, 0)
            fcntl.ioctl(fd, FITHAW, 0)
            return
        except OSError as exc:  # EBUSY: someone else froze it; EPERM: not allowed here
            log.warning("cannot freeze %s to flush its journal (%s); fsync only", mount,
                        exc.strerror)
        finally:
            os.close(fd)
    fsync_device(device)


class SegmentSink:
    """Places segments in slots leased on demand, and makes them durable on commit.

    lease() returns (slot number, descriptor open for writing) or raises PoolExhausted;
    flush_device() fsyncs the block device under the pool. Segments are reported only
    after commit(), which fsyncs every slot written and then the device (storage rule 3).
    """

    def __init__(self, node: str, generation: int, slot_size: int,
                 lease: Callable[[], tuple[int, int]], flush_device: Callable[[], None],
                 fmt: Optional[int] = None):
        self.node = node
        # of every segment written: the one asked for (checksums.choose) where this node
        # can compute it, else format 2, which every node reads
        self.format = fmt if fmt and checksums.readable(fmt) else FORMAT
        self.generation = generation
        self.slot_size = slot_size
        self.lease = lease
        self.flush_device = flush_device
        self.max_payload = slot_size - HEADER_SIZE
        self._writers: list[SlotWriter] = []
        self.locations: list[SegmentLocation] = []

    @classmethod
    def on_disk(cls, disk: str, node: str, generation: int, slot_size: int,
                lease: Callable[[], int], device: Optional[str] = None,
                fmt: Optional[int] = None) -> "SegmentSink":
        """A sink into a pool at a path, leasing slot numbers (tests, tools)."""
        def lease_open() -> tuple[int, int]:
            slot = lease()
            return slot, os.open(slot_path(disk, slot), os.O_WRONLY)
        return cls(node, generation, slot_size, lease_open, lambda: fsync_device(device), fmt)

    def write(self, sid: SegmentId, payload: bytes, flags: int = 0) -> None:
        """Append a segment, leasing a new slot when the current one is full."""
        if len(payload) > self.max_payload:
            raise StorageError(f"segment payload {len(payload)} exceeds slot capacity")
        writer = self._writers[-1] if self._writers else None
        if writer is None or not writer.fits(len(payload)):
            slot, fd = self.lease()
            writer = SlotWriter(fd, slot, self.slot_size)
            self._writers.append(writer)
        offset, length, crc = writer.append(sid, payload, flags, self.format)
        self.locations.append(SegmentLocation(
            node=self.node, slot=writer.slot, offset=offset, length=length, crc=crc,
            generation=self.generation, partition=sid.partition, run=sid.run, seq=sid.seq,
            flags=flags))

    @property
    def slots(self) -> list[int]:
        return [w.slot for w in self._writers]

    def commit(self) -> list[SegmentLocation]:
        """Make every segment durable (each slot, then the device); their locations."""
        for writer in self._writers:
            writer.flush()
        if self._writers:
            self.flush_device()
        return self.locations

    def forget(self, slots: Iterable[int]) -> None:
        """Close and drop the writers of these slots (given back: written no more, flushed
        no more); never the one being written."""
        gone = set(slots) - {self._writers[-1].slot} if self._writers else set()
        for writer in self._writers:
            if writer.slot in gone:
                writer.close()
        self._writers = [w for w in self._writers if w.slot not in gone]

    def close(self) -> None:
        for writer in self._writers:
            writer.close()


# -------------------------------------------------------------------------------- reading

_direct_refused_said = False


def open_for_read(path: str, allow_buffered: bool) -> tuple[int, bool]:
    """Open with O_DIRECT; where the file system refuses it, buffered only if allowed."""
    global _direct_refused_said
    try:
        return os.open(path, os.O_RDONLY | os.O_DIRECT), True
    except OSError as exc:
        if exc.errno != errno.EINVAL:
            raise
        if not allow_buffered:
            raise StorageError(f"{path}: the file system refuses O_DIRECT; peers' slots "
                               "cannot be read safely") from None
        if not _direct_refused_said:
            log.warning("%s: file system refuses O_DIRECT; reading buffered "
                        "(correct only because all disks are on this one machine)", path)
            _direct_refused_said = True
        return os.open(path, os.O_RDONLY), False


class SegmentReader:
    """Reads segments of peers' slots with O_DIRECT into an aligned buffer and checks them.

    open_slot(location) gives a descriptor of the location's slot opened with O_DIRECT (a
    task's worker opens it, after making its view of that disk current for the location's
    pool generation)."""

    def __init__(self, open_slot: Callable[[SegmentLocation], int]):
        self.open_slot = open_slot
        self._fds: dict[tuple[str, int], int] = {}
        self._buf: Optional[mmap.mmap] = None

    @classmethod
    def on_disks(cls, disk_of: Callable[[str], str],
                 allow_buffered: bool = False) -> "SegmentReader":
        """A reader of pools at paths, disk_of(node) (tests, tools)."""
        return cls(lambda loc: open_for_read(slot_path(disk_of(loc.node), loc.slot),
                                             allow_buffered)[0])

    def _fd(self, loc: SegmentLocation) -> int:
        key = (loc.node, loc.slot)
        if key not in self._fds:
            self._fds[key] = self.open_slot(loc)
        return self._fds[key]

    def _buffer(self, size: int) -> mmap.mmap:
        # Anonymous mmap memory is page aligned, as O_DIRECT wants.
        if self._buf is None or len(self._buf) < size:
            self._drop_buffer()
            self._buf = mmap.mmap(-1, align_up(max(size, 1 << 20)))
        return self._buf

    def _drop_buffer(self) -> None:
        if self._buf is not None:
            try:
                self._buf.close()
            except BufferError:  # a payload lent out is still held: freed with it
                pass
            self._buf = None

    def read(self, loc: SegmentLocation, expect: SegmentId) -> tuple[memoryview, int]:
        """The payload and flags of one segment, or FetchError when it is not intact.

        The payload is lent, not copied: a view of this reader's buffer, good until its
        next read or close (each caller decodes it, or copies it, at once)."""
        where = f"{loc.node} slot {loc.slot} offset {loc.offset}"
        if loc.offset % ALIGN:
            raise FetchError(f"unaligned segment at {where}", node=loc.node)
        size = align_up(loc.length)
        try:
            fd = self._fd(loc)
            buf = self._buffer(size)
            with memoryview(buf)[:size] as view:
                n = os.preadv(fd, [view], loc.offset)
        except OSError as exc:
            raise FetchError(f"cannot read {where}: {exc.strerror}", node=loc.node) from None
        if n < loc.length:
            raise FetchError(f"short read at {where}", node=loc.node)
        try:
            head = decode_header(buf[:HEADER_SIZE])
        except (StorageError, struct.error):
            raise FetchError(f"no segment header at {where}", node=loc.node) from None
        if (head.sid != expect or HEADER_SIZE + head.length != loc.length
                or head.flags != loc.flags):
            raise FetchError(f"segment at {where} is {head.sid}, expected {expect}",
                             node=loc.node)
        if not checksums.readable(head.format):
            raise FetchError(f"segment at {where} is of format {head.format}, which this "
                             "node cannot check (no crc32c module)", node=loc.node)
        payload = memoryview(buf)[HEADER_SIZE:HEADER_SIZE + head.length]
        if checksums.checksum(head.format, payload) != head.crc or head.crc != loc.crc:
            payload.release()
            raise FetchError(f"checksum mismatch at {where}", node=loc.node)
        return payload, head.flags

    def close(self) -> None:
        for fd in self._fds.values():
            os.close(fd)
        self._fds.clear()
        self._drop_buffer()


# --------------------------------------------------------------------------- peer views

def remount(path: str, tries: int = 1, pause: float = 0.3) -> None:
    """Drop a peer view's caches by mounting it again with the same source and options.
    A view that is busy (files open on it) is tried again, up to `tries` times."""
    found = mount_at(path)
    if found is None:
        return
    source, fstype = found.source, found.fstype
    for attempt in range(tries):
        done = subprocess.run(["umount", path], capture_output=True)
        if done.returncode == 0:
            break
        if attempt == tries - 1:
            raise FetchError(f"cannot remount {path}: {_said(done)}")
        time.sleep(pause)
    pinned = _still_mounted(source)
    # errors=continue: a view can see metadata in flux on the peer; that must not panic us
    done = subprocess.run(["mount", "-t", fstype, "-o", "ro,noload,errors=continue", source,
                           path], capture_output=True)
    if done.returncode != 0:
        raise FetchError(f"cannot remount {path}: {_said(done)}")
    if pinned:
        raise FetchError(f"{source} is still mounted in another mount namespace, so "
                         f"remounting {path} keeps its stale caches (a container or "
                         "`unshare -m` that copied the mount?)")


def _said(done: subprocess.CompletedProcess) -> str:
    return done.stderr.decode(errors="replace").strip()


def _still_mounted(device: str) -> bool:
    """After our umount: does a mount elsewhere still hold the device's superblock (whose
    caches a new mount would then reuse)? An exclusive open says EBUSY if so."""
    if not device.startswith("/dev/"):
        return False
    try:
        os.close(os.open(device, os.O_RDONLY | os.O_EXCL))
        return False
    except OSError as exc:
        return exc.errno == errno.EBUSY


def ensure_generation(disk: str, generation: int) -> Manifest:
    """Make our view of a peer's disk current for a generation (storage rule 5)."""
    try:
        manifest = read_manifest(disk, direct=True)
    except OSError:
        manifest = None
    if manifest is not None and manifest.generation == generation:
        return manifest
    if os.path.ismount(disk):
        log.info("remounting %s: pool generation %s announced, view has %s", disk,
                 generation, manifest.generation if manifest else "none")
        remount(disk)
        manifest = read_manifest(disk, direct=True)
    if manifest is None or manifest.generation != generation:
        raise FetchError(f"pool on {disk} has generation "
                         f"{manifest.generation if manifest else 'none'}, not {generation}")
    return manifest


# --------------------------------------------------------------------------------- leases

def scratch_holder(attempt: str) -> str:
    """Whom an attempt's scratch slots are leased to: not the attempt itself, whose slots
    a successful map keeps, but a name of the same job (release_job frees them too)."""
    return f"{attempt}#scratch"


class SlotLeases:
    """Which attempt holds which slot of our own pool (kept by the worker, synced by master)."""

    def __init__(self, slot_count: int):
        self.slot_count = slot_count
        self.holder: dict[int, str] = {}

    def free_count(self) -> int:
        """Slots no attempt holds."""
        return self.slot_count - len(self.holder)

    def lease(self, attempt: str) -> int:
        """The lowest free slot, now held by `attempt`; PoolExhausted when none is free."""
        for slot in range(self.slot_count):
            if slot not in self.holder:
                self.holder[slot] = attempt
                return slot
        raise PoolExhausted(f"all {self.slot_count} slots are leased")

    def release_slot(self, slot: int) -> None:
        """Give back one slot (its lease could not be handed over)."""
        self.holder.pop(slot, None)

    def release_scratch(self, attempt: str, slots: Optional[Iterable] = None) -> list[int]:
        """Free an attempt's scratch slots (its merge passes): all of them when it ends,
        or those of `slots` that are its scratch when it gives them back."""
        holder = scratch_holder(attempt)
        if slots is None:
            return self.release_attempt(holder)
        mine = [s for s in slots if isinstance(s, int) and self.holder.get(s) == holder]
        for s in mine:
            del self.holder[s]
        return mine

    def release_attempt(self, attempt: str) -> list[int]:
        """Free a failed or killed attempt's slots."""
        slots = [s for s, a in self.holder.items() if a == attempt]
        for s in slots:
            del self.holder[s]
        return slots

    def release_job(self, job: str) -> list[int]:
        """Free every slot of a job (attempt ids start with JOB/)."""
        slots = [s for s, a in self.holder.items() if a.split("/", 1)[0] == job]
        for s in slots:
            del self.holder[s]
        return slots

    def reset(self, held: Iterable[tuple[int, str]]) -> None:
        """Keep only the leases the master still counts on (after a restart of either)."""
        self.holder = {s: a for s, a in held if 0 <= s < self.slot_count}

    def resize(self, slot_count: int) -> None:
        """A new pool shape (SIGHUP): leases of slots that are gone are dropped."""
        self.slot_count = slot_count
        self.holder = {s: a for s, a in self.holder.items() if s < slot_count}
