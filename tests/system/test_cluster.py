"""System test of the packaged product (issue 5, point 4): the .deb of this tree installed
with apt-get on a master and three workers, each a booted Debian container on a private
bridge, each worker with its own disk that every worker sees at /dev/blfs/wN through a loop
device of its own (tests/system/cluster.py).

One cluster at a time, for the whole module: every test runs on an all-Debian-12 (bookworm)
cluster, then on an all-Debian-13 (trixie) one (the `cluster` fixture is parametrized,
conftest.py). The tests run in file order and build on each other: the destructive ones
(a worker powered off mid-job, the upgrade, the removal) come last.
"""
from __future__ import annotations

import json
import os
import random
import re
import secrets
import subprocess
import time
import tomllib
from collections import Counter

import pytest

from system.cluster import DISKS_ROOT, PARALLELISM, REPO, SLOTS, Node, parallel

pytestmark = [pytest.mark.root, pytest.mark.slow]

with open(os.path.join(REPO, "pyproject.toml"), "rb") as _f:
    VERSION = tomllib.load(_f)["project"]["version"]

WORKERS = ("w1", "w2", "w3")
UNITS = ("blfs-master.socket", "blfs-master.service", "blfs-worker.socket",
         "blfs-worker.service", "blfs-iscsi.service")
JOB_ID = re.compile(r"\bjob (\d{8}-\d{6}-[0-9a-f]{4})\b")


# ----------------------------------------------------------------------------- inputs

def make_corpus(path: str, size: int, seed: int) -> Counter:
    """About `size` bytes of lines of words (Zipf-like frequencies, a few non-ASCII words,
    empty lines), the same for the same seed; returns the reference word counts."""
    rng = random.Random(seed)
    words = [f"w{i:04d}" for i in range(3000)] + ["naïve", "ünïcode", "日本", "x"]
    weights = [1.0 / (i + 1) for i in range(len(words))]
    counts: Counter = Counter()
    written = 0
    with open(path, "w", encoding="utf-8") as f:
        while written < size:
            line = rng.choices(words, weights, k=rng.randint(0, 14))
            counts.update(line)
            text = " ".join(line) + "\n"
            f.write(text)
            written += len(text.encode())
    return counts


def parse_counts(text: str) -> dict:
    """`key<TAB>count` lines as a dict; a key twice is an error."""
    counts: dict = {}
    for line in text.splitlines():
        key, _, value = line.partition("\t")
        assert key not in counts, f"{key!r} is in the output twice"
        counts[key] = int(value)
    return counts


def job_id(done: subprocess.CompletedProcess) -> str:
    found = JOB_ID.findall(done.stderr + done.stdout)
    assert found, done.stdout + done.stderr
    return found[0]


def tasks_of(status: dict, worker: str | None = None) -> set:
    """Task names (m-00003, r-00001) of the job's attempts, on one worker or all."""
    return {a["attempt"].split("/")[1] for a in status["attempts"]
            if worker is None or a["worker"] == worker}


@pytest.fixture(scope="module")
def corpus(cluster) -> Counter:
    """A 4 MB corpus at /srv/corpus.txt of the master, and its reference word counts."""
    return make_corpus(cluster.master.host_path("/srv/corpus.txt"), 4 << 20, seed=5)


@pytest.fixture(scope="module")
def wordcount(cluster, corpus) -> dict:
    """The corpus put into the cluster as `corpus` and counted into `counts` from the master."""
    put = cluster.blfs("put", "/srv/corpus.txt", "corpus", "--split-size", "256K")
    done = cluster.blfs("submit", "/srv/wordcount.py", "--input", "corpus", "--output",
                        "counts", "--quiet")
    return {"put": put, "submit": done, "job": job_id(done)}


# ----------------------------------------------------------------------------- install

