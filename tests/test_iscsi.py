"""blfs-iscsi: attaching, mounting and preparing the shared disks of a node (issue 4).

Three nodes on one machine: each node runs in a mount namespace of its own (a held-open
``unshare --mount --propagation private sleep``, entered with ``nsenter -m``), each node has
its own disk image, and each node sees every disk through a loop device of its own: its own
disk read-write through one, every peer's disk through another (9 loop devices for 3 nodes;
another host's view of a disk = a second loop device over the same image, tests/loopdev.py).
The ``block:`` URLs in each node's config point at that node's loop devices.

The kernel here has no iSCSI initiator, so the iscsiadm path runs against a recording
stand-in that logs its argv and makes the /dev/disk/by-path link (to a loop device) that a
real login would make; everything after the login runs for real.
"""
from __future__ import annotations

import asyncio
import configparser
import hashlib
import json
import os
import re
import select
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import types

import pytest

try:
    from loopdev import SKIP_REASON, Resources, loop_backing_file, run
except ImportError:  # tests/ imported as a package
    from tests.loopdev import SKIP_REASON, Resources, loop_backing_file, run

from blfsd import iscsi, storage

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
UNITS = os.path.join(REPO, "units")
MiB = 1 << 20

_TOOLS = ("unshare", "nsenter", "blkid", "dumpe2fs", "filefrag", "mkswap")


def _why_not() -> str | None:
    if SKIP_REASON:
        return SKIP_REASON
    missing = [t for t in _TOOLS if shutil.which(t) is None]
    return "missing tools: " + ", ".join(missing) if missing else None


WHY_NOT = _why_not()
root = pytest.mark.skipif(WHY_NOT is not None, reason=WHY_NOT or "")


# ------------------------------------------------------------------------------ helpers

def closed_port() -> int:
    """A local TCP port nobody listens on (connections are refused at once)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def write_config(path, own: str, disks: dict, disks_root, *, slots: int = 4,
                 slot_size: str = "1M", addresses: dict | None = None, key_file=None,
                 iscsi_section: str = "", node_extra: dict | None = None) -> str:
    """One node's /etc/blfs/blfs.toml. `disks`: node name -> disk URL."""
    port = closed_port()
    lines = [
        "[cluster]",
        f'key_file = "{key_file or os.path.join(os.path.dirname(str(path)), "no.key")}"',
        f'master = "127.0.0.1:{port}"',
        "[master]",
        f'socket = "{os.path.dirname(str(path))}/no-master.sock"',
        "[worker]",
        f'name = "{own}"',
        f'disks_root = "{disks_root}"',
        "[pool]",
        f'slot_size = "{slot_size}"',
        f"slots = {slots}",
    ]
    if iscsi_section:
        lines += ["[iscsi]", iscsi_section]
    for name, url in disks.items():
        address = (addresses or {}).get(name, f"127.0.0.1:{port}")
        lines += [f"[nodes.{name}]", f'address = "{address}"', f'disk = "{url}"']
        lines += [(node_extra or {}).get(name, "")]
    with open(path, "w") as f:
        f.write("\n".join(lines) + "\n")
    return str(path)


class Namespace:
    """A mount namespace held open by a sleeping process; commands enter it with nsenter."""

    def __init__(self):
        self.proc = subprocess.Popen(["unshare", "--mount", "--propagation", "private",
                                      "sleep", "600"])
        self.pid = self.proc.pid
        ours = os.readlink("/proc/self/ns/mnt")
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            try:
                with open(f"/proc/{self.pid}/comm") as f:
                    ready = (f.read().strip() == "sleep"
                             and os.readlink(f"/proc/{self.pid}/ns/mnt") != ours)
            except OSError:
                ready = False
            if ready:
                return
            time.sleep(0.01)
        self.close()
        raise RuntimeError("unshare did not make a mount namespace")

    def run(self, *argv: str, env: dict | None = None, timeout: float = 60):
        full = ["nsenter", "-t", str(self.pid), "-m", "--", *argv]
        return subprocess.run(full, capture_output=True, text=True, timeout=timeout,
                              env=_env(env))

    def iscsi(self, config: str, *args: str, env: dict | None = None, timeout: float = 60):
        return self.run(sys.executable, "-m", "blfsd.iscsi", "--config", config, *args,
                        env=env, timeout=timeout)

    def py(self, code: str) -> dict:
        proc = self.run(sys.executable, "-c", code)
        assert proc.returncode == 0, proc.stderr
        return json.loads(proc.stdout.strip().splitlines()[-1])

    def path(self, path) -> str:
        """The same path as seen from inside the namespace (through its root)."""
        return f"/proc/{self.pid}/root{os.path.abspath(str(path))}"

    def mounts(self) -> dict:
        """Mount point -> (mount id, source, per-mount options), topmost mount per path."""
        found = {}
        with open(f"/proc/{self.pid}/mountinfo") as f:
            for line in f:
                left, _, right = line.partition(" - ")
                parts, rparts = left.split(), right.split()
                found[parts[4]] = (int(parts[0]), rparts[1], parts[5])
        return found

    def watch(self) -> "MountWatch":
        return MountWatch(self.pid)

    def mounts_under(self, root) -> dict:
        root = os.path.realpath(str(root))
        return {p: m for p, m in self.mounts().items() if p.startswith(root + "/")}

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()  # by PID: the namespace and its mounts go with it
        self.proc.wait(timeout=10)


class MountWatch:
    """Tells whether anything was mounted or unmounted in a namespace since it was made
    (poll on /proc/PID/mounts; mount ids alone do not tell: the kernel reuses them)."""

    def __init__(self, pid: int):
        self.file = open(f"/proc/{pid}/mounts")
        self.file.read()
        self.poll = select.poll()
        self.poll.register(self.file, select.POLLPRI | select.POLLERR)

    def changed(self) -> bool:
        changed = bool(self.poll.poll(0))
        self.file.seek(0)
        self.file.read()  # re-arm
        return changed

    def close(self) -> None:
        self.file.close()


def _env(extra: dict | None) -> dict:
    env = dict(os.environ, PYTHONPATH=REPO)
    env.pop("BLFS_CONFIG", None)
    env.update(extra or {})
    return env


