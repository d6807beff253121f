"""A cgroup per task attempt: memory, pid and CPU limits, a kill that reaches every
descendant, and telling an out-of-memory kill from any other death.

cgroup v2 first (a Debian 12 host boots pure v2; systemd gives blfs-worker.service its own
subtree with `Delegate=yes`). There the worker moves itself into a leaf `daemon` of its
service's cgroup (a cgroup with controllers enabled for its children may hold no process
itself) and makes `tasks/<attempt>` for each attempt, with `memory.max`, `pids.max`,
`cpu.weight`; `cgroup.kill` ends the attempt and everything it forked or `setsid()`-ed.

Where v2 lacks those controllers but cgroup v1 has them (a "hybrid" host, as the machines
that run our tests), the limits go into v1 cgroups (`memory.limit_in_bytes`, `pids.max`,
`cpu.shares`) and the kill into the v2 hierarchy, which has `cgroup.kill` even without
controllers. Where nothing can be made (not root, no delegation), `Hierarchy.discover`
says why once and attempts fall back to process groups (the caller's business).
"""
from __future__ import annotations

import contextlib
import errno
import logging
import os
import re
import signal
import time
from dataclasses import dataclass, field
from typing import Optional

log = logging.getLogger("blfs.cgroups")

ROOT = "/sys/fs/cgroup"
CONTROLLERS = ("memory", "pids", "cpu")


@dataclass(frozen=True)
class Limits:
    """What one attempt may use; None means no limit of that kind."""

    memory: Optional[int] = None  # bytes
    pids: Optional[int] = None  # processes and threads
    cpu_weight: Optional[int] = None  # 1..10000, 100 is the default share


def own_cgroups(text: Optional[str] = None) -> dict:
    """Our cgroup path in each hierarchy, from /proc/self/cgroup: {"": v2 path,
    "memory": v1 path, ...}."""
    if text is None:
        with open("/proc/self/cgroup") as f:
            text = f.read()
    paths: dict = {}
    for line in text.splitlines():
        _, controllers, path = line.split(":", 2)
        for name in controllers.split(",") if controllers else [""]:
            paths[name] = path
    return paths


def _v2_mount() -> Optional[str]:
    """Where the v2 hierarchy is mounted: /sys/fs/cgroup (pure v2) or .../unified."""
    for path in (ROOT, os.path.join(ROOT, "unified")):
        if os.path.exists(os.path.join(path, "cgroup.procs")) and \
                os.path.exists(os.path.join(path, "cgroup.controllers")):
            return path
    return None


def _read(path: str) -> str:
    with open(path) as f:
        return f.read()


def _write(path: str, text: str) -> None:
    with open(path, "w") as f:
        f.write(text)


