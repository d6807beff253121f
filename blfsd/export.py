"""Export this node's disk as an iSCSI target (`blfs-iscsi export`, issue 4 point 5).

Every node's shuffle disk must be reachable by every other node's initiator. This module
configures the target side: the node's block device becomes LUN ``lun`` of target ``iqn``,
reachable through ``portal``, open to every initiator or to a list of initiator IQNs.

Two backends, chosen by ``backend="auto"``:

``lio``
    The Linux kernel target, driven by ``targetcli`` (targetcli-fb). Chosen when
    ``/sys/kernel/config/target`` exists and ``targetcli`` is installed. The current state
    (backstores, targets, LUNs, portals, ACLs, TPG attributes) is read from that configfs
    tree, which is the state targetcli itself shows; only the missing pieces are created,
    then ``targetcli saveconfig`` makes them survive a reboot (``target.service`` restores
    ``/etc/target/saveconfig.json``). The backstore is named ``blfs-<iqn>-lun<N>`` with
    every character outside ``[A-Za-z0-9_-]`` replaced by ``_``; ``unexport_disk`` deletes
    only backstores carrying that ``blfs-`` prefix. New LUNs are mapped to existing ACLs by
    targetcli's default ``auto_add_mapped_luns=true``.
    *This path cannot run on the development and CI machines* (their kernel has no LIO):
    it is tested only against a recording stand-in for targetcli that replays each command
    on a fake configfs tree (tests/test_export.py). To check it on a real node:
    ``blfs-iscsi export`` then ``targetcli ls /iscsi`` and, from a peer,
    ``iscsiadm -m discovery -t st -p HOST`` or ``iscsi-ls -s iscsi://HOST``.

``tgt``
    The userspace target daemon ``tgtd`` (Debian package ``tgt``), driven by ``tgtadm``.
    Used wherever the kernel has no LIO. It needs a running tgtd: on a systemd host
    ``systemctl enable --now tgt``. If none answers, ``export_disk`` fails with one line
    saying so, unless it is called with ``start_tgtd=True`` (for a command-line flag
    such as ``blfs-iscsi export --start-tgtd``), which runs ``tgtd --iscsi portal=PORTAL`` (it daemonizes itself) and
    waits for its control socket. tgtd keeps its configuration in memory only: after tgtd
    restarts, run ``blfs-iscsi export`` again (it is idempotent), or persist it with
    ``tgt-admin --dump > /etc/tgt/conf.d/blfs.conf``. LUN 0 of every tgt target is tgt's own
    controller LUN, so tgt exports need ``lun >= 1``. Portals are per daemon in tgt: a
    missing one is added with ``tgtadm --op new --mode portal`` and never removed by
    ``unexport_disk`` (other targets may use it).

Idempotence: state is read first and only what is missing or different is changed, so a
second identical call runs nothing and returns ``[]``. The lists returned by
``export_disk`` and ``unexport_disk`` hold the *changing* commands that were run, each one
shell-quoted (``shlex.join``), for ``blfs-iscsi export`` to print; read-only queries
(``tgtadm --op show``) are not listed.

Every external command goes through ``_run`` (subprocess with a timeout). The binaries
come from ``$BLFS_TGTADM``, ``$BLFS_TGTD``, ``$BLFS_TARGETCLI`` when set (tests put
recording stand-ins there), else from ``PATH``. ``$BLFS_TGT_CONTROL_PORT`` selects which
tgtd instance to talk to (``tgtadm --control-port N``, socket ``/run/tgtd/socket.N``,
N in 0..32767; default 0, the system daemon), and ``$BLFS_LIO_CONFIGFS`` the configfs root (default
``/sys/kernel/config/target``; tests only).

Errors are ``ExportError`` (a ``StorageError``), one line naming the device or target.
"""
from __future__ import annotations

import ipaddress
import os
import re
import shlex
import shutil
import socket
import stat
import subprocess
import time
from typing import Optional

from .errors import StorageError
from .transport import format_address

LIO_CONFIGFS = "/sys/kernel/config/target"
TGTD_SOCKET_DIR = "/run/tgtd"
DEFAULT_PORTAL = "0.0.0.0:3260"
COMMAND_TIMEOUT = 30.0      # seconds for one tgtadm call
TARGETCLI_TIMEOUT = 60.0    # targetcli loads rtslib and walks configfs: slower
TGTD_START_TIMEOUT = 10.0
BACKSTORE_PREFIX = "blfs-"
ALL = "ALL"                 # in export_status()["initiators"]: any initiator may log in