def host_run(*argv: str, env: dict | None = None, timeout: float = 60):
    return subprocess.run(argv, capture_output=True, text=True, timeout=timeout, env=_env(env))


def blfs_iscsi(config: str, *args: str, env: dict | None = None):
    return host_run(sys.executable, "-m", "blfsd.iscsi", "--config", config, *args, env=env)


def ok(proc) -> str:
    assert proc.returncode == 0, f"rc {proc.returncode}\n{proc.stdout}\n{proc.stderr}"
    assert "Traceback" not in proc.stderr, proc.stderr
    return proc.stdout


def one_error(proc, *needles: str) -> str:
    """The command failed with exactly one clear line on stderr, containing every needle."""
    assert proc.returncode != 0, proc.stdout
    assert "Traceback" not in proc.stderr, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    for needle in needles:
        assert needle in lines[0], lines[0]
    return lines[0]


def unwritten_or_holes(path: str, size: int) -> str:
    """'' when filefrag -v shows written extents covering the whole file, else why not."""
    out = run("filefrag", "-v", path).stdout
    if "unwritten" in out:
        return "unwritten extent: " + out
    m = re.search(r"\((\d+) blocks of (\d+) bytes\)", out)
    blocks, bsize = int(m[1]), int(m[2])
    covered = 0
    for line in out.splitlines():
        e = re.match(r"\s*\d+:\s+(\d+)\.\.\s*(\d+):\s+\d+\.\.\s*\d+:\s+(\d+):", line)
        if e:
            covered += int(e[3])
    if blocks * bsize != size or covered != blocks:
        return f"{covered} of {blocks} blocks in extents: {out}"
    return ""


def assert_slots(ns: Namespace, disk: str, count: int, size: int) -> None:
    pool = ns.path(os.path.join(disk, "pool"))
    names = sorted(n for n in os.listdir(pool) if n.startswith("slot-"))
    assert names == [f"slot-{i:05d}" for i in range(count)]
    for name in names:
        path = os.path.join(pool, name)
        st = os.stat(path)
        assert st.st_size == size and st.st_blocks * 512 >= size, (name, st)
        assert unwritten_or_holes(path, size) == ""
        with open(path, "rb") as f:
            assert f.read() == bytes(size), f"{name} is not zero-filled"


def manifest_of(ns: Namespace, disk: str) -> storage.Manifest:
    return storage.read_manifest(ns.path(disk), direct=False)


def our_loops(tag: str) -> list:
    """Loop devices still backed by an image of this test (its tag is in the file name)."""
    left = []
    for name in os.listdir("/sys/block"):
        backing = loop_backing_file(name) if name.startswith("loop") else None
        if backing and tag in backing:
            left.append(name)
    return left


# --------------------------------------------------------------------------- a cluster

class Cluster:
    """Nodes with their own disk image, their own namespace, their own loop device per
    disk, and their own config (block: URLs to their own loop devices)."""

    def __init__(self, base, res: Resources, names=("a", "b", "c"), mkfs: bool = False,
                 image_size: int = 64 * MiB):
        self.base, self.res, self.names = str(base), res, list(names)
        self.images = {n: res.image(image_size, mkfs=mkfs) for n in names}
        self.ns: dict = {}
        self.loops: dict = {}  # (viewer, disk) -> /dev/loopN
        for viewer in names:
            for disk in names:
                self.loops[viewer, disk] = res.loop(self.images[disk])
        for viewer in names:
            self.ns[viewer] = Namespace()
        self.configs = {n: self.config(n) for n in names}

    def root(self, node: str) -> str:
        return os.path.join(self.base, f"{node}-{self.res.tag}", "disks")

    def disk(self, viewer: str, node: str) -> str:
        return os.path.join(self.root(viewer), node)

    def config(self, node: str, **kw) -> str:
        disks = {d: f"block:{self.loops[node, d]}" for d in self.names}
        return write_config(os.path.join(self.base, f"{node}-{self.res.tag}.toml"), node,
                            disks, self.root(node), **kw)

    def iscsi(self, node: str, *args: str, **kw):
        return self.ns[node].iscsi(self.configs[node], *args, **kw)

    def close(self) -> None:
        for ns in self.ns.values():
            ns.close()
        self.ns.clear()


@pytest.fixture
def res(tmp_path):
    with Resources(tmp_path) as r:
        yield r


@pytest.fixture
def make_cluster(tmp_path, res):
    made = []

    def make(**kw) -> Cluster:
        made.append(None)
        try:
            made[-1] = Cluster(tmp_path, res, **kw)
        except BaseException:
            made.pop()
            raise
        return made[-1]

    yield make
    for c in made:  # namespaces first (their mounts go with them), then loops and images
        if c is not None:
            c.close()


# ------------------------------------------------------------------------------ tests

