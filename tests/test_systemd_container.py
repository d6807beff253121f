"""blfs under a real systemd: the units of units/ in a booted Debian 12 container.

One container for the whole module (booting is cheap, building the root file system is not):
a master and a worker on the same node, the worker named after the container, its pool on a
directory "disk" prepared by a stand-in for blfs-iscsi.service. The tests run in file order
and build on each other's state (the first one checks that nothing runs yet; the last one
stops everything).
"""
from __future__ import annotations

import json
import os
import re
import secrets
import shutil
import time
from collections import Counter

import pytest

from container import Container, enable, install_project, rootfs, write

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

pytestmark = [pytest.mark.root, pytest.mark.slow]

UNITS = ("blfs-master.socket", "blfs-master.service", "blfs-worker.socket",
         "blfs-worker.service")

CONFIG = """\
[cluster]
key_file = "/etc/blfs/cluster.key"

[master]
heartbeat_interval = 0.5
heartbeat_timeout = 3.0

[worker]
parallelism = 2

[pool]
slot_size = "4M"
slots = 16

[nodes.{name}]
address = "127.0.0.1:7071"
"""

# TEST STAND-IN for the real blfs-iscsi.service (another issue): no iSCSI and no block
# device, just the worker's pool prepared on a directory "disk", as `blfs-iscsi up` would
# prepare it on the node's own mounted disk.
ISCSI_STANDIN = """\
# TEST STAND-IN written by tests/test_systemd_container.py, not a product unit.
[Unit]
Description=blfs disks (test stand-in: a directory disk, no iSCSI)
Before=blfs-worker.service

[Service]
Type=oneshot
RemainAfterExit=yes
ExecStart=/usr/bin/python3 -c "from blfsd import storage; storage.prepare_pool('/var/lib/blfs/disks/{name}', '{name}', 16, 4194304)"
"""

WORDS = [f"w{i:02d}" for i in range(60)] + ["naïve", "ünï"]


def make_input(path: str, lines: int, seed: int) -> Counter:
    import random
    rng = random.Random(seed)
    counts: Counter = Counter()
    with open(path, "w", encoding="utf-8") as f:
        for _ in range(lines):
            words = rng.choices(WORDS, k=rng.randint(0, 10))
            counts.update(words)
            f.write(" ".join(words) + "\n")
    return counts


