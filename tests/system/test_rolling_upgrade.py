"""System test of a rolling upgrade (issue 15, point 4): a mixed cluster, as in the middle of
an upgrade from Debian 12 to Debian 13, whose blfs package is upgraded node by node while
jobs run.

A Debian 12 (bookworm) master and three Debian 13 (trixie) workers (tests/system/cluster.py),
release 1 of the .deb of this tree installed on each. Then release 2 (the same code, only the
package revision differs, so both speak the same protocol) is installed with apt-get on w1,
w2, w3, one at a time, then on the master. Before each node's upgrade a slow word count is
running, with an attempt on that very node when it is a worker (a new one is submitted
whenever the last has ended), so every upgrade restarts a daemon under a running job: the
worker's running attempts are lost and run again elsewhere, the master's restart resumes the
accepted job. Every job must still give the exact word counts.

The times (the cluster up, the scenario, each node's upgrade and its return) are printed by
conftest.py's timer at the end of the module.
"""
from __future__ import annotations

import json
import os
import re
import time

import pytest

from container import ContainerError
from system.cluster import PARALLELISM
from system.conftest import booted_cluster
from system.test_cluster import VERSION, make_corpus, parse_counts

pytestmark = [pytest.mark.root, pytest.mark.slow]

SUITES = {"master": "bookworm", "w1": "trixie", "w2": "trixie", "w3": "trixie"}
PYTHONS = {"bookworm": "3.11", "trixie": "3.13"}
WORKERS = ("w1", "w2", "w3")
ENDED = ("succeeded", "failed", "cancelled")
MAP_SLEEP = "3"  # seconds each map of tests/jobs/slow_wordcount.py sleeps first
SLOTS_IN_ALL = 3 * PARALLELISM  # map attempts the cluster runs at once


@pytest.fixture(scope="module")
def mixed(request, system_clock, debs):
    with booted_cluster(request, system_clock, debs, SUITES,
                        "mixed cluster (Debian 12 master, Debian 13 workers)") as c:
        yield c


@pytest.fixture(scope="module")
def slow_input(mixed) -> dict:
    """A 1.2 MB corpus put into the cluster as `slow` in 64 KB splits (19 maps: a slow
    word count runs them in four waves of 3 s), and its reference word counts."""
    reference = make_corpus(mixed.master.host_path("/srv/slow.txt"), 1200 << 10, seed=15)
    mixed.blfs("put", "/srv/slow.txt", "slow", "--split-size", "64K")
    return dict(reference)


def version_of(node) -> str:
    return node.run("dpkg-query", "-W", "-f", "${Version}", "blfs").stdout


def test_mixed_cluster_runs_release_1(mixed, slow_input):
    """Each node runs the Debian release and Python it was built for, with release 1; the
    Debian 12 master and the Debian 13 workers run a job together."""
    for name, node in mixed.nodes.items():
        suite = SUITES[name]
        assert node.os_release()["VERSION_CODENAME"] == suite, name
        python = node.run("python3", "-c", "import sys; print('%d.%d' % sys.version_info[:2])")
        assert python.stdout.strip() == PYTHONS[suite], name
        assert version_of(node) == f"{VERSION}-1", name
    assert sorted(mixed.alive_workers()) == list(WORKERS)
    mixed.blfs("submit", "/srv/wordcount.py", "--input", "slow", "--output", "counts-1",
               "--quiet")
    assert parse_counts(mixed.blfs("cat", "counts-1").stdout) == slow_input