@root
def test_three_nodes_own_rw_peers_ro_second_up_noop_down_clean(make_cluster, res):
    c = make_cluster(mkfs=False)
    # format: each node makes the file system on its own, blank disk (with MMP)
    for n in c.names:
        assert "with multi-mount protection" in ok(c.iscsi(n, "format"))
    for n in c.names:
        out = ok(c.iscsi(n, "up"))
        assert f"{n}: pool ready: 4 slots of 1 MiB" in out, out

    used = set()
    for n in c.names:
        ns = c.ns[n]
        mounted = ns.mounts_under(c.root(n))
        assert set(mounted) == {c.disk(n, d) for d in c.names}, mounted
        for d in c.names:
            _, source, options = mounted[c.disk(n, d)]
            assert source == c.loops[n, d]  # this node's own loop device for that disk
            assert options.split(",")[0] == ("rw" if d == n else "ro"), (n, d, options)
            used.add(source)
        assert_slots(ns, c.disk(n, n), 4, MiB)
        m = manifest_of(ns, c.disk(n, n))
        assert (m.node, m.slot_count, m.slot_size, m.ready) == (n, 4, MiB, True)
    assert used == set(c.loops.values()) and len(used) == 9
    # nothing of it is visible in the test's own namespace
    with open("/proc/self/mountinfo") as f:
        assert res.tag not in f.read()

    # A second `up` changes nothing: same mounts (ids), same MANIFEST and slots (mtimes).
    def state(n: str) -> tuple:
        ns = c.ns[n]
        pool = ns.path(os.path.join(c.disk(n, n), "pool"))
        files = {f: (os.stat(os.path.join(pool, f)).st_ino,
                     os.stat(os.path.join(pool, f)).st_mtime_ns) for f in os.listdir(pool)}
        return ns.mounts_under(c.root(n)), files

    before = {n: state(n) for n in c.names}
    for n in c.names:
        watch = c.ns[n].watch()
        assert "nothing to change" in ok(c.iscsi(n, "up"))
        assert not watch.changed(), f"a second up on {n} mounted or unmounted something"
        watch.close()
    assert {n: state(n) for n in c.names} == before

    # Every node reads every peer's pool after making its view current (views mounted
    # before the peer prepared its pool are stale: ensure_generation remounts them).
    gens = {n: manifest_of(c.ns[n], c.disk(n, n)).generation for n in c.names}
    for n in c.names:
        views = {c.disk(n, d): gens[d] for d in c.names if d != n}
        result = c.ns[n].py(f"""
import json
from blfsd import storage
print(json.dumps({{v: storage.ensure_generation(v, g).generation
                  for v, g in {views!r}.items()}}))
""")
        assert result == views
    # Peer views are read-only: no new file, no write into an existing slot.
    for n in c.names:
        peers = [c.disk(n, d) for d in c.names if d != n]
        result = c.ns[n].py(f"""
import errno, json, os
out = {{}}
for view in {peers!r}:
    for what, call in (("create", lambda: open(os.path.join(view, "pool", "x"), "w")),
                       ("slot", lambda: os.open(os.path.join(view, "pool", "slot-00000"),
                                                os.O_WRONLY))):
        try:
            call()
            out[view + what] = "written"
        except OSError as exc:
            out[view + what] = errno.errorcode[exc.errno]
print(json.dumps(out))
""")
        assert set(result.values()) == {"EROFS"}, result

    status = ok(c.iscsi("a", "status"))
    rows = {line.split()[0]: line for line in status.splitlines()[1:4]}
    assert re.search(rf"\brw\s+{gens['a']}\s+4\b", rows["a"]), status
    for d in ("b", "c"):
        assert c.loops["a", d] in rows[d] and re.search(rf"\bro\s+{gens[d]}\s+4\b", rows[d])

    # down: no mount left in any namespace
    for n in c.names:
        ok(c.iscsi(n, "down"))
        assert c.ns[n].mounts_under(c.root(n)) == {}
    ok(c.iscsi("a", "down"))  # idempotent

    # teardown leaves no loop device of ours attached
    c.close()
    res.close()
    deadline = time.monotonic() + 10
    while our_loops(res.tag) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert our_loops(res.tag) == []


@root
def test_new_slot_count_bumps_generation_and_peers_remount_before_reading(make_cluster):
    c = make_cluster(names=("a", "b"), mkfs=True)
    ok(c.iscsi("a", "up"))
    ok(c.iscsi("b", "up"))
    first = manifest_of(c.ns["a"], c.disk("a", "a"))
    view = c.disk("b", "a")  # b's view of a's disk
    probe = f"""
import json, os
from blfsd import storage
m = storage.read_manifest({view!r}, direct=True)
print(json.dumps({{"gen": m.generation, "slots": sorted(os.listdir({view!r} + "/pool"))}}))
"""
    seen = c.ns["b"].py(probe)  # b has read a's pool (and so cached its directory)
    assert seen == {"gen": first.generation,
                    "slots": ["MANIFEST"] + [f"slot-{i:05d}" for i in range(4)]}
    watch_a = c.ns["a"].watch()

    c.configs["a"] = c.config("a", slots=6)
    out = ok(c.iscsi("a", "up"))
    second = manifest_of(c.ns["a"], c.disk("a", "a"))
    assert second.generation > first.generation and second.slot_count == 6
    assert f"generation {second.generation}" in out
    assert not watch_a.changed()  # a's own disk stays mounted as it was
    watch_a.close()
    assert_slots(c.ns["a"], c.disk("a", "a"), 6, MiB)

    watch_b = c.ns["b"].watch()
    result = c.ns["b"].py(f"""
import json, mmap, os
from blfsd import storage
view = {view!r}
stale = sorted(os.listdir(view + "/pool"))
m = storage.ensure_generation(view, {second.generation})
fd = os.open(view + "/pool/slot-00005", os.O_RDONLY | os.O_DIRECT)
buf = mmap.mmap(-1, 1 << 20)
n = os.preadv(fd, [buf], 0)
print(json.dumps({{"stale": stale, "gen": m.generation, "slots": m.slot_count,
                  "fresh": sorted(os.listdir(view + "/pool")), "read": n,
                  "zeros": buf[:n] == bytes(n)}}))
""")
    assert "slot-00005" not in result["stale"]  # the old view cannot see the new slots
    assert (result["gen"], result["slots"]) == (second.generation, 6)
    assert "slot-00005" in result["fresh"] and result["read"] == MiB and result["zeros"]
    assert watch_b.changed()  # the view was remounted
    assert c.ns["b"].mounts()[view][2].startswith("ro")  # and is still read-only
    # the view is current now: the same generation again does not remount
    c.ns["b"].py(f"""
import json
from blfsd import storage
print(json.dumps(storage.ensure_generation({view!r}, {second.generation}).generation))
""")
    assert not watch_b.changed()
    watch_b.close()