def test_package_installed_and_configured_on_every_node(cluster):
    """apt-get installed the package offline; the key got its mode from the package's
    tmpfiles.d; one configuration everywhere; each node runs the units of its role."""
    config = cluster.config_text()
    keys = set()
    for name, node in cluster.nodes.items():
        assert node.os_release()["VERSION_CODENAME"] == node.suite, name
        assert node.run("dpkg-query", "-W", "-f", "${Version}", "blfs").stdout \
            == f"{VERSION}-1", name
        assert node.run("stat", "-c", "%U %G %a", "/etc/blfs/cluster.key").stdout.split() \
            == ["root", "blfs", "640"], name
        with open(node.host_path("/etc/blfs/blfs.toml"), encoding="utf-8") as f:
            assert f.read() == config, name
        with open(node.host_path("/etc/blfs/cluster.key"), encoding="ascii") as f:
            keys.add(f.read())
        assert node.run("hostname").stdout.strip() == name
    assert len(keys) == 1 and re.fullmatch(r"[0-9a-f]{64}\n", keys.pop())
    m = cluster.master
    assert (m.enabled("blfs-master.socket"), m.active("blfs-master.socket")) \
        == ("enabled", "active")
    assert (m.enabled("blfs-worker.socket"), m.active("blfs-worker.socket")) \
        == ("disabled", "inactive")
    for w in cluster.workers:
        assert (w.enabled("blfs-master.socket"), w.active("blfs-master.socket")) \
            == ("disabled", "inactive"), w.hostname
        assert w.enabled("blfs-worker.socket") == "enabled", w.hostname
        assert w.active("blfs-worker.service") == "active", w.hostname  # the master's dial


def check_disks_up_at_boot(w: Node) -> None:
    """blfs-iscsi.service ran `blfs-iscsi up` in this boot: own disk rw, peers ro,noload,
    the own pool ready."""
    name = w.hostname
    assert (w.enabled("blfs-iscsi.service"), w.active("blfs-iscsi.service")) \
        == ("enabled", "active"), name
    assert w.show("blfs-iscsi.service", "Result")["Result"] == "success"
    log = w.journal("-b", "-u", "blfs-iscsi", "-o", "cat")
    assert f"{name}: mounted /dev/blfs/{name} at {DISKS_ROOT}/{name} (rw,noatime)" in log, log
    mounts = w.mounts()
    assert set(mounts) == {f"{DISKS_ROOT}/{n}" for n in WORKERS}, mounts
    for n in WORKERS:
        source, options = mounts[f"{DISKS_ROOT}/{n}"]
        assert source == f"/dev/blfs/{n}"
        flags = options.split(",")
        if n == name:
            assert "rw" in flags and "noatime" in flags, options
        else:
            assert "ro" in flags and "norecovery" in flags, options  # noload, as the kernel says
    status = json.loads(w.run("blfs-iscsi", "status", "--json").stdout)
    own = next(d for d in status["disks"] if d["own"])
    assert (own["node"], own["mode"], own["state"], own["slots"]) == (name, "rw", "ready", SLOTS)
    assert w.run("test", "-f", f"{DISKS_ROOT}/{name}/pool/MANIFEST", check=False).returncode == 0


def test_blfs_iscsi_up_ran_at_boot(cluster):
    """The workers were rebooted after `systemctl enable --now`: their disks were mounted
    and the pools checked at boot, by the unit."""
    for w in cluster.workers:
        check_disks_up_at_boot(w)


def test_workers_report_disk_pool_and_load(cluster):
    """`blfs workers` on the master: every worker alive with its disk, pool and load."""
    rows = cluster.workers_info()
    assert [w["name"] for w in rows] == list(WORKERS)
    for w in rows:
        info = w["info"]
        assert w["alive"] and w["parallelism"] == PARALLELISM and w["running"] == 0, w
        assert info["disk"] == f"{DISKS_ROOT}/{w['name']}"
        assert (info["slots"], info["slot_size"]) == (SLOTS, 16 << 20)
        assert info["free_slots"] == SLOTS
        assert isinstance(info["generation"], int) and info["generation"] > 0
    text = cluster.blfs("workers").stdout.splitlines()
    assert text[0].startswith("WORKER") and len(text) == 1 + len(WORKERS), text
    for line, name in zip(text[1:], WORKERS):
        words = line.split()
        assert words[:2] == [name, "up"] and f"0/{PARALLELISM}" in words, line  # load
        assert any(w.startswith(f"{SLOTS}/{SLOTS}") for w in words), line  # pool
        assert words[-1] == f"{DISKS_ROOT}/{name}", line  # disk


