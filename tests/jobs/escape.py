"""A hostile job: its map tries to get out of its sandbox and reports what it saw.

Argument (after --): a JSON map {"key": the cluster key file, "state": a daemon's state
directory, "slot": {worker: a slot of its own pool}, "device": {worker: a peer's block
device}}. Each output line is `attempt<TAB>what happened`; a contained task sees every
attempt fail.
"""
import ctypes
import errno
import json
import os
import signal

from blfsd import Job

PTRACE_ATTACH = 16


def _try(action):
    try:
        action()
        return "ALLOWED"
    except OSError as exc:
        return f"denied ({errno.errorcode.get(exc.errno, exc.errno)})"


def _read(path):
    with open(path, "rb") as f:
        f.read(1)


def _write(path):
    with open(path, "r+b" if os.path.exists(path) else "wb") as f:
        f.write(b"x")


def _mount():
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.mount(b"tmpfs", b"/mnt", b"tmpfs", 0, None) != 0:
        raise OSError(ctypes.get_errno(), "mount")


def _ptrace(pid):
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.ptrace(PTRACE_ATTACH, pid, None, None) != 0:
        raise OSError(ctypes.get_errno(), "ptrace")


def _caps():
    with open("/proc/self/status") as f:
        fields = dict(line.split(":", 1) for line in f if ":" in line)
    return fields["CapEff"].strip(), fields["NoNewPrivs"].strip()


class Escape(Job):
    reducers = 1

    def map(self, key, value):
        where = json.loads(self.args[0])
        key_file, state_dir = where["key"], where["state"]
        slot = where["slot"][self.context.worker]
        device = where["device"][self.context.worker]
        worker = os.getppid()
        yield "read-key", _try(lambda: _read(key_file))
        yield "write-etc", _try(lambda: _write("/etc/blfs-escaped"))
        yield "write-state", _try(lambda: _write(os.path.join(state_dir, "escaped")))
        yield "write-pool", _try(lambda: _write(slot))
        yield "open-device", _try(lambda: os.close(os.open(device, os.O_RDONLY)))
        yield "mount", _try(_mount)
        yield "ptrace-worker", _try(lambda: _ptrace(worker))
        yield "signal-worker", _try(lambda: os.kill(worker, signal.SIGCONT))
        yield "euid", str(os.geteuid())
        cap_eff, nnp = _caps()
        yield "capabilities", cap_eff
        yield "no_new_privs", nnp

    def reduce(self, key, values):
        yield key, sorted(set(values))[0]