@root
def test_up_killed_while_preparing_is_completed_by_the_next_up(make_cluster):
    c = make_cluster(names=("a",), mkfs=True, image_size=256 * MiB)
    slots = 160
    c.configs["a"] = c.config("a", slots=slots)
    ns, disk = c.ns["a"], c.disk("a", "a")
    pool = ns.path(os.path.join(disk, "pool"))
    proc = subprocess.Popen(
        ["nsenter", "-t", str(ns.pid), "-m", "--", sys.executable, "-m", "blfsd.iscsi",
         "--config", c.configs["a"], "up"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=_env(None),
        start_new_session=True)
    try:
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            if os.path.exists(os.path.join(pool, "slot-00008")):
                break
            time.sleep(0.001)
        os.killpg(proc.pid, signal.SIGKILL)  # the group we started, by its id
    finally:
        proc.wait(timeout=10)
        proc.stdout.close()
        proc.stderr.close()
    assert proc.returncode == -signal.SIGKILL
    cut = manifest_of(ns, disk)
    written = [n for n in os.listdir(pool) if n.startswith("slot-")]
    assert not cut.ready and 8 <= len(written) < slots, (cut, len(written))
    assert storage.check_pool(ns.path(disk)) is None  # nobody may use it like this
    # The worst moment to be killed: a slot written in full but not yet fsynced. Its
    # blocks are only reserved (delayed allocation), yet it has the right size and block
    # count. Make one such slot for sure (the kill above may or may not have hit it).
    late = os.path.join(pool, f"slot-{len(written):05d}")
    with open(late, "wb") as f:
        f.write(bytes(MiB))
    assert "delalloc" in run("filefrag", "-v", late).stdout

    out = ok(c.iscsi("a", "up"))
    assert "completing an interrupted preparation" in out
    done = manifest_of(ns, disk)
    assert done.ready and done.slot_count == slots and done.generation > cut.generation
    assert storage.check_pool(ns.path(disk)) == done
    # every slot, before, at and after the cut: full size, every block written on disk
    # (a slot written but not yet fsynced when killed has delayed-allocation extents)
    for i in range(slots):
        path = os.path.join(pool, f"slot-{i:05d}")
        assert os.stat(path).st_size == MiB and unwritten_or_holes(path, MiB) == "", i
    assert "nothing to change" in ok(c.iscsi("a", "up"))


STAND_IN = r'''#!{python}
"""A recording stand-in for iscsiadm: logs argv, plays the target and udev."""
import json, os, sys
args = sys.argv[1:]
with open(os.environ["STANDIN_LOG"], "a") as f:
    f.write(json.dumps(args) + "\n")
with open(os.environ["STANDIN_TARGETS"]) as f:
    targets = json.load(f)  # "portal iqn" -> {{"lun": N, "device": DEV, "appears": bool}}
by_path = os.environ["BLFS_ISCSI_BY_PATH"]
def arg(flag):
    return args[args.index(flag) + 1]
portal = arg("-p")
if args[:2] == ["-m", "discovery"]:
    offered = [key.split()[1] for key in targets if key.split()[0] == portal]
    if not offered:
        print(f"iscsiadm: cannot make connection to {{portal}}: Connection refused",
              file=sys.stderr)
        sys.exit(4)
    for iqn in offered:
        print(f"{{portal}},1 {{iqn}}")
    sys.exit(0)
sessions_file = os.environ["STANDIN_LOG"] + ".sessions"
sessions = json.load(open(sessions_file)) if os.path.exists(sessions_file) else []
me = f"{{portal}} {{arg('-T')}}"
if "--login" in args:
    if me not in targets:
        print("iscsiadm: No records found", file=sys.stderr)
        sys.exit(21)
    if me in sessions:
        print("iscsiadm: default: 1 session requested, but 1 already present.", file=sys.stderr)
        sys.exit(15)
    sessions.append(me)
    t = targets[me]
    if t.get("appears", True):
        os.symlink(t["device"], os.path.join(
            by_path, f"ip-{{portal}}-iscsi-{{arg('-T')}}-lun-{{t['lun']}}"))
    print(f"Login to [iface: default, target: {{arg('-T')}}, portal: {{portal}}] successful.")
elif "--logout" in args:
    if me not in sessions:
        print("iscsiadm: No matching sessions found", file=sys.stderr)
        sys.exit(21)
    sessions.remove(me)
    link = os.path.join(by_path, f"ip-{{portal}}-iscsi-{{arg('-T')}}-lun-{{targets[me]['lun']}}")
    if os.path.lexists(link):
        os.unlink(link)
    print(f"Logout of [sid: 1, target: {{arg('-T')}}, portal: {{portal}}] successful.")
with open(sessions_file, "w") as f:
    json.dump(sessions, f)
'''


@root
def test_iscsiadm_commands_against_a_recording_stand_in(tmp_path, res):
    own = res.image(64 * MiB)
    luns = {n: res.image(64 * MiB) for n in ("b", "c")}
    own_loop = res.loop(own)
    lun_loops = {n: res.loop(img) for n, img in luns.items()}
    by_path = tmp_path / "by-path"
    by_path.mkdir()
    stand_in = tmp_path / "iscsiadm"
    stand_in.write_text(STAND_IN.format(python=sys.executable))
    stand_in.chmod(0o755)
    log = tmp_path / "iscsiadm.log"
    targets = tmp_path / "targets.json"
    iqn_b, iqn_c = "iqn.2026-11.org.blfs-test:b", "iqn.2026-11.org.blfs-test:c"
    targets.write_text(json.dumps({
        f"127.0.0.1:3260 {iqn_b}": {"lun": 1, "device": lun_loops["b"]},
        f"127.0.0.1:3261 {iqn_c}": {"lun": 7, "device": lun_loops["c"]}}))
    env = {"BLFS_ISCSIADM": str(stand_in), "BLFS_ISCSI_BY_PATH": str(by_path),
           "STANDIN_LOG": str(log), "STANDIN_TARGETS": str(targets)}
    roots = tmp_path / f"disks-{res.tag}"
    config = write_config(tmp_path / "a.toml", "a", {
        "a": f"block:{own_loop}",
        "b": f"iscsi://127.0.0.1/{iqn_b}/1",  # the default port, 3260
        "c": f"iscsi://127.0.0.1:3261/{iqn_c}/7"}, roots, iscsi_section="login_timeout = 5")
    ns = Namespace()
    try:
        out = ok(ns.iscsi(config, "up", env=env))
        calls = [json.loads(line) for line in log.read_text().splitlines()]
        assert calls == [
            ["-m", "discovery", "-t", "sendtargets", "-p", "127.0.0.1:3260"],
            ["-m", "node", "-T", iqn_b, "-p", "127.0.0.1:3260", "--login"],
            ["-m", "discovery", "-t", "sendtargets", "-p", "127.0.0.1:3261"],
            ["-m", "node", "-T", iqn_c, "-p", "127.0.0.1:3261", "--login"]]
        assert f"logged in to {iqn_b} at 127.0.0.1:3260" in out
        mounted = ns.mounts_under(roots)
        assert mounted[str(roots / "b")][1] == lun_loops["b"]
        assert mounted[str(roots / "b")][2].startswith("ro")
        assert mounted[str(roots / "c")][1] == lun_loops["c"]
        assert mounted[str(roots / "a")][2].startswith("rw")
        status = ok(ns.iscsi(config, "status", env=env))
        assert f"iscsi://127.0.0.1:3261/{iqn_c}/7" in status and lun_loops["c"] in status

        # logged in already (the by-path device is there): no iscsiadm call at all
        assert "nothing to change" in ok(ns.iscsi(config, "up", env=env))
        assert len(log.read_text().splitlines()) == 4

        log.write_text("")
        ok(ns.iscsi(config, "down", env=env))
        calls = [json.loads(line) for line in log.read_text().splitlines()]
        assert calls == [["-m", "node", "-T", iqn_b, "-p", "127.0.0.1:3260", "--logout"],
                         ["-m", "node", "-T", iqn_c, "-p", "127.0.0.1:3261", "--logout"]]
        assert ns.mounts_under(roots) == {} and os.listdir(by_path) == []

        # The LUN of c never appears after login; d's portal refuses connections.
        spec = json.loads(targets.read_text())
        spec[f"127.0.0.1:3261 {iqn_c}"]["appears"] = False
        targets.write_text(json.dumps(spec))
        config = write_config(tmp_path / "a2.toml", "a", {
            "a": f"block:{own_loop}", "b": f"iscsi://127.0.0.1/{iqn_b}/1",
            "c": f"iscsi://127.0.0.1:3261/{iqn_c}/7",
            "d": "iscsi://127.0.0.1:3299/iqn.2026-11.org.blfs-test:d/1"},
            roots, iscsi_section="login_timeout = 1")
        log.write_text("")
        started = time.monotonic()
        proc = ns.iscsi(config, "up", env=env)
        assert proc.returncode == 1 and "Traceback" not in proc.stderr, proc.stderr
        errors = proc.stderr.strip().splitlines()
        assert len(errors) == 2, proc.stderr
        assert errors[0].startswith(f"blfs-iscsi: disk c (iscsi://127.0.0.1:3261/{iqn_c}/7): "
                                    "logged in, but ")
        assert (f"{by_path}/ip-127.0.0.1:3261-iscsi-{iqn_c}-lun-7 did not appear within 1 s"
                in errors[0])
        assert errors[1].startswith("blfs-iscsi: disk d (iscsi://127.0.0.1:3299/")
        assert "target unreachable within 1 s" in errors[1] and "Connection refused" in errors[1]
        assert time.monotonic() - started < 10
        calls = [json.loads(line) for line in log.read_text().splitlines()]
        assert ["-m", "node", "-T", iqn_c, "-p", "127.0.0.1:3261", "--login"] in calls
        # d was retried until the timeout, never logged in to
        assert not any("iqn.2026-11.org.blfs-test:d" in c for c in calls)
        assert str(roots / "b") in ns.mounts_under(roots)  # the reachable peer is mounted
        ok(ns.iscsi(config, "down", env=env))
    finally:
        ns.close()
        for link in os.listdir(by_path):
            os.unlink(by_path / link)


def sha256(path: str) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(4 * MiB), b""):
            h.update(block)
    return h.hexdigest()