_IQN_RE = re.compile(r"^(iqn\.\d{4}-\d{2}\.[A-Za-z0-9][A-Za-z0-9.-]*(:[^\s/]+)?"
                     r"|eui\.[0-9A-Fa-f]{16}|naa\.[0-9A-Fa-f]{16}([0-9A-Fa-f]{16})?)$")


class ExportError(StorageError):
    """An export, unexport or status query failed; str() is one line naming what."""

    code = "export"


# ------------------------------------------------------------------------ commands

def _tgtadm_bin() -> str:
    return os.environ.get("BLFS_TGTADM") or shutil.which("tgtadm") or "tgtadm"


def _tgtd_bin() -> str:
    return os.environ.get("BLFS_TGTD") or shutil.which("tgtd") or "tgtd"


def _targetcli_bin() -> str:
    return os.environ.get("BLFS_TARGETCLI") or shutil.which("targetcli") or "targetcli"


def _lio_root() -> str:
    return os.environ.get("BLFS_LIO_CONFIGFS") or LIO_CONFIGFS


def _control_port() -> int:
    raw = os.environ.get("BLFS_TGT_CONTROL_PORT", "").strip()
    if not raw:
        return 0
    try:
        port = int(raw)
    except ValueError:
        raise ExportError(f"BLFS_TGT_CONTROL_PORT={raw!r} is not a number") from None
    if not 0 <= port <= 32767:
        raise ExportError(f"BLFS_TGT_CONTROL_PORT={raw!r} is out of tgtd's range 0..32767")
    return port


def _one_line(text: str) -> str:
    lines = [ln.strip() for ln in (text or "").splitlines() if ln.strip()]
    return lines[-1] if lines else ""


def _run(argv: list, *, timeout: float = COMMAND_TIMEOUT, check: bool = True,
         what: str = "") -> subprocess.CompletedProcess:
    """Run one command (no shell), capturing its output; every command of this module
    passes here. On failure (``check``), a missing binary or a timeout, raise ExportError
    with one line: ``what``, the command and the last line of its error output."""
    argv = [str(a) for a in argv]
    prefix = f"{what}: " if what else ""
    try:
        proc = subprocess.run(argv, stdin=subprocess.DEVNULL, capture_output=True, text=True,
                              timeout=timeout)
    except FileNotFoundError:
        raise ExportError(f"{prefix}{argv[0]} is not installed") from None
    except subprocess.TimeoutExpired:
        raise ExportError(f"{prefix}{shlex.join(argv)} timed out after {timeout:g} s") from None
    if check and proc.returncode != 0:
        detail = (_one_line(proc.stderr) or _one_line(proc.stdout)
                  or f"exit status {proc.returncode}")
        raise ExportError(f"{prefix}{shlex.join(argv)} failed: {detail}")
    return proc


def _change(argv: list, done: list, **kw) -> subprocess.CompletedProcess:
    """Run a command that changes the target configuration and record it in ``done``."""
    proc = _run(argv, **kw)
    done.append(shlex.join(str(a) for a in argv))
    return proc


# ------------------------------------------------------------------------ checks

def _check_iqn(name: str, role: str = "target") -> str:
    if not isinstance(name, str) or not _IQN_RE.match(name):
        raise ExportError(f"{name!r} is not a valid iSCSI {role} name "
                          "(iqn.YYYY-MM.reversed.domain[:id], eui.<16 hex> or naa.<hex>)")
    return name


def _check_lun(lun: int, iqn: str, low: int) -> int:
    if isinstance(lun, bool) or not isinstance(lun, int) or not low <= lun <= 255:
        raise ExportError(f"target {iqn}: LUN {lun!r} is out of range ({low}..255)")
    return lun


def _check_device(device: str, iqn: str) -> str:
    try:
        st = os.stat(device)
    except FileNotFoundError:
        raise ExportError(f"cannot export {device} as {iqn}: the device does not exist") from None
    except OSError as e:
        raise ExportError(f"cannot export {device} as {iqn}: {e.strerror}") from None
    if not stat.S_ISBLK(st.st_mode):
        raise ExportError(f"cannot export {device} as {iqn}: not a block device")
    return os.path.realpath(device)


