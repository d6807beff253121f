"""`blfsd.export`: this node's disk as an iSCSI target (issue 4, point 5).

The tgt path runs for real: a private tgtd (its own control port, its own portal on
127.0.0.1 and a free TCP port) serves a 64 MiB loop device, and libiscsi's userspace
initiator (`iscsi-ls`, `iscsi-readcapacity16`) logs in to it over TCP; these machines have
no kernel initiator (README, "Tests and benchmarks"). The LIO path cannot run here (no
LIO in this kernel): it is checked against a recording stand-in for targetcli that replays
each command on a fake configfs tree, asserting the exact argv sequence.

Cleanup, even when a test fails: every target created is deleted, the tgtd started here is
stopped (`tgtadm --op delete --mode system`, then SIGKILL by PID) and reaped, its control
socket files are removed, loop devices detached and images deleted.
"""
from __future__ import annotations

import ctypes
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
import uuid

import pytest

from blfsd import export
from blfsd.errors import StorageError
from blfsd.export import ExportError, export_disk, export_status, unexport_disk

try:
    from loopdev import SKIP_REASON as LOOP_SKIP, Resources, root
except ImportError:  # run from the repository root as tests/test_export.py
    from tests.loopdev import SKIP_REASON as LOOP_SKIP, Resources, root

MiB = 1 << 20
IQN = "iqn.2026-11.org.blfs.test:node1"
INIT_A = "iqn.2026-11.org.blfs.test:init-a"
INIT_B = "iqn.2026-11.org.blfs.test:init-b"
APT_PACKAGES = ("tgt", "libiscsi-bin")
TOOLS = ("tgtd", "tgtadm", "iscsi-ls", "iscsi-readcapacity16")

pytestmark = [root, pytest.mark.root]


# ------------------------------------------------------------------------------ helpers

def _missing_tools() -> list:
    return [t for t in TOOLS if shutil.which(t) is None]


def _install_tools() -> str | None:
    """Make sure tgt and libiscsi-bin are installed; None, or why they cannot be."""
    if not _missing_tools():
        return None
    if LOOP_SKIP:
        return LOOP_SKIP
    if shutil.which("apt-get") is None:
        return f"missing {', '.join(_missing_tools())} and no apt-get to install {APT_PACKAGES}"
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    install = ["apt-get", "install", "-y", "-qq", "--no-install-recommends", *APT_PACKAGES]
    proc = subprocess.run(install, capture_output=True, text=True, env=env, timeout=600)
    if proc.returncode != 0:
        subprocess.run(["apt-get", "update", "-qq"], capture_output=True, env=env, timeout=600)
        proc = subprocess.run(install, capture_output=True, text=True, env=env, timeout=600)
    if _missing_tools():
        tail = (proc.stderr.strip() or proc.stdout.strip()).splitlines()[-1:] or [""]
        return f"cannot install {' '.join(APT_PACKAGES)}: {tail[0]}"
    return None


def _free_tcp_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _unused_control_port() -> int:
    """A tgtd control port no daemon answers on, chosen at random (unique per run)."""
    for _ in range(100):
        port = 10000 + uuid.uuid4().int % 22000     # tgtd accepts -C 0..32767
        path = os.path.join(export.TGTD_SOCKET_DIR, f"socket.{port}")
        if not os.path.exists(path) and not os.path.exists(path + ".lock"):
            return port
    raise RuntimeError("no free tgtd control port")


def _tgtadm(control: int, *args: str, check: bool = True) -> subprocess.CompletedProcess:
    proc = subprocess.run(["tgtadm", "-C", str(control), *args], capture_output=True,
                          text=True, timeout=30)
    if check and proc.returncode != 0:
        raise RuntimeError(f"tgtadm {' '.join(args)}: {proc.stderr.strip()}")
    return proc


