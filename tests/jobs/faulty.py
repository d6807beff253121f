"""Word count with one injected fault, chosen by args[0] (args[1] is a directory the task
user may write to, shared with the test).

user-once      map m-00000 raises on its first attempt, then works
user-always    every map raises (the job must fail with this traceback)
sigkill-once   map m-00000 kills itself with SIGKILL on its first attempt
kill-worker    the first map attempt to run on worker w1 asks the test to kill its worker
               daemon (writes kill-w1 with the worker's pid), and waits to die with it
corrupt        reduce r-00000, first attempt: asks the test to flip bytes in every slot of
               every pool (writes corrupt-now with the local cluster's root) and waits
               until it has (corrupted), so every segment it reads fails its checksum

A task cannot kill its worker or write a pool itself: it runs as an unprivileged user.
"""
import os
import signal
import time

from blfsd import Job


def first_time(scratch, name):
    """True exactly once per name, across all processes of the job."""
    try:
        os.close(os.open(os.path.join(scratch, name), os.O_CREAT | os.O_EXCL | os.O_WRONLY))
        return True
    except FileExistsError:
        return False


def tell(scratch, name, text):
    """A message to the test: written whole, then renamed into place."""
    path = os.path.join(scratch, name)
    with open(path + ".part", "w") as f:
        f.write(text)
    os.rename(path + ".part", path)


def local_root():
    """The --local-root of the worker that forked us (tests only)."""
    with open(f"/proc/{os.getppid()}/cmdline", "rb") as f:
        argv = f.read().split(b"\0")
    return argv[argv.index(b"--local-root") + 1].decode()


def wait_for(path, seconds=60):
    deadline = time.monotonic() + seconds
    while not os.path.exists(path) and time.monotonic() < deadline:
        time.sleep(0.05)


class Faulty(Job):
    def setup(self):
        fault, scratch = self.args[0], self.args[1]
        ctx = self.context
        if fault == "user-once" and ctx.task == "m-00000" and ctx.attempt == 0:
            raise RuntimeError("injected failure on the first attempt")
        if fault == "user-always" and ctx.task.startswith("m-"):
            raise ValueError(f"injected permanent failure {self.args[2]}")
        if fault == "sigkill-once" and ctx.task == "m-00000" and ctx.attempt == 0:
            os.kill(os.getpid(), signal.SIGKILL)
        if (fault == "kill-worker" and ctx.worker == "w1" and ctx.task.startswith("m-")
                and first_time(scratch, "killing-w1")):
            tell(scratch, "kill-w1", str(os.getppid()))
            time.sleep(60)  # dies with its worker (PR_SET_PDEATHSIG)
        if (fault == "corrupt" and ctx.task == "r-00000" and ctx.attempt == 0
                and first_time(scratch, "corrupting")):
            tell(scratch, "corrupt-now", local_root())
            wait_for(os.path.join(scratch, "corrupted"))

    def map(self, key, value):
        for word in value.split():
            yield word, 1

    def reduce(self, key, values):
        yield key, sum(values)