class Cluster:
    """The booted container and what the tests put into it."""

    def __init__(self, ct: Container):
        self.ct = ct
        self.name = ct.name
        self.expected: dict = {}
        self.outputs = 0

    def setup(self, ct: Container) -> None:
        root = ct.root
        install_project(root)
        write(root, "/etc/blfs/blfs.toml", CONFIG.format(name=self.name))
        # 0640 root:root here; tmpfiles.d (z line) makes it root:blfs once sysusers ran
        write(root, "/etc/blfs/cluster.key", secrets.token_hex(32) + "\n", mode=0o640)
        write(root, "/etc/systemd/system/blfs-iscsi.service",
              ISCSI_STANDIN.format(name=self.name))
        enable(root, "blfs-master.socket", "blfs-worker.socket")
        for job in (os.path.join(REPO, "examples", "wordcount.py"),
                    os.path.join(REPO, "tests", "jobs", "slow_wordcount.py"),
                    os.path.join(REPO, "tests", "jobs", "cli_fail_map.py"),
                    os.path.join(REPO, "tests", "jobs", "escape.py")):
            shutil.copy(job, os.path.join(root, "srv"))
        os.makedirs(os.path.join(root, "srv/in"))
        os.makedirs(os.path.join(root, "srv/blfs-out"))
        self.expected["/srv/in/small.txt"] = make_input(
            os.path.join(root, "srv/in/small.txt"), 3000, seed=1)
        self.expected["/srv/in/other.txt"] = make_input(
            os.path.join(root, "srv/in/other.txt"), 2000, seed=2)

    # -- helpers

    def blfs(self, *args: str, check: bool = True, timeout: float = 120):
        return self.ct.run("blfs", *args, check=check, timeout=timeout)

    def new_output(self) -> str:
        """An output directory that the task user (blfs-task: the worker uses paths that
        jobs name with its rights) and the master (blfs) may write into."""
        self.outputs += 1
        path = f"/srv/blfs-out/out{self.outputs}"
        self.ct.run("install", "-d", "-m", "1777", path)
        return path

    def submit(self, job: str, inp: str, output: str, *extra: str, check: bool = True):
        done = self.blfs("submit", f"/srv/{job}", "--input", inp, "--output", output,
                         "--quiet", *extra, check=check, timeout=180)
        ids = re.findall(r"job (\d{8}-\d{6}-[0-9a-f]{4})", done.stderr + done.stdout)
        return done, (ids[0] if ids else None)

    def status(self, job: str) -> dict:
        return json.loads(self.blfs("status", job, "--json").stdout)

    def wait_finished(self, job: str, timeout: float = 120) -> dict:
        """The job's status once it has ended, however it ended."""
        def finished():
            s = self.status(job)
            return s if s["state"] in ("succeeded", "failed", "cancelled") else None

        return self.ct.wait_for(finished, timeout, "the job to finish", interval=0.5)

    def workers(self) -> list:
        return json.loads(self.blfs("workers", "--json").stdout)

    def worker_alive(self) -> bool:
        return any(w["name"] == self.name and w["alive"] for w in self.workers())

    def read_output(self, output: str) -> dict:
        out = self.ct.host_path(output)
        assert os.path.exists(os.path.join(out, "_SUCCESS")), f"no _SUCCESS in {output}"
        counts = {}
        for part in sorted(os.listdir(out)):
            if part.startswith("part-"):
                with open(os.path.join(out, part), encoding="utf-8") as f:
                    for line in f:
                        key, _, value = line.rstrip("\n").partition("\t")
                        assert key not in counts
                        counts[key] = int(value)
        return counts

    def main_pid(self, unit: str) -> int:
        return int(self.ct.show(unit, "MainPID")["MainPID"])

    def unit_state(self, unit: str) -> tuple:
        s = self.ct.show(unit, "ActiveState", "SubState")
        return s["ActiveState"], s["SubState"]

    def journal_json(self, *args: str) -> list:
        out = self.ct.journal("-o", "json", *args)
        return [json.loads(line) for line in out.splitlines() if line.strip()]


@pytest.fixture(scope="module")
def cluster():
    base = rootfs()
    holder: dict = {}

    def setup(ct: Container) -> None:
        holder["cluster"] = Cluster(ct)
        holder["cluster"].setup(ct)

    with Container.booted(base, setup=setup):
        yield holder["cluster"]


# --------------------------------------------------------------------------- the units

def test_units_verify_clean(cluster):
    """`systemd-analyze verify` on the installed units says nothing at all."""
    paths = [f"/usr/lib/systemd/system/{u}" for u in UNITS]
    done = cluster.ct.run("systemd-analyze", "verify", *paths, check=False)
    assert done.returncode == 0, done.stderr
    assert (done.stdout + done.stderr).strip() == ""


def test_sysusers_and_tmpfiles_applied(cluster):
    ct = cluster.ct
    assert ct.run("getent", "passwd", "blfs").stdout.split(":")[6].strip() \
        == "/usr/sbin/nologin"
    task_user = ct.run("getent", "passwd", "blfs-task").stdout.split(":")
    assert task_user[6].strip() == "/usr/sbin/nologin" and task_user[2] != "0"
    groups = ct.run("id", "-nG", "blfs-task").stdout.split()
    assert "blfs" not in groups, "the task user must not read the cluster key"
    assert ct.run("stat", "-c", "%a %U %G", "/etc/blfs/cluster.key").stdout.split() \
        == ["640", "root", "blfs"]
    assert ct.run("stat", "-c", "%a %U %G", "/var/lib/blfs/disks").stdout.split() \
        == ["755", "root", "root"]
    # the socket systemd made: group blfs, 0660, in a directory no service owns
    assert ct.run("stat", "-c", "%F %a %U %G", "/run/blfs/master.sock").stdout.split() \
        == ["socket", "660", "root", "blfs"]