def _delete_all_targets(control: int) -> None:
    proc = _tgtadm(control, "--lld", "iscsi", "--op", "show", "--mode", "target", check=False)
    for tid in re.findall(r"^Target (\d+):", proc.stdout, re.M):
        _tgtadm(control, "--lld", "iscsi", "--op", "delete", "--mode", "target", "--force",
                "--tid", tid, check=False)


def _remove_sockets(control: int) -> None:
    for suffix in ("", ".lock"):
        try:
            os.unlink(os.path.join(export.TGTD_SOCKET_DIR, f"socket.{control}{suffix}"))
        except FileNotFoundError:
            pass


def _stop_tgtd(control: int, pids: list) -> None:
    """Delete every target, ask tgtd to exit, SIGKILL (by PID) what is left, reap."""
    _delete_all_targets(control)
    _tgtadm(control, "--op", "delete", "--mode", "system", check=False)
    deadline = time.monotonic() + 5
    alive = set(pids)
    while alive and time.monotonic() < deadline:
        for pid in list(alive):
            try:
                done, _ = os.waitpid(pid, os.WNOHANG)
            except ChildProcessError:
                done = pid
            if done:
                alive.discard(pid)
        time.sleep(0.05)
    for pid in alive:
        try:
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
        except (ProcessLookupError, ChildProcessError):
            pass
    _remove_sockets(control)


def _wait_for_tgtd(proc: subprocess.Popen, control: int, log: str, timeout: float = 10) -> None:
    path = os.path.join(export.TGTD_SOCKET_DIR, f"socket.{control}")
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            with open(log, errors="replace") as f:
                raise RuntimeError(f"tgtd exited with status {proc.returncode}: "
                                   f"{f.read().strip()[-500:]}")
        if os.path.exists(path) and _tgtadm(control, "--op", "show", "--mode", "sys",
                                            check=False).returncode == 0:
            return
        time.sleep(0.05)
    raise RuntimeError(f"tgtd did not answer on {path} within {timeout} s")


def iscsi_ls(port: int, initiator: str | None = None, may_be_empty: bool = False) -> str:
    """`iscsi-ls -s` against our portal: discovery, then a login to each target listed.
    With ``may_be_empty``, the portal may serve no target at all: libiscsi 1.19's iscsi-ls
    then exits 10 ("iscsi_service_reconnect_if_loggedin. Can not reconnect right now.")
    instead of printing nothing, which counts as an empty listing."""
    argv = ["iscsi-ls", "-s"]
    if initiator:
        argv += ["-i", initiator]
    argv.append(f"iscsi://127.0.0.1:{port}")
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=20)
    if may_be_empty and proc.returncode == 10 and not proc.stdout \
            and "Can not reconnect right now" in proc.stderr:
        return ""
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


def iscsi_ls_size(size: int) -> str:
    """What `iscsi-ls -s` prints as a LUN's size: it multiplies the *last* LBA (not the
    block count) by the block length and truncates to MiB, so 64 MiB shows as 63M."""
    return f"{(size // 512 - 1) * 512 // MiB}M"


# ------------------------------------------------------------------------------ fixtures

@pytest.fixture(scope="module")
def tgtd(tmp_path_factory):
    """A private tgtd in the foreground, a child of this process: its own control port
    and one portal on 127.0.0.1:<free port>. BLFS_TGT_CONTROL_PORT points blfsd at it."""
    why = _install_tools()
    if why:
        pytest.skip(why)
    log = str(tmp_path_factory.mktemp("tgtd") / "tgtd.log")
    proc, failure = None, ""
    for _attempt in range(3):
        control, port = _unused_control_port(), _free_tcp_port()
        with open(log, "w") as out:     # a file, not a pipe nobody drains
            proc = subprocess.Popen(["tgtd", "-f", "-C", str(control), "--iscsi",
                                     f"portal=127.0.0.1:{port}"],
                                    stdin=subprocess.DEVNULL, stdout=out, stderr=out)
        try:
            _wait_for_tgtd(proc, control, log)
            break
        except RuntimeError as e:
            failure = str(e)
            _stop_tgtd(control, [proc.pid])
            proc = None
    if proc is None:
        pytest.fail(f"could not start a private tgtd: {failure}")
    saved = os.environ.get("BLFS_TGT_CONTROL_PORT")
    os.environ["BLFS_TGT_CONTROL_PORT"] = str(control)
    try:
        yield {"control": control, "port": port, "portal": f"127.0.0.1:{port}", "pid": proc.pid}
    finally:
        if saved is None:
            os.environ.pop("BLFS_TGT_CONTROL_PORT", None)
        else:
            os.environ["BLFS_TGT_CONTROL_PORT"] = saved
        _stop_tgtd(control, [proc.pid])


