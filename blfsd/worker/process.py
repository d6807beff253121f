"""A task process: forked from the worker for one attempt, killed and reaped by pid.

The worker forks itself, which is cheap and clean: it never loaded user code. The child
joins the attempt's cgroups, keeps only its end of the socketpair and a pipe for its
stdout and stderr, moves into its scratch directory, drops to the task user, sets
PR_SET_PDEATHSIG (so it dies with its worker), and runs the attempt
(runtime.run_attempt). It never returns into the worker's code.
"""
from __future__ import annotations

import asyncio
import ctypes
import gc
import logging
import os
import signal
import socket
import sys

from typing import TYPE_CHECKING

from .. import runtime, sandbox
from ..messages import AttemptSpec
from ..systemd import setup_logging
from ..taskchannel import TaskEnd

if TYPE_CHECKING:
    from .containment import Sandbox

PR_SET_PDEATHSIG = 1


def fork_task(spec: AttemptSpec, env: runtime.TaskEnv,
              box: "Sandbox") -> tuple[int, socket.socket, int]:
    """Start the task process of an attempt: (its pid, our end of its socketpair, the read
    end of the pipe that takes its stdout and stderr)."""
    parent, child = socket.socketpair()
    out_r, out_w = os.pipe()
    gc.freeze()  # the child must not collect (and so finalize) the worker's objects
    worker_pid = os.getpid()
    try:
        pid = os.fork()
    except OSError:
        gc.unfreeze()
        for fd in (out_r, out_w):
            os.close(fd)
        parent.close()
        child.close()
        raise
    if pid == 0:  # the task process: never returns
        parent.close()
        os.close(out_r)
        _task_main(child, out_w, spec, env, box, worker_pid)
    gc.unfreeze()
    child.close()
    os.close(out_w)
    return pid, parent, out_r


def _task_main(sock: socket.socket, output: int, spec: AttemptSpec, env: runtime.TaskEnv,
               box: "Sandbox", worker_pid: int) -> None:
    """Entry of a forked task process. Never returns to the worker's code.

    Still root here: join the attempt's cgroups, take the descriptors it keeps, move into
    its scratch directory; then become the task user for good, and only then run any of
    the user's code."""
    code = 1
    try:
        os.setsid()  # own process group: the fallback kill, where there are no cgroups
        if box.group is not None:
            box.group.join()
        _own_descriptors(sock.fileno(), output)
        os.chdir(box.scratch)
        os.environ.update(TMPDIR=box.scratch, HOME=box.scratch)
        if box.identity is not None:
            sandbox.become(box.identity)
        # after any change of identity, which clears it: die with the worker
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
        if os.getppid() != worker_pid:  # the worker died before the line above
            os._exit(1)
        for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGCHLD):
            signal.signal(sig, signal.SIG_DFL)
        signal.set_wakeup_fd(-1)
        # the worker's journal connection is closed now: the task logs to its output pipe
        setup_logging("blfs-task", logging.WARNING, stream=sys.stderr)
        sock.setblocking(True)
        code = runtime.run_attempt(spec, env, TaskEnd(sock))
    except BaseException:
        code = 1
    finally:
        os._exit(code)


def _own_descriptors(keep: int, output: int) -> None:
    """Only the task's socket, and the output pipe as stdout and stderr (stdin empty)."""
    null = os.open(os.devnull, os.O_RDONLY)
    os.dup2(null, 0)
    os.dup2(output, 1)
    os.dup2(output, 2)
    for fd in (null, output):
        if fd > 2 and fd != keep:
            os.close(fd)
    os.closerange(3, keep)
    os.closerange(keep + 1, 65536)
    sys.stdout = os.fdopen(1, "w", buffering=1, closefd=False)
    sys.stderr = os.fdopen(2, "w", buffering=1, closefd=False)


def kill(pid: int) -> None:
    """SIGKILL the task's process group and the task itself.

    The group may not exist yet (the child calls setsid first thing); the pid is ours
    until we reap it, so killing it by pid is always safe.
    """
    for send in (os.killpg, os.kill):
        try:
            send(pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass


async def wait_exit(pid: int) -> int:
    """Wait for a child without threads: a pidfd becomes readable when it exits."""
    loop = asyncio.get_running_loop()
    try:
        pidfd = os.pidfd_open(pid)
    except ProcessLookupError:
        pidfd = -1
    if pidfd >= 0:
        done = loop.create_future()
        loop.add_reader(pidfd, lambda: done.done() or done.set_result(None))
        try:
            await done
        finally:
            loop.remove_reader(pidfd)
            os.close(pidfd)
    try:
        _, status = os.waitpid(pid, 0)
    except ChildProcessError:
        return -1
    return status


def describe_status(status: int) -> str:
    """How a task process ended, for a failure report ("exited with status 3 ...")."""
    if status < 0:
        return "vanished"
    if os.WIFSIGNALED(status):
        sig = os.WTERMSIG(status)
        return f"was killed by signal {sig} ({signal.Signals(sig).name})"
    return f"exited with status {os.WEXITSTATUS(status)} before reporting"