def test_rolling_upgrade_while_jobs_run(mixed, debs, slow_input, system_clock):
    """Release 2 on w1, w2, w3 (one at a time), then on the master, each while a job runs
    (on that worker): every node ends on release 2 with its daemon restarted, and every job
    gives the exact counts."""
    deb = f"/srv/{os.path.basename(debs[2])}"
    jobs: list = []  # [job id, output, the nodes upgraded while it ran]
    started = time.monotonic()

    def status(job: str):
        """The job's status, or None while the master cannot answer (it is restarting)."""
        try:
            return mixed.status(job)
        except (ContainerError, ValueError):
            return None

    def submit() -> None:
        output = f"rolling-{len(jobs) + 1}"
        done = mixed.blfs("submit", "/srv/slow_wordcount.py", "--input", "slow", "--output",
                          output, "--detach", "--", MAP_SLEEP)
        job = done.stdout.strip()
        assert re.fullmatch(r"\d{8}-\d{6}-[0-9a-f]{4}", job), done.stdout + done.stderr
        jobs.append([job, output, []])

    def running_on(node: str):
        """The last job, once it has an attempt running on `node` (any worker, for the
        master) and two waves of maps still to start (6 s or more), so that it is still
        running when apt-get has restarted the daemon; a new job when the last one is too
        far on."""
        if not jobs:
            submit()
        s = status(jobs[-1][0])
        if s is None:
            return None
        maps = s["maps"]
        if s["state"] in ENDED or maps["total"] - maps["done"] - maps["running"] \
                < 2 * SLOTS_IN_ALL:
            submit()
            return None
        if any(a["state"] == "running" and (node == "master" or a["worker"] == node)
               for a in s["attempts"]):
            return s
        return None

    def times_up(node: str) -> int:
        """How often the master (any of its invocations) said that worker came up."""
        log = mixed.master.journal("-u", "blfs-master", "-o", "cat")
        return len(re.findall(rf"^worker {node} up: ", log, re.M))

    for name in (*WORKERS, "master"):
        node = mixed.nodes[name]
        unit = "blfs-master.service" if name == "master" else "blfs-worker.service"
        mixed.master.wait_for(lambda: running_on(name), 90,
                              f"a job with an attempt running on {name}", interval=0.2)
        jobs[-1][2].append(name)
        ups = times_up(name) if name != "master" else 0
        invocation = node.invocation(unit)
        t0 = time.monotonic()
        node.apt_install(deb)
        t1 = time.monotonic()
        assert version_of(node) == f"{VERSION}-2", name
        assert node.invocation(unit) not in ("", invocation), f"{unit} on {name} not restarted"
        if name != "master":  # the worker restarted under the running job
            s = mixed.status(jobs[-1][0])
            assert s["state"] not in ENDED, (name, s["state"])
        if name == "master":  # the new master answers, and every worker has synced with it
            mixed.master.wait_for(lambda: _all_alive(mixed), 60,
                                  "every worker alive under the new master", interval=0.3)
        else:  # the master dialled the restarted worker again
            mixed.master.wait_for(lambda: times_up(name) > ups, 60,
                                  f"the master to take {name} back", interval=0.3)
            mixed.wait_workers_alive()
        t2 = time.monotonic()
        note = (f"upgrade {name} ({SUITES[name]}) to release 2: apt-get {t1 - t0:.1f} s, "
                f"back in the cluster {t2 - t1:.1f} s later")
        if name != "master":  # (the master's restart starts the job's record afresh)
            lost = [f for f in mixed.status(jobs[-1][0])["failed_attempts"]
                    if f["worker"] == name]
            note += (f", {len(lost)} running attempt{'' if len(lost) == 1 else 's'} lost "
                     "and run again elsewhere")
        system_clock["notes"].append(note)

    assert {n: version_of(node) for n, node in mixed.nodes.items()} \
        == {n: f"{VERSION}-2" for n in mixed.nodes}
    for job, output, during in jobs:
        s = mixed.master.wait_for(lambda: (lambda s: s if s and s["state"] in ENDED
                                           else None)(status(job)),
                                  180, f"job {job} to end", interval=0.5)
        assert s["state"] == "succeeded", (job, during, s.get("error"))
        assert parse_counts(mixed.blfs("cat", output).stdout) == slow_input, (job, during)

    # the job that ran while the master was upgraded was resumed by the new master
    resumed = mixed.master.journal("-u", "blfs-master", "-o", "cat")
    last = next(j for j, _, during in jobs if "master" in during)
    assert f"resuming job {last} accepted before a restart" in resumed
    story = ", ".join(f"{job} during {'+'.join(during) or 'no upgrade'}"
                      for job, _, during in jobs)
    system_clock["notes"].append(
        f"rolling upgrade: {time.monotonic() - started:.1f} s, {len(jobs)} slow "
        f"job{'s' if len(jobs) > 1 else ''}, exact counts ({story})")


def _all_alive(cluster) -> bool:
    try:
        rows = json.loads(cluster.blfs("workers", "--json", check=False).stdout or "[]")
    except ValueError:
        return False
    return sorted(w["name"] for w in rows if w["alive"]) == list(WORKERS)