@pytest.fixture
def disk(tmp_path):
    """A 64 MiB image behind a fresh loop device; detached after the test's targets are
    deleted (the `tgtd` fixture's teardown, or this one's own)."""
    res = Resources(tmp_path)
    cleanups = []
    try:
        image = res.image(64 * MiB, mkfs=False)
        device = res.loop(image)
        yield {"device": device, "image": image, "res": res, "cleanups": cleanups}
    finally:
        try:
            for undo in reversed(cleanups):
                undo()
        finally:
            res.close()


@pytest.fixture
def exported(tgtd, disk):
    """The tgtd and the disk, with every target on that tgtd deleted after the test
    (before the loop device is detached)."""
    disk["cleanups"].append(lambda: _delete_all_targets(tgtd["control"]))
    return tgtd, disk


# ------------------------------------------------------------------------------ tgt

def test_tgt_export_is_listed_by_iscsi_ls_with_its_size(exported, capsys):
    tgtd, disk = exported
    dev = disk["device"]
    portal = tgtd["portal"]

    ran = export_disk(dev, IQN, portal=portal, backend="auto")
    # auto = tgt here (no LIO). The portal already exists: target, LUN, ACL only.
    assert [c.split(" --lld iscsi ")[1] for c in ran] == [
        f"--op new --mode target --tid 1 --targetname {IQN}",
        f"--op new --mode logicalunit --tid 1 --lun 1 --backing-store {dev}",
        "--op bind --mode target --tid 1 --initiator-address ALL",
    ]
    assert all(c.startswith(f"{shutil.which('tgtadm')} --control-port {tgtd['control']} ")
               for c in ran)

    listing = iscsi_ls(tgtd["port"])
    with capsys.disabled():
        print(f"\n$ iscsi-ls -s iscsi://127.0.0.1:{tgtd['port']}\n{listing}", end="")
    assert f"Target:{IQN} Portal:127.0.0.1:{tgtd['port']},1" in listing
    assert re.search(rf"^Lun:1\s+Type:DIRECT_ACCESS \(Size:{iscsi_ls_size(64 * MiB)}\)$",
                     listing, re.M), listing
    # The exact capacity, over a second login to the LUN itself.
    cap = subprocess.run(["iscsi-readcapacity16",
                          f"iscsi://127.0.0.1:{tgtd['port']}/{IQN}/1"],
                         capture_output=True, text=True, timeout=20)
    assert cap.returncode == 0, cap.stderr
    assert f"Total size:{64 * MiB}" in cap.stdout

    # Idempotent: a second export changes nothing and runs nothing.
    assert export_disk(dev, IQN, portal=portal) == []

    status = [t for t in export_status() if t["iqn"] == IQN]
    assert len(status) == 1
    st = status[0]
    assert st["backend"] == "tgt" and st["tid"] == 1
    assert st["luns"] == [{"lun": 1, "device": dev, "size": 64 * MiB}]
    assert st["initiators"] == ["ALL"]
    assert portal in st["portals"]

    ran = unexport_disk(IQN)
    assert [c.split(" --lld iscsi ")[1] for c in ran] == ["--op delete --mode target --tid 1"]
    assert IQN not in iscsi_ls(tgtd["port"], may_be_empty=True)
    assert [t for t in export_status() if t["iqn"] == IQN] == []
    assert unexport_disk(IQN) == []