# ----------------------------------------------------------------------------- jobs

def test_wordcount_put_submit_cat_get(cluster, corpus, wordcount):
    """(a) put, submit with cluster storage, cat and get: the exact word counts."""
    size = os.path.getsize(cluster.master.host_path("/srv/corpus.txt"))
    put = wordcount["put"].stdout.strip()
    m = re.fullmatch(r"put corpus: (\d+) splits, (\d+) bytes on w1, w2, w3", put)
    assert m, put
    assert int(m.group(2)) == size and int(m.group(1)) >= size // (256 << 10)
    assert f"job {wordcount['job']} succeeded" in wordcount["submit"].stderr

    cat = cluster.blfs("cat", "counts").stdout
    assert parse_counts(cat) == dict(corpus)
    status = cluster.status(wordcount["job"])
    assert status["state"] == "succeeded"
    assert status["maps"] == {"total": int(m.group(1)), "done": int(m.group(1)), "running": 0}

    cluster.blfs("get", "counts", "/srv/got")
    got = cluster.master.host_path("/srv/got")
    parts = [f"part-{i:05d}" for i in range(status["reduces"]["total"])]
    assert sorted(os.listdir(got)) == sorted(parts + ["_SUCCESS"])
    text = ""
    for part in parts:
        with open(os.path.join(got, part), encoding="utf-8") as f:
            body = f.read()
        keys = [line.split("\t")[0] for line in body.splitlines()]
        assert keys == sorted(keys), f"{part} is not sorted"
        text += body
    assert text == cat  # cat streams the very parts, in order

    # every worker took part, and the job's slots are given back once it has ended
    assert {a["worker"] for a in status["attempts"]} == set(WORKERS)
    cluster.master.wait_for(
        lambda: all(w["info"]["free_slots"] == SLOTS and w["running"] == 0
                    for w in cluster.workers_info()), 15, "every slot to be free again")


def test_submit_from_a_worker_over_tcp(cluster, corpus, wordcount):
    """(b) A client on w2: no master socket there, so TCP to [cluster] master with the key."""
    w2 = cluster.nodes["w2"]
    assert w2.run("test", "-e", "/run/blfs/master.sock", check=False).returncode != 0
    done = cluster.blfs("submit", "/srv/wordcount.py", "--input", "corpus", "--output",
                        "counts-w2", "--quiet", node="w2")
    job = job_id(done)
    assert parse_counts(cluster.blfs("cat", "counts-w2", node="w2").stdout) == dict(corpus)
    assert parse_counts(cluster.blfs("cat", "counts-w2").stdout) == dict(corpus)
    accepted = cluster.master.journal("-u", "blfs-master", "-o", "cat", f"BLFS_JOB={job}")
    assert f"accepted job {job}" in accepted


def test_wrong_key_is_refused(cluster, wordcount):
    """(b) A client with the wrong key: one line, non-zero, nothing recorded, and the master
    logs whom it refused."""
    w3 = cluster.nodes["w3"]
    w3.sh(f"echo {secrets.token_hex(32)} > /srv/wrong.key")
    jobs_before = cluster.jobs()
    since = cluster.master.run("date", "+@%s").stdout.strip()
    done = cluster.blfs("submit", "/srv/wordcount.py", "--input", "corpus", "--output",
                        "never", "--key", "/srv/wrong.key", "--master",
                        cluster.master_address, node="w3", check=False)
    assert done.returncode != 0
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("blfs: ") and "key" in lines[0], done.stderr
    assert done.stdout == ""
    assert cluster.jobs() == jobs_before
    names = [e["name"] for e in cluster.blfs_json("ls")]
    assert "never" not in names and "counts" in names

    def refused():
        log = cluster.master.journal("-u", "blfs-master", "-o", "cat", "--since", since)
        return re.search(rf"refused connection from (::ffff:)?{re.escape(w3.ip)}:\d+: .*key",
                         log)

    cluster.master.wait_for(refused, 10, "the master's journal to log the refused peer")