@root
def test_format_only_the_own_disk_and_never_over_a_file_system(tmp_path, res):
    blank = res.image(64 * MiB, mkfs=False)
    peers = {n: res.image(64 * MiB) for n in ("b", "c")}
    own_loop = res.loop(blank)
    peer_loops = {n: res.loop(img) for n, img in peers.items()}
    sums = {n: sha256(img) for n, img in peers.items()}
    url = f"block:{own_loop}"
    config = write_config(tmp_path / "a.toml", "a", {
        "a": url, **{n: f"block:{dev}" for n, dev in peer_loops.items()}},
        tmp_path / f"disks-{res.tag}")

    out = ok(blfs_iscsi(config, "format"))
    assert "with multi-mount protection" in out
    assert run("blkid", "-p", "-o", "value", "-s", "TYPE", own_loop).stdout.strip() == "ext4"
    header = run("dumpe2fs", "-h", own_loop).stdout
    assert re.search(r"^Filesystem features:.*\bmmp\b", header, re.M)
    assert re.search(r"^Block size:\s+4096$", header, re.M)
    assert re.search(r"^Reserved block count:\s+0$", header, re.M)
    uuid = run("blkid", "-p", "-o", "value", "-s", "UUID", own_loop).stdout.strip()

    one_error(blfs_iscsi(config, "format"), f"disk a ({url})", "already holds an ext4 file "
              "system (label blfs-a)", "--force")
    assert run("blkid", "-p", "-o", "value", "-s", "UUID", own_loop).stdout.strip() == uuid

    ok(blfs_iscsi(config, "format", "--force", "--no-mmp"))
    assert run("blkid", "-p", "-o", "value", "-s", "UUID", own_loop).stdout.strip() != uuid
    assert not re.search(r"^Filesystem features:.*\bmmp\b",
                         run("dumpe2fs", "-h", own_loop).stdout, re.M)

    # a swap signature is "something" too
    run("mkswap", own_loop)
    one_error(blfs_iscsi(config, "format"), f"disk a ({url})", "swap", "--force")

    # never while mounted
    ok(blfs_iscsi(config, "format", "--force"))
    mnt = res.mountpoint("own")
    res.mount(own_loop, mnt)
    try:
        one_error(blfs_iscsi(config, "format", "--force"), f"disk a ({url})", "is mounted at",
                  mnt)
    finally:
        run("umount", mnt)

    # the peers' disks were never touched
    assert {n: sha256(img) for n, img in peers.items()} == sums