def test_tgt_initiator_acl(exported):
    tgtd, disk = exported
    dev, portal = disk["device"], tgtd["portal"]

    ran = export_disk(dev, IQN, portal=portal, backend="tgt", initiators=[INIT_A])
    assert ran[-1].endswith(f"--op bind --mode target --tid 1 --initiator-name {INIT_A}")
    assert IQN in iscsi_ls(tgtd["port"], INIT_A)
    assert IQN not in iscsi_ls(tgtd["port"], INIT_B)      # not on the list: target hidden
    assert export_disk(dev, IQN, portal=portal, initiators=[INIT_A]) == []

    # Widening to everyone binds ALL and drops the now redundant name.
    ran = export_disk(dev, IQN, portal=portal, initiators=None)
    assert [c.split(" --tid 1 ")[1] for c in ran] == [
        "--initiator-address ALL", f"--initiator-name {INIT_A}"]
    assert "--op unbind" in ran[1]
    assert IQN in iscsi_ls(tgtd["port"], INIT_B)
    [st] = [t for t in export_status() if t["iqn"] == IQN]
    assert st["initiators"] == ["ALL"]


def test_tgt_adds_a_missing_portal_and_a_second_lun(exported, tmp_path):
    tgtd, disk = exported
    port2 = _free_tcp_port()
    portal2 = f"127.0.0.1:{port2}"
    ran = export_disk(disk["device"], IQN, lun=1, portal=portal2)
    assert ran[0].endswith(f"--op new --mode portal --param portal={portal2}")
    assert IQN in iscsi_ls(port2)

    second = disk["res"].loop(disk["res"].image(8 * MiB, mkfs=False))
    ran = export_disk(second, IQN, lun=2, portal=portal2)
    assert [c.split(" --lld iscsi ")[1] for c in ran] == [
        f"--op new --mode logicalunit --tid 1 --lun 2 --backing-store {second}"]
    [st] = [t for t in export_status() if t["iqn"] == IQN]
    assert st["luns"] == [{"lun": 1, "device": disk["device"], "size": 64 * MiB},
                          {"lun": 2, "device": second, "size": 8 * MiB}]
    listing = iscsi_ls(port2)
    assert re.search(r"^Lun:2\s+Type:DIRECT_ACCESS \(Size:7M\)$", listing, re.M), listing


def test_tgt_errors_are_one_line_naming_the_device_or_target(exported, tmp_path):
    tgtd, disk = exported
    dev, portal = disk["device"], tgtd["portal"]

    def error(fn, *args, **kw) -> str:
        with pytest.raises(ExportError) as info:
            fn(*args, **kw)
        assert isinstance(info.value, StorageError)
        text = str(info.value)
        assert "\n" not in text
        return text

    missing = str(tmp_path / "no-such-disk")
    assert missing in error(export_disk, missing, IQN, portal=portal)
    assert "does not exist" in error(export_disk, missing, IQN, portal=portal)
    plain = tmp_path / "plain-file"
    plain.write_bytes(b"x")
    assert "not a block device" in error(export_disk, str(plain), IQN, portal=portal)
    assert "not a valid iSCSI target name" in error(export_disk, dev, "node1", portal=portal)
    assert "LUN 0" in error(export_disk, dev, IQN, lun=0, backend="tgt", portal=portal)
    assert "not a valid iSCSI initiator" in error(export_disk, dev, IQN, portal=portal,
                                                  initiators=["bob"])
    assert "unknown iSCSI target backend" in error(export_disk, dev, IQN, backend="iet")
    assert "is not an IP address" in error(export_disk, dev, IQN, portal="node2:3260")

    # The LUN is taken by another device: refused, naming both.
    export_disk(dev, IQN, portal=portal)
    other = disk["res"].loop(disk["res"].image(8 * MiB, mkfs=False))
    text = error(export_disk, other, IQN, portal=portal)
    assert other in text and IQN in text and dev in text

    # No tgtd on this control port: one clear line, nothing started.
    os.environ["BLFS_TGT_CONTROL_PORT"] = str(_unused_control_port())
    try:
        text = error(export_disk, dev, IQN, portal=portal, backend="tgt")
        assert "no tgtd is running" in text and dev in text and IQN in text
        assert export_status() == []
        assert unexport_disk(IQN, backend="tgt") == []
    finally:
        os.environ["BLFS_TGT_CONTROL_PORT"] = str(tgtd["control"])


