"""blfs-iscsi: attach every node's disk, mount them, prepare this node's pool (docs/OPERATIONS.md).

    blfs-iscsi [--config FILE] up | down [--force] | status [--json]
               | format [--force] [--no-mmp] | export [--device DEV] [--backend B] ...

Every node of the cluster names its disk in /etc/blfs/blfs.toml (``[nodes.NAME] disk``):

- ``iscsi://HOST[:PORT]/IQN/LUN``: open-iscsi discovery of HOST:PORT, login to exactly that
  target, then a wait (bounded by ``[iscsi] login_timeout``) for its
  ``/dev/disk/by-path/ip-HOST:PORT-iscsi-IQN-lun-LUN`` device, since iscsiadm does not wait
  for udev;
- ``block:/dev/PATH``: a block device this host already sees (a SAN LUN, multipath, a loop
  device in tests).

This node (``[worker] name``) mounts its own disk read-write at ``DISKS_ROOT/NAME`` and every
peer's disk ``ro,noload`` at ``DISKS_ROOT/PEER``, prepares the pool on its own disk (zero-
filled slots, MANIFEST last, a new generation on every change: storage.prepare_pool), and
fsyncs the block device so that peers' fresh mounts see it. ``up`` is idempotent: a second
run changes nothing. It never formats and never mounts a peer's disk writable; ``format`` is
the only command that creates a file system, and only on this node's own disk.

Errors are single lines naming the disk; the exit status is 1 (2 for a bad config or usage).
See docs/OPERATIONS.md.
"""
from __future__ import annotations

import argparse
import asyncio
import ctypes
import errno
import fcntl
import ipaddress
import json
import os
import re
import shlex
import socket
import stat
import subprocess
import sys
import time
from dataclasses import dataclass, field
from typing import Any, Optional

from . import config as configmod
from . import storage
from .mounts import mount_at, mounts
from .transport import format_address, parse_address
from .errors import BlfsError, ConfigError, UsageError

DEFAULT_PORT = 3260
BY_PATH = "/dev/disk/by-path"
LOCK_NAME = ".blfs-iscsi.lock"
FSTYPE = "ext4"
OWN_OPTIONS = "rw,noatime"  # noatime: reading our own slots must not change inodes
# noload: no journal replay, i.e. not a single write to a peer's disk. errors=continue: a
# stale view (one mounted before the peer changed its pool) can fail metadata checksums;
# that must never panic this host, whatever the peer's superblock says.
PEER_OPTIONS = "ro,noload,errors=continue"
# iscsiadm exit codes (open-iscsi's iscsi_err.h)
ISCSI_ERR_SESS_EXISTS = 15
ISCSI_ERR_NO_OBJS_FOUND = 21

_ISCSI_KEYS = {"iscsiadm": str, "login_timeout": float, "mmp": bool, "portal": str,
               "backend": str, "initiators": list}


class DiskError(BlfsError):
    """Something is wrong with one node's disk; the message names it."""

    code = "disk"

    def __init__(self, disk: "Disk", what: str):
        super().__init__(f"disk {disk.node} ({disk.url}): {what}")
        self.disk = disk


class Failures(BlfsError):
    """Several disks failed; one line each."""

    def __init__(self, errors: list):
        super().__init__("; ".join(str(e) for e in errors))
        self.errors = errors


# ---------------------------------------------------------------------------- the config

@dataclass
class Disk:
    node: str
    url: str
    kind: str  # "iscsi" or "block"
    own: bool
    mount: str
    path: str = ""  # block: the device path
    host: str = ""  # iscsi: as written, IPv6 in brackets
    port: int = DEFAULT_PORT
    iqn: str = ""
    lun: int = 0
    export_device: str = ""  # [nodes.NAME] export_device: the local disk `export` serves

    @property
    def portal(self) -> str:
        return f"{self.host}:{self.port}"

    def by_path_name(self) -> str:
        """udev's /dev/disk/by-path name of this LUN once logged in (an IP, not a name)."""
        return f"ip-{_portal_address(self.host)}:{self.port}-iscsi-{self.iqn}-lun-{self.lun}"


def _portal_address(host: str) -> str:
    bare = host.strip("[]")
    try:
        ip = ipaddress.ip_address(bare)
    except ValueError:
        try:  # a host name: the session (and so udev) knows its address
            bare = socket.getaddrinfo(bare, None, type=socket.SOCK_STREAM)[0][4][0]
            ip = ipaddress.ip_address(bare)
        except (OSError, ValueError, IndexError):
            return host
    return f"[{ip}]" if ip.version == 6 else str(ip)


_ISCSI_URL = re.compile(r"^iscsi://(?P<host>\[[0-9A-Fa-f:.]+\]|[^/:\[\]]+)(?::(?P<port>\d+))?"
                        r"/(?P<iqn>[^/\s]+)/(?P<lun>\d+)/?$")


