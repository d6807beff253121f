"""Loop devices, ext4 images and mounts for storage tests, with guaranteed cleanup.

Another host's view of a disk is a second loop device over the same image file: each loop
device has its own page cache and each mount its own inode/dentry cache, exactly like two
hosts attached to one iSCSI LUN (docs/ARCHITECTURE.md, "Storage rules", says why).

Everything made through a ``Resources`` object is undone by ``Resources.close()`` in reverse
order, even when a step or the test fails: mounts are unmounted (lazily as a last resort),
only the loop devices created here are detached (and only while they are still backed by
our image), and image files are deleted. Use the ``resources`` fixture-style helper from a
test module::

    @pytest.fixture
    def res(tmp_path):
        with Resources(tmp_path) as r:
            yield r
"""
from __future__ import annotations

import os
import shutil
import subprocess
import time
import uuid
from typing import Callable, Optional

import pytest

_TOOLS = ("losetup", "mkfs.ext4", "mount", "umount", "filefrag")


def _why_not() -> Optional[str]:
    if os.geteuid() != 0:
        return "needs root (loop devices and mounts)"
    missing = [t for t in _TOOLS if shutil.which(t) is None]
    if missing:
        return "missing tools: " + ", ".join(missing)
    if not os.path.exists("/dev/loop-control"):
        return "no loop device support (/dev/loop-control is absent)"
    return None


SKIP_REASON = _why_not()

#: Marker for tests that need root, losetup, mkfs.ext4 and mount.
root = pytest.mark.skipif(SKIP_REASON is not None, reason=SKIP_REASON or "")


def run(*argv: str, check: bool = True) -> subprocess.CompletedProcess:
    """Run a command, capture its output; on failure raise with the command's stderr."""
    proc = subprocess.run(argv, capture_output=True, text=True)
    if check and proc.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)} failed ({proc.returncode}): "
                           f"{proc.stderr.strip() or proc.stdout.strip()}")
    return proc


def is_mounted(path: str) -> bool:
    real = os.path.realpath(path)
    with open("/proc/self/mountinfo") as f:
        return any(line.split()[4] == real for line in f)


def mount_options(path: str) -> Optional[str]:
    """The per-mount options of the last mount at exactly this path."""
    real = os.path.realpath(path)
    found = None
    with open("/proc/self/mountinfo") as f:
        for line in f:
            parts = line.split()
            if parts[4] == real:
                found = parts[5]
    return found


def loop_backing_file(device: str) -> Optional[str]:
    name = os.path.basename(device)
    try:
        with open(f"/sys/block/{name}/loop/backing_file") as f:
            return f.read().strip()
    except OSError:
        return None


class Resources:
    """Creates images, loop devices and mounts; ``close()`` undoes all of them."""

    def __init__(self, base: str):
        self.base = str(base)
        self.tag = uuid.uuid4().hex[:10]
        self._undo: list[tuple[str, Callable[[], None]]] = []

    # -- context manager ------------------------------------------------------------------
    def __enter__(self) -> "Resources":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        errors = []
        while self._undo:
            what, undo = self._undo.pop()
            try:
                undo()
            except Exception as exc:  # keep undoing the rest
                errors.append(f"{what}: {exc}")
        if errors:
            raise RuntimeError("cleanup failed: " + "; ".join(errors))

    # -- images ---------------------------------------------------------------------------
    def image(self, size: int = 64 << 20, mkfs: bool = True, block_size: int = 4096) -> str:
        """A fresh image file (sparse), formatted ext4 unless mkfs=False."""
        path = os.path.join(self.base, f"blfs-test-{self.tag}-{len(self._undo)}.img")
        with open(path, "xb") as f:
            f.truncate(size)
        self._undo.append((f"remove {path}", lambda: _unlink(path)))
        if mkfs:
            # lazy init off: no ext4lazyinit thread keeps writing through view A later.
            run("mkfs.ext4", "-q", "-F", "-b", str(block_size),
                "-E", "lazy_itable_init=0,lazy_journal_init=0", "-L", f"blfs{self.tag}"[:16],
                path)
        return path

    # -- loop devices ---------------------------------------------------------------------
    def loop(self, image: str, read_only: bool = False) -> str:
        """Attach a new loop device over the image; it is detached by close()."""
        device = attach(image, read_only)
        backing = os.path.realpath(image)
        self._undo.append((f"detach {device}", lambda: detach(device, backing)))
        return device

    # -- mounts ---------------------------------------------------------------------------
    def mountpoint(self, name: str) -> str:
        path = os.path.join(self.base, f"{name}-{self.tag}")
        os.makedirs(path)
        self._undo.append((f"rmdir {path}", lambda: _rmdir(path)))
        return path

    def mount(self, device: str, path: str, options: Optional[str] = None,
              fstype: str = "ext4") -> str:
        argv = ["mount", "-t", fstype]
        if options:
            argv += ["-o", options]
        run(*argv, device, path)
        self._undo.append((f"umount {path}", lambda: _umount(path)))
        return path


def _unlink(path: str) -> None:
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass


def _rmdir(path: str) -> None:
    try:
        os.rmdir(path)
    except FileNotFoundError:
        pass


def _umount(path: str) -> None:
    # The test may have unmounted it itself, or remounted it (storage.remount): unmount
    # everything stacked on this path that we can see.
    for attempt in range(20):
        if not is_mounted(path):
            return
        proc = run("umount", path, check=False)
        if proc.returncode != 0:
            time.sleep(0.1)
    if is_mounted(path):
        run("umount", "-l", path)


def attach(image: str, read_only: bool = False) -> str:
    """A new loop device over an image file."""
    argv = ["losetup", "-f", "--show"]
    if read_only:
        argv.append("-r")
    device = run(*argv, image).stdout.strip()
    if not device.startswith("/dev/loop"):
        raise RuntimeError(f"losetup gave {device!r}")
    return device


def detach(device: str, backing: str) -> None:
    """Detach a loop device of ours: never one that another image backs by now."""
    current = loop_backing_file(device)
    if current is None:
        return  # already detached
    if os.path.realpath(current.removesuffix(" (deleted)")) != os.path.realpath(backing):
        return  # someone else's device now: never touch it
    for attempt in range(50):
        proc = run("losetup", "-d", device, check=False)
        if proc.returncode == 0 or loop_backing_file(device) is None:
            return
        time.sleep(0.1)
    raise RuntimeError(f"cannot detach {device}: {proc.stderr.strip()}")