def _split_portal(portal: str) -> tuple:
    """'IP:PORT', '[IPv6]:PORT' or 'IP' -> (ip, port); the IP is validated."""
    text = (portal or "").strip()
    m = re.match(r"^\[([^\]]+)\](?::(\d+))?$", text) or re.match(r"^([^:]+)(?::(\d+))?$", text)
    if not m:
        raise ExportError(f"portal {portal!r} is not IP:PORT")
    host, port = m.group(1), int(m.group(2) or 3260)
    try:
        ipaddress.ip_address(host)
    except ValueError:
        raise ExportError(f"portal {portal!r}: {host!r} is not an IP address") from None
    if not 0 < port < 65536:
        raise ExportError(f"portal {portal!r}: port {port} is out of range")
    return host, port


def _portal_covered(want: tuple, have: list) -> bool:
    """Is portal ``want`` already served, exactly or by a wildcard on the same port?"""
    host, port = want
    for h, p in have:
        if p != port:
            continue
        if ipaddress.ip_address(h) == ipaddress.ip_address(host):
            return True
        if h in ("0.0.0.0", "::") and ipaddress.ip_address(h).version == \
                ipaddress.ip_address(host).version:
            return True
    return False


def _device_size(path: Optional[str]) -> Optional[int]:
    if not path:
        return None
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        return None
    try:
        return os.lseek(fd, 0, os.SEEK_END)
    except OSError:
        return None
    finally:
        os.close(fd)


def _initiator_list(initiators: Optional[list]) -> list:
    if initiators is None:
        return [ALL]
    if isinstance(initiators, str):
        initiators = [initiators]
    names = []
    for name in initiators:
        if name == ALL:
            return [ALL]
        _check_iqn(name, "initiator")
        if name not in names:
            names.append(name)
    if not names:
        raise ExportError("an empty initiator list would let no node log in "
                          "(pass None to allow every initiator)")
    return names


def _pick_backend(backend: str) -> str:
    if backend == "auto":
        if os.path.isdir(_lio_root()) and (os.environ.get("BLFS_TARGETCLI")
                                           or shutil.which("targetcli")):
            return "lio"
        return "tgt"
    if backend not in ("lio", "tgt"):
        raise ExportError(f"unknown iSCSI target backend {backend!r} (auto, lio or tgt)")
    if backend == "lio" and not os.path.isdir(_lio_root()):
        raise ExportError(f"backend lio: {_lio_root()} is missing "
                          "(no LIO in this kernel: modprobe target_core_mod, or use tgt)")
    return backend


# ------------------------------------------------------------------------ tgt

def _tgtadm(*args) -> list:
    argv = [_tgtadm_bin()]
    port = _control_port()
    if port:
        argv += ["--control-port", str(port)]
    return argv + ["--lld", "iscsi", *args]


def _tgtd_socket() -> str:
    return os.path.join(TGTD_SOCKET_DIR, f"socket.{_control_port()}")


def _tgtd_answers() -> bool:
    """Does a tgtd listen on our control socket? (A stale socket file does not count.)"""
    if os.environ.get("BLFS_TGTADM"):
        # A stand-in tgtadm: ask it rather than a socket that may not exist.
        return _run(_tgtadm("--op", "show", "--mode", "sys"), check=False).returncode == 0
    path = _tgtd_socket()
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        s.settimeout(2)
        s.connect(path)
        return True
    except OSError:
        return False
    finally:
        s.close()


def _need_tgtd(what: str) -> None:
    if not _tgtd_answers():
        raise ExportError(f"{what}: no tgtd is running (control socket {_tgtd_socket()}); "
                          "start it (systemctl start tgt, or tgtd) or use --start-tgtd")


def _start_tgtd(portal: str, done: list, what: str) -> None:
    argv = [_tgtd_bin()]
    port = _control_port()
    if port:
        argv += ["-C", str(port)]
    argv += ["--iscsi", f"portal={format_address(*_split_portal(portal))}"]
    _change(argv, done, what=what)     # tgtd forks into the background and returns
    deadline = time.monotonic() + TGTD_START_TIMEOUT
    while not _tgtd_answers():
        if time.monotonic() > deadline:
            raise ExportError(f"{what}: started tgtd, but its control socket {_tgtd_socket()} "
                              f"did not answer within {TGTD_START_TIMEOUT:g} s")
        time.sleep(0.05)


