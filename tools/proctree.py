"""Run a command and watch its process tree through /proc (no psutil): CPU, memory, phases.

`measure(argv, ...)` starts the command, samples every process below it every `interval`
seconds, and reaps it with wait4, which gives the exact user+sys CPU time of the whole
tree (every descendant that its parent waited for); /proc/stat before and after gives what
the rest of the machine used meanwhile (`others`, in CPUs: other users' work, and this
sampler), which says how much a figure was disturbed.  Sampling adds, per process: its peak RSS (VmHWM, which the kernel
keeps, so it is exact as long as the process lives past one sample), its CPU time when
last seen, and when it was first and last seen; and for the tree, the largest sum of VmRSS
seen at one instant (shared pages of forked processes are counted in each, so this is an
upper bound of what the tree really held).

Processes get a role from their place in the tree and from what they have open:
depth 0 is the command itself (for `blfs submit --local`: the client and the master),
depth 1 its children (the workers), deeper ones tasks; a task with one of the input files
open is a "map", one with a file under OUTPUT/_temporary/ open is a "reduce"
(`classify_task`), others stay "task".
"""
from __future__ import annotations

import os
import subprocess
import threading
import time
from dataclasses import dataclass, field
from typing import Callable, Iterable, Optional

CLK_TCK = os.sysconf("SC_CLK_TCK")
PAGE = os.sysconf("SC_PAGE_SIZE")


# ------------------------------------------------------------------------ /proc parsing

def parse_stat(text: str) -> dict:
    """The fields of /proc/PID/stat we use. The command name may hold spaces and ')'."""
    head, _, rest = text.rpartition(")")
    pid_s, _, comm = head.partition(" (")
    f = rest.split()
    # f[0] is field 3 (state); utime and stime are fields 14 and 15, starttime field 22
    return {"pid": int(pid_s), "comm": comm, "state": f[0], "ppid": int(f[1]),
            "utime": int(f[11]) / CLK_TCK, "stime": int(f[12]) / CLK_TCK,
            "starttime": int(f[19]) / CLK_TCK, "rss": int(f[21]) * PAGE}


def parse_status(text: str) -> dict:
    """VmRSS and VmHWM (bytes) from /proc/PID/status."""
    out = {}
    for line in text.splitlines():
        name, _, value = line.partition(":")
        if name in ("VmRSS", "VmHWM", "RssAnon"):
            out[name] = int(value.split()[0]) * 1024
    return out


def children(pid: int) -> list:
    """Children of every thread of pid (CONFIG_PROC_CHILDREN)."""
    found: list = []
    try:
        tids = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return found
    for tid in tids:
        try:
            with open(f"/proc/{pid}/task/{tid}/children") as f:
                found += [int(x) for x in f.read().split()]
        except OSError:
            continue
    return found


def open_files(pid: int) -> list:
    try:
        names = os.listdir(f"/proc/{pid}/fd")
    except OSError:
        return []
    paths = []
    for n in names:
        try:
            paths.append(os.readlink(f"/proc/{pid}/fd/{n}"))
        except OSError:
            continue
    return paths


def classify_task(paths: Iterable[str], inputs: Iterable[str], output: Optional[str]) -> str:
    """'map' if an input file is open, 'reduce' if a file under OUTPUT/_temporary/ is open,
    else '' (not known yet)."""
    inputs = {os.path.realpath(p) for p in inputs}
    temp = os.path.join(os.path.realpath(output), "_temporary") + os.sep if output else None
    for p in paths:
        if p in inputs:
            return "map"
        if temp and p.startswith(temp):
            return "reduce"
    return ""


# ------------------------------------------------------------------------ the sampler

@dataclass
class Proc:
    pid: int
    depth: int
    role: str
    first: float  # seconds since the command started, when first seen
    last: float = 0.0  # when last seen alive
    cpu: float = 0.0  # user+sys seconds when last seen
    hwm: int = 0  # peak RSS (VmHWM) when last seen
    rss: int = 0
    read_bytes: int = 0  # /proc/PID/io read_bytes when last seen (0 if not readable)
    reads: list = field(default_factory=list)  # (seconds, read_bytes) at every sample


@dataclass
class Measurement:
    argv: list
    returncode: int = 0
    wall: float = 0.0
    user: float = 0.0  # rusage of the whole (reaped) tree
    sys: float = 0.0
    # wait4's ru_maxrss: NOT used for figures, because it also counts the memory of the
    # forked copy of the measuring process before it exec()ed the command
    rusage_maxrss: int = 0
    tree_peak: int = 0  # bytes: the largest sum of VmRSS over the tree at one sample
    samples: int = 0
    t0: float = 0.0  # time.monotonic() when the command started (CLOCK_MONOTONIC)
    others: Optional[float] = None  # CPUs busy with anything but this tree, on average
    procs: dict = field(default_factory=dict)  # pid -> Proc
    output: list = field(default_factory=list)  # (seconds, line) of stdout+stderr

    @property
    def cpu(self) -> float:
        return self.user + self.sys

    @property
    def cpu_share(self) -> float:
        """user+sys over wall: 2.0 means two CPUs busy all the time."""
        return self.cpu / self.wall if self.wall > 0 else 0.0

    def of_role(self, *roles: str) -> list:
        return [p for p in self.procs.values() if p.role in roles]

    def largest(self, *roles: str) -> Optional[Proc]:
        """The process with the highest peak RSS among these roles (all when none given)."""
        procs = self.of_role(*roles) if roles else list(self.procs.values())
        return max(procs, key=lambda p: p.hwm) if procs else None

    @property
    def maxrss(self) -> int:
        """The largest peak RSS (VmHWM) of any process seen."""
        p = self.largest()
        return p.hwm if p else 0

    def phase(self, *roles: str) -> Optional[tuple]:
        """(first seen, last seen) over the processes of these roles."""
        procs = self.of_role(*roles)
        if not procs:
            return None
        return min(p.first for p in procs), max(p.last for p in procs)