@dataclass
class Hierarchy:
    """Where this worker makes its attempts' cgroups, and what they can enforce."""

    v2_dir: Optional[str] = None  # parent of the attempts' v2 cgroups
    v1_dirs: dict = field(default_factory=dict)  # controller -> parent dir, where v2 lacks it
    enforced: frozenset = frozenset()  # {"memory", "pids", "cpu", "kill"}
    why_not: str = ""

    @classmethod
    def discover(cls, label: str) -> "Hierarchy":
        """Set up (once, at worker start) the parent cgroups of our attempts. Never
        raises: what cannot be done is said in `why_not`, and is not enforced."""
        if os.geteuid() != 0:
            return cls(why_not="not root")
        try:
            own = own_cgroups()
        except OSError as exc:
            return cls(why_not=f"cannot read /proc/self/cgroup: {exc.strerror}")
        mount = _v2_mount()
        h = cls()
        v2_controllers: set = set()
        if mount is not None and "" in own:
            try:
                h.v2_dir, v2_controllers = _prepare_v2(mount, own[""], label)
            except OSError as exc:
                h.why_not = f"cgroup v2: {exc.strerror or exc}"
        for name in CONTROLLERS:
            if name in v2_controllers or name not in own:
                continue
            base = os.path.join(ROOT, name)
            if not os.path.isdir(base):
                continue
            parent = os.path.join(base + own[name], f"blfs-{label}")
            try:
                os.makedirs(parent, exist_ok=True)
            except OSError:
                continue
            h.v1_dirs[name] = parent
        kill = h.v2_dir is not None and os.path.exists(os.path.join(h.v2_dir, "cgroup.kill"))
        h.enforced = frozenset(v2_controllers | set(h.v1_dirs) | ({"kill"} if kill else set()))
        if not h.enforced and not h.why_not:
            h.why_not = "no cgroup hierarchy we may write to"
        return h

    def describe(self) -> str:
        if not self.enforced:
            return f"no cgroups ({self.why_not})"
        where = [f"v2 {self.v2_dir}"] if self.v2_dir else []
        where += [f"v1 {name} {d}" for name, d in sorted(self.v1_dirs.items())]
        return f"cgroups enforce {', '.join(sorted(self.enforced))} ({'; '.join(where)})"

    def close(self) -> None:
        """Remove our parent cgroups if nothing is left in them (at the worker's exit)."""
        for d in [self.v2_dir, *self.v1_dirs.values()]:
            if d and os.path.basename(d).startswith("blfs-"):
                try:
                    os.rmdir(d)
                except OSError:
                    pass

    def sweep(self, worker: str) -> int:
        """Kill and remove what a previous session of this worker left: attempt cgroups
        in our own parents (a restart under systemd), and the parents of a worker of this
        name whose process is gone (one SIGKILLed outside systemd: its tasks would go on
        writing into slots that a new session hands out again). The number of attempt
        cgroups removed."""
        removed = 0
        for parent in [self.v2_dir, *self.v1_dirs.values()]:
            if not parent:
                continue
            stale = [parent] + [os.path.join(os.path.dirname(parent), name)
                                for name in _listdir(os.path.dirname(parent))
                                if _stale_parent(name, worker)]
            for d in stale:
                for child in _listdir(d):
                    path = os.path.join(d, child)
                    if os.path.isdir(path):
                        group = AttemptGroup(self, v2=path)
                        group.kill()
                        removed += group.remove()
                if d != parent:
                    with contextlib.suppress(OSError):
                        os.rmdir(d)
        return removed

    def create(self, name: str, limits: Limits) -> "AttemptGroup":
        """The cgroups of one attempt, made and limited (join them with AttemptGroup.join)."""
        safe = re.sub(r"[^A-Za-z0-9._-]", "_", name)[:200]
        group = AttemptGroup(self)
        try:
            if self.v2_dir is not None:
                group.v2 = os.path.join(self.v2_dir, safe)
                os.mkdir(group.v2)
            for controller, parent in self.v1_dirs.items():
                path = os.path.join(parent, safe)
                os.mkdir(path)
                group.v1[controller] = path
            group.limit(limits)
        except OSError:
            group.remove()
            raise
        return group


def _listdir(path: str) -> list:
    try:
        return os.listdir(path)
    except OSError:
        return []


def _stale_parent(name: str, worker: str) -> bool:
    """Whether `name` is the parent cgroup of a worker of this name that is not running."""
    m = re.fullmatch(rf"blfs-{re.escape(worker)}-(\d+)", name)
    return m is not None and not os.path.exists(f"/proc/{m.group(1)}")


def _prepare_v2(mount: str, own: str, label: str) -> tuple[Optional[str], set]:
    """The v2 parent of our attempts' cgroups, and the controllers enabled for them.

    Alone in our cgroup (a systemd service with Delegate=yes), we move into a `daemon`
    leaf and enable every controller we have for a `tasks` subtree. Sharing our cgroup
    with other processes (a test runner, a shell), we may not enable controllers there;
    a plain child cgroup still gives us cgroup.kill.
    """
    here = mount + own.rstrip("/") if own != "/" else mount
    procs = [p for p in _read(os.path.join(here, "cgroup.procs")).split() if p]
    available = set(_read(os.path.join(here, "cgroup.controllers")).split())
    wanted = available & set(CONTROLLERS)
    if here != mount and procs == [str(os.getpid())]:
        leaf = os.path.join(here, "daemon")
        os.makedirs(leaf, exist_ok=True)
        _write(os.path.join(leaf, "cgroup.procs"), str(os.getpid()))
        tasks = os.path.join(here, "tasks")
        _enable(here, wanted)
        os.makedirs(tasks, exist_ok=True)
        enabled = _enable(tasks, wanted)
        return tasks, enabled
    parent = os.path.join(here, f"blfs-{label}")
    os.makedirs(parent, exist_ok=True)
    return parent, set()