@root
def test_errors_are_one_line_naming_the_disk(tmp_path, res):
    good = res.image(64 * MiB)
    blank = res.image(64 * MiB, mkfs=False)
    swap = res.image(64 * MiB, mkfs=False)
    peer = res.image(64 * MiB)
    good_loop, blank_loop, swap_loop, peer_loop = (res.loop(i) for i in (good, blank, swap,
                                                                         peer))
    run("mkswap", swap_loop)
    missing = f"/dev/blfs-test-missing-{res.tag}"
    ns = Namespace()

    def config(case: str, own_url: str, peer_url: str, **kw) -> str:
        return write_config(tmp_path / f"{case}.toml", "a", {"a": own_url, "b": peer_url},
                            tmp_path / f"{case}-{res.tag}", **kw)

    try:
        # the config names a node that is not there
        cfg = config("unknown", f"block:{good_loop}", f"block:{peer_loop}")
        text = open(cfg).read().replace('name = "a"', 'name = "zz"')
        open(cfg, "w").write(text)
        proc = ns.iscsi(cfg, "up")
        assert proc.returncode == 2
        one_error(proc, "this node is 'zz'", "has no [nodes.zz]", "a, b")
        one_error(ns.iscsi(config("url", f"block:{good_loop}", "nfs://x/y"), "up"),
                  "disk b ('nfs://x/y'): not a disk URL")

        # a missing peer device: the own disk still comes up, the error names the peer
        cfg = config("missing", f"block:{good_loop}", f"block:{missing}")
        one_error(ns.iscsi(cfg, "up"), f"disk b (block:{missing}): device {missing} does not "
                                       "exist")
        assert storage.check_pool(ns.path(tmp_path / f"missing-{res.tag}" / "a")) is not None
        ok(ns.iscsi(cfg, "down"))

        one_error(ns.iscsi(config("blank", f"block:{blank_loop}", f"block:{peer_loop}"), "up"),
                  f"disk a (block:{blank_loop}): no file system on {blank_loop}",
                  "blfs-iscsi format")
        one_error(ns.iscsi(config("peerblank", f"block:{good_loop}", f"block:{blank_loop}"),
                           "up"),
                  f"disk b (block:{blank_loop}): no file system", "format it on b")
        ok(ns.iscsi(config("peerblank", f"block:{good_loop}", f"block:{blank_loop}"), "down"))
        one_error(ns.iscsi(config("swap", f"block:{swap_loop}", f"block:{peer_loop}"), "up"),
                  f"disk a (block:{swap_loop}): {swap_loop} holds a swap", "not ext4")

        cfg = config("big", f"block:{good_loop}", f"block:{peer_loop}", slots=100)
        one_error(ns.iscsi(cfg, "up"), f"disk a (block:{good_loop}): pool does not fit: "
                                       "100 slots x 1 MiB")
        # the pool prepared by the "missing" case above is left as it was
        kept = storage.check_pool(ns.path(tmp_path / f"big-{res.tag}" / "a"))
        assert kept is not None and kept.slot_count == 4
        ok(ns.iscsi(cfg, "down"))
        assert ns.mounts_under(tmp_path) == {}
    finally:
        ns.close()


class FakeWorker:
    """Answers `ping` like a worker whose jobs hold slots (authenticated like the real one)."""

    def __init__(self, key: bytes, free_slots: int, running: int):
        from blfsd import rpc
        self.answer = {"time": time.time(), "running": running, "free_slots": free_slots}
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.address = "127.0.0.1:%d" % self.sock.getsockname()[1]
        self.loop = asyncio.new_event_loop()
        self.pings = 0

        async def handle(peer, msg):
            self.pings += 1
            return self.answer

        async def on_connect(reader, writer):
            peer = await rpc.accept_connection(reader, writer, key, "worker", "a", handle)
            if peer is not None:
                await peer.serve()

        async def serve():
            self.server = await asyncio.start_server(on_connect, sock=self.sock)

        self.loop.run_until_complete(serve())
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        if not self.thread.is_alive():
            return
        self.loop.call_soon_threadsafe(self.server.close)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(5)
        self.sock.close()


@root
def test_down_refuses_while_the_worker_holds_slots(tmp_path, res):
    from blfsd import auth
    key_file = tmp_path / "cluster.key"
    key = auth.generate_key(str(key_file))
    loop = res.loop(res.image(64 * MiB))
    roots = tmp_path / f"disks-{res.tag}"
    worker = FakeWorker(key, free_slots=2, running=1)
    ns = Namespace()

    def config(slots: int) -> str:
        return write_config(tmp_path / f"a{slots}.toml", "a", {"a": f"block:{loop}"}, roots,
                            slots=slots, key_file=key_file, addresses={"a": worker.address})

    try:
        cfg = config(4)
        ok(ns.iscsi(cfg, "up"))  # a new pool: nobody can hold its slots yet
        status = ok(ns.iscsi(cfg, "status"))
        assert re.search(r"\brw\s+\d+\s+2/4 free\b", status), status
        assert f"answering at {worker.address}, 1 attempts running" in status

        line = one_error(ns.iscsi(cfg, "down"), f"disk a (block:{loop}): in use by jobs: 2 of "
                         "4 slots are leased and 1 attempt running", worker.address, "--force")
        assert str(roots / "a") in ns.mounts_under(roots), line
        # nor may `up` rewrite a pool whose slots are leased
        one_error(ns.iscsi(config(6), "up"), "the pool would change (4 -> 6 slots",
                  "2 of 4 slots are leased", "--force")
        assert manifest_of(ns, str(roots / "a")).slot_count == 4
        # nor change it under a running worker at all: it would keep the old generation
        worker.answer.update(free_slots=4, running=0)
        one_error(ns.iscsi(config(6), "up"), "the pool would change (4 -> 6 slots",
                  "while blfs-worker runs (no slots leased", "--force")
        assert manifest_of(ns, str(roots / "a")).slot_count == 4
        out = ok(ns.iscsi(config(6), "up", "--force"))
        assert "restart blfs-worker" in out
        assert manifest_of(ns, str(roots / "a")).slot_count == 6
        worker.answer.update(free_slots=6)
        ok(ns.iscsi(config(6), "down"))  # the worker holds nothing: down proceeds
        assert ns.mounts_under(roots) == {}
        assert worker.pings >= 6

        worker.answer.update(free_slots=2, running=1)
        ok(ns.iscsi(config(6), "up"))
        one_error(ns.iscsi(config(6), "down"), "4 of 6 slots are leased")
        ok(ns.iscsi(config(6), "down", "--force"))
        assert ns.mounts_under(roots) == {}

        # no worker answering: no leases known, so down proceeds
        ok(ns.iscsi(config(6), "up"))
        worker.close()
        ok(ns.iscsi(config(6), "down"))
        assert ns.mounts_under(roots) == {}
    finally:
        ns.close()
        worker.close()


