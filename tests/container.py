"""A real systemd as PID 1, in a systemd-nspawn container, for the systemd tests.

systemd is not PID 1 on the development and CI machines (README, "Tests and benchmarks"), so the unit
files are tried in a Debian 12 container instead:

    root = rootfs()                       # built once with mmdebstrap, cached by package list
    with Container.booted(root, setup=install_project) as ct:
        ct.systemctl("start", "blfs-master.socket")
        ct.run("blfs", "workers")

`rootfs()` builds /var/cache/blfs-test-rootfs/<key>/ when it is missing (about 20-60 s):
the key is a hash of the suite, the mirror lines and the package list, so changing the list
builds a new one. `rootfs(packages, suite="trixie")` builds a Debian 13 one instead (the
package names are Debian 12's, mapped by RENAMED where a suite differs). Each container boots on its own copy (`cp -a`) of it, which the context
manager removes, after stopping the container, even when the test fails.

There is no host systemd or D-Bus, so nspawn runs with `--register=no --keep-unit`, and
`machinectl` does not work: we find the container's systemd (PID 1 in the container's PID
namespace, a descendant of our nspawn process) and run commands in it with
`nsenter -t PID -a`. The container has its own network namespace with only loopback
(`--private-network`), so its ports 7070/7071 never collide with anything on the host.
"""
from __future__ import annotations

import contextlib
import ctypes
import fcntl
import glob
import hashlib
import os
import secrets
import shutil
import signal
import subprocess
import time
from typing import Callable, Iterator, Optional

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

SUITE = "bookworm"  # the default: Debian 12, what the machines and CI run
PACKAGES = (
    "systemd", "systemd-sysv", "dbus", "python3", "python3-msgpack", "python3-cryptography",
    "python3-sdnotify",
    "python3-systemd", "python3-pyroute2", "e2fsprogs", "util-linux", "procps",
)
MIRRORS = (
    "deb http://deb.debian.org/debian bookworm main",
    "deb http://deb.debian.org/debian bookworm-updates main",
    "deb http://deb.debian.org/debian-security bookworm-security main",
)
#: The Debian releases a root file system can be built from: suite -> its mirror lines.
SUITES = {
    "bookworm": MIRRORS,  # Debian 12
    "trixie": (  # Debian 13
        "deb http://deb.debian.org/debian trixie main",
        "deb http://deb.debian.org/debian trixie-updates main",
        "deb http://deb.debian.org/debian-security trixie-security main",
    ),
}
#: Package names are Debian 12's (PACKAGES, and what callers add); a suite where one is
#: called otherwise maps it here. Checked for trixie (2026-12): every name of PACKAGES and
#: of the system test's list exists there unchanged, so the map is empty.
RENAMED: dict = {"bookworm": {}, "trixie": {}}
CACHE = "/var/cache/blfs-test-rootfs"
WORK = "/var/tmp"  # per-container copies: the same file system as the cache, not tmpfs
RECIPE = 1  # bump when the way the root file system is built changes

# Commands inside the container get a clean environment, not the test runner's.
CLEAN_ENV = ["env", "-i", "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
             "LANG=C.UTF-8", "HOME=/root", "TERM=dumb", "SYSTEMD_COLORS=0",
             "SYSTEMD_PAGER=", "SYSTEMD_LOG_COLOR=0"]


# ----------------------------------------------------------------------------- tools

def ensure_tools() -> None:
    """mmdebstrap and systemd-nspawn, installed with apt when missing; else skip the test."""
    if os.geteuid() != 0:
        pytest.skip("systemd container tests need root (systemd-nspawn, mmdebstrap)")
    missing = [t for t in ("mmdebstrap", "systemd-nspawn", "nsenter") if not shutil.which(t)]
    if missing and shutil.which("apt-get"):
        env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
        for argv in (["apt-get", "update", "-qq"],
                     ["apt-get", "install", "-y", "-qq", "mmdebstrap", "systemd-container"]):
            done = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=600)
            if done.returncode != 0:
                pytest.skip(f"cannot install mmdebstrap/systemd-container ({' '.join(argv)}): "
                            f"{(done.stderr or done.stdout).strip()[-300:]}")
        missing = [t for t in ("mmdebstrap", "systemd-nspawn", "nsenter") if not shutil.which(t)]
    if missing:
        pytest.skip(f"systemd container tests need {', '.join(missing)}, which are missing "
                    "and cannot be installed here")


