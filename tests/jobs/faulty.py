"""Word count with one injected fault, chosen by args[0] (args[1] is a scratch directory).

user-once      map m-00000 raises on its first attempt, then works
user-always    every map raises (the job must fail with this traceback)
sigkill-once   map m-00000 kills itself with SIGKILL on its first attempt
kill-worker    the first map attempt to run on worker w1 kills its worker daemon
corrupt        reduce r-00000, first attempt: flips bytes in every slot of every pool
               before reading, so every segment it reads fails its checksum
"""
import os
import signal

from blfsd import Job


def first_time(scratch, name):
    """True exactly once per name, across all processes of the job."""
    try:
        os.close(os.open(os.path.join(scratch, name), os.O_CREAT | os.O_EXCL | os.O_WRONLY))
        return True
    except FileExistsError:
        return False


def local_root():
    """The --local-root of the worker that forked us (tests only)."""
    with open(f"/proc/{os.getppid()}/cmdline", "rb") as f:
        argv = f.read().split(b"\0")
    return argv[argv.index(b"--local-root") + 1].decode()


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
                and first_time(scratch, "killed-w1")):
            os.kill(os.getppid(), signal.SIGKILL)
            os.kill(os.getpid(), signal.SIGKILL)
        if (fault == "corrupt" and ctx.task == "r-00000" and ctx.attempt == 0
                and first_time(scratch, "corrupted")):
            disks = os.path.join(local_root(), "disks")
            for node in os.listdir(disks):
                pool = os.path.join(disks, node, "pool")
                for slot in os.listdir(pool):
                    if slot.startswith("slot-"):
                        with open(os.path.join(pool, slot), "r+b") as f:
                            f.seek(200)  # inside the first segment's payload
                            byte = f.read(1)
                            f.seek(200)
                            f.write(bytes([byte[0] ^ 0xFF]))

    def map(self, key, value):
        for word in value.split():
            yield word, 1

    def reduce(self, key, values):
        yield key, sum(values)