def test_export_runs_blfsd_export_with_the_nodes_target(tmp_path, monkeypatch, capsys):
    """The wiring to blfsd.export, with a stand-in module: what export passes, prints, and
    how status shows an export."""
    calls = []
    stub = types.ModuleType("blfsd.export")
    iqn = "iqn.2026-11.org.example:a"

    def export_disk(device, iqn, lun=1, backend="auto", portal="0.0.0.0:3260",
                    initiators=None, **kw):
        calls.append((device, iqn, lun, backend, portal, initiators, kw))
        return ["tgtadm --lld iscsi --op new --mode target --tid 1 --targetname " + iqn]

    stub.export_disk = export_disk
    stub.export_status = lambda: [{
        "backend": "tgt", "iqn": iqn, "tid": 1,
        "luns": [{"lun": 3, "device": "/dev/sdb", "size": 64 * MiB}],
        "initiators": ["ALL"], "portals": ["0.0.0.0:3262"], "sessions": []}]
    import blfsd
    monkeypatch.setitem(sys.modules, "blfsd.export", stub)
    monkeypatch.setattr(blfsd, "export", stub, raising=False)
    device = tmp_path / "sdb"
    device.write_bytes(b"")
    cfg = write_config(tmp_path / "a.toml", "a", {"a": f"iscsi://10.0.0.11:3262/{iqn}/3",
                                                  "b": "block:/dev/blfs-nothing"},
                       tmp_path / "disks", iscsi_section='backend = "tgt"\n'
                       'initiators = ["iqn.2026-11.org.example:init-b"]',
                       node_extra={"a": f'export_device = "{device}"'})

    assert iscsi.main(["--config", cfg, "export"]) == 0
    assert calls == [(str(device), iqn, 3, "tgt", "0.0.0.0:3262",
                      ["iqn.2026-11.org.example:init-b"], {})]
    out = capsys.readouterr().out
    assert f"tgtadm --lld iscsi --op new --mode target --tid 1 --targetname {iqn}" in out
    assert f"a: exported {device} as {iqn} LUN 3 on 0.0.0.0:3262" in out

    assert iscsi.main(["--config", cfg, "export", "--backend", "lio", "--portal",
                       "10.0.0.11:3262", "--lun", "5", "--start-tgtd"]) == 0
    assert calls[-1][2:] == (5, "lio", "10.0.0.11:3262", ["iqn.2026-11.org.example:init-b"],
                             {"start_tgtd": True})

    assert iscsi.main(["--config", cfg, "status"]) == 0
    out = capsys.readouterr().out
    assert "not attached" in out and "not mounted" in out
    assert (f"export: tgt {iqn}  LUN 3 /dev/sdb (64 MiB)  on 0.0.0.0:3262  for ALL  "
            "sessions none") in out

    # a block: own disk has no IQN to serve under
    cfg2 = write_config(tmp_path / "b.toml", "b", {"b": "block:/dev/null"}, tmp_path / "d2")
    assert iscsi.main(["--config", cfg2, "export"]) == 2
    assert "give --iqn" in capsys.readouterr().err


def _tgt_tools() -> str | None:
    """None when tgtd and libiscsi's iscsi-ls are here (installed on demand, as
    tests/test_export.py does), else why not."""
    tools = ("tgtd", "tgtadm", "iscsi-ls")
    if all(shutil.which(t) for t in tools):
        return None
    if WHY_NOT or shutil.which("apt-get") is None:
        return WHY_NOT or "no tgt/libiscsi-bin and no apt-get"
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    argv = ["apt-get", "install", "-y", "-qq", "--no-install-recommends", "tgt", "libiscsi-bin"]
    if subprocess.run(argv, capture_output=True, env=env, timeout=600).returncode != 0:
        subprocess.run(["apt-get", "update", "-qq"], capture_output=True, env=env, timeout=600)
        subprocess.run(argv, capture_output=True, env=env, timeout=600)
    missing = [t for t in tools if not shutil.which(t)]
    return f"cannot install tgt libiscsi-bin (missing {', '.join(missing)})" if missing else None


