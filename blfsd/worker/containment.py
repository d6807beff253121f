"""How this worker contains its task attempts (docs/ARCHITECTURE.md, "Security").

Every attempt gets, before its process runs any of the user's code:
- its own cgroup(s) below the worker's (cgroups.py), with the job's or the configured
  memory, pid and CPU limits; killing the attempt kills the cgroup, so whatever it forked
  or `setsid()`-ed goes with it;
- a scratch directory of its own (its working directory and TMPDIR), owned by the task
  user and removed with the attempt;
- the task user's identity (sandbox.py: no groups, no capabilities, no_new_privs).

Where cgroups or a user switch are not available (an unprivileged `--local`), that is said
once, and attempts are killed by their process group: a child that leaves the group with
`setsid()` then outlives its attempt.
"""
from __future__ import annotations

import logging
import os
import re
import shutil
from dataclasses import dataclass
from typing import Optional

from .. import cgroups, sandbox
from ..config import Config
from ..messages import AttemptSpec
from . import process

log = logging.getLogger("blfs.worker")


@dataclass
class Sandbox:
    """What one attempt runs in: its cgroups (if any), its scratch directory, its user."""

    group: Optional[cgroups.AttemptGroup]
    scratch: str
    identity: Optional[sandbox.Identity]
    limits: cgroups.Limits

    def kill(self, pid: int) -> None:
        """SIGKILL every process of the attempt: its cgroup, else its process group."""
        if self.group is not None and "kill" in self.group.hierarchy.enforced:
            self.group.kill()
            return
        process.kill(pid)

    def oom_killed(self) -> bool:
        return self.group is not None and self.group.oom_killed()

    def memory_limit_text(self) -> str:
        return _size_text(self.limits.memory) if self.limits.memory else "none"


class Containment:
    """The cgroups this worker makes, whom tasks run as, and whose rights job-named paths
    are used with."""

    def __init__(self, config: Config):
        self.config = config
        if config.task_cgroups:
            # named by the process too: two workers of one name may share a host (--local)
            self.hierarchy = cgroups.Hierarchy.discover(f"{config.worker_name}-{os.getpid()}")
        else:
            self.hierarchy = cgroups.Hierarchy(why_not="disabled by [worker] task_cgroups")
        self.identity, note = sandbox.task_identity(config.task_user)
        self.paths = sandbox.PathAccess(self._path_identity())
        self.scratch_root = os.path.join(config.work_dir, "tasks")
        self._say(note)
        swept = self.hierarchy.sweep(config.worker_name)
        if swept:
            log.warning("killed what %d attempts of a previous session of this worker left "
                        "running", swept, extra={"BLFS_NODE": config.worker_name})
        # their scratch directories too (nothing of ours runs yet)
        shutil.rmtree(self.scratch_root, ignore_errors=True)

    def _path_identity(self) -> Optional[sandbox.Identity]:
        """Whose rights paths named by jobs are used with: [worker] path_user, or the
        task user (None: ours)."""
        if self.config.path_user:
            return sandbox.Identity.of_user(self.config.path_user)
        return self.identity

    def _say(self, note: str) -> None:
        who = self.identity.name if self.identity else sandbox.Identity.current().name
        log.info("task attempts run as %s; paths that jobs name are used as %s; %s", who,
                 self.paths.name, self.hierarchy.describe(),
                 extra={"BLFS_NODE": self.config.worker_name})
        if note:
            log.warning("%s", note, extra={"BLFS_NODE": self.config.worker_name})
        if "kill" not in self.hierarchy.enforced:
            log.warning("attempts are killed by their process group: a task's child that "
                        "leaves it (setsid) outlives its attempt",
                        extra={"BLFS_NODE": self.config.worker_name})

    def limits(self, spec: AttemptSpec) -> cgroups.Limits:
        cfg = self.config
        return cgroups.Limits(memory=spec.task_memory or cfg.task_memory or None,
                              pids=spec.task_pids or cfg.task_pids or None,
                              cpu_weight=spec.task_cpu_weight or cfg.task_cpu_weight or None)

    def prepare(self, spec: AttemptSpec) -> Sandbox:
        """An attempt's cgroups and scratch directory, made before its process is forked."""
        limits = self.limits(spec)
        group = None
        if self.hierarchy.enforced:
            group = self.hierarchy.create(spec.id, limits)
        scratch = os.path.join(self.scratch_root, _safe(spec.id))
        try:
            _make_scratch(self.scratch_root, scratch, self.identity)
        except OSError:
            if group is not None:
                group.remove()
            raise
        return Sandbox(group, scratch, self.identity, limits)

    def release(self, box: Sandbox) -> None:
        """Everything of a finished attempt goes: leftover processes, cgroups, scratch."""
        if box.group is not None:
            box.group.kill()
            if not box.group.remove():
                log.warning("cgroups of a finished attempt still hold processes: %s",
                            ", ".join(box.group.dirs()))
        shutil.rmtree(box.scratch, ignore_errors=True)

    def close(self) -> None:
        self.hierarchy.close()


def _make_scratch(root: str, path: str, identity: Optional[sandbox.Identity]) -> None:
    """A private directory for one attempt. Its ancestors are traversable (0711), so that
    the task user can reach it by its absolute path (TMPDIR), and list nothing on the way."""
    os.makedirs(root, mode=0o711, exist_ok=True)
    for directory in (os.path.dirname(root), root):
        mode = os.stat(directory).st_mode & 0o777
        if identity is not None and mode & 0o011 != 0o011:
            os.chmod(directory, mode | 0o011)
    shutil.rmtree(path, ignore_errors=True)  # a leftover of a previous worker session
    os.mkdir(path, 0o700)
    if identity is not None:
        os.chown(path, identity.uid, identity.gid)


def _safe(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]", "_", name)[:200]


def _size_text(n: int) -> str:
    for unit, size in (("G", 1 << 30), ("M", 1 << 20), ("K", 1 << 10)):
        if n >= size and n % size == 0:
            return f"{n // size}{unit}"
    return f"{n}B" if n < 1024 else f"{n / (1 << 20):.0f}M"
