"""blfsd.mounts: the one reader of /proc/self/mountinfo."""
from __future__ import annotations

import os

from blfsd import mounts

LINES = [
    "22 1 8:1 / / rw,relatime shared:1 - ext4 /dev/sda1 rw,errors=remount-ro",
    # a mount point and a source with a space, a tab and a backslash in their names
    r"97 22 7:3 / /mnt/my\040disk\011x\134y ro,noatime shared:50 - ext4 /dev/my\040loop "
    "ro,norecovery",
    "98 22 7:3 / /mnt/again rw master:3 - xfs /dev/loop3 rw",
    "99 98 7:4 / /mnt/again ro - ext4 /dev/loop4 ro",
]


def test_parse_line_reads_every_field_and_unescapes_paths():
    m = mounts.parse_line(LINES[1])
    assert m.mount_id == 97 and m.devno == (7, 3)
    assert m.path == "/mnt/my disk\tx\\y"
    assert m.source == "/dev/my loop"
    assert (m.options, m.fstype, m.super_options) == ("ro,noatime", "ext4", "ro,norecovery")
    assert m.mode == "ro"
    assert mounts.parse_line(LINES[0]).mode == "rw"


def test_optional_fields_before_the_separator_do_not_shift_the_rest():
    plain, tagged = mounts.parse_line(LINES[2]), mounts.parse_line(LINES[3])
    assert (plain.fstype, plain.source) == ("xfs", "/dev/loop3")
    assert (tagged.fstype, tagged.source) == ("ext4", "/dev/loop4")


def test_mounts_keeps_mount_order_and_mount_at_takes_the_topmost(tmp_path, monkeypatch):
    info = tmp_path / "mountinfo"
    info.write_text("\n".join(LINES) + "\n")
    found = mounts.mounts(str(info))
    assert [m.mount_id for m in found] == [22, 97, 98, 99]
    monkeypatch.setattr(mounts, "mounts", lambda path=str(info): found)
    assert mounts.mount_at("/mnt/again").source == "/dev/loop4"
    assert mounts.mount_at("/mnt/nothing") is None


def test_this_process_sees_its_root_mounted():
    root = mounts.mount_at("/")
    assert root is not None and root.path == os.path.realpath("/")