def test_each_workers_journal_tells_its_share_of_the_job(cluster, wordcount):
    """(c) `journalctl -u blfs-worker BLFS_JOB=ID` on each worker: that worker's tasks, and
    together every map task of the job."""
    job = wordcount["job"]
    status = cluster.status(job)
    maps = {t for t in tasks_of(status) if t.startswith("m-")}
    assert len(maps) == status["maps"]["total"]
    seen: set = set()
    for w in cluster.workers:
        entries = [json.loads(line) for line in
                   w.journal("-u", "blfs-worker", f"BLFS_JOB={job}", "-o", "json").splitlines()]
        assert entries, f"{w.hostname}: no journal entries for job {job}"
        assert {e["BLFS_NODE"] for e in entries} == {w.hostname}
        assert {e["BLFS_JOB"] for e in entries} == {job}
        tasks = {e["BLFS_TASK"] for e in entries}
        assert tasks == tasks_of(status, w.hostname), w.hostname
        for a in status["attempts"]:
            if a["worker"] == w.hostname:
                said = [e["MESSAGE"] for e in entries
                        if a["attempt"].startswith(f"{job}/{e['BLFS_TASK']}/")]
                assert any(line.startswith(f"started {a['attempt']} ") for line in said), said
                if a["state"] == "succeeded":
                    assert f"{a['attempt']} succeeded" in said, said
        seen |= tasks
    assert maps <= seen


def test_worker_powered_off_mid_job(cluster):
    """(d) w3 is powered off while it runs map attempts, after it finished others: the job
    still gives the exact counts, w3's running attempts are re-run elsewhere, and the maps
    it had finished are not re-run: reducers on w1 and w2 read their output off w3's disk,
    which they still see through their own views."""
    reference = make_corpus(cluster.master.host_path("/srv/slow.txt"), 1200 << 10, seed=9)
    cluster.blfs("put", "/srv/slow.txt", "slow", "--split-size", "96K")
    done = cluster.blfs("submit", "/srv/slow_wordcount.py", "--input", "slow", "--output",
                        "counts-slow", "--detach", "--", "1.5")
    job = done.stdout.strip()
    assert re.fullmatch(r"\d{8}-\d{6}-[0-9a-f]{4}", job), done.stdout + done.stderr
    generation = {w["name"]: w["info"]["generation"] for w in cluster.workers_info()}

    def w3_busy():
        s = cluster.status(job)
        on_w3 = [a for a in s["attempts"] if a["worker"] == "w3" and "/m-" in a["attempt"]]
        if (any(a["state"] == "succeeded" for a in on_w3)
                and any(a["state"] == "running" for a in on_w3)):
            return s
        return None

    before = cluster.master.wait_for(w3_busy, 60, "w3 to finish a map and run another")
    cluster.poweroff(["w3"], inside=True)  # systemctl poweroff in the container
    finished_on_w3 = {a["attempt"].split("/")[1] for a in before["attempts"]
                      if a["worker"] == "w3" and a["state"] == "succeeded"}

    status = cluster.wait_job(job, timeout=120)
    assert status["state"] == "succeeded", status.get("error")
    assert parse_counts(cluster.blfs("cat", "counts-slow").stdout) == dict(reference)

    lost = [f for f in status["failed_attempts"] if f["worker"] == "w3"]
    assert lost and {f["kind"] for f in lost} == {"lost"}, status["failed_attempts"]
    winners = {a["attempt"].split("/")[1]: a["worker"] for a in status["attempts"]
               if a["state"] == "succeeded"}
    for task in {f["task"] for f in lost}:  # what w3 was running: re-run elsewhere
        assert winners.get(task) in ("w1", "w2"), (task, status["attempts"])
    won_on_w3 = {t for t, w in winners.items() if w == "w3"}
    assert won_on_w3 >= finished_on_w3 and all(t.startswith("m-") for t in won_on_w3)
    for task in won_on_w3:  # not re-run: its output was read off w3's disk
        assert [a["worker"] for a in status["attempts"]
                if a["attempt"].split("/")[1] == task] == ["w3"], task
    assert all(winners[t] != "w3" for t in winners if t.startswith("r-"))
    assert len(status["attempts"]) > status["maps"]["total"] + status["reduces"]["total"]
    assert {w["name"]: w["alive"] for w in cluster.workers_info()} \
        == {"w1": True, "w2": True, "w3": False}

    # w3's disk stays readable by its peers, through their own loop devices
    for peer in ("w1", "w2"):
        seen = json.loads(cluster.nodes[peer].run("blfs-iscsi", "status", "--json").stdout)
        view = next(d for d in seen["disks"] if d["node"] == "w3")
        assert (view["mode"], view["state"], view["generation"]) \
            == ("ro", "ready", generation["w3"]), view

    # w3 boots again: its disk comes up through blfs-iscsi.service, the master takes it back
    cluster.boot(["w3"])
    check_disks_up_at_boot(cluster.nodes["w3"])
    cluster.wait_workers_alive()