def parse_disk_url(node: str, url: str, own: bool, mount: str) -> Disk:
    """A Disk from its URL; ConfigError naming the node when the URL is not one."""
    if url.startswith("block:"):
        path = url[len("block:"):]
        if not path.startswith("/dev/") or len(path) <= len("/dev/"):
            raise ConfigError(f"disk {node} ({url}): a block: URL names a device under /dev/")
        return Disk(node, url, "block", own, mount, path=path)
    m = _ISCSI_URL.match(url)
    if m:
        port = int(m["port"] or DEFAULT_PORT)
        if not 0 < port < 65536:
            raise ConfigError(f"disk {node} ({url}): port {port} is out of range")
        return Disk(node, url, "iscsi", own, mount, host=m["host"], port=port,
                    iqn=m["iqn"], lun=int(m["lun"]))
    raise ConfigError(f"disk {node} ({url!r}): not a disk URL; expected "
                      "iscsi://HOST[:PORT]/IQN/LUN or block:/dev/PATH")


@dataclass
class Settings:
    cfg: configmod.Config
    path: str  # the config file
    own: str
    disks: list  # own disk first, then the peers by name
    mount_root: str
    iscsiadm: str = "iscsiadm"
    login_timeout: float = 60.0
    mmp: bool = True
    portal: str = ""
    backend: str = "auto"
    initiators: Optional[list] = None
    by_path_dir: str = BY_PATH
    notes: list = field(default_factory=list)

    @property
    def own_disk(self) -> Disk:
        return self.disks[0]

    @property
    def peers(self) -> list:
        return self.disks[1:]


def load_settings(path: Optional[str]) -> Settings:
    """This node's view of the configuration: its [iscsi] settings and every disk, its own
    first; ConfigError for anything blfs-iscsi cannot work with."""
    cfg = configmod.load(path)
    s = Settings(cfg, cfg.path, cfg.worker_name, [], cfg.disks_root)
    _apply_iscsi_section(s, cfg.iscsi)
    s.iscsiadm = os.environ.get("BLFS_ISCSIADM") or s.iscsiadm
    s.by_path_dir = os.environ.get("BLFS_ISCSI_BY_PATH") or BY_PATH  # for tests only
    names = [n.name for n in cfg.nodes]
    if cfg.node(s.own) is None:
        raise ConfigError(f"this node is {s.own!r} ([worker] name, by default the host name) "
                          f"but {s.path} has no [nodes.{s.own}]"
                          + (f" (it names {', '.join(names)})" if names else ""))
    if cfg.slot_size % storage.ALIGN or cfg.slot_size <= storage.HEADER_SIZE:
        raise ConfigError(f"{s.path}: [pool] slot_size {cfg.slot_size} must be a multiple of "
                          f"{storage.ALIGN}")
    if cfg.slot_count <= 0:
        raise ConfigError(f"{s.path}: [pool] slots must be positive")
    s.disks = _disks(s)
    return s


def _apply_iscsi_section(s: Settings, section: dict) -> None:
    """[iscsi] key = value onto the settings, each checked against _ISCSI_KEYS."""
    for key, value in section.items():
        kind = _ISCSI_KEYS.get(key)
        if kind is None:
            raise ConfigError(f"{s.path}: [iscsi] has no key {key!r} "
                              f"(known: {', '.join(sorted(_ISCSI_KEYS))})")
        if kind is float and isinstance(value, int) and not isinstance(value, bool):
            value = float(value)
        if not isinstance(value, kind) or (kind is float and value <= 0):
            raise ConfigError(f"{s.path}: [iscsi] {key} has a bad value {value!r}")
        if kind is list and not all(isinstance(v, str) for v in value):
            raise ConfigError(f"{s.path}: [iscsi] {key} must be a list of strings")
        setattr(s, key, value)


def _disks(s: Settings) -> list:
    """Every node's disk, this node's own first; two nodes may not name one disk."""
    cfg = s.cfg
    seen: dict = {}
    disks = []
    for node in [cfg.node(s.own)] + [n for n in cfg.nodes if n.name != s.own]:
        if not node.disk:
            raise ConfigError(f"{s.path}: [nodes.{node.name}] has no disk "
                              "(iscsi://HOST[:PORT]/IQN/LUN or block:/dev/PATH)")
        if node.disk in seen:
            raise ConfigError(f"{s.path}: nodes {seen[node.disk]} and {node.name} name the "
                              f"same disk {node.disk}")
        seen[node.disk] = node.name
        if "/" in node.name or node.name in (".", ".."):
            raise ConfigError(f"{s.path}: {node.name!r} cannot be a node name")
        disk = parse_disk_url(node.name, node.disk, node.name == s.own,
                              os.path.join(s.mount_root, node.name))
        disk.export_device = node.export_device
        disks.append(disk)
    return disks


