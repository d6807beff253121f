"""blfsd.config: the one reader of blfs.toml (the daemons, the command and blfs-iscsi)."""
from __future__ import annotations

import pytest

from blfsd import config
from blfsd.errors import ConfigError

TOML = """\
[cluster]
master = "10.0.0.1:7070"
[master]
heartbeat_interval = 2
[worker]
merge_factor = 8
[pool]
slot_size = "4M"
slots = 8
[iscsi]
login_timeout = 30
mmp = false
[nodes.b]
address = "10.0.0.12:7071"
disk = "block:/dev/sdb"
[nodes.a]
address = "10.0.0.11:7071"
disk = "iscsi://10.0.0.11/iqn.2026-11.org.example:a/1"
export_device = "/dev/disk/by-id/ata-A"
"""


def test_load_reads_every_section_once(tmp_path):
    path = tmp_path / "blfs.toml"
    path.write_text(TOML)
    cfg = config.load(str(path))
    assert cfg.path == str(path)
    assert cfg.master_address == "10.0.0.1:7070" and cfg.heartbeat_interval == 2.0
    assert (cfg.slot_size, cfg.slot_count) == (4 << 20, 8)
    assert cfg.merge_factor == 8 and config.Config().merge_factor == 16
    assert [n.name for n in cfg.nodes] == ["a", "b"]  # sorted by name
    assert cfg.node("a").export_device == "/dev/disk/by-id/ata-A"
    assert cfg.node("b").export_device == "" and cfg.node("b").disk == "block:/dev/sdb"
    assert cfg.iscsi == {"login_timeout": 30, "mmp": False}  # blfs-iscsi checks its keys


def test_missing_files(tmp_path, monkeypatch):
    with pytest.raises(ConfigError, match="does not exist"):
        config.load(str(tmp_path / "none.toml"))
    monkeypatch.setenv("BLFS_CONFIG", str(tmp_path / "none.toml"))
    cfg = config.load()  # not named on the command line: defaults
    assert cfg.nodes == [] and cfg.iscsi == {} and cfg.path == str(tmp_path / "none.toml")


@pytest.mark.parametrize("text,match", [
    ("[pool]\nslots = 'many'\n", r"\[pool\] slots has a bad value"),
    ("[nodes.a]\ndisk = 'block:/dev/sda'\n", r"\[nodes.a\] needs an address"),
    ("[pool\n", "cannot read config"),
])
def test_bad_files_name_the_problem(tmp_path, text, match):
    path = tmp_path / "blfs.toml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=match):
        config.load(str(path))