# ----------------------------------------------------------------------------- pipelines

#: Run in a worker's container: the (job, stage, producer task) of the first segment of
#: every slot of its own pool that holds one (a slot keeps one attempt's segments).
SEGMENTS_OF_POOL = """
import glob, json, socket
from blfsd.storage import HEADER_SIZE, decode_header
from blfsd.errors import StorageError
found = []
for path in sorted(glob.glob('/var/lib/blfs/disks/%s/pool/slot-*' % socket.gethostname())):
    with open(path, 'rb') as f:
        head = f.read(HEADER_SIZE)
    try:
        sid = decode_header(head)[0]
    except StorageError:
        continue
    found.append([sid.job, sid.stage, sid.map_task])
print(json.dumps(found))
"""


def segments_on_disks(cluster, job: str) -> dict:
    """Worker -> sorted (stage, producer task) of the job's segments on its own disk."""
    found = {}
    for w in WORKERS:
        rows = json.loads(cluster.nodes[w].run("python3", "-c", SEGMENTS_OF_POOL).stdout)
        found[w] = sorted((stage, task) for j, stage, task in rows if j == job)
    return found


def letter_counts(words: Counter) -> dict:
    letters: Counter = Counter()
    for word, n in words.items():
        letters[word[0]] += n
    return dict(letters)


def test_pipeline_with_a_worker_stopped_in_its_second_step(cluster):
    """(f) tests/jobs/slow_pipeline.py, three steps: while the second step runs, the first
    step's reduce output lies in slots of the workers' own disks (stage 1 of the job in
    the segment headers); the worker of a running second-step map is stopped then, and
    the job still gives the exact output. Every slot is free once it has ended."""
    cluster.wait_workers_alive()
    reference = make_corpus(cluster.master.host_path("/srv/letters.txt"), 1 << 20, seed=11)
    cluster.blfs("put", "/srv/letters.txt", "letters", "--split-size", "128K")
    done = cluster.blfs("submit", "/srv/slow_pipeline.py", "--input", "letters", "--output",
                        "letters-out", "--detach", "--", "2.0")
    job = done.stdout.strip()

    def second_step_running():
        # the first step's reduces all done (with slow start they end at different times)
        # and a second-step map running
        s = cluster.status(job)
        if s["stages"][1]["done"] != 6:
            return None
        return next((a["worker"] for a in s["running"] if "/s1-m-" in a["attempt"]), None)

    victim = cluster.master.wait_for(second_step_running, 90,
                                     "every first-step reduce done, a second-step map running")
    held = segments_on_disks(cluster, job)
    cluster.nodes[victim].systemctl("stop", "blfs-worker.socket", "blfs-worker.service")

    middle = sorted({task for segs in held.values() for stage, task in segs if stage == 1})
    assert middle == list(range(6)), held  # all six reduces of step 1 wrote into slots
    assert cluster.status(job)["stages"][1]["done"] == 6

    status = cluster.wait_job(job, timeout=180)
    assert status["state"] == "succeeded", status.get("error")
    assert parse_counts(cluster.blfs("cat", "letters-out").stdout) == letter_counts(reference)
    lost = [f for f in status["failed_attempts"] if f["worker"] == victim]
    assert lost and {f["kind"] for f in lost} == {"lost"}, status["failed_attempts"]

    cluster.nodes[victim].systemctl("start", "blfs-worker.socket")
    cluster.wait_workers_alive()
    cluster.master.wait_for(
        lambda: all(w["info"]["free_slots"] == SLOTS and w["running"] == 0
                    for w in cluster.workers_info()), 30, "every slot to be free again")