# ------------------------------------------------------------------------------- helpers

def _run(argv: list, timeout: Optional[float] = None) -> subprocess.CompletedProcess:
    try:
        return subprocess.run(argv, capture_output=True, text=True, timeout=timeout)
    except FileNotFoundError:
        raise BlfsError(f"{argv[0]} not found") from None


def _last_line(proc: subprocess.CompletedProcess) -> str:
    lines = (proc.stderr.strip() or proc.stdout.strip()).splitlines()
    return lines[-1].strip() if lines else f"exit status {proc.returncode}"


def _devno(device: str) -> tuple:
    rdev = os.stat(device).st_rdev
    return os.major(rdev), os.minor(rdev)


def probe(device: str) -> dict:
    """What blkid finds on a device by reading it (-p: no cache): TYPE, LABEL, PTTYPE..."""
    proc = _run(["blkid", "-p", "-o", "export", device])
    if proc.returncode == 2:  # nothing found
        return {}
    if proc.returncode != 0:
        raise BlfsError(f"blkid {device}: {_last_line(proc)}")
    return dict(line.split("=", 1) for line in proc.stdout.splitlines() if "=" in line)


def _a(word: str) -> str:
    return f"{'an' if word[:1].lower() in 'aeiou' else 'a'} {word}"


def _describe(found: dict) -> str:
    if "TYPE" in found:
        label = f" (label {found['LABEL']})" if found.get("LABEL") else ""
        return f"{_a(found['TYPE'])} file system{label}"
    if "PTTYPE" in found:
        return f"{_a(found['PTTYPE'])} partition table"
    return "a signature (" + ", ".join(f"{k}={v}" for k, v in sorted(found.items())) + ")"


class Lock:
    """One blfs-iscsi at a time per mount root (boot's and an operator's must not race)."""

    def __init__(self, root: str):
        os.makedirs(root, mode=0o755, exist_ok=True)
        self.fd = os.open(os.path.join(root, LOCK_NAME), os.O_RDWR | os.O_CREAT, 0o600)

    def __enter__(self) -> "Lock":
        fcntl.flock(self.fd, fcntl.LOCK_EX)
        return self

    def __exit__(self, *exc: Any) -> None:
        os.close(self.fd)


# ---------------------------------------------------------------------------- attaching

def device_of(s: Settings, disk: Disk) -> Optional[str]:
    """The device node of a disk if this host sees it now, else None (no side effects)."""
    path = disk.path if disk.kind == "block" else os.path.join(s.by_path_dir,
                                                                disk.by_path_name())
    if not os.path.exists(path):
        return None
    return os.path.realpath(path)


def attach(s: Settings, disk: Disk, say: Any) -> str:
    """Make the disk's block device appear here; returns its device node."""
    if disk.kind == "block":
        if not os.path.exists(disk.path):
            raise DiskError(disk, f"device {disk.path} does not exist")
        if not stat.S_ISBLK(os.stat(disk.path).st_mode):
            raise DiskError(disk, f"{disk.path} is not a block device")
        return os.path.realpath(disk.path)
    link = os.path.join(s.by_path_dir, disk.by_path_name())
    if os.path.exists(link):  # already logged in: nothing to do
        return os.path.realpath(link)
    deadline = time.monotonic() + s.login_timeout
    _discover_and_login(s, disk, deadline)
    say(f"{disk.node}: logged in to {disk.iqn} at {disk.portal}")
    while not os.path.exists(link):
        if time.monotonic() >= deadline:
            raise DiskError(disk, f"logged in, but {link} did not appear within "
                                  f"{s.login_timeout:g} s (does the target export LUN "
                                  f"{disk.lun}? see `iscsiadm -m session -P 3`)")
        time.sleep(0.05)
    return os.path.realpath(link)


def _iscsiadm(s: Settings, disk: Disk, args: list, deadline: float) -> subprocess.CompletedProcess:
    left = max(1.0, deadline - time.monotonic())
    try:
        return _run([s.iscsiadm, *args], timeout=left)
    except subprocess.TimeoutExpired:
        return subprocess.CompletedProcess([s.iscsiadm, *args], -1, "",
                                           f"no answer within {left:.0f} s")
    except BlfsError:
        raise DiskError(disk, f"{s.iscsiadm} not found (install open-iscsi, or set "
                              "[iscsi] iscsiadm)") from None