PR_SET_CHILD_SUBREAPER = 36


def _children_running(control: int) -> list:
    pids = []
    for task in os.listdir("/proc/self/task"):
        try:
            with open(f"/proc/self/task/{task}/children") as f:
                pids += [int(p) for p in f.read().split()]
        except OSError:
            pass
    found = []
    for pid in pids:
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                argv = f.read().split(b"\0")
        except OSError:
            continue
        if os.path.basename(argv[0]) == b"tgtd" and str(control).encode() in argv:
            found.append(pid)
    return found


def test_start_tgtd_when_asked(disk, tmp_path):
    """export_disk(start_tgtd=True) starts a tgtd (which daemonizes) when none answers.
    This process is made a child subreaper for the test, so the daemon becomes its child
    and is stopped and reaped by PID at the end."""
    why = _install_tools()
    if why:
        pytest.skip(why)
    libc = ctypes.CDLL(None, use_errno=True)
    assert libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) == 0
    control, port = _unused_control_port(), _free_tcp_port()
    saved = os.environ.get("BLFS_TGT_CONTROL_PORT")
    os.environ["BLFS_TGT_CONTROL_PORT"] = str(control)
    try:
        ran = export_disk(disk["device"], IQN, portal=f"127.0.0.1:{port}", start_tgtd=True)
        assert ran[0] == f"{shutil.which('tgtd')} -C {control} --iscsi portal=127.0.0.1:{port}"
        assert ran[1].endswith(f"--op new --mode target --tid 1 --targetname {IQN}")
        assert IQN in iscsi_ls(port)
        # Now running: a second call neither starts another tgtd nor changes anything.
        assert export_disk(disk["device"], IQN, portal=f"127.0.0.1:{port}",
                           start_tgtd=True) == []
    finally:
        if saved is None:
            os.environ.pop("BLFS_TGT_CONTROL_PORT", None)
        else:
            os.environ["BLFS_TGT_CONTROL_PORT"] = saved
        pids = _children_running(control)
        _stop_tgtd(control, pids)
        # A daemon's own child may be handed to us when its parent exits: reap those too.
        _stop_tgtd(control, _children_running(control))
        libc.prctl(PR_SET_CHILD_SUBREAPER, 0, 0, 0, 0)
    assert _children_running(control) == []


# ------------------------------------------------------------------------------ LIO