def read_rate(reads: list) -> Optional[tuple]:
    """(bytes, seconds) a process read from storage while it was seen reading, from its
    (seconds, read_bytes) samples: from the last sample before its count first grew to the
    last sample at which it grew. Both ends are samples, so the rate is not biased by the
    reads it did between its last sample and its exit (those are simply not counted)."""
    grew = [k for k in range(1, len(reads)) if reads[k][1] > reads[k - 1][1]]
    if not grew:
        return None
    (t0, b0), (t1, b1) = reads[grew[0] - 1], reads[grew[-1]]
    return b1 - b0, max(t1 - t0, 1e-6)


def busy_seconds() -> Optional[float]:
    """CPU seconds the whole machine spent busy since boot (/proc/stat: all but idle and
    iowait), or None."""
    try:
        with open("/proc/stat") as f:
            fields = f.readline().split()
    except OSError:
        return None
    if not fields or fields[0] != "cpu":
        return None
    ticks = [int(x) for x in fields[1:9]]  # user nice system idle iowait irq softirq steal
    return (sum(ticks) - ticks[3] - ticks[4]) / CLK_TCK


def _role(depth: int, roles: tuple) -> str:
    return roles[min(depth, len(roles) - 1)]


def measure(argv: list, *, cwd: Optional[str] = None, env: Optional[dict] = None,
            interval: float = 0.1, roles: tuple = ("main", "child", "task"),
            classify: Optional[Callable[[int], str]] = None,
            timeout: Optional[float] = None, also: Optional[dict] = None) -> Measurement:
    """Run argv to its end while sampling its process tree. stdout and stderr are captured
    together, line by line, with the seconds since the start. `also` maps the pids of
    other processes to watch (daemons the command talks to) to the depth they count as,
    which gives them and their children a role."""
    m = Measurement(list(argv))
    busy0 = busy_seconds()
    t0 = m.t0 = time.monotonic()
    proc = subprocess.Popen(argv, cwd=cwd, env=env, stdin=subprocess.DEVNULL,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            errors="replace", start_new_session=True)

    def reader() -> None:
        assert proc.stdout is not None
        for line in proc.stdout:  # universal newlines: '\r' progress updates become lines
            m.output.append((time.monotonic() - t0, line.rstrip()))

    thread = threading.Thread(target=reader, daemon=True)
    thread.start()
    status = None
    try:
        while True:
            done_pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
            if done_pid == proc.pid:
                break
            now = time.monotonic() - t0
            if timeout is not None and now > timeout:
                os.killpg(proc.pid, 9)
                continue
            _sample(m, [(proc.pid, 0)] + list((also or {}).items()), now, roles, classify)
            time.sleep(interval)
    finally:
        if status is None:  # interrupted: leave nothing running
            try:
                os.killpg(proc.pid, 9)
            except ProcessLookupError:
                pass
            os.wait4(proc.pid, 0)
    m.wall = time.monotonic() - t0
    proc.returncode = os.waitstatus_to_exitcode(status)
    m.returncode = proc.returncode
    m.user, m.sys = usage.ru_utime, usage.ru_stime
    busy1 = busy_seconds()
    if busy0 is not None and busy1 is not None and m.wall > 0:
        # the rest of the machine: other users, and this measuring process itself
        m.others = max(0.0, (busy1 - busy0 - m.cpu) / m.wall)
    m.rusage_maxrss = usage.ru_maxrss * 1024
    thread.join(5)
    if proc.stdout:
        proc.stdout.close()
    try:  # anything of the tree that outlived it (it should not)
        os.killpg(proc.pid, 9)
    except (ProcessLookupError, PermissionError):
        pass
    return m


def _sample(m: Measurement, roots: list, now: float, roles: tuple,
            classify: Optional[Callable[[int], str]]) -> None:
    m.samples += 1
    total = 0
    todo = list(roots)
    while todo:
        pid, depth = todo.pop()
        try:
            with open(f"/proc/{pid}/stat") as f:
                st = parse_stat(f.read())
            with open(f"/proc/{pid}/status") as f:
                mem = parse_status(f.read())
        except (OSError, ValueError, IndexError):
            continue
        if st["state"] == "Z":
            continue
        p = m.procs.get(pid)
        if p is None:
            p = m.procs[pid] = Proc(pid, depth, _role(depth, roles), now)
        if classify is not None and depth >= len(roles) - 1 and p.role == roles[-1]:
            p.role = classify(pid) or p.role
        p.last = now
        p.cpu = st["utime"] + st["stime"]
        p.rss = mem.get("VmRSS", st["rss"])
        p.hwm = max(p.hwm, mem.get("VmHWM", p.rss))
        try:
            with open(f"/proc/{pid}/io") as f:
                for line in f:
                    if line.startswith("read_bytes:"):
                        p.read_bytes = int(line.split()[1])
        except OSError:
            pass
        p.reads.append((now, p.read_bytes))
        total += p.rss
        todo += [(c, depth + 1) for c in children(pid)]
    m.tree_peak = max(m.tree_peak, total)
