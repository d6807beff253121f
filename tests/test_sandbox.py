"""The pieces of task containment in isolation: cgroups per attempt (blfsd/cgroups.py),
dropping privileges and acting with another user's rights (blfsd/sandbox.py), and passing
descriptors to a task (blfsd/taskchannel.py). Real processes, real cgroups (root)."""
from __future__ import annotations

import asyncio
import ctypes
import os
import shutil
import signal
import socket
import tempfile
import time
from pathlib import Path

import threading

import pytest

from blfsd import cgroups, sandbox, taskchannel
from conftest import _alive

root = pytest.mark.skipif(os.geteuid() != 0, reason="needs root (cgroups, user switching)")


def _wait(pid: int) -> int:
    _, status = os.waitpid(pid, 0)
    return status


@pytest.fixture
def hierarchy():
    h = cgroups.Hierarchy.discover(f"test-{os.getpid()}")
    yield h
    h.close()


# ------------------------------------------------------------------------------ cgroups

@root
def test_discover_finds_what_this_host_can_enforce(hierarchy):
    assert {"memory", "pids", "kill"} <= hierarchy.enforced, hierarchy.describe()


@root
def test_kill_reaches_children_in_other_sessions(hierarchy):
    group = hierarchy.create("kill/m-00000/0@e", cgroups.Limits())
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # the "task": leaves a setsid()-ed grandchild behind
        group.join()
        if os.fork() == 0:
            os.setsid()
            if os.fork() == 0:
                os.write(w, str(os.getpid()).encode().ljust(16))
                time.sleep(600)
            os._exit(0)
        time.sleep(600)
        os._exit(0)
    os.close(w)
    grandchild = int(os.read(r, 16))
    os.close(r)
    assert _alive(grandchild) and grandchild in group.pids()
    group.kill()
    assert os.WTERMSIG(_wait(pid)) == signal.SIGKILL
    deadline = time.monotonic() + 5
    while _alive(grandchild) and time.monotonic() < deadline:
        time.sleep(0.02)
    assert not _alive(grandchild)
    assert group.remove()
    assert not any(os.path.exists(d) for d in group.dirs())


@root
def test_an_attempt_over_its_memory_limit_is_killed_and_said_to_be(hierarchy):
    group = hierarchy.create("oom", cgroups.Limits(memory=64 << 20))
    pid = os.fork()
    if pid == 0:
        group.join()
        block = bytearray(256 << 20)
        for i in range(0, len(block), 4096):
            block[i] = 1
        os._exit(0)
    status = _wait(pid)
    assert os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGKILL
    assert group.oom_killed()
    assert group.remove()


@root
def test_an_attempt_that_exits_normally_is_not_an_oom(hierarchy):
    group = hierarchy.create("fine", cgroups.Limits(memory=64 << 20, pids=8, cpu_weight=50))
    pid = os.fork()
    if pid == 0:
        group.join()
        os._exit(3)
    assert os.WEXITSTATUS(_wait(pid)) == 3
    assert not group.oom_killed()
    assert group.remove()


@root
def test_pids_limit_stops_a_fork_bomb(hierarchy):
    group = hierarchy.create("bomb", cgroups.Limits(pids=5))
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:
        group.join()
        made, refused = 0, 0
        for _ in range(20):
            try:
                if os.fork() == 0:
                    time.sleep(600)
                    os._exit(0)
                made += 1
            except OSError:
                refused += 1
        os.write(w, f"{made} {refused}".encode())
        time.sleep(600)
    os.close(w)
    made, refused = map(int, os.read(r, 64).split())
    os.close(r)
    group.kill()
    _wait(pid)
    assert made <= 4 and refused >= 16
    assert group.remove()


def test_own_cgroups_parses_hybrid_and_pure_lines():
    text = "4:memory:/a/b\n1:cpu,cpuacct:/c\n0::/system.slice/blfs-worker.service\n"
    assert cgroups.own_cgroups(text) == {"memory": "/a/b", "cpu": "/c", "cpuacct": "/c",
                                         "": "/system.slice/blfs-worker.service"}


# ------------------------------------------------------------------------------ identity