def test_mrjob_word_freq_count_on_the_cluster(cluster, corpus, wordcount):
    """(g) mrjob's own examples/mr_word_freq_count.py, unmodified, on the `corpus` dataset:
    its part files hold mrjob's JSON lines, and the counts are exact."""
    if not os.path.exists(cluster.master.host_path("/srv/mr_word_freq_count.py")):
        pytest.skip("mrjob is not importable by the tests (make venv installs it)")
    cluster.blfs("submit", "/srv/mr_word_freq_count.py", "--input", "corpus", "--output",
                 "mr-counts", "--quiet")
    counts = {}
    for line in cluster.blfs("cat", "mr-counts").stdout.splitlines():
        key, value = line.split("\t")
        counts[json.loads(key)] = json.loads(value)
    with open(cluster.master.host_path("/srv/corpus.txt"), encoding="utf-8") as f:
        want = Counter(w.lower() for w in re.findall(r"[\w']+", f.read()))
    assert counts == dict(want)


# ----------------------------------------------------------------------------- nodes

def reload_master(cluster, config: str) -> None:
    """A new /etc/blfs/blfs.toml on the master, and `systemctl reload blfs-master`."""
    with open(cluster.master.host_path("/etc/blfs/blfs.toml"), "w") as f:
        f.write(config)
    cluster.master.run("systemctl", "reload", "blfs-master.service")


def test_a_node_added_with_reload_gets_tasks_of_a_running_job(cluster):
    """(h) w3 leaves the master's configuration (reload: drained, then let go); a job
    starts on w1 and w2; w3 is added back with `systemctl reload blfs-master` while the
    job runs, and attempts of that same job run on w3. The counts are exact."""
    cluster.wait_workers_alive()
    path = cluster.master.host_path("/etc/blfs/blfs.toml")
    with open(path) as f:
        full = f.read()
    without = "\n\n".join(b for b in full.split("\n\n") if not b.startswith("[nodes.w3]"))
    assert "[nodes.w3]" in full and "[nodes.w3]" not in without
    reload_master(cluster, without)
    cluster.master.wait_for(lambda: "w3" not in {w["name"] for w in cluster.workers_info()},
                            60, "w3 to be let go", interval=0.3)
    reference = make_corpus(cluster.master.host_path("/srv/joining.txt"), 900 << 10, seed=13)
    done = cluster.blfs("submit", "/srv/slow_wordcount.py", "--input", "/srv/joining.txt",
                        "--output", "counts-joining", "--split-size", "48K", "--detach",
                        "--", "1.0")
    job = done.stdout.strip()
    cluster.master.wait_for(lambda: cluster.status(job)["attempts"], 60, "the job to start",
                            interval=0.3)
    started = time.monotonic()
    reload_master(cluster, full)
    cluster.master.wait_for(lambda: tasks_of(cluster.status(job), "w3"), 60,
                            "an attempt of the running job on w3", interval=0.2)
    joined = time.monotonic() - started
    status = cluster.wait_job(job, timeout=180)
    assert status["state"] == "succeeded", status.get("error")
    assert parse_counts(cluster.blfs("cat", "counts-joining").stdout) == dict(reference)
    assert status["maps"]["total"] >= 12
    print(f"reload to the first attempt of the running job on w3: {joined:.2f} s")