@root
def test_export_with_tgt_is_listed_by_iscsi_ls(tmp_path, res):
    """`blfs-iscsi export` through the real blfsd.export and a private tgtd: libiscsi's
    userspace initiator lists the node's LUN with its size; status shows the export."""
    why = _tgt_tools()
    if why:
        pytest.skip(why)
    from blfsd import export
    port = closed_port()
    for _ in range(100):
        control = 20000 + int.from_bytes(os.urandom(2), "big") % 12000  # tgtd: <= 32767
        if not os.path.exists(os.path.join(export.TGTD_SOCKET_DIR, f"socket.{control}")):
            break
    log = open(tmp_path / "tgtd.log", "w")
    tgtd = subprocess.Popen(["tgtd", "-f", "-C", str(control), "--iscsi",
                             f"portal=127.0.0.1:{port}"], stdin=subprocess.DEVNULL,
                            stdout=log, stderr=log)
    env = {"BLFS_TGT_CONTROL_PORT": str(control)}

    def tgtadm(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run(["tgtadm", "-C", str(control), *args], capture_output=True,
                              text=True, timeout=30)

    iqn = f"iqn.2026-11.org.blfs-test:{res.tag}"
    try:
        deadline = time.monotonic() + 10
        while tgtadm("--op", "show", "--mode", "sys").returncode != 0:
            assert tgtd.poll() is None and time.monotonic() < deadline, "tgtd did not start"
            time.sleep(0.05)
        device = res.loop(res.image(64 * MiB, mkfs=False))
        cfg = write_config(tmp_path / "a.toml", "a", {"a": f"iscsi://127.0.0.1:{port}/{iqn}/1"},
                           tmp_path / "disks", iscsi_section=f'portal = "127.0.0.1:{port}"',
                           node_extra={"a": f'export_device = "{device}"'})
        out = ok(blfs_iscsi(cfg, "export", env=env))
        assert f"--op new --mode target --tid 1 --targetname {iqn}" in out
        assert f"a: exported {device} as {iqn} LUN 1 on 127.0.0.1:{port}" in out
        listing = subprocess.run(["iscsi-ls", "-s", f"iscsi://127.0.0.1:{port}"],
                                 capture_output=True, text=True, timeout=20)
        assert f"Target:{iqn} Portal:127.0.0.1:{port},1" in listing.stdout, listing
        # iscsi-ls prints the last LBA x block size, truncated to MiB: 64 MiB shows as 63M
        assert re.search(r"^Lun:1\s+Type:DIRECT_ACCESS \(Size:63M\)$", listing.stdout, re.M)
        status = ok(blfs_iscsi(cfg, "status", env=env))
        assert f"export: tgt {iqn}  LUN 1 {device} (64 MiB)  on 127.0.0.1:{port}" in status
        assert "was already exported as configured" in ok(blfs_iscsi(cfg, "export", env=env))
    finally:
        shows = tgtadm("--lld", "iscsi", "--op", "show", "--mode", "target").stdout
        for tid in re.findall(r"^Target (\d+):", shows, re.M):
            tgtadm("--lld", "iscsi", "--op", "delete", "--mode", "target", "--force",
                   "--tid", tid)
        tgtadm("--op", "delete", "--mode", "system")
        try:
            tgtd.wait(timeout=5)
        except subprocess.TimeoutExpired:
            tgtd.kill()  # the tgtd we started, by its PID
            tgtd.wait(timeout=5)
        log.close()
        for suffix in ("", ".lock"):
            try:
                os.unlink(os.path.join(export.TGTD_SOCKET_DIR, f"socket.{control}{suffix}"))
            except FileNotFoundError:
                pass


def test_disk_urls():
    d = iscsi.parse_disk_url("n1", "iscsi://10.0.0.12/iqn.2026-11.org.example:n1/1", False,
                             "/m/n1")
    assert (d.kind, d.host, d.port, d.iqn, d.lun, d.portal) == (
        "iscsi", "10.0.0.12", 3260, "iqn.2026-11.org.example:n1", 1, "10.0.0.12:3260")
    assert d.by_path_name() == "ip-10.0.0.12:3260-iscsi-iqn.2026-11.org.example:n1-lun-1"
    d = iscsi.parse_disk_url("n2", "iscsi://[fd00::2]:3261/iqn.2026-11.x:y/0", False, "/m")
    assert d.portal == "[fd00::2]:3261"
    assert d.by_path_name() == "ip-[fd00::2]:3261-iscsi-iqn.2026-11.x:y-lun-0"
    d = iscsi.parse_disk_url("n3", "block:/dev/disk/by-id/wwn-0x5000c500a1b2c3d4", True, "/m")
    assert (d.kind, d.path, d.own) == ("block", "/dev/disk/by-id/wwn-0x5000c500a1b2c3d4", True)
    for bad in ("iscsi://host/iqn", "iscsi://host/iqn/x", "block:sdb", "/dev/sdb",
                "iscsi://host:99999/iqn/1"):
        with pytest.raises(iscsi.ConfigError, match="n4"):
            iscsi.parse_disk_url("n4", bad, False, "/m")


def test_config_errors(tmp_path, capsys):
    cfg = write_config(tmp_path / "a.toml", "a", {"a": "block:/dev/x", "b": "block:/dev/x"},
                       tmp_path / "d")
    assert iscsi.main(["--config", cfg, "status"]) == 2
    assert "nodes a and b name the same disk block:/dev/x" in capsys.readouterr().err
    cfg = write_config(tmp_path / "b.toml", "a", {"a": "block:/dev/x"}, tmp_path / "d",
                       iscsi_section="login_timeot = 3")
    assert iscsi.main(["--config", cfg, "status"]) == 2
    assert "[iscsi] has no key 'login_timeot'" in capsys.readouterr().err
    assert iscsi.main(["--config", str(tmp_path / "none.toml"), "up"]) == 2
    assert "does not exist" in capsys.readouterr().err


def _unit(name: str) -> tuple:
    parser = configparser.RawConfigParser(strict=False, delimiters=("=",),
                                          comment_prefixes=("#", ";"))
    parser.optionxform = str
    with open(os.path.join(UNITS, name)) as f:
        text = f.read()
    parser.read_string(text)  # (several After= lines: the last wins here, see below)
    return parser, text


def test_unit_file(tmp_path):
    unit, text = _unit("blfs-iscsi.service")
    s, u = unit["Service"], unit["Unit"]
    assert s["Type"] == "oneshot" and s["RemainAfterExit"] == "yes"
    assert s["ExecStart"] == "/usr/bin/blfs-iscsi up"
    assert s["ExecStop"] == "/usr/bin/blfs-iscsi down"
    after = " ".join(re.findall(r"^After=(.*)$", text, re.M)).split()
    assert {"network-online.target", "iscsid.service"} <= set(after)
    assert u["Wants"] == "network-online.target"
    assert u["Before"] == "blfs-worker.service"
    # it mounts for the worker: it must stay in the host's mount namespace
    for option in ("ProtectSystem", "PrivateTmp", "PrivateMounts", "PrivateDevices",
                   "ProtectHome", "ReadWritePaths", "MountFlags", "DynamicUser"):
        assert option not in s
    if shutil.which("systemd-analyze"):
        copy = tmp_path / "blfs-iscsi.service"
        copy.write_text(text.replace("/usr/bin/blfs-iscsi", "/bin/true"))
        proc = subprocess.run(["systemd-analyze", "verify", str(copy)], capture_output=True,
                              text=True)
        assert proc.returncode == 0, proc.stderr
