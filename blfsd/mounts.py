"""What is mounted where: the one reader of /proc/self/mountinfo.

Used by the worker (the block device under its disk, remounting a peer's view) and by
blfs-iscsi (is a disk mounted, from which device, in which mode).
"""
from __future__ import annotations

import os
import re
from dataclasses import dataclass
from typing import Optional

MOUNTINFO = "/proc/self/mountinfo"


@dataclass(frozen=True)
class MountEntry:
    """One line of mountinfo (proc(5)), with paths and sources unescaped."""
    mount_id: int
    devno: tuple  # (major, minor)
    path: str
    options: str  # per-mount options: rw/ro, noatime...
    fstype: str
    source: str
    super_options: str

    @property
    def mode(self) -> str:
        return "rw" if "rw" in self.options.split(",") else "ro"


def unescape(text: str) -> str:
    """mountinfo writes space, tab, newline and backslash as octal escapes (\\040...)."""
    return re.sub(r"\\([0-7]{3})", lambda m: chr(int(m[1], 8)), text)


def parse_line(line: str) -> MountEntry:
    """A MountEntry from one mountinfo line: the fields before ' - ' and after it."""
    left, _, right = line.partition(" - ")
    parts = left.split()
    fstype, source, super_options = (right.split() + ["", "", ""])[:3]
    major, _, minor = parts[2].partition(":")
    return MountEntry(int(parts[0]), (int(major), int(minor)), unescape(parts[4]), parts[5],
                      fstype, unescape(source), super_options)


def mounts(path: str = MOUNTINFO) -> list[MountEntry]:
    """Every mount of this mount namespace, in mount order."""
    with open(path) as f:
        return [parse_line(line) for line in f if line.strip()]


def mount_at(path: str) -> Optional[MountEntry]:
    """The topmost mount at exactly this path (after resolving links), or None."""
    real = os.path.realpath(path)
    hits = [m for m in mounts() if m.path == real]
    return hits[-1] if hits else None