# ----------------------------------------------------------------------------- rootfs

def suite_packages(packages=PACKAGES, suite: str = SUITE) -> tuple:
    """`packages` (Debian 12 names) as that suite calls them."""
    if suite not in SUITES:
        raise ValueError(f"unknown suite {suite!r}: {', '.join(SUITES)}")
    return tuple(RENAMED[suite].get(p, p) for p in packages)


def rootfs_key(packages=PACKAGES, suite: str = SUITE) -> str:
    """One cache entry per recipe, suite, mirror list and package list."""
    text = "\n".join([f"recipe {RECIPE}", suite, *SUITES[suite],
                      *sorted(suite_packages(packages, suite))])
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def rootfs(packages=PACKAGES, suite: str = SUITE) -> str:
    """The cached Debian root file system of `suite` (bookworm unless told) for `packages`,
    built when it is missing."""
    ensure_tools()
    os.makedirs(CACHE, exist_ok=True)
    mirrors, packages = SUITES[suite], suite_packages(packages, suite)
    key = rootfs_key(packages, suite)
    path = os.path.join(CACHE, key)
    done = os.path.join(path, ".blfs-rootfs-complete")
    if os.path.exists(done):
        return path
    with open(os.path.join(CACHE, key + ".lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # another run may be building the same one
        if os.path.exists(done):
            return path
        shutil.rmtree(path, ignore_errors=True)  # an interrupted build
        partial = f"{path}.partial-{os.getpid()}"
        shutil.rmtree(partial, ignore_errors=True)
        argv = ["mmdebstrap", "--variant=minbase", "--include=" + ",".join(packages),
                suite, partial, *mirrors]
        try:
            built = subprocess.run(argv, stdin=subprocess.DEVNULL, capture_output=True,
                                   text=True, timeout=900)
        except subprocess.TimeoutExpired:
            shutil.rmtree(partial, ignore_errors=True)
            raise
        if built.returncode != 0:
            shutil.rmtree(partial, ignore_errors=True)
            tail = (built.stderr or built.stdout).strip()[-2000:]
            if "Temporary failure resolving" in tail or "Could not resolve" in tail:
                pytest.skip(f"mmdebstrap cannot reach the Debian mirror: {tail[-300:]}")
            raise RuntimeError(f"mmdebstrap failed ({built.returncode}):\n{tail}")
        with open(os.path.join(partial, ".blfs-rootfs-complete"), "w") as f:
            f.write(" ".join(argv) + "\n")
        os.rename(partial, path)
    return path


# ----------------------------------------------------------------------------- install

def install_project(root: str, *, unit_dir: str = "/usr/lib/systemd/system") -> None:
    """Install blfs into a root file system as a package would: code, command, units,
    sysusers.d and tmpfiles.d files."""
    pkg = os.path.join(root, "usr/lib/python3/dist-packages/blfsd")
    shutil.rmtree(pkg, ignore_errors=True)
    shutil.copytree(os.path.join(REPO, "blfsd"), pkg,
                    ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    write(root, "/usr/bin/blfs",
          "#!/usr/bin/python3\nimport sys\nfrom blfsd.cli import main\nsys.exit(main())\n",
          mode=0o755)
    for name in ("blfs-master.socket", "blfs-master.service", "blfs-worker.socket",
                 "blfs-worker.service"):
        copy(os.path.join(REPO, "units", name), root, os.path.join(unit_dir, name))
    copy(os.path.join(REPO, "units", "blfs.sysusers"), root, "/usr/lib/sysusers.d/blfs.conf")
    copy(os.path.join(REPO, "units", "blfs.tmpfiles"), root, "/usr/lib/tmpfiles.d/blfs.conf")


def enable(root: str, *units: str) -> None:
    """`systemctl enable` offline (systemctl --root works without a running systemd)."""
    subprocess.run(["systemctl", "--root", root, "enable", *units], check=True,
                   capture_output=True, text=True)


def write(root: str, path: str, text: str, mode: int = 0o644) -> str:
    target = os.path.join(root, path.lstrip("/"))
    os.makedirs(os.path.dirname(target), exist_ok=True)
    with open(target, "w") as f:
        f.write(text)
    os.chmod(target, mode)
    return target


def copy(source: str, root: str, path: str, mode: int = 0o644) -> str:
    target = os.path.join(root, path.lstrip("/"))
    os.makedirs(os.path.dirname(target), exist_ok=True)
    shutil.copyfile(source, target)
    os.chmod(target, mode)
    return target


# ----------------------------------------------------------------------------- container

class ContainerError(RuntimeError):
    pass


class Container:
    """One booted container: its own copy of the root file system, its PID 1, nsenter."""

    def __init__(self, base: str, name: Optional[str] = None):
        self.base = base
        self.name = name or f"blfs-{secrets.token_hex(4)}"
        self.dir = os.path.join(WORK, f"{self.name}.ct")
        self.root = os.path.join(self.dir, "root")
        self.log_path = os.path.join(self.dir, "console.log")
        self.nspawn: Optional[subprocess.Popen] = None
        self.pid1: Optional[int] = None

    # -- life cycle

    @classmethod
    @contextlib.contextmanager
    def booted(cls, base: str, setup: Optional[Callable[["Container"], None]] = None,
               boot_timeout: float = 90) -> Iterator["Container"]:
        ct = cls(base)
        try:
            ct.prepare()
            if setup is not None:
                setup(ct)
            ct.boot(boot_timeout)
            yield ct
        finally:
            ct.destroy()

    def prepare(self) -> None:
        sweep_stale()
        os.makedirs(self.dir)
        with open(os.path.join(self.dir, "owner"), "w") as f:
            f.write(f"{os.getpid()}\n")
        subprocess.run(["cp", "-a", "--reflink=auto", self.base, self.root], check=True)
        os.unlink(os.path.join(self.root, ".blfs-rootfs-complete"))
        write(self.root, "/etc/hostname", self.name + "\n")

    def nspawn_options(self) -> list:
        """nspawn's options besides the root, --boot and the machine name (a subclass may
        use a bridge instead, bind devices, set a host name)."""
        return ["--private-network"]

    def started(self) -> None:
        """Called once the container's systemd exists, before waiting for multi-user."""

    def boot(self, timeout: float = 90) -> None:
        self.start()
        self.wait_booted(timeout)

    def start(self, die_with_parent: bool = True) -> None:
        """Start nspawn in a cgroup of its own. From the main thread if die_with_parent:
        PR_SET_PDEATHSIG fires when the *thread* that forked nspawn ends."""
        argv = ["systemd-nspawn", "--quiet", "-D", self.root, "--boot", "--register=no",
                "--keep-unit", f"--machine={self.name}", *self.nspawn_options(),
                "--console=pipe", "--link-journal=no"]
        self.pid1 = None
        self.cgroups = cgroup_dirs(f"blfs-{self.name}")
        for d in self.cgroups:
            remove_cgroup(d)
            os.makedirs(d)

        def in_child() -> None:
            enter_cgroups(self.cgroups)
            if die_with_parent:
                _die_with_parent()

        self._log = open(self.log_path, "ab")
        self.nspawn = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=self._log,
                                       stderr=subprocess.STDOUT, start_new_session=True,
                                       preexec_fn=in_child)

    def wait_booted(self, timeout: float = 90) -> None:
        deadline = time.monotonic() + timeout
        while self.pid1 is None:
            if self.nspawn.poll() is not None:
                self._boot_failed(f"systemd-nspawn exited with {self.nspawn.returncode}")
            self.pid1 = self._find_pid1()
            if self.pid1 is None:
                if time.monotonic() > deadline:
                    self._boot_failed("no systemd appeared in the container")
                time.sleep(0.1)
        self.started()
        state = ""
        while time.monotonic() < deadline:
            done = self.run("systemctl", "is-system-running", check=False, timeout=30)
            state = done.stdout.strip()
            if state in ("running", "degraded"):
                break
            time.sleep(0.2)
        else:
            self._boot_failed(f"the container's systemd is {state!r}, not running")
        if state == "degraded":
            failed = self.run("systemctl", "--failed", "--no-legend", check=False).stdout
            raise ContainerError(f"container booted degraded; failed units:\n{failed}")

    def _boot_failed(self, why: str) -> None:
        self._log.flush()
        with open(self.log_path, "rb") as f:
            log = f.read().decode(errors="replace")[-3000:]
        if not nspawn_works(self.base):
            pytest.skip(f"systemd-nspawn cannot run containers here: {why}\n{log}")
        raise ContainerError(f"{why}; console:\n{log}")

    def _find_pid1(self) -> Optional[int]:
        """PID 1 of the container's PID namespace, among our nspawn's descendants."""
        assert self.nspawn is not None
        for pid in descendants(self.nspawn.pid):
            try:
                with open(f"/proc/{pid}/status") as f:
                    for line in f:
                        if line.startswith("NSpid:"):
                            ids = line.split()[1:]
                            if len(ids) > 1 and ids[-1] == "1":
                                with open(f"/proc/{pid}/comm") as c:
                                    if c.read().strip() == "systemd":
                                        return pid
            except OSError:
                continue
        return None

    def destroy(self) -> None:
        """Stop the container (orderly if it can, by SIGKILL if it must) and remove its files."""
        try:
            if self.nspawn is not None and self.nspawn.poll() is None:
                # nspawn turns SIGTERM into an orderly poweroff of a booted container
                with contextlib.suppress(ProcessLookupError):
                    self.nspawn.send_signal(signal.SIGTERM)
                try:
                    self.nspawn.wait(30)
                except subprocess.TimeoutExpired:
                    if self.pid1:  # killing a PID namespace's init kills the whole namespace
                        with contextlib.suppress(ProcessLookupError):
                            os.kill(self.pid1, signal.SIGKILL)
                    with contextlib.suppress(ProcessLookupError):
                        os.killpg(self.nspawn.pid, signal.SIGKILL)
                    self.nspawn.wait(30)
        finally:
            if getattr(self, "_log", None):
                self._log.close()
            if self.nspawn is not None and self.nspawn.poll() is None:
                raise ContainerError(f"container {self.name} (nspawn {self.nspawn.pid}) "
                                     "would not stop")
            for d in getattr(self, "cgroups", []):
                remove_cgroup(d)
            shutil.rmtree(self.dir, ignore_errors=True)

    # -- commands inside

    def run(self, *argv: str, check: bool = True, timeout: float = 60,
            input: Optional[str] = None) -> subprocess.CompletedProcess:
        """Run a command in every namespace of the container, with a clean environment."""
        if self.pid1 is None:
            raise ContainerError("the container is not running")
        full = ["nsenter", "-t", str(self.pid1), "-a", *CLEAN_ENV, *argv]
        done = subprocess.run(full, capture_output=True, text=True, timeout=timeout,
                              input=input, stdin=None if input is not None else subprocess.DEVNULL)
        if check and done.returncode != 0:
            raise ContainerError(f"{' '.join(argv)} exited with {done.returncode}:\n"
                                 f"stdout: {done.stdout[-3000:]}\nstderr: {done.stderr[-3000:]}")
        return done

    def sh(self, script: str, **kw) -> subprocess.CompletedProcess:
        return self.run("sh", "-ec", script, **kw)

    def systemctl(self, *args: str, check: bool = True, **kw) -> subprocess.CompletedProcess:
        return self.run("systemctl", "--no-pager", *args, check=check, **kw)

    def show(self, unit: str, *props: str) -> dict:
        """`systemctl show -p A,B UNIT` as a dict."""
        out = self.systemctl("show", "-p", ",".join(props), unit).stdout
        return dict(line.split("=", 1) for line in out.splitlines() if "=" in line)

    def journal(self, *args: str) -> str:
        return self.run("journalctl", "--no-pager", *args, check=False).stdout

    def host_path(self, path: str) -> str:
        """Where a path inside the container is on the host."""
        return os.path.join(self.root, path.lstrip("/"))

    def wait_for(self, predicate: Callable[[], object], timeout: float, what: str,
                 interval: float = 0.2):
        deadline = time.monotonic() + timeout
        while True:
            value = predicate()
            if value:
                return value
            if time.monotonic() > deadline:
                raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")
            time.sleep(interval)


PR_SET_PDEATHSIG = 1


def cgroup_dirs(name: str) -> list:
    """A cgroup of its own for one container, below ours, in the hierarchies systemd uses
    (the named v1 `name=systemd` one and the unified v2 one, whichever are mounted).

    With --keep-unit and no host systemd, nspawn leaves the container in the cgroup of the
    process that started it, and the container's systemd builds its tree (payload/
    system.slice/UNIT...) there: two containers started from one process would share every
    unit's cgroup (seen: units failing with status=219/CGROUP, boots ending degraded)."""
    ours = {}
    with open("/proc/self/cgroup") as f:
        for line in f:
            hid, controllers, path = line.rstrip("\n").split(":", 2)
            if controllers == "name=systemd":
                ours["v1"] = path
            elif hid == "0" and controllers == "":
                ours["v2"] = path
    dirs = []
    with open("/proc/self/mountinfo") as f:
        for line in f:
            fields = line.split()
            mount_point, fstype = fields[4], fields[fields.index("-") + 1]
            options = fields[-1].split(",")
            key = ("v1" if fstype == "cgroup" and "name=systemd" in options
                   else "v2" if fstype == "cgroup2" else None)
            if key in ours:
                dirs.append(os.path.join(mount_point, ours.pop(key).lstrip("/"), name))
    return dirs


def enter_cgroups(dirs: list) -> None:
    """In a child before exec: move this process into the given cgroups."""
    for d in dirs:
        with open(os.path.join(d, "cgroup.procs"), "w") as f:
            f.write(str(os.getpid()))


def remove_cgroup(path: str, timeout: float = 10) -> None:
    """Remove a cgroup and what the container's systemd made below it (bottom up)."""
    deadline = time.monotonic() + timeout
    while os.path.isdir(path):
        for dirpath, _, _ in os.walk(path, topdown=False):
            with contextlib.suppress(OSError):
                os.rmdir(dirpath)
        if os.path.isdir(path):
            if time.monotonic() > deadline:
                raise ContainerError(f"cannot remove cgroup {path}: still in use")
            time.sleep(0.1)


def _die_with_parent() -> None:
    """In nspawn's child before exec: if the test process dies, nspawn gets SIGTERM and
    powers the container off, so a killed test run leaves no container behind."""
    ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def sweep_stale() -> None:
    """Remove container copies left by test runs that were killed: only those whose owning
    test process is gone and in which no process runs any more."""
    for ct_dir in glob.glob(os.path.join(WORK, "blfs-*.ct")):
        try:
            with open(os.path.join(ct_dir, "owner")) as f:
                owner = int(f.read().strip())
        except (OSError, ValueError):
            continue
        if _alive(owner):
            continue
        root = os.path.realpath(os.path.join(ct_dir, "root"))
        busy = False
        for entry in os.listdir("/proc"):
            if entry.isdigit():
                try:
                    if os.path.realpath(f"/proc/{entry}/root").startswith(root):
                        busy = True
                        break
                except OSError:
                    continue
        if not busy:
            shutil.rmtree(ct_dir, ignore_errors=True)


def descendants(pid: int) -> list:
    """Every process below `pid`, breadth first (from /proc/*/stat)."""
    children: dict = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                ppid = int(f.read().rsplit(")", 1)[1].split()[1])
        except (OSError, ValueError, IndexError):
            continue
        children.setdefault(ppid, []).append(int(entry))
    found, todo = [], [pid]
    while todo:
        for child in children.get(todo.pop(0), []):
            found.append(child)
            todo.append(child)
    return found


def nspawn_works(base: str) -> bool:
    """Whether systemd-nspawn can run anything at all here (not a boot, just /bin/true)."""
    try:
        done = subprocess.run(["systemd-nspawn", "--quiet", "-D", base, "--register=no",
                               "--keep-unit", "--private-network", "--read-only",
                               "/bin/true"], stdin=subprocess.DEVNULL, capture_output=True,
                              timeout=60)
    except (OSError, subprocess.TimeoutExpired):
        return False
    return done.returncode == 0