# --------------------------------------------------------------------------- activation

def test_master_starts_on_first_connection(cluster):
    ct = cluster.ct
    assert cluster.unit_state("blfs-master.socket") == ("active", "listening")
    assert cluster.unit_state("blfs-worker.socket") == ("active", "listening")
    assert cluster.unit_state("blfs-master") == ("inactive", "dead")
    assert cluster.unit_state("blfs-worker") == ("inactive", "dead")

    done = cluster.blfs("workers")  # the first connection to /run/blfs/master.sock
    assert done.stdout.startswith("WORKER")
    assert cluster.unit_state("blfs-master") == ("active", "running")
    # the master dials the worker of [nodes.NAME]; that starts it through its socket,
    # after the (stand-in) blfs-iscsi.service it requires
    ct.wait_for(cluster.worker_alive, 30, "the worker to join the master")
    assert cluster.unit_state("blfs-worker") == ("active", "running")
    assert cluster.unit_state("blfs-iscsi") == ("active", "exited")
    for unit in ("blfs-master", "blfs-worker"):
        assert ct.show(unit, "TriggeredBy")["TriggeredBy"] == f"{unit}.socket"


def test_privileges_and_namespaces(cluster):
    """The master runs as blfs with no capabilities in a sandbox; the worker runs as root in
    the host's mount namespace (a remount of a peer view in a private one would be stale)."""
    ct = cluster.ct
    master, worker = cluster.main_pid("blfs-master"), cluster.main_pid("blfs-worker")

    def proc_status(pid: int) -> dict:
        text = ct.run("cat", f"/proc/{pid}/status").stdout
        return dict(line.split(":\t", 1) for line in text.splitlines() if ":\t" in line)

    m, w = proc_status(master), proc_status(worker)
    blfs_uid = ct.run("id", "-u", "blfs").stdout.strip()
    assert m["Uid"].split()[0] == blfs_uid
    assert int(m["CapBnd"].strip(), 16) == 0 and int(m["CapEff"].strip(), 16) == 0
    assert m["NoNewPrivs"].strip() == "1"
    assert w["Uid"].split()[0] == "0"
    assert w["NoNewPrivs"].strip() == "1"
    caps = int(w["CapBnd"].strip(), 16)
    CAP_CHOWN, CAP_DAC_OVERRIDE, CAP_DAC_READ_SEARCH, CAP_FOWNER, CAP_KILL = 0, 1, 2, 3, 5
    CAP_SETGID, CAP_SETUID, CAP_SYS_ADMIN = 6, 7, 21
    assert caps == sum(1 << c for c in (CAP_CHOWN, CAP_DAC_OVERRIDE, CAP_DAC_READ_SEARCH,
                                        CAP_FOWNER, CAP_KILL, CAP_SETGID, CAP_SETUID,
                                        CAP_SYS_ADMIN))

    def mnt_ns(pid) -> str:
        return ct.run("readlink", f"/proc/{pid}/ns/mnt").stdout.strip()

    assert mnt_ns(worker) == mnt_ns(1)
    assert mnt_ns(master) != mnt_ns(1)
    # ProtectSystem=strict: in the master's namespace only its state directory is writable
    inside = ct.run("nsenter", "-t", str(master), "-m", "sh", "-c",
                    "touch /usr/blfs-x 2>&1; touch /etc/blfs/x 2>&1; "
                    "touch /var/lib/blfs/master/.w && rm /var/lib/blfs/master/.w", check=False)
    assert inside.returncode == 0, inside.stderr
    assert inside.stdout.count("Read-only file system") == 2, inside.stdout


SANDBOX_KEYS = ("NoNewPrivileges", "CapabilityBoundingSet", "RestrictAddressFamilies",
                "RestrictNamespaces", "RestrictRealtime", "RestrictSUIDSGID", "LockPersonality",
                "ProtectHostname", "SystemCallArchitectures", "SystemCallFilter",
                "SystemCallErrorNumber")