# ----------------------------------------------------------------------------- packages

def test_upgrade_restarts_services_and_keeps_the_configuration(cluster, debs, corpus):
    """(e) apt-get install of release 2 over release 1 on every node: the services that ran
    are restarted (new InvocationIDs) while their sockets stay open (the same ones: a
    socket restarted beside its service may fail to bind again, docs/PACKAGING.md),
    blfs-iscsi.service is left alone (its restart would unmount the disks under the
    worker), /etc/blfs/blfs.toml is byte for byte the same, jobs still run."""
    cluster.wait_workers_alive()
    restarted = {"master": ("blfs-master.service",)}
    restarted.update({w: ("blfs-worker.service",) for w in WORKERS})
    before = {(n, u): cluster.nodes[n].invocation(u) for n, units in restarted.items()
              for u in units}
    kept = {n: ("blfs-master.socket",) for n in ("master",)}
    kept.update({w: ("blfs-worker.socket", "blfs-iscsi.service") for w in WORKERS})
    kept_ids = {(n, u): cluster.nodes[n].invocation(u) for n, units in kept.items()
                for u in units}
    configs = {}
    for name, node in cluster.nodes.items():
        with open(node.host_path("/etc/blfs/blfs.toml"), "rb") as f:
            configs[name] = f.read()

    deb = f"/srv/{os.path.basename(debs[2])}"
    parallel(lambda n: n.apt_install(deb), cluster.nodes.values())

    for (name, unit), old in before.items():
        node = cluster.nodes[name]
        assert node.run("dpkg-query", "-W", "-f", "${Version}", "blfs").stdout \
            == f"{VERSION}-2"
        new = node.invocation(unit)
        assert new and new != old, f"{unit} on {name} was not restarted:\n" + node.run(
            "journalctl", "-n", "30", "-u", "blfs-master.socket", "-u", "blfs-master.service",
            "-u", "blfs-worker.socket", "-u", "blfs-worker.service", "--no-pager").stdout
    # the master that stopped left the socket unit's Unix socket alone (Python 3.13 would
    # remove a Unix server's path when it closes)
    assert "Unable to clean up listening UNIX socket" not in cluster.master.journal(
        "-u", "blfs-master", "-o", "cat")
    assert {key: cluster.nodes[key[0]].invocation(key[1]) for key in kept_ids} == kept_ids
    assert {key: cluster.nodes[key[0]].active(key[1]) for key in kept_ids} \
        == {key: "active" for key in kept_ids}
    for name, node in cluster.nodes.items():
        with open(node.host_path("/etc/blfs/blfs.toml"), "rb") as f:
            assert f.read() == configs[name], name
        assert not os.path.exists(node.host_path("/etc/blfs/blfs.toml.dpkg-new"))
        assert not os.path.exists(node.host_path("/etc/blfs/blfs.toml.dpkg-dist"))

    cluster.wait_workers_alive()
    cluster.blfs("submit", "/srv/wordcount.py", "--input", "corpus", "--output",
                 "counts-upgraded", "--quiet")
    assert parse_counts(cluster.blfs("cat", "counts-upgraded").stdout) == dict(corpus)


def test_remove_stops_everything(cluster):
    """(e) apt-get remove on every node: every unit stopped, no blfs process left, the
    disks unmounted (blfs-iscsi down, run by the unit's stop); the configuration stays."""
    parallel(lambda n: n.run("env", "DEBIAN_FRONTEND=noninteractive", "apt-get", "remove",
                             "-y", "blfs", timeout=300), cluster.nodes.values())
    for name, node in cluster.nodes.items():
        assert node.run("dpkg-query", "-W", "-f", "${Status}", "blfs").stdout \
            == "deinstall ok config-files", name
        for unit in UNITS:
            assert node.active(unit) == "inactive", f"{unit} on {name}"
        assert node.blfs_processes() == [], name
        assert node.mounts() == {}, name
        assert os.path.exists(node.host_path("/etc/blfs/blfs.toml"))
        assert not os.path.exists(node.host_path("/usr/bin/blfs"))