def _discover_and_login(s: Settings, disk: Disk, deadline: float) -> None:
    """Discovery, then login to exactly this target; retried until the deadline (at boot,
    a peer's target may come up after us)."""
    why = ""
    while True:
        proc = _iscsiadm(s, disk, ["-m", "discovery", "-t", "sendtargets", "-p", disk.portal],
                         deadline)
        if proc.returncode == 0:
            offered = [line.split()[-1] for line in proc.stdout.splitlines() if line.split()]
            if disk.iqn in offered:
                login = _iscsiadm(s, disk, ["-m", "node", "-T", disk.iqn, "-p", disk.portal,
                                            "--login"], deadline)
                if login.returncode in (0, ISCSI_ERR_SESS_EXISTS):
                    return
                why = f"login failed: {_last_line(login)}"
            else:
                why = (f"{disk.portal} does not offer {disk.iqn}"
                       + (f" (it offers {', '.join(offered)})" if offered else ""))
        else:
            why = _last_line(proc)
        if time.monotonic() >= deadline:
            raise DiskError(disk, f"target unreachable within {s.login_timeout:g} s: {why}")
        time.sleep(min(1.0, max(0.0, deadline - time.monotonic())))


def detach(s: Settings, disk: Disk) -> Optional[str]:
    """Log out of an iSCSI disk (block: disks stay as they are). Returns what was done."""
    if disk.kind != "iscsi":
        return None
    proc = _iscsiadm(s, disk, ["-m", "node", "-T", disk.iqn, "-p", disk.portal, "--logout"],
                     time.monotonic() + s.login_timeout)
    if proc.returncode == ISCSI_ERR_NO_OBJS_FOUND:  # no session: nothing to undo
        return None
    if proc.returncode != 0:
        raise DiskError(disk, f"logout failed: {_last_line(proc)}")
    return f"{disk.node}: logged out of {disk.iqn} at {disk.portal}"


# ----------------------------------------------------------------------------- mounting

def mount(disk: Disk, device: str, say: Any) -> bool:
    """Mount the disk at its mount point: own rw, peers ro,noload. True if it was mounted now.

    Already mounted from the same device in the right mode: nothing to do. A peer's disk is
    never mounted writable; a mount point holding something else is an error."""
    os.makedirs(disk.mount, mode=0o755, exist_ok=True)
    want = "rw" if disk.own else "ro"
    devno = _devno(device)
    current = mount_at(disk.mount)
    if current is not None:
        if current.devno != devno:
            raise DiskError(disk, f"{disk.mount} already has {current.source} mounted, "
                                  f"not {device}")
        if current.mode != want:
            if disk.own:
                raise DiskError(disk, f"own disk is mounted read-only at {disk.mount}; "
                                      "run blfs-iscsi down, then up")
            raise DiskError(disk, f"a peer's disk is mounted READ-WRITE at {disk.mount}; "
                                  "unmount it now (two writers corrupt it)")
        return False
    elsewhere = [m.path for m in mounts() if m.devno == devno]
    if elsewhere:
        raise DiskError(disk, f"{device} is already mounted at {elsewhere[-1]}; unmount it "
                              "there first")
    found = probe(device)
    if found.get("TYPE") != FSTYPE:
        if not found:
            hint = ("run blfs-iscsi format on this node" if disk.own
                    else f"format it on {disk.node} with blfs-iscsi format")
            raise DiskError(disk, f"no file system on {device} ({hint})")
        raise DiskError(disk, f"{device} holds {_describe(found)}, not {FSTYPE}")
    options = OWN_OPTIONS if disk.own else PEER_OPTIONS
    proc = _run(["mount", "-t", FSTYPE, "-o", options, device, disk.mount])
    if proc.returncode != 0:
        hint = ""
        if disk.own and "mmp" in _features(device):
            hint = (" (the file system has multi-mount protection: is it mounted "
                    "read-write on another host?)")
        raise DiskError(disk, f"cannot mount {device} at {disk.mount} ({options}): "
                              f"{_last_line(proc)}{hint}")
    note = ""
    if not disk.own:
        try:
            storage.read_manifest(disk.mount, direct=True)
        except (OSError, BlfsError):
            note = (f" (no pool yet: readers remount this view when {disk.node} announces "
                    "its pool generation)")
    say(f"{disk.node}: mounted {device} at {disk.mount} ({options}){note}")
    return True


def _features(device: str) -> str:
    proc = _run(["dumpe2fs", "-h", device])
    for line in proc.stdout.splitlines():
        if line.startswith("Filesystem features:"):
            return line.split(":", 1)[1]
    return ""


def unmount(disk: Disk, say: Any) -> bool:
    """Unmount everything stacked at the disk's mount point. True if anything was."""
    did = False
    while mount_at(disk.mount) is not None:
        proc = _run(["umount", disk.mount])
        if proc.returncode != 0:
            raise DiskError(disk, f"cannot unmount {disk.mount}: {_last_line(proc)} "
                                  f"(see fuser -vm {disk.mount})")
        did = True
    if did:
        say(f"{disk.node}: unmounted {disk.mount}")
    return did