def parse_tgt_show(text: str) -> list:
    """Parse ``tgtadm --lld iscsi --op show --mode target`` into export_status() dicts
    (without "portals"). LUN 0, tgt's controller LUN, is left out."""
    targets: list = []
    at = {"target": None, "section": None, "lun": None}  # where in the listing we are
    for raw in text.splitlines():
        line = raw.strip()
        if line:
            _tgt_show_line(line, len(raw) - len(raw.lstrip()), at, targets)
    for target in targets:
        target["luns"] = [_tgt_lun_entry(lun) for lun in target["luns"]
                          if lun["_type"] != "controller" and lun["device"] is not None]
    return targets


def _tgt_show_line(line: str, indent: int, at: dict, targets: list) -> None:
    """One line of `tgtadm --op show`: a target, a section header, or a section's line."""
    m = re.match(r"^Target (\d+): (\S+)$", line)
    if indent == 0 and m:
        at["target"] = {"backend": "tgt", "iqn": m.group(2), "tid": int(m.group(1)),
                        "luns": [], "initiators": [], "sessions": []}
        targets.append(at["target"])
        at["section"] = at["lun"] = None
        return
    target = at["target"]
    if target is None:
        return
    if indent == 4 and line.endswith(":"):
        at["section"], at["lun"] = line[:-1], None
    elif at["section"] == "LUN information":
        _tgt_lun_line(line, at, target)
    elif at["section"] == "ACL information":
        target["initiators"].append(line)
    elif at["section"] == "I_T nexus information":
        m = re.match(r"^Initiator: (\S+)", line)
        if m:
            target["sessions"].append(m.group(1))


def _tgt_lun_line(line: str, at: dict, target: dict) -> None:
    m = re.match(r"^LUN: (\d+)$", line)
    if m:
        at["lun"] = {"lun": int(m.group(1)), "device": None, "size": None, "_mb": None,
                     "_type": None}
        target["luns"].append(at["lun"])
        return
    lun = at["lun"]
    if lun is None:
        return
    key, _, value = line.partition(":")
    value = value.strip()
    if key == "Type":
        lun["_type"] = value
    elif key == "Size":
        m = re.match(r"^(\d+) MB", value)
        if m:
            lun["_mb"] = int(m.group(1))
    elif key == "Backing store path":
        lun["device"] = None if value in ("", "None") else value


def _tgt_lun_entry(lun: dict) -> dict:
    size = _device_size(lun["device"])
    if size is None and lun["_mb"] is not None:
        size = lun["_mb"] * 1000 * 1000   # tgtadm rounds to decimal MB
    return {"lun": lun["lun"], "device": lun["device"], "size": size}


def parse_tgt_portals(text: str) -> list:
    """``tgtadm --op show --mode portal`` ("Portal: 0.0.0.0:3260,1") -> [(ip, port)]."""
    out = []
    for line in text.splitlines():
        m = re.match(r"^\s*Portal:\s*(\S+?)(,\d+)?\s*$", line)
        if m:
            try:
                out.append(_split_portal(m.group(1)))
            except ExportError:
                continue
    return out


def _tgt_targets(what: str) -> list:
    return parse_tgt_show(_run(_tgtadm("--op", "show", "--mode", "target"), what=what).stdout)


def _tgt_portals(what: str) -> list:
    return parse_tgt_portals(_run(_tgtadm("--op", "show", "--mode", "portal"), what=what).stdout)


def _tgt_find(iqn: str, what: str) -> Optional[dict]:
    for t in _tgt_targets(what):
        if t["iqn"] == iqn:
            return t
    return None


def _tgt_export(device: str, real: str, iqn: str, lun: int, portal: str, allowed: list,
                start_tgtd: bool) -> list:
    what = f"cannot export {device} as {iqn} LUN {lun}"
    done: list = []
    if not _tgtd_answers():
        if not start_tgtd:
            _need_tgtd(what)
        _start_tgtd(portal, done, what)

    want = _split_portal(portal)
    if not _portal_covered(want, _tgt_portals(what)):
        _change(_tgtadm("--op", "new", "--mode", "portal", "--param",
                        f"portal={format_address(*want)}"), done, what=what)

    target = _tgt_target(iqn, done, what)
    tid = str(target["tid"])
    current = {entry["lun"]: entry for entry in target["luns"]}
    if lun in current:
        there = current[lun]["device"]
        if there is None or os.path.realpath(there) != real:
            raise ExportError(f"{what}: LUN {lun} of that target already exports {there}")
    else:
        _change(_tgtadm("--op", "new", "--mode", "logicalunit", "--tid", tid, "--lun", str(lun),
                        "--backing-store", real), done, what=what)
    _tgt_initiators(tid, target["initiators"], allowed, done, what)
    return done


