"""Task containment, tested as attacks and faults against real workers (issue 9, point 3).

A job's code runs as an unprivileged user with no capabilities, in cgroups of its own:
here a hostile job tries to read the cluster key, write under /etc, into a state
directory and a pool, open a peer's block device, mount, ptrace and signal its worker; a
job forks children (one setsid()-ed) and returns; a job allocates past its memory limit;
a job names paths only root may use. On the loop-disk cluster (every worker a real
daemon as root, as under systemd) and through `blfs submit --local` started by root.
"""
from __future__ import annotations

import json
import os
import time

import pytest

from cluster_helpers import LoopCluster
from conftest import (EXAMPLES, JOBS, _alive, local_worker_pids, read_parts, submit_local,
                      wait_gone)

pytestmark = [pytest.mark.root,
              pytest.mark.skipif(os.geteuid() != 0,
                                 reason="needs root: loop devices, cgroups, user switching")]

ESCAPES = ("read-key", "write-etc", "write-state", "write-pool", "open-device", "mount",
           "ptrace-worker", "signal-worker")


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    with LoopCluster(tmp_path_factory.mktemp("contained"), workers=2, slots=8) as c:
        yield c


def _one_line(tmp_path, name="one.txt"):
    path = tmp_path / name
    path.write_text("x\n")
    return path


def _escape_args(c: LoopCluster) -> str:
    return json.dumps({
        "key": str(c.key_file),
        "state": str(c.base / f"state-{c.tag}"),
        "slot": {name: os.path.join(str(c.disk(i, i)), "pool", "slot-00000")
                 for i, name in enumerate(c.names)},
        "device": {name: c.devices[(i, (i + 1) % c.n)] for i, name in enumerate(c.names)},
    })


def _assert_contained(rows: dict) -> None:
    for escape in ESCAPES:
        assert rows[escape].startswith("denied"), f"{escape}: {rows[escape]}"
    assert rows["euid"] != "0"
    assert int(rows["capabilities"], 16) == 0
    assert rows["no_new_privs"] == "1"
    assert not os.path.exists("/etc/blfs-escaped")


def test_a_hostile_job_on_the_cluster_can_do_nothing_of_what_it_tries(cluster, tmp_path):
    out = tmp_path / "out"
    cluster.blfs("submit", os.path.join(JOBS, "escape.py"), "--input", str(_one_line(tmp_path)),
                 "--output", str(out), "--", _escape_args(cluster), timeout=120)
    _assert_contained(dict(read_parts(str(out))))
    assert os.stat(cluster.disk(0, 0) / "pool" / "slot-00000").st_size == cluster.slot_size


def test_a_hostile_job_under_local_started_by_root_is_contained_too(tmp_path):
    out = tmp_path / "out"
    where = json.dumps({"key": "/etc/shadow", "state": "/var/lib",
                        "slot": {f"w{i}": "/etc/passwd" for i in range(2)},
                        "device": {f"w{i}": "/dev/loop0" for i in range(2)}})
    r = submit_local(os.path.join(JOBS, "escape.py"), [_one_line(tmp_path)], out, job_args=(where,))
    assert r.returncode == 0, r.stderr
    _assert_contained(dict(read_parts(str(out))))


def test_an_attempt_ends_with_its_process_and_its_children_die_with_it(cluster, tmp_path):
    """The map forks a sleeping child and a setsid()-ed grandchild and returns: the
    attempt ends at once (no task timeout), both are killed, every slot is free."""
    out = tmp_path / "out"
    done = cluster.blfs("submit", os.path.join(JOBS, "forker.py"), "--input",
                        str(_one_line(tmp_path)), "--output", str(out), "--task-timeout", "30",
                        "--max-attempts", "1", timeout=120)
    assert "failed" not in done.stderr, done.stderr
    left = {k: int(v) for k, v in read_parts(str(out))}
    assert set(left) == {"child", "setsid"}
    deadline = time.monotonic() + 5
    while any(_alive(p) for p in left.values()) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not any(_alive(p) for p in left.values()), f"left running: {left}"
    assert cluster.free_slots() == [cluster.slots] * cluster.n


def test_a_task_past_its_memory_limit_fails_alone_with_the_limit_named(cluster, tmp_path):
    out = tmp_path / "out"
    done = cluster.blfs("submit", os.path.join(JOBS, "hog.py"), "--input", str(_one_line(tmp_path)),
                        "--output", str(out), "--task-memory", "256M", "--max-attempts", "2",
                        check=False, timeout=180)
    assert done.returncode == 1, done.stderr
    assert "out of memory (limit 256M)" in done.stderr, done.stderr
    assert done.stderr.count("failed (oom)") == 2, done.stderr  # the retry policy applied
    assert "Traceback" not in done.stderr
    assert all(d.alive() for d in cluster.daemons), cluster.logs()
    cluster.wait_workers_up(time.monotonic() + 10)  # every worker still serves


def test_paths_are_used_with_the_task_user_s_rights_by_default(tmp_path_factory):
    """With the default [worker] path_user (the task user), a job cannot read a file only
    root may read, nor write into a directory only root may write, by naming them."""
    base = tmp_path_factory.mktemp("pathuser")
    secret = base / "secret.txt"
    secret.write_text("root only\n")
    os.chmod(secret, 0o600)
    with LoopCluster(base, workers=1, slots=4, path_user="") as c:
        done = c.blfs("submit", os.path.join(EXAMPLES, "wordcount.py"),
                      "--input", str(secret), "--output", str(base / "out"),
                      "--max-attempts", "1", check=False, timeout=120)
    assert done.returncode == 1
    assert "cannot read" in done.stderr and "Permission denied" in done.stderr, done.stderr
    assert not (base / "out" / "_SUCCESS").exists()


def test_local_leaves_no_process_behind(tmp_path):
    out = tmp_path / "out"
    r = submit_local(os.path.join(JOBS, "forker.py"), [_one_line(tmp_path)], out)
    assert r.returncode == 0, r.stderr
    left = {k: int(v) for k, v in read_parts(str(out))}
    assert not wait_gone(set(left.values())), left
    assert not wait_gone(local_worker_pids())