def _enable(cgroup: str, controllers: set) -> set:
    """Enable controllers for a cgroup's children; returns those that took."""
    enabled = set()
    for name in sorted(controllers):
        try:
            _write(os.path.join(cgroup, "cgroup.subtree_control"), f"+{name}")
            enabled.add(name)
        except OSError as exc:
            log.warning("cannot enable the %s controller in %s: %s", name, cgroup,
                        exc.strerror)
    return enabled


@dataclass
class AttemptGroup:
    """One attempt's cgroups (a v2 one, and v1 ones on a hybrid host)."""

    hierarchy: Hierarchy
    v2: Optional[str] = None
    v1: dict = field(default_factory=dict)
    limits: Limits = Limits()

    def _dir(self, controller: str) -> Optional[str]:
        if controller in self.v1:
            return self.v1[controller]
        return self.v2

    def limit(self, limits: Limits) -> None:
        self.limits = limits
        enforced = self.hierarchy.enforced
        if limits.memory and "memory" in enforced:
            d = self._dir("memory")
            if "memory" in self.v1:
                _write(os.path.join(d, "memory.limit_in_bytes"), str(limits.memory))
            else:
                _write(os.path.join(d, "memory.max"), str(limits.memory))
                if os.path.exists(os.path.join(d, "memory.swap.max")):  # no way around it
                    _write(os.path.join(d, "memory.swap.max"), "0")
        if limits.pids and "pids" in enforced:
            _write(os.path.join(self._dir("pids"), "pids.max"), str(limits.pids))
        if limits.cpu_weight and "cpu" in enforced:
            if "cpu" in self.v1:  # v1 shares: 1024 is the default, as 100 is for weight
                shares = max(2, limits.cpu_weight * 1024 // 100)
                _write(os.path.join(self.v1["cpu"], "cpu.shares"), str(shares))
            else:
                _write(os.path.join(self.v2, "cpu.weight"), str(limits.cpu_weight))

    def dirs(self) -> list:
        return [d for d in [self.v2, *self.v1.values()] if d]

    def join(self, pid: int = 0) -> None:
        """Put a process (0: the caller) into every cgroup of this attempt."""
        for d in self.dirs():
            _write(os.path.join(d, "cgroup.procs"), str(pid or os.getpid()))

    def pids(self) -> list:
        found: set = set()
        for d in self.dirs():
            try:
                found.update(int(p) for p in _read(os.path.join(d, "cgroup.procs")).split())
            except OSError:
                pass
        return sorted(found)

    def kill(self) -> None:
        """SIGKILL every process of the attempt, whatever session or group it is in."""
        if self.v2 is not None and os.path.exists(os.path.join(self.v2, "cgroup.kill")):
            try:
                _write(os.path.join(self.v2, "cgroup.kill"), "1")
                return
            except OSError:
                pass
        for _ in range(20):  # without cgroup.kill: until no process is left (or forks)
            pids = self.pids()
            if not pids:
                return
            for pid in pids:
                try:
                    os.kill(pid, signal.SIGKILL)
                except (ProcessLookupError, PermissionError):
                    pass
            time.sleep(0.01)

    def oom_killed(self) -> bool:
        """Whether the kernel's OOM killer ended a process of this attempt."""
        d = self._dir("memory")
        if d is None or "memory" not in self.hierarchy.enforced:
            return False
        name = "memory.oom_control" if "memory" in self.v1 else "memory.events"
        try:
            text = _read(os.path.join(d, name))
        except OSError:
            return False
        found = re.search(r"^oom_kill (\d+)$", text, re.M)
        return bool(found and int(found.group(1)) > 0)

    def empty(self) -> bool:
        return not self.pids()

    def remove(self, wait: float = 2.0) -> bool:
        """Remove the cgroups once their processes are gone (a killed process takes a
        moment to leave). False if some could not be removed in time."""
        deadline = time.monotonic() + wait
        left = self.dirs()
        while left:
            for d in list(left):
                try:
                    os.rmdir(d)
                    left.remove(d)
                except FileNotFoundError:
                    left.remove(d)
                except OSError as exc:
                    if exc.errno != errno.EBUSY:
                        left.remove(d)
            if not left or time.monotonic() > deadline:
                break
            time.sleep(0.02)
        return not left
