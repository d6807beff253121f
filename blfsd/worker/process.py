"""A task process: forked from the worker for one attempt, killed and reaped by pid.

The worker forks itself, which is cheap and clean: it never loaded user code. The child
gets its own session (so a kill reaches anything it started) and PR_SET_PDEATHSIG (so it
dies with its worker), keeps only its end of the socketpair, and runs the attempt
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

from .. import runtime
from ..messages import AttemptSpec
from ..systemd import setup_logging

PR_SET_PDEATHSIG = 1


def fork_task(spec: AttemptSpec, env: runtime.TaskEnv) -> tuple[int, socket.socket]:
    """Start the task process of an attempt: (its pid, our end of its socketpair)."""
    parent, child = socket.socketpair()
    gc.freeze()  # the child must not collect (and so finalize) the worker's objects
    worker_pid = os.getpid()
    try:
        pid = os.fork()
    except OSError:
        gc.unfreeze()
        parent.close()
        child.close()
        raise
    if pid == 0:  # the task process: never returns
        parent.close()
        _task_main(child, spec, env, worker_pid)
    gc.unfreeze()
    child.close()
    return pid, parent


def _task_main(sock: socket.socket, spec: AttemptSpec, env: runtime.TaskEnv,
               worker_pid: int) -> None:
    """Entry of a forked task process. Never returns to the worker's code."""
    code = 1
    try:
        os.setsid()  # own process group, so a kill reaches anything the user started
        try:
            ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
        except (OSError, AttributeError):
            pass
        if os.getppid() != worker_pid:  # the worker died before the line above
            os._exit(1)
        for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGCHLD):
            signal.signal(sig, signal.SIG_DFL)
        signal.set_wakeup_fd(-1)
        keep = sock.fileno()
        os.closerange(3, keep)
        os.closerange(keep + 1, 65536)
        # the worker's journal connection is closed now: the task logs to stderr
        setup_logging("blfs-task", logging.WARNING, stream=sys.stderr)
        sock.setblocking(True)
        code = runtime.run_attempt(spec, env, runtime.Channel(sock))
    except BaseException:
        code = 1
    finally:
        os._exit(code)


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
