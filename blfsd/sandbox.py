"""Who a task runs as, and file operations done with someone else's rights.

A task attempt never runs as root: the worker forks it, puts it into its cgroups, and the
task process drops to the task user (a dedicated system user, `blfs-task`, from
sysusers.d) with no supplementary groups, no capabilities, `PR_SET_NO_NEW_PRIVS` (no
setuid binary or file capability can give any back) and not dumpable (no other process of
that user may ptrace it or read its memory). Everything it needs on the disks (its split,
its slots, peers' slots, the block device to flush, its output file) the worker opens and
passes over the task's socket.

Paths that a job names (input files, an output directory) are opened, created, renamed
and removed by the worker *with the rights of a configured user* (`PathAccess`): by
default the task user, so that holding the cluster key never gives root's access to
files; for `--local`, the user who ran `blfs`. Each such operation runs in a short-lived
child process that takes that identity, so the worker's own credentials never change.
"""
from __future__ import annotations

import array
import ctypes
import errno
import os
import pwd
import shutil
import socket
import struct
from dataclasses import dataclass
from typing import Any, Callable, Optional

from .errors import StorageError

PR_SET_DUMPABLE = 4
PR_CAPBSET_DROP = 24
PR_SET_NO_NEW_PRIVS = 38
PR_CAP_AMBIENT = 47
PR_CAP_AMBIENT_CLEAR_ALL = 4
NOBODY = "nobody"

_libc = ctypes.CDLL(None, use_errno=True)


@dataclass(frozen=True)
class Identity:
    """A user to run as: its name, uid and primary gid (no supplementary groups)."""

    name: str
    uid: int
    gid: int

    @classmethod
    def of_user(cls, name: str) -> "Identity":
        entry = pwd.getpwnam(name)
        return cls(entry.pw_name, entry.pw_uid, entry.pw_gid)

    @classmethod
    def current(cls) -> "Identity":
        uid = os.getuid()
        try:
            name = pwd.getpwuid(uid).pw_name
        except KeyError:
            name = str(uid)
        return cls(name, uid, os.getgid())


def task_identity(user: str) -> tuple[Optional[Identity], str]:
    """Whom tasks run as, and a note for the log when it is not what was asked.

    Not root: we cannot switch, tasks run as we do (None). Root: the configured user, or
    `nobody` if it does not exist (on a host without the package); never root itself."""
    if os.geteuid() != 0:
        return None, f"not root: task processes run as {Identity.current().name}"
    for name in (user, NOBODY):
        try:
            found = Identity.of_user(name)
        except KeyError:
            continue
        if found.uid == 0:
            continue
        note = "" if name == user else (f"task user {user!r} does not exist: tasks run as "
                                        f"{NOBODY!r}, which other services may share")
        return found, note
    raise StorageError(f"neither {user!r} nor {NOBODY!r} exists: no user to run tasks as")


def _prctl(option: int, arg: int, arg3: int = 0) -> None:
    if _libc.prctl(option, arg, arg3, 0, 0) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"prctl({option}): {os.strerror(err)}")


def become(identity: Identity, keep_dumpable: bool = False) -> None:
    """Take this identity for good, in the calling (single-threaded, forked) process."""
    for cap in range(64):  # the bounding set: harmless where we may not (no CAP_SETPCAP)
        if _libc.prctl(PR_CAPBSET_DROP, cap, 0, 0, 0) != 0 and ctypes.get_errno() == errno.EINVAL:
            break
    _libc.prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL, 0, 0, 0)
    os.setgroups([])
    os.setresgid(identity.gid, identity.gid, identity.gid)
    os.setresuid(identity.uid, identity.uid, identity.uid)  # clears every capability
    _prctl(PR_SET_NO_NEW_PRIVS, 1)
    if not keep_dumpable:
        _prctl(PR_SET_DUMPABLE, 0)
    if os.geteuid() != identity.uid or (identity.uid != 0 and _effective_caps() != 0):
        raise OSError(errno.EPERM, "the privilege drop did not take")


def _effective_caps() -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("CapEff:"):
                return int(line.split()[1], 16)
    return -1


# ------------------------------------------------------------------------------ paths

_RESULT = struct.Struct(">iI")  # errno (0: ok), length of the message that follows


class PathAccess:
    """Operations on job-named paths, with the rights of `identity` (None: our own)."""

    def __init__(self, identity: Optional[Identity]):
        self.identity = identity if identity is None or identity.uid != os.geteuid() else None

    @property
    def name(self) -> str:
        return self.identity.name if self.identity else Identity.current().name

    def open(self, path: str, flags: int, mode: int = 0o644) -> int:
        """A descriptor of `path`, opened as the identity would (the caller closes it)."""
        if self.identity is None:
            return os.open(path, flags | os.O_CLOEXEC, mode)
        fds = self._as_identity(lambda: [os.open(path, flags | os.O_CLOEXEC, mode)])
        return fds[0]

    def run(self, fn: Callable[..., Any], *args: Any) -> None:
        """fn(*args) with the identity's rights (its result is not returned)."""
        if self.identity is None:
            fn(*args)
            return

        def work() -> list:
            fn(*args)
            return []

        self._as_identity(work)

    def makedirs(self, path: str) -> None:
        self.run(os.makedirs, path, 0o777, True)

    def rmtree(self, path: str) -> None:
        self.run(shutil.rmtree, path, True)

    def _as_identity(self, work: Callable[[], list]) -> list:
        """Run `work` in a child that became the identity; it returns descriptors, which
        come back over a socket pair. An OSError in the child is raised here."""
        ours, theirs = socket.socketpair()
        try:
            pid = os.fork()
        except OSError:
            theirs.close()
            ours.close()
            raise
        if pid == 0:  # the child: never returns
            ours.close()
            _child(theirs, self.identity, work)
        theirs.close()
        try:
            return _collect(ours, pid)
        finally:
            ours.close()


def _child(sock: socket.socket, identity: Identity, work: Callable[[], list]) -> None:
    code = 0
    try:
        try:
            os.setgroups([])
            os.setresgid(identity.gid, identity.gid, identity.gid)
            os.setresuid(identity.uid, identity.uid, identity.uid)
            fds = work()
            header, message, anc = _RESULT.pack(0, 0), b"", []
            if fds:
                anc = [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", fds))]
        except OSError as exc:
            message = (exc.strerror or str(exc)).encode()[:1000]
            header, anc = _RESULT.pack(exc.errno or errno.EIO, len(message)), []
        sock.sendmsg([header + message], anc)
    except BaseException:
        code = 1
    finally:
        os._exit(code)


def _collect(sock: socket.socket, pid: int) -> list:
    try:
        data, fds, _, _ = socket.recv_fds(sock, _RESULT.size + 1000, 16)
    finally:
        os.waitpid(pid, 0)
    if len(data) < _RESULT.size:
        raise OSError(errno.EIO, "the helper process died")
    err, n = _RESULT.unpack_from(data)
    if err:
        raise OSError(err, data[_RESULT.size:_RESULT.size + n].decode(errors="replace"))
    return fds