def test_worker_sandbox_allows_mounts_in_the_host_namespace(cluster):
    """Under exactly the worker unit's sandbox settings a process may umount and mount (the
    peer-view remount), and what it mounts is visible in PID 1's (the host's) namespace."""
    ct = cluster.ct
    props = []
    with open(os.path.join(REPO, "units", "blfs-worker.service")) as f:
        for line in f:
            key, _, value = line.strip().partition("=")
            if key in SANDBOX_KEYS:
                props += ["-p", f"{key}={value}"]
    assert len(props) == 2 * len(SANDBOX_KEYS)
    target = f"/run/blfs-mount-test-{secrets.token_hex(3)}"
    ct.run("mkdir", "-p", target)
    try:
        done = ct.run("systemd-run", "--quiet", "--wait", "--pipe", *props,
                      "sh", "-ec", f"mount -t tmpfs -o size=1M blfs-test {target}; "
                                   f"umount {target}; mount -t tmpfs -o ro blfs-test {target}",
                      check=False)
        assert done.returncode == 0, done.stdout + done.stderr
        assert target in ct.run("cat", "/proc/1/mountinfo").stdout
        # and a process without CAP_SYS_ADMIN may not: the bounding set is what allows it
        denied = ct.run("systemd-run", "--quiet", "--wait", "--pipe", *props,
                        "-p", "CapabilityBoundingSet=~CAP_SYS_ADMIN",
                        "umount", target, check=False)
        assert denied.returncode != 0
    finally:
        ct.run("umount", target, check=False)
        ct.run("rmdir", target, check=False)


def test_status_lines(cluster):
    """`systemctl status` shows the daemons' STATUS= lines."""
    ct = cluster.ct
    status = ct.systemctl("status", "blfs-master", check=False).stdout
    assert re.search(r'Status: "\d+ workers?, \d+ jobs? running, \d+/\d+ tasks done"', status), \
        status

    def worker_status():
        out = ct.systemctl("status", "blfs-worker", check=False).stdout
        return re.search(r'Status: "0 attempts running, 16/16 slots free, master connected"',
                         out)

    ct.wait_for(worker_status, 15, "the worker's STATUS to say the master is connected")


def test_master_status_counts_connected_worker(cluster):
    ct = cluster.ct
    ct.wait_for(cluster.worker_alive, 10, "the worker")
    time.sleep(1.0)
    out = ct.systemctl("status", "blfs-master", check=False).stdout
    assert 'Status: "1 workers, 0 jobs running, 0/0 tasks done"' in out, out


# --------------------------------------------------------------------------- the journal

def test_journal_has_each_jobs_task_lines(cluster):
    """`journalctl -u blfs-worker BLFS_JOB=ID` lists that job's task lines, and only its."""
    jobs = {}
    for inp in ("/srv/in/small.txt", "/srv/in/other.txt"):
        output = cluster.new_output()
        done, job = cluster.submit("wordcount.py", inp, output, "--split-size", "16K")
        assert done.returncode == 0 and job, done.stderr
        assert cluster.read_output(output) == dict(cluster.expected[inp])
        jobs[job] = cluster.status(job)
    assert len(jobs) == 2
    for job, status in jobs.items():
        other = next(j for j in jobs if j != job)
        entries = cluster.journal_json("-u", "blfs-worker", f"BLFS_JOB={job}")
        assert entries, f"no journal entries of blfs-worker with BLFS_JOB={job}"
        tasks = {a["attempt"].split("/")[1] for a in status["attempts"]}
        assert len(tasks) == status["maps"]["total"] + status["reduces"]["total"] > 2
        assert {e.get("BLFS_TASK") for e in entries} == tasks
        for e in entries:
            assert e["BLFS_JOB"] == job
            assert other not in e["MESSAGE"]
            assert e["BLFS_NODE"] == cluster.name
            assert e["BLFS_ATTEMPT"].isdigit()
            assert e["SYSLOG_IDENTIFIER"] == "blfs-worker"
            assert e["PRIORITY"] == "6"  # info: started, succeeded
            assert "[job=" not in e["MESSAGE"]  # journal fields, not the stderr format
        started = [e for e in entries if e["MESSAGE"].startswith("started ")]
        succeeded = [e for e in entries if e["MESSAGE"].endswith(" succeeded")]
        assert len(started) == len(status["attempts"]) == len(succeeded)
        # the master's lines about the job carry the field too
        master = cluster.journal_json("-u", "blfs-master", f"BLFS_JOB={job}")
        assert any(e["MESSAGE"].startswith(f"accepted job {job}") for e in master)
        assert any(e["MESSAGE"].startswith(f"job {job} succeeded") for e in master)
    # the journal handler only, never also stderr (which journald records as "stdout")
    for e in cluster.journal_json("-u", "blfs-worker", "-u", "blfs-master",
                                  "_TRANSPORT=stdout"):
        assert not re.match(r"(INFO|WARNING|ERROR)? ?(started|launching|accepted job) ",
                            e["MESSAGE"]), e["MESSAGE"]