@root
def test_become_leaves_nothing_of_root():
    identity, _ = sandbox.task_identity("no-such-user-blfs-test")
    assert identity is not None and identity.uid != 0
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:
        try:
            sandbox.become(identity)
            report = [str(os.geteuid()), str(os.getegid()), ",".join(map(str, os.getgroups()))]
            with open("/proc/self/status") as f:
                fields = dict(line.split(":", 1) for line in f if ":" in line)
            report += [fields["CapEff"].strip(), fields["CapPrm"].strip(),
                       fields["NoNewPrivs"].strip()]
            libc = ctypes.CDLL(None, use_errno=True)
            report.append(str(libc.prctl(3, 0, 0, 0, 0)))  # PR_GET_DUMPABLE
            for attempt in (lambda: os.setuid(0), lambda: open("/etc/shadow").close()):
                try:
                    attempt()
                    report.append("ALLOWED")
                except OSError:
                    report.append("denied")
            os.write(w, " ".join(report).encode())
        finally:
            os._exit(0)
    os.close(w)
    got = os.read(r, 4096).decode().split(" ")
    os.close(r)
    _wait(pid)
    uid, gid, groups, cap_eff, cap_prm, nnp, dumpable, setuid, shadow = got
    assert (int(uid), int(gid)) == (identity.uid, identity.gid)
    assert groups == "" and int(cap_eff, 16) == 0 and int(cap_prm, 16) == 0
    assert nnp == "1" and dumpable == "0"
    assert setuid == "denied" and shadow == "denied"


def test_not_root_means_no_switch(monkeypatch):
    monkeypatch.setattr(os, "geteuid", lambda: 1000)
    identity, note = sandbox.task_identity("blfs-task")
    assert identity is None and "not root" in note


@pytest.fixture
def open_dir():
    """A directory every user may traverse (pytest's tmp_path is root's alone)."""
    path = tempfile.mkdtemp(prefix="blfs-sandbox-", dir="/var/tmp")
    os.chmod(path, 0o755)
    yield Path(path)
    shutil.rmtree(path, ignore_errors=True)


@root
def test_path_access_acts_with_the_identity_s_rights(open_dir):
    tmp_path = open_dir
    identity, _ = sandbox.task_identity("no-such-user-blfs-test")
    access = sandbox.PathAccess(identity)
    with pytest.raises(PermissionError):
        access.open("/etc/shadow", os.O_RDONLY)
    with pytest.raises(PermissionError):
        access.makedirs("/etc/blfs-test-never")
    assert not os.path.exists("/etc/blfs-test-never")
    shared = tmp_path / "shared"
    shared.mkdir()
    os.chmod(shared, 0o777)
    fd = access.open(str(shared / "part"), os.O_WRONLY | os.O_CREAT, 0o644)
    os.write(fd, b"data")
    os.close(fd)
    assert (shared / "part").stat().st_uid == identity.uid
    access.run(os.rename, str(shared / "part"), str(shared / "moved"))
    assert (shared / "moved").read_bytes() == b"data"
    access.rmtree(str(shared / "moved-dir-that-does-not-exist"))  # ignore_errors
    with pytest.raises(FileNotFoundError):
        access.run(os.rename, str(shared / "nothing"), str(shared / "x"))


def test_path_access_with_our_own_rights_needs_no_child(tmp_path):
    access = sandbox.PathAccess(sandbox.Identity.current())
    assert access.identity is None
    fd = access.open(str(tmp_path / "f"), os.O_WRONLY | os.O_CREAT)
    os.close(fd)
    assert (tmp_path / "f").exists()


# ------------------------------------------------------------------------------ task socket

def test_descriptors_reach_the_task_with_their_reply(tmp_path):
    (tmp_path / "split").write_bytes(b"line one\nline two\n")
    ours, theirs = socket.socketpair()
    pid = os.fork()
    if pid == 0:  # the task: asks for its split, reads it through the descriptor
        ours.close()
        task = taskchannel.TaskEnd(theirs)
        code = 1
        try:
            result, fds = task.call_fds("open_split")
            data = os.read(fds[0], 100)
            task.send({"op": "done", "id": 0, "got": data, "note": result})
            code = 0
        finally:
            os._exit(code)
    theirs.close()

    async def worker() -> dict:
        end = taskchannel.WorkerEnd(ours)
        request = await end.read()
        assert request["op"] == "open_split"
        fd = os.open(str(tmp_path / "split"), os.O_RDONLY)
        try:
            await end.reply(request["id"], {"file": "split"}, [fd])
        finally:
            os.close(fd)  # the task has its own copy now
        return await end.read()

    done = asyncio.run(asyncio.wait_for(worker(), 10))
    assert os.WEXITSTATUS(_wait(pid)) == 0
    assert done["got"] == b"line one\nline two\n" and done["note"] == {"file": "split"}
    ours.close()


def test_an_error_reply_carries_no_descriptor():
    ours, theirs = socket.socketpair()

    async def worker():
        end = taskchannel.WorkerEnd(ours)
        request = await end.read()
        await end.write({"id": request["id"], "error": {"code": "pool", "message": "full"}})

    task = taskchannel.TaskEnd(theirs)
    t = threading.Thread(target=lambda: asyncio.run(worker()))
    t.start()
    with pytest.raises(Exception, match="full"):
        task.call("lease")
    t.join(5)
    ours.close()
    theirs.close()