def _tgt_target(iqn: str, done: list, what: str) -> dict:
    """The target named iqn, created with the next free tid if there is none."""
    target = _tgt_find(iqn, what)
    failure = ""
    for _attempt in range(5):
        if target is not None:
            return target
        tid = max([t["tid"] for t in _tgt_targets(what)], default=0) + 1
        argv = _tgtadm("--op", "new", "--mode", "target", "--tid", str(tid), "--targetname", iqn)
        proc = _run(argv, check=False, what=what)
        if proc.returncode == 0:
            done.append(shlex.join(argv))
        else:   # most likely a concurrent export took that tid: look again, then retry
            failure = f"{shlex.join(argv)} failed: {_one_line(proc.stderr) or proc.returncode}"
        target = _tgt_find(iqn, what)
    if target is None:
        raise ExportError(f"{what}: {failure or 'tgtadm could not create the target'}")
    return target


def _tgt_initiators(tid: str, have: list, allowed: list, done: list, what: str) -> None:
    """Bind the initiators allowed, unbind the others."""
    for name in allowed:
        if name not in have:
            flag = "--initiator-address" if name == ALL else "--initiator-name"
            _change(_tgtadm("--op", "bind", "--mode", "target", "--tid", tid, flag, name),
                    done, what=what)
    for name in have:
        if name not in allowed:
            flag = "--initiator-name" if _IQN_RE.match(name) else "--initiator-address"
            _change(_tgtadm("--op", "unbind", "--mode", "target", "--tid", tid, flag, name),
                    done, what=what)


def _tgt_unexport(iqn: str, force: bool) -> list:
    what = f"cannot unexport target {iqn}"
    done: list = []
    if not _tgtd_answers():
        return done     # no daemon, no target: nothing is exported
    target = _tgt_find(iqn, what)
    if target is None:
        return done
    if target["sessions"] and not force:
        raise ExportError(f"{what}: initiators are logged in ({', '.join(target['sessions'])}); "
                          "log them out first or force")
    argv = _tgtadm("--op", "delete", "--mode", "target", "--tid", str(target["tid"]))
    if force:
        argv.append("--force")
    _change(argv, done, what=what)
    return done


def _tgt_status() -> list:
    what = "cannot read the tgt exports"
    if not (os.environ.get("BLFS_TGTADM") or shutil.which("tgtadm")) or not _tgtd_answers():
        return []
    portals = [format_address(*p) for p in _tgt_portals(what)]
    targets = _tgt_targets(what)
    for t in targets:
        t["portals"] = list(portals)
    return targets


# ------------------------------------------------------------------------ LIO

def _targetcli(*args) -> list:
    return [_targetcli_bin(), *args]


def _read(path: str) -> Optional[str]:
    try:
        with open(path) as f:
            return f.read().strip()
    except OSError:
        return None


def _listdir(path: str) -> list:
    try:
        return sorted(os.listdir(path))
    except OSError:
        return []


def _backstore_name(iqn: str, lun: int) -> str:
    return BACKSTORE_PREFIX + re.sub(r"[^A-Za-z0-9_-]", "_", iqn) + f"-lun{lun}"


def _lio_backstores() -> dict:
    """{name: {"dir": path, "device": udev_path or None}} for every block backstore."""
    root = os.path.join(_lio_root(), "core")
    out = {}
    for hba in _listdir(root):
        if not hba.startswith("iblock_"):
            continue
        for name in _listdir(os.path.join(root, hba)):
            d = os.path.join(root, hba, name)
            if os.path.isdir(d):
                dev = _read(os.path.join(d, "udev_path")) or None
                out[name] = {"dir": d, "device": dev}
    return out


def _lio_tpg(iqn: str) -> str:
    return os.path.join(_lio_root(), "iscsi", iqn, "tpgt_1")


def _lio_lun_backstore(lun_dir: str) -> Optional[str]:
    """The backstore name a LUN directory links to (its one symlink)."""
    for entry in _listdir(lun_dir):
        p = os.path.join(lun_dir, entry)
        if os.path.islink(p):
            return os.path.basename(os.path.normpath(os.readlink(p)))
    return None