GC_JOB = """\
import gc
import time

from blfsd import Job


class GcWordCount(Job):
    def setup(self):
        if self.context.task.startswith("m-"):
            time.sleep(0.3)
            gc.collect()  # what any allocation-heavy map does sooner or later

    def map(self, key, value):
        for word in value.split():
            yield word, 1

    def reduce(self, key, values):
        yield key, sum(values)
"""


def test_task_processes_write_nothing_to_stderr(cluster):
    ct = cluster.ct
    write(ct.root, "/srv/gc_job.py", GC_JOB)
    since = ct.run("date", "+@%s").stdout.strip()
    time.sleep(1.0)
    output = cluster.new_output()
    done, _ = cluster.submit("gc_job.py", "/srv/in/small.txt", output, "--split-size", "8K")
    assert done.returncode == 0, done.stderr
    assert cluster.read_output(output) == dict(cluster.expected["/srv/in/small.txt"])
    noise = cluster.journal_json("-u", "blfs-worker", "_TRANSPORT=stdout", "--since", since)
    assert [e["MESSAGE"] for e in noise] == []


def test_failing_task_traceback_in_worker_journal(cluster):
    marker = secrets.token_hex(4)
    output = cluster.new_output()
    done, job = cluster.submit("cli_fail_map.py", "/srv/in/other.txt", output,
                               "--max-attempts", "1", "--", marker, check=False)
    assert done.returncode == 1 and job, done.stderr
    entries = cluster.journal_json("-u", "blfs-worker", f"BLFS_JOB={job}", "-p", "warning")
    text = "\n".join(e["MESSAGE"] for e in entries)
    assert "Traceback (most recent call last)" in text
    assert f"ValueError: boom-{marker}" in text
    assert all(e["PRIORITY"] == "4" for e in entries)


# --------------------------------------------------------------------------- containment

def test_attempts_run_contained_in_cgroups_of_their_own(cluster):
    """Under systemd: Delegate=yes, the worker in daemon/, a cgroup per running attempt
    below tasks/ (systemd-cgls shows them), and the job's code as blfs-task."""
    ct = cluster.ct
    assert ct.show("blfs-worker", "Delegate")["Delegate"] == "yes"
    output = cluster.new_output()
    done, _ = cluster.submit("slow_wordcount.py", "/srv/in/small.txt", output,
                             "--split-size", "8K", "--detach", "--", "3")
    job = done.stdout.strip()
    ct.wait_for(lambda: cluster.status(job)["running"], 30, "map attempts to run")
    tree = ct.run("systemd-cgls", "--no-pager", "-u", "blfs-worker.service").stdout
    assert "daemon" in tree and "tasks" in tree, tree
    assert job.replace("/", "_") in tree, f"no cgroup of an attempt of {job}:\n{tree}"
    task_uid = ct.run("id", "-u", "blfs-task").stdout.strip()
    users = ct.run("ps", "-o", "uid=", "--ppid", str(cluster.main_pid("blfs-worker"))).stdout
    assert users.split() and set(users.split()) == {task_uid}, users
    assert cluster.wait_finished(job)["state"] == "succeeded"