# ---------------------------------------------------------------------------------- pool

def _bytes(n: int) -> str:
    for unit, size in (("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if n >= size:
            return f"{n / size:.1f} {unit}".replace(".0 ", " ")
    return f"{n} B"


def space_needed(disk_dir: str, count: int, size: int) -> int:
    """Bytes preparation still has to allocate (slots already complete are kept)."""
    needed = 0
    for slot in range(count):
        try:
            st = os.stat(storage.slot_path(disk_dir, slot))
        except FileNotFoundError:
            needed += size
            continue
        needed += max(0, size - st.st_blocks * 512)
    return needed


def ensure_pool(s: Settings, disk: Disk, device: str, force: bool,
                say: Any) -> tuple[storage.Manifest, bool]:
    """Check the pool on our own (mounted) disk; prepare it when absent, cut short or of
    another shape. Returns (manifest, changed)."""
    cfg = s.cfg
    current = storage.check_pool(disk.mount)
    if (current is not None and current.node == disk.node
            and current.slot_count == cfg.slot_count and current.slot_size == cfg.slot_size):
        return current, False
    if current is not None:
        _check_no_worker_uses(s, disk, current, force, say)
    _check_room(s, disk)
    say(f"{disk.node}: preparing pool: {cfg.slot_count} slots of {_bytes(cfg.slot_size)}"
        + (" (completing an interrupted preparation)" if _preparing(disk.mount) else ""))
    # A preparation killed after writing a slot but before its fsync leaves a full-size
    # slot whose blocks are only reserved (delayed allocation): st_blocks counts them, so
    # prepare_pool would keep it, and its extents would be allocated later, behind the
    # peers' backs. Writing the whole file system back first makes what is kept real.
    syncfs(disk.mount)
    try:
        manifest, changed = storage.prepare_pool(disk.mount, disk.node, cfg.slot_count,
                                                 cfg.slot_size, durable=True, fill=True)
    except OSError as exc:
        if exc.errno == errno.ENOSPC:
            raise DiskError(disk, f"pool does not fit: {disk.mount} is full") from None
        raise DiskError(disk, f"preparing the pool: {exc.strerror}: {exc.filename}") from None
    # Metadata of the new files sits in our block device's cache (journal committed, not
    # yet in place): write it back, so that a peer's ro,noload mount (no journal replay)
    # sees the pool.
    storage.fsync_device(device)
    say(f"{disk.node}: pool ready: {manifest.slot_count} slots of "
        f"{_bytes(manifest.slot_size)}, generation {manifest.generation}")
    return manifest, changed


def _check_no_worker_uses(s: Settings, disk: Disk, current: storage.Manifest, force: bool,
                          say: Any) -> None:
    """A ready pool changes shape. A running worker keeps the old generation (and its
    slots may hold map output of running jobs): it must be stopped first, or forced."""
    answer = ask_worker(s)
    if answer is None:
        return
    cfg = s.cfg
    use = worker_usage(s, answer) or "no slots leased"
    change = (f"the pool would change ({current.slot_count} -> {cfg.slot_count} "
              f"slots of {_bytes(cfg.slot_size)})")
    if not force:
        raise DiskError(disk, f"{change} while blfs-worker runs ({use}; the worker "
                              f"at {answer['address']} says so); stop blfs-worker "
                              "first, or use --force")
    say(f"{disk.node}: warning: {change} under a running blfs-worker ({use}); "
        "restart blfs-worker (or `systemctl reload blfs-worker`) so that it uses "
        "the new generation")


def _check_room(s: Settings, disk: Disk) -> None:
    cfg = s.cfg
    needed = space_needed(disk.mount, cfg.slot_count, cfg.slot_size)
    vfs = os.statvfs(disk.mount)
    free = vfs.f_bavail * vfs.f_frsize
    margin = cfg.slot_count * 4096 + (1 << 20)  # extent blocks, MANIFEST, directory
    if needed + margin > free:
        raise DiskError(disk, f"pool does not fit: {cfg.slot_count} slots x "
                              f"{_bytes(cfg.slot_size)} need {_bytes(needed)} more, "
                              f"{_bytes(free)} free on {disk.mount}")


def syncfs(path: str) -> None:
    """Write back every dirty page and inode of the file system holding path."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        if libc.syncfs(fd) != 0:
            err = ctypes.get_errno()
            raise OSError(err, os.strerror(err), path)
    except AttributeError:  # no syncfs in this libc
        os.sync()
    finally:
        os.close(fd)


def _preparing(disk_dir: str) -> bool:
    try:
        return not storage.read_manifest(disk_dir, direct=False).ready
    except (OSError, BlfsError):
        return False


# ------------------------------------------------------------------ asking the worker

def ask_worker(s: Settings, timeout: float = 2.0) -> Optional[dict]:
    """The local worker's ping answer (running attempts, free slots), or None when no
    worker answers (not running, no cluster key, ...)."""
    node = s.cfg.node(s.own)
    address = node.address if node and node.address else s.cfg.worker_listen
    try:
        host, port = parse_address(address, configmod.WORKER_PORT)
    except ValueError:  # not host:port; no worker answers there
        return None
    if host in ("0.0.0.0", "", "::"):  # a listening address: reach it on loopback
        address = format_address("127.0.0.1", port)
    try:
        from . import auth
        key = auth.load_key(s.cfg.cluster_key)
    except BlfsError:
        return None

    async def ping() -> dict:
        from . import rpc
        peer, _ = await rpc.connect(address, key, "client", f"blfs-iscsi@{os.getpid()}",
                                    expect_role="worker", default_port=configmod.WORKER_PORT,
                                    timeout=timeout)
        reader = asyncio.ensure_future(peer.serve())
        try:
            answer = await peer.call("ping", limit=timeout)
        finally:
            await peer.close()
            await asyncio.gather(reader, return_exceptions=True)
        return dict(answer, address=address) if isinstance(answer, dict) else {}

    try:
        answer = asyncio.run(asyncio.wait_for(ping(), timeout * 2))
    except (BlfsError, OSError, asyncio.TimeoutError):
        return None
    return answer or None


def worker_usage(s: Settings, answer: dict) -> str:
    """What jobs hold on this node according to a worker's ping answer ("" for nothing)."""
    try:
        total = storage.read_manifest(s.own_disk.mount, direct=False).slot_count
    except (OSError, BlfsError):
        total = None
    free = answer.get("free_slots")
    running = answer.get("running") or 0
    held = total - free if isinstance(free, int) and total is not None else 0
    parts = []
    if held > 0:
        parts.append(f"{held} of {total} slots are leased")
    if running:
        parts.append(f"{running} attempt{'s' if running != 1 else ''} running")
    return " and ".join(parts)


def leases_held(s: Settings) -> str:
    """Why this node's disk is in use by jobs ("" when no worker says so)."""
    answer = ask_worker(s)
    use = worker_usage(s, answer) if answer is not None else ""
    return f"{use} (the worker at {answer['address']} says so)" if use else ""


# ------------------------------------------------------------------------------ commands

def cmd_up(s: Settings, args: argparse.Namespace, say: Any) -> int:
    """Attach every disk; own rw with a prepared pool first, then the peers ro,noload."""
    changes = 0
    own = s.own_disk
    with Lock(s.mount_root):
        device = attach(s, own, say)
        changes += mount(own, device, say)
        _, changed = ensure_pool(s, own, device, args.force, say)
        changes += changed
        errors = []
        for disk in s.peers:
            try:
                peer_device = attach(s, disk, say)
                changes += mount(disk, peer_device, say)
            except DiskError as exc:
                errors.append(exc)
    if errors:
        raise Failures(errors)
    if not changes:
        say(f"{s.own}: up, nothing to change")
    return 0


def cmd_down(s: Settings, args: argparse.Namespace, say: Any) -> int:
    """Unmount every disk and log out; refuses while the local worker holds slots."""
    with Lock(s.mount_root):
        if not args.force:
            held = leases_held(s)
            if held:
                raise DiskError(s.own_disk, f"in use by jobs: {held}; stop blfs-worker "
                                            "first, or use --force")
        errors = []
        for disk in s.peers + [s.own_disk]:
            try:
                unmount(disk, say)
                done = detach(s, disk)
                if done:
                    say(done)
            except DiskError as exc:
                errors.append(exc)
    if errors:
        raise Failures(errors)
    return 0


def disk_status(s: Settings, disk: Disk, worker: Optional[dict]) -> dict:
    row: dict = {"node": disk.node, "own": disk.own, "disk": disk.url,
                 "device": device_of(s, disk), "mount": None, "mode": None,
                 "generation": None, "state": None, "slots": None, "free_slots": None}
    found = mount_at(disk.mount)
    if found is not None:
        row["mount"], row["mode"] = disk.mount, found.mode
        try:
            # a peer's manifest with O_DIRECT: what its disk says, not our page cache
            manifest = storage.read_manifest(disk.mount, direct=not disk.own)
            row.update(generation=manifest.generation, slots=manifest.slot_count,
                       state="ready" if manifest.ready else "preparing")
        except FileNotFoundError:
            # on a peer's view: none when it was mounted (a view does not see later files)
            row["state"] = "no pool" if disk.own else "none in view"
        except (OSError, BlfsError):
            # e.g. EBADMSG: a view mounted before the peer prepared its pool has stale
            # metadata; a reader remounts it before use (storage.ensure_generation)
            row["state"] = "stale view"
        if disk.own and worker is not None and isinstance(worker.get("free_slots"), int):
            row["free_slots"] = worker["free_slots"]
    return row


def export_rows() -> tuple[Optional[list], str]:
    try:
        from . import export
    except ImportError:
        return None, "not available (blfsd.export is not installed)"
    try:
        return list(export.export_status()), ""
    except (BlfsError, OSError) as exc:
        return None, f"unknown ({exc})"


def cmd_status(s: Settings, args: argparse.Namespace, say: Any) -> int:
    worker = ask_worker(s)
    rows = [disk_status(s, d, worker) for d in s.disks]
    exports, why = export_rows()
    if args.json:
        print(json.dumps({"node": s.own, "worker": worker, "disks": rows,
                          "exports": exports, "exports_note": why}, indent=2, default=str))
        return 0
    table = [("NODE", "DISK", "DEVICE", "MOUNT", "MODE", "POOL GEN", "SLOTS")]
    for r in rows:
        if r["generation"] is not None:
            gen = str(r["generation"]) + (" (preparing)" if r["state"] == "preparing" else "")
        else:
            gen = r["state"] or "-"
        if r["slots"] is None:
            slots = "-"
        elif r["free_slots"] is not None:
            slots = f"{r['free_slots']}/{r['slots']} free"
        else:
            slots = str(r["slots"])
        table.append((r["node"] + (" *" if r["own"] else ""), r["disk"],
                      r["device"] or "not attached", r["mount"] or "not mounted",
                      r["mode"] or "-", gen, slots))
    widths = [max(len(row[i]) for row in table) for i in range(len(table[0]))]
    for row in table:
        print("  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip())
    print(f"* this node ({s.own}); worker: "
          + (f"answering at {worker['address']}, {worker.get('running', 0)} attempts running"
             if worker else "not answering (slots free unknown)"))
    if exports is None:
        print(f"export: {why}")
    elif not exports:
        print("export: none (this node serves no iSCSI target)")
    else:
        for e in exports:
            print(describe_export(e))
    return 0


def describe_export(e: dict) -> str:
    """One line for one target of blfsd.export.export_status()."""
    luns = []
    for lun in e.get("luns") or []:
        if isinstance(lun, dict):
            size = f" ({_bytes(lun['size'])})" if isinstance(lun.get("size"), int) else ""
            luns.append(f"LUN {lun.get('lun')} {lun.get('device') or '?'}{size}")
    parts = [f"export: {e.get('backend', '?')} {e.get('iqn', '?')}"]
    if luns:
        parts.append(", ".join(luns))
    for key, label in (("portals", "on"), ("initiators", "for"), ("sessions", "sessions")):
        if key in e:
            parts.append(f"{label} {_short(e[key])}")
    known = {"backend", "iqn", "luns", "portals", "initiators", "sessions", "tid"}
    parts += [f"{k}={_short(v)}" for k, v in e.items() if k not in known]
    return "  ".join(parts)


def _short(value: Any) -> str:
    if isinstance(value, (list, tuple)):
        return ",".join(str(v) for v in value) or "none"
    return str(value)


def cmd_format(s: Settings, args: argparse.Namespace, say: Any) -> int:
    """Make an ext4 file system on this node's own disk; refuses one that holds anything."""
    own = s.own_disk
    with Lock(s.mount_root):
        device = attach(s, own, say)
        devno = _devno(device)
        where = [m.path for m in mounts() if m.devno == devno]
        if where:
            raise DiskError(own, f"{device} is mounted at {where[-1]}; run blfs-iscsi down "
                                 "first")
        try:  # the kernel's own answer: mounted in any namespace, or held by a target
            os.close(os.open(device, os.O_RDONLY | os.O_EXCL))
        except OSError as exc:
            if exc.errno == errno.EBUSY:
                raise DiskError(own, f"{device} is in use (mounted in another namespace, or "
                                     "held by an iSCSI target or another program)") from None
            raise DiskError(own, f"cannot open {device}: {exc.strerror}") from None
        found = probe(device)
        if found and not args.force:
            raise DiskError(own, f"{device} already holds {_describe(found)}; refusing to "
                                 "erase it (use --force)")
        mmp = s.mmp and not args.no_mmp
        extended = "lazy_itable_init=0,lazy_journal_init=0"
        argv = ["mkfs.ext4", "-q", "-F", "-b", "4096", "-m", "0",
                "-L", f"blfs-{own.node}"[:16]]
        if mmp:
            argv += ["-O", "mmp"]
            extended += ",mmp_update_interval=5"
        argv += ["-E", extended, device]
        proc = _run(argv)
        if proc.returncode != 0:
            raise DiskError(own, f"mkfs.ext4 failed: {_last_line(proc)}")
    say(f"{own.node}: formatted {device} as {FSTYPE}"
        + (" with multi-mount protection" if mmp else " without multi-mount protection")
        + "; now run blfs-iscsi up")
    return 0


def cmd_export(s: Settings, args: argparse.Namespace, say: Any) -> int:
    """Serve this node's disk as an iSCSI target (blfsd.export: LIO or tgt)."""
    own = s.own_disk
    device = args.device or own.export_device or (own.path if own.kind == "block" else "")
    if not device:
        raise UsageError(f"nothing to export: set [nodes.{own.node}] export_device (the local "
                         "disk behind the target) or give --device")
    iqn = args.iqn or own.iqn
    lun = args.lun if args.lun is not None else (own.lun if own.kind == "iscsi" else 1)
    if not iqn:
        raise UsageError(f"disk {own.node} ({own.url}) names no IQN: give --iqn")
    portal = args.portal or s.portal or f"0.0.0.0:{own.port}"
    backend = args.backend or s.backend
    try:
        from . import export
    except ImportError:
        raise BlfsError("export is not available: blfsd.export is not installed") from None
    if not os.path.exists(device):
        raise DiskError(own, f"device {device} does not exist")
    extra = {"start_tgtd": True} if args.start_tgtd else {}
    ran = export.export_disk(device, iqn, lun=lun, backend=backend, portal=portal,
                             initiators=s.initiators or None, **extra)
    if not ran:
        say(f"{own.node}: {iqn} LUN {lun} was already exported as configured")
    for command in ran:
        say(command if isinstance(command, str) else shlex.join(command))
    say(f"{own.node}: exported {device} as {iqn} LUN {lun} on {portal}")
    return 0


COMMANDS = {"up": cmd_up, "down": cmd_down, "status": cmd_status, "format": cmd_format,
            "export": cmd_export}


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="blfs-iscsi",
        description="Attach, mount and prepare the shared disks of a blfs node.")
    p.add_argument("--config", metavar="FILE",
                   help=f"configuration file (default {configmod.DEFAULT_PATH})")
    p.add_argument("-q", "--quiet", action="store_true", help="print errors only")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")
    up = sub.add_parser("up", help="attach every disk, mount them, prepare the pool")
    up.add_argument("--force", action="store_true",
                    help="change the pool even while the worker holds slots")
    down = sub.add_parser("down", help="unmount every disk and log out")
    down.add_argument("--force", action="store_true",
                      help="even while the local worker holds slots or runs attempts")
    status = sub.add_parser("status", help="disks, mounts, pool generation, free slots")
    status.add_argument("--json", action="store_true", help="machine-readable output")
    fmt = sub.add_parser("format", help="make the file system on this node's own disk")
    fmt.add_argument("--force", action="store_true",
                     help="erase a device that already holds a file system")
    fmt.add_argument("--no-mmp", action="store_true",
                     help="without ext4 multi-mount protection")
    ex = sub.add_parser("export", help="serve this node's disk as an iSCSI target")
    ex.add_argument("--device", help="the local disk to serve (default: [nodes.NAME] "
                                     "export_device)")
    ex.add_argument("--iqn", help="target name (default: from this node's disk URL)")
    ex.add_argument("--lun", type=int, help="LUN (default: from this node's disk URL)")
    ex.add_argument("--backend", choices=("auto", "lio", "tgt"),
                    help="LIO (targetcli) or tgt (tgtadm); default [iscsi] backend or auto")
    ex.add_argument("--portal", help="address to listen on (default [iscsi] portal or "
                                     "0.0.0.0:PORT of this node's disk URL)")
    ex.add_argument("--start-tgtd", action="store_true",
                    help="tgt: start tgtd if none runs (normally tgt.service does)")
    return p


def main(argv: Optional[list] = None) -> int:
    args = build_parser().parse_args(argv)

    def say(line: str) -> None:
        if not args.quiet:
            print(line, flush=True)

    try:
        settings = load_settings(args.config)
        return COMMANDS[args.command](settings, args, say)
    except KeyboardInterrupt:
        print("blfs-iscsi: interrupted", file=sys.stderr)
        return 130
    except Failures as exc:
        for error in exc.errors:
            print(f"blfs-iscsi: {error}", file=sys.stderr)
        return 1
    except (ConfigError, UsageError) as exc:
        print(f"blfs-iscsi: {exc}", file=sys.stderr)
        return 2
    except BlfsError as exc:
        print(f"blfs-iscsi: {exc}", file=sys.stderr)
        return 1
    except OSError as exc:
        where = f": {exc.filename}" if exc.filename else ""
        print(f"blfs-iscsi: {exc.strerror or exc}{where}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    raise SystemExit(main())