def _lio_target(iqn: str) -> Optional[dict]:
    tpg = _lio_tpg(iqn)
    if not os.path.isdir(os.path.join(_lio_root(), "iscsi", iqn)):
        return None
    stores = _lio_backstores()
    luns = []
    for entry in _listdir(os.path.join(tpg, "lun")):
        m = re.match(r"^lun_(\d+)$", entry)
        if not m:
            continue
        name = _lio_lun_backstore(os.path.join(tpg, "lun", entry))
        dev = stores.get(name, {}).get("device") if name else None
        luns.append({"lun": int(m.group(1)), "device": dev, "size": _device_size(dev),
                     "backstore": name})
    attrib = {k: _read(os.path.join(tpg, "attrib", k))
              for k in ("generate_node_acls", "demo_mode_write_protect", "authentication",
                        "cache_dynamic_acls")}
    acls = [a for a in _listdir(os.path.join(tpg, "acls"))
            if os.path.isdir(os.path.join(tpg, "acls", a))]
    portals = []
    for np in _listdir(os.path.join(tpg, "np")):
        try:
            portals.append(_split_portal(np))
        except ExportError:
            continue
    initiators = [ALL] if attrib["generate_node_acls"] == "1" else acls
    return {"backend": "lio", "iqn": iqn, "tid": None,
            "luns": sorted(luns, key=lambda x: x["lun"]), "initiators": initiators,
            "acls": acls, "attrib": attrib, "portals": portals}


def _lio_export(device: str, real: str, iqn: str, lun: int, portal: str, allowed: list) -> list:
    what = f"cannot export {device} as {iqn} LUN {lun}"
    done: list = []
    run = dict(what=what, timeout=TARGETCLI_TIMEOUT)
    store = _lio_backstore(real, iqn, lun, done, run)

    target = _lio_target(iqn)
    created = target is None
    if created:
        _change(_targetcli("/iscsi", "create", iqn), done, **run)
        target = _lio_target(iqn) or {"luns": [], "acls": [], "attrib": {}, "portals": []}
    tpg = f"/iscsi/{iqn}/tpg1"

    current = {entry["lun"]: entry for entry in target["luns"]}
    if lun in current:
        if current[lun]["backstore"] != store:
            raise ExportError(f"{what}: LUN {lun} of that target already exports "
                              f"{current[lun]['device'] or current[lun]['backstore']}")
    else:
        _change(_targetcli(f"{tpg}/luns", "create", f"/backstores/block/{store}", f"lun={lun}"),
                done, **run)

    want = _split_portal(portal)
    if not _portal_covered(want, target["portals"]):
        if created and want != ("0.0.0.0", 3260) and ("0.0.0.0", 3260) in target["portals"]:
            # targetcli's auto_add_default_portal made one we did not ask for, and a
            # wildcard on 3260 would keep the asked one from binding.
            _change(_targetcli(f"{tpg}/portals", "delete", "0.0.0.0", "3260"), done, **run)
        _change(_targetcli(f"{tpg}/portals", "create", want[0], str(want[1])), done, **run)

    _lio_access(tpg, target, allowed, done, run)
    if done:
        _change(_targetcli("saveconfig"), done, **run)
    return done


def _lio_backstore(real: str, iqn: str, lun: int, done: list, run: dict) -> str:
    """A backstore over the device: one already there (LIO opens it exclusively), or ours."""
    stores = _lio_backstores()
    store = next((n for n, s in stores.items()
                  if s["device"] and os.path.realpath(s["device"]) == real), None)
    if store is None:
        store = _backstore_name(iqn, lun)
        if store in stores:
            raise ExportError(f"{run['what']}: backstore {store} already exists over "
                              f"{stores[store]['device']}")
        _change(_targetcli("/backstores/block", "create", f"name={store}", f"dev={real}"),
                done, **run)
    return store


def _lio_access(tpg: str, target: dict, allowed: list, done: list, run: dict) -> None:
    """Anyone (demo mode, no authentication) or exactly the initiators allowed (ACLs)."""
    attrib = target["attrib"]
    if allowed == [ALL]:
        wanted = {"authentication": "0", "demo_mode_write_protect": "0",
                  "generate_node_acls": "1", "cache_dynamic_acls": "1"}
        if any(attrib.get(k) != v for k, v in wanted.items()):
            _change(_targetcli(tpg, "set", "attribute",
                               *(f"{k}={v}" for k, v in wanted.items())), done, **run)
        return
    if attrib.get("generate_node_acls") != "0" or attrib.get("authentication") != "0":
        _change(_targetcli(tpg, "set", "attribute", "authentication=0",
                           "generate_node_acls=0"), done, **run)
    for name in allowed:
        if name not in target["acls"]:
            _change(_targetcli(f"{tpg}/acls", "create", name), done, **run)
    for name in target["acls"]:
        if name not in allowed:
            _change(_targetcli(f"{tpg}/acls", "delete", name), done, **run)