def test_a_hostile_job_under_systemd_can_do_nothing_of_what_it_tries(cluster):
    ct = cluster.ct
    ct.run("sh", "-c", "[ -e /srv/peer-disk ] || mknod -m 0660 /srv/peer-disk b 7 250; "
                       "chgrp disk /srv/peer-disk")
    where = json.dumps({"key": "/etc/blfs/cluster.key", "state": "/var/lib/blfs/master",
                        "slot": {cluster.name: f"/var/lib/blfs/disks/{cluster.name}/pool/"
                                               "slot-00000"},
                        "device": {cluster.name: "/srv/peer-disk"}})
    output = cluster.new_output()
    done, _ = cluster.submit("escape.py", "/srv/in/other.txt", output, "--split-size", "1G",
                             "--", where)
    assert done.returncode == 0, done.stderr
    out = ct.host_path(output)
    rows = {}
    for part in sorted(os.listdir(out)):
        if part.startswith("part-"):
            with open(os.path.join(out, part)) as f:
                rows.update(line.rstrip("\n").split("\t", 1) for line in f)
    for escape in ("read-key", "write-etc", "write-state", "write-pool", "open-device",
                   "mount", "ptrace-worker", "signal-worker"):
        assert rows[escape].startswith("denied"), (escape, rows[escape])
    assert rows["euid"] == ct.run("id", "-u", "blfs-task").stdout.strip()
    assert int(rows["capabilities"], 16) == 0 and rows["no_new_privs"] == "1"


def test_paths_of_root_alone_are_refused_to_a_job(cluster):
    """The worker uses paths that jobs name with the task user's rights: an output in a
    directory only root may write fails with one clear line, and nothing is written."""
    ct = cluster.ct
    ct.run("install", "-d", "-m", "0755", "/srv/root-only")
    done, _ = cluster.submit("wordcount.py", "/srv/in/other.txt", "/srv/root-only/out",
                             "--max-attempts", "1", check=False)
    assert done.returncode == 1
    assert "Permission denied" in done.stderr, done.stderr
    assert ct.run("ls", "-A", "/srv/root-only").stdout.strip() == ""


# --------------------------------------------------------------------------- failures

def test_watchdog_restarts_frozen_master(cluster):
    ct = cluster.ct
    restarts = int(ct.show("blfs-master", "NRestarts")["NRestarts"])
    pid = cluster.main_pid("blfs-master")
    ct.run("kill", "-STOP", str(pid))

    def restarted():
        s = ct.show("blfs-master", "NRestarts", "MainPID", "ActiveState", "SubState")
        return (int(s["NRestarts"]) > restarts and s["MainPID"] not in ("0", str(pid))
                and (s["ActiveState"], s["SubState"]) == ("active", "running"))

    ct.wait_for(restarted, 45, "systemd to restart the frozen master")
    log = ct.journal("-u", "blfs-master", "-o", "cat")
    assert "Watchdog timeout" in log
    ct.wait_for(cluster.worker_alive, 30, "the worker to rejoin the restarted master")