# A stand-in for targetcli: records its argv (one JSON list per line) and replays the
# command on a fake LIO configfs tree, the way targetcli-fb/rtslib would change the real
# one (including targetcli's default portal 0.0.0.0:3260 on `/iscsi create` and the
# kernel's TPG attribute defaults).
STAND_IN = r'''#!PYTHON
import json, os, shutil, sys, uuid
root = os.environ["BLFS_LIO_CONFIGFS"]
with open(os.environ["BLFS_TEST_RECORD"], "a") as f:
    f.write(json.dumps(sys.argv[1:]) + "\n")
args = sys.argv[1:]
kv = dict(a.split("=", 1) for a in args if "=" in a)
def mk(*p):
    os.makedirs(os.path.join(root, *p), exist_ok=True)
    return os.path.join(root, *p)
def tpg(iqn):
    return os.path.join("iscsi", iqn, "tpgt_1")
if args[:2] == ["/backstores/block", "create"]:
    d = mk("core", "iblock_0", kv["name"])
    open(os.path.join(d, "udev_path"), "w").write(kv["dev"] + "\n")
elif args[:2] == ["/backstores/block", "delete"]:
    shutil.rmtree(os.path.join(root, "core", "iblock_0", args[2]))
elif args[:2] == ["/iscsi", "create"]:
    t = tpg(args[2])
    for sub in ("lun", "acls", "np/0.0.0.0:3260"):
        mk(t, sub)
    for k, v in {"generate_node_acls": "0", "demo_mode_write_protect": "1",
                 "authentication": "1", "cache_dynamic_acls": "0"}.items():
        open(os.path.join(mk(t, "attrib"), k), "w").write(v + "\n")
elif args[:2] == ["/iscsi", "delete"]:
    shutil.rmtree(os.path.join(root, "iscsi", args[2]))
elif len(args) >= 2 and args[0].startswith("/iscsi/"):
    iqn, rest = args[0].split("/")[2], args[0].split("/")[4:]
    t = tpg(iqn)
    if rest == ["luns"] and args[1] == "create":
        d = mk(t, "lun", "lun_" + kv["lun"])
        store = os.path.join(root, "core", "iblock_0", args[2].rsplit("/", 1)[1])
        assert os.path.isdir(store), store
        os.symlink(os.path.relpath(store, d), os.path.join(d, uuid.uuid4().hex[:10]))
    elif rest == ["portals"] and args[1] == "create":
        mk(t, "np", f"{args[2]}:{args[3]}")
    elif rest == ["portals"] and args[1] == "delete":
        os.rmdir(os.path.join(root, t, "np", f"{args[2]}:{args[3]}"))
    elif rest == ["acls"] and args[1] == "create":
        mk(t, "acls", args[2])
    elif rest == ["acls"] and args[1] == "delete":
        os.rmdir(os.path.join(root, t, "acls", args[2]))
    elif rest == [] and args[1:3] == ["set", "attribute"]:
        for a in args[3:]:
            k, v = a.split("=", 1)
            open(os.path.join(root, t, "attrib", k), "w").write(v + "\n")
    else:
        sys.exit("stand-in: unknown command " + " ".join(args))
elif args == ["saveconfig"]:
    pass
else:
    sys.exit("stand-in: unknown command " + " ".join(args))
'''


@pytest.fixture
def lio(tmp_path, monkeypatch):
    """A fake configfs tree and a recording targetcli stand-in; BLFS_TGTADM points at a
    tgtadm that fails loudly, so nothing may fall through to tgt."""
    configfs = tmp_path / "configfs-target"
    (configfs / "core").mkdir(parents=True)
    (configfs / "iscsi").mkdir()
    record = tmp_path / "targetcli.calls"
    record.touch()
    stand_in = tmp_path / "targetcli"
    stand_in.write_text(STAND_IN.replace("PYTHON", sys.executable, 1))
    stand_in.chmod(0o755)
    no_tgt = tmp_path / "tgtadm"
    no_tgt.write_text("#!/bin/sh\necho 'tgtadm must not run in LIO tests' >&2\nexit 99\n")
    no_tgt.chmod(0o755)
    monkeypatch.setenv("BLFS_LIO_CONFIGFS", str(configfs))
    monkeypatch.setenv("BLFS_TARGETCLI", str(stand_in))
    monkeypatch.setenv("BLFS_TEST_RECORD", str(record))
    monkeypatch.setenv("BLFS_TGTADM", str(no_tgt))

    def calls() -> list:
        lines = record.read_text().splitlines()
        record.write_text("")
        return [json.loads(line) for line in lines]

    return {"bin": str(stand_in), "configfs": configfs, "calls": calls}