def _lio_unexport(iqn: str) -> list:
    what = f"cannot unexport target {iqn}"
    done: list = []
    run = dict(what=what, timeout=TARGETCLI_TIMEOUT)
    target = _lio_target(iqn)
    if target is None:
        return done
    _change(_targetcli("/iscsi", "delete", iqn), done, **run)
    for entry in target["luns"]:
        name = entry["backstore"]
        if name and name.startswith(BACKSTORE_PREFIX) and name in _lio_backstores():
            _change(_targetcli("/backstores/block", "delete", name), done, **run)
    _change(_targetcli("saveconfig"), done, **run)
    return done


def _lio_status() -> list:
    if not os.path.isdir(_lio_root()):
        return []
    out = []
    for iqn in _listdir(os.path.join(_lio_root(), "iscsi")):
        if os.path.isdir(os.path.join(_lio_root(), "iscsi", iqn)) and _IQN_RE.match(iqn):
            t = _lio_target(iqn)
            if t is not None:
                out.append({"backend": "lio", "iqn": iqn, "tid": None,
                            "luns": [{k: e[k] for k in ("lun", "device", "size")}
                                     for e in t["luns"]],
                            "initiators": t["initiators"],
                            "portals": [format_address(*p) for p in t["portals"]]})
    return out


# ------------------------------------------------------------------------ public API

def export_disk(device: str, iqn: str, lun: int = 1, backend: str = "auto",
                portal: str = DEFAULT_PORTAL, initiators: list | None = None, *,
                start_tgtd: bool = False) -> list[str]:
    """Make block device ``device`` LUN ``lun`` of iSCSI target ``iqn``, reachable on
    ``portal`` ("IP:PORT"), by every initiator (``initiators=None``) or only by the given
    initiator IQNs (others already allowed are removed). ``backend``: "auto" (lio when
    the kernel has LIO and targetcli is installed, else tgt), "lio" or "tgt".

    tgt needs a running tgtd; without one this raises ExportError ("no tgtd is running"),
    unless ``start_tgtd`` is true: then ``tgtd --iscsi portal=PORTAL`` is started (it
    daemonizes) and waited for. Idempotent: returns the changing commands run, shell-
    quoted, so ``[]`` when everything was already in place. Raises ExportError (a
    StorageError), one line naming the device and target.
    """
    _check_iqn(iqn)
    chosen = _pick_backend(backend)
    _check_lun(lun, iqn, 1 if chosen == "tgt" else 0)
    real = _check_device(device, iqn)
    _split_portal(portal)
    allowed = _initiator_list(initiators)
    if chosen == "lio":
        return _lio_export(device, real, iqn, lun, portal, allowed)
    return _tgt_export(device, real, iqn, lun, portal, allowed, start_tgtd)


def export_status() -> list[dict]:
    """Every exported target, LIO's (from configfs) then tgt's (``tgtadm --op show``):
    {"backend": "lio"|"tgt", "iqn", "tid" (tgt; None for lio),
     "luns": [{"lun", "device", "size" (bytes, None if unknown)}],
     "initiators": ["ALL"] (any initiator) or the allowed initiator names,
     "portals": ["IP:PORT", ...]} and, for tgt, "sessions": logged-in initiator names.
    A backend that is absent (no LIO, no tgtd running) contributes nothing."""
    return _lio_status() + _tgt_status()


def unexport_disk(iqn: str, backend: str = "auto", *, force: bool = False) -> list[str]:
    """Remove target ``iqn`` (and, for LIO, the blfs- backstores behind it). Idempotent:
    returns the changing commands run, ``[]`` when the target did not exist. tgt refuses
    while initiators are logged in unless ``force``."""
    _check_iqn(iqn)
    chosen = _pick_backend(backend)
    if chosen == "lio":
        return _lio_unexport(iqn)
    return _tgt_unexport(iqn, force)