def test_worker_sigkill_during_job(cluster):
    """A SIGKILLed worker comes back, the master re-runs what it lost, the job completes.

    Two things would start it again: Restart=on-failure (after RestartSec=1s) and the
    master's re-dial through blfs-worker.socket. While the unit waits for its automatic
    restart systemd defers a socket-triggered start to the restart, and the master's
    connection waits in the socket's backlog; the next test covers the socket path alone."""
    ct = cluster.ct
    output = cluster.new_output()
    done, job = cluster.submit("slow_wordcount.py", "/srv/in/small.txt", output,
                               "--split-size", "8K", "--detach", "--", "2")
    job = done.stdout.strip()
    assert re.fullmatch(r"\d{8}-\d{6}-[0-9a-f]{4}", job), done.stdout + done.stderr
    ct.wait_for(lambda: cluster.status(job)["running"], 30, "map attempts to run")
    old = cluster.main_pid("blfs-worker")
    ct.run("kill", "-KILL", str(old))

    status = cluster.wait_finished(job)
    assert status["state"] == "succeeded", status.get("error")
    assert cluster.read_output(output) == dict(cluster.expected["/srv/in/small.txt"])
    assert any(f["kind"] == "lost" for f in status["failed_attempts"]), status
    new = cluster.main_pid("blfs-worker")
    assert new not in (0, old)
    assert cluster.unit_state("blfs-worker") == ("active", "running")


def test_stopped_worker_is_started_again_by_the_masters_dial(cluster):
    """`systemctl stop blfs-worker` in the middle of a job: SIGTERM ends the worker at once
    and cleanly; with its socket still listening, the master's re-dial starts it again (not
    Restart=, which does not apply to a clean stop); the master re-runs what was lost and
    the job completes."""
    ct = cluster.ct
    output = cluster.new_output()
    done, _ = cluster.submit("slow_wordcount.py", "/srv/in/small.txt", output,
                             "--split-size", "8K", "--detach", "--", "2")
    job = done.stdout.strip()
    ct.wait_for(lambda: cluster.status(job)["running"], 30, "map attempts to run")
    old = cluster.main_pid("blfs-worker")
    since = ct.run("date", "+@%s").stdout.strip()
    t0 = time.monotonic()
    ct.systemctl("stop", "blfs-worker")
    assert time.monotonic() - t0 < 10  # well within TimeoutStopSec
    log = ct.journal("-u", "blfs-worker", "-o", "cat", "--since", since)
    assert "Deactivated successfully" in log, log
    assert "Killing process" not in log and "timed out" not in log, log

    def back():
        return (cluster.unit_state("blfs-worker") == ("active", "running")
                and cluster.main_pid("blfs-worker") not in (0, old))

    ct.wait_for(back, 30, "the master's dial to start the worker through its socket")
    # an automatic restart would have counted up; a start by the socket resets the count
    assert ct.show("blfs-worker", "NRestarts")["NRestarts"] == "0"

    status = cluster.wait_finished(job)
    assert status["state"] == "succeeded", status.get("error")
    assert cluster.read_output(output) == dict(cluster.expected["/srv/in/small.txt"])
    assert any(f["kind"] == "lost" for f in status["failed_attempts"]), status


def test_master_commits_without_shared_output_dropin(cluster):
    output = f"/srv/elsewhere/out-{secrets.token_hex(3)}"
    cluster.ct.run("install", "-d", "-m", "1777", "/srv/elsewhere")
    done, _ = cluster.submit("wordcount.py", "/srv/in/other.txt", output, check=False)
    assert done.returncode == 0, done.stderr
    assert cluster.read_output(output) == dict(cluster.expected["/srv/in/other.txt"])


# --------------------------------------------------------------------------- stop

def test_stop_leaves_no_blfs_process(cluster):
    ct = cluster.ct
    ct.systemctl("stop", "blfs-master.socket", "blfs-master", "blfs-worker.socket",
                 "blfs-worker", timeout=90)
    for unit in UNITS:
        assert cluster.unit_state(unit) == ("inactive", "dead"), unit
    log = ct.journal("-u", "blfs-master", "-u", "blfs-worker", "-o", "cat", "-n", "40")
    assert "Killing process" not in log and "timed out" not in log, log
    ps = ct.run("ps", "-eo", "pid,user,args", "--no-headers").stdout
    left = [line for line in ps.splitlines() if "blfs" in line and "ps -eo" not in line]
    assert left == [], left
    # the socket is gone with its unit (RemoveOnStop); its directory stays
    assert ct.run("test", "-e", "/run/blfs/master.sock", check=False).returncode != 0
    assert ct.run("test", "-d", "/run/blfs", check=False).returncode == 0