def test_lio_export_runs_exactly_these_targetcli_commands(lio, disk):
    dev = disk["device"]
    store = "blfs-iqn_2026-11_org_blfs_test_node1-lun1"
    tpg = f"/iscsi/{IQN}/tpg1"

    ran = export_disk(dev, IQN)                            # auto: the fake configfs -> lio
    expected = [
        ["/backstores/block", "create", f"name={store}", f"dev={dev}"],
        ["/iscsi", "create", IQN],
        [f"{tpg}/luns", "create", f"/backstores/block/{store}", "lun=1"],
        # 0.0.0.0:3260 was made by targetcli itself: no portal command.
        [tpg, "set", "attribute", "authentication=0", "demo_mode_write_protect=0",
         "generate_node_acls=1", "cache_dynamic_acls=1"],
        ["saveconfig"],
    ]
    assert lio["calls"]() == expected
    assert ran == [" ".join([lio["bin"], *argv]) for argv in expected]

    assert export_disk(dev, IQN) == []                     # idempotent: nothing ran
    assert lio["calls"]() == []

    assert export_status() == [{"backend": "lio", "iqn": IQN, "tid": None,
                                "luns": [{"lun": 1, "device": dev, "size": 64 * MiB}],
                                "initiators": ["ALL"], "portals": ["0.0.0.0:3260"]}]

    assert unexport_disk(IQN, backend="lio") == [
        f"{lio['bin']} /iscsi delete {IQN}",
        f"{lio['bin']} /backstores/block delete {store}",
        f"{lio['bin']} saveconfig"]
    assert lio["calls"]() == [["/iscsi", "delete", IQN], ["/backstores/block", "delete", store],
                              ["saveconfig"]]
    assert export_status() == []
    assert unexport_disk(IQN) == [] and lio["calls"]() == []


def test_lio_export_with_acls_and_a_portal(lio, disk):
    dev = disk["device"]
    store = "blfs-iqn_2026-11_org_blfs_test_node1-lun3"
    tpg = f"/iscsi/{IQN}/tpg1"

    export_disk(dev, IQN, lun=3, backend="lio", portal="192.0.2.10:3261",
                initiators=[INIT_A, INIT_B])
    assert lio["calls"]() == [
        ["/backstores/block", "create", f"name={store}", f"dev={dev}"],
        ["/iscsi", "create", IQN],
        [f"{tpg}/luns", "create", f"/backstores/block/{store}", "lun=3"],
        [f"{tpg}/portals", "delete", "0.0.0.0", "3260"],
        [f"{tpg}/portals", "create", "192.0.2.10", "3261"],
        [tpg, "set", "attribute", "authentication=0", "generate_node_acls=0"],
        [f"{tpg}/acls", "create", INIT_A],
        [f"{tpg}/acls", "create", INIT_B],
        ["saveconfig"],
    ]
    [st] = export_status()
    assert st["initiators"] == [INIT_A, INIT_B] and st["portals"] == ["192.0.2.10:3261"]

    # Narrowing the list deletes the ACL that is no longer wanted, and only that.
    export_disk(dev, IQN, lun=3, backend="lio", portal="192.0.2.10:3261", initiators=[INIT_A])
    assert lio["calls"]() == [[f"{tpg}/acls", "delete", INIT_B], ["saveconfig"]]

    # The device is already a backstore: a second target's LUN reuses it (LIO opens a
    # block device exclusively, so a second backstore over it could not be created).
    other = "iqn.2026-11.org.blfs.test:node1-alias"
    export_disk(dev, other, lun=1, backend="lio")
    assert lio["calls"]()[:2] == [
        ["/iscsi", "create", other],
        [f"/iscsi/{other}/tpg1/luns", "create", f"/backstores/block/{store}", "lun=1"]]


def test_lio_backend_needs_lio(monkeypatch, tmp_path, disk):
    monkeypatch.setenv("BLFS_LIO_CONFIGFS", str(tmp_path / "absent"))
    with pytest.raises(ExportError, match="no LIO in this kernel"):
        export_disk(disk["device"], IQN, backend="lio")
