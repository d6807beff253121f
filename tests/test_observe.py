"""Seeing what a job did (issue 14, points 1 to 3): counters and phases at the end of
submit, --json, blfs tasks, blfs logs and blfs timeline, on --local (through
--keep-history) and on a cluster of real daemons (the logs fetched from the workers)."""
from __future__ import annotations

import json
import os
import re
import xml.etree.ElementTree as ET

import pytest

from blfsd.worker.output import AttemptLogs
from cluster_helpers import LoopCluster
from conftest import JOBS, blfs, make_corpus, read_counts, word_counts
from loopdev import root

TELLING = os.path.join(JOBS, "telling.py")


@pytest.fixture(scope="module")
def local_run(tmp_path_factory):
    """One --local run of the telling job with everything kept: (dir, stderr, job id)."""
    d = tmp_path_factory.mktemp("observe")
    corpus = make_corpus(d / "corpus.txt", 3000)
    proc = blfs("submit", TELLING, "--input", corpus, "--output", str(d / "out"), "--local",
                "--workers", "2", "--split-size", "16K", "--keep-history", str(d / "hist"),
                "--timeline", str(d / "job.svg"))
    assert proc.returncode == 0, proc.stderr
    job = re.search(r"job (\S+) succeeded", proc.stderr).group(1)
    return d, proc.stderr, job, corpus


def counters_block(stderr: str) -> dict:
    """{group: {name: value}} of the `Counters: N` block submit printed."""
    lines = stderr[stderr.index("Counters: "):].splitlines()
    total = int(lines[0].split()[1])
    groups: dict = {}
    group = ""
    for line in lines[1:1 + total + 10]:
        if line.startswith("\t\t"):
            name, value = line.strip().split("=")
            groups[group][name] = int(value)
        elif line.startswith("\t"):
            group = line.strip()
            groups[group] = {}
        else:
            break
    assert sum(len(g) for g in groups.values()) == total
    return groups


def test_submit_prints_the_counters_grouped_and_the_time_of_each_phase(local_run):
    d, stderr, job, corpus = local_run
    counts = word_counts(corpus)
    lines = sum(1 for _ in open(corpus, encoding="utf-8"))
    c = counters_block(stderr)
    assert c["telling"]["lines"] == lines  # the job's own group, winning attempts only
    blfs_ = c["blfs"]
    assert blfs_["map_input_records"] == lines
    assert blfs_["map_input_bytes"] == os.path.getsize(corpus)
    assert blfs_["map_output_records"] == sum(counts.values())
    assert blfs_["combine_input_records"] == sum(counts.values())
    assert blfs_["combine_output_records"] == blfs_["reduce_input_records"]
    assert blfs_["shuffle_read_bytes"] == blfs_["map_output_bytes"]
    assert blfs_["reduce_input_groups"] == blfs_["reduce_output_records"] == len(counts)
    assert blfs_["output_bytes"] == sum(os.path.getsize(d / "out" / p)
                                        for p in os.listdir(d / "out") if p.startswith("part"))
    for timer in ("map_ms", "reduce_ms", "spill_ms", "shuffle_read_ms"):
        assert timer in blfs_
    phases = stderr[stderr.index("Phases:"):].splitlines()[1:3]
    assert re.match(r"\tmap +\d+\.\d\d s  \d+ tasks, \d+ attempts", phases[0]), phases
    assert re.match(r"\treduce +\d+\.\d\d s  2 tasks, 2 attempts", phases[1]), phases
    assert read_counts(str(d / "out")) == counts


def test_submit_json_gives_the_end_of_the_job_to_scripts_and_quiet_keeps_it_silent(tmp_path):
    corpus = make_corpus(tmp_path / "c.txt", 200)
    proc = blfs("submit", TELLING, "--input", corpus, "--output", str(tmp_path / "o"),
                "--local", "--workers", "2", "--json")
    assert proc.returncode == 0, proc.stderr
    summary = json.loads(proc.stdout)
    assert summary["state"] == "succeeded" and summary["error"] is None
    assert summary["counters"]["telling"]["lines"] == 200
    assert [p["name"] for p in summary["phases"]] == ["map", "reduce"]
    assert all(p["seconds"] >= 0 for p in summary["phases"])
    assert "Counters:" not in proc.stderr and "map 0/" not in proc.stderr
    quiet = blfs("submit", TELLING, "--input", corpus, "--output", str(tmp_path / "q"),
                 "--local", "--workers", "2", "--quiet")
    assert quiet.returncode == 0, quiet.stderr
    assert quiet.stdout == "" and "Counters" not in quiet.stderr
    assert quiet.stderr.count("\n") == 1 and "succeeded" in quiet.stderr  # its last line


def test_tasks_lists_every_attempt_with_its_worker_io_and_why(local_run):
    d, _, job, corpus = local_run
    proc = blfs("tasks", job, "--history", str(d / "hist"), "--json")
    assert proc.returncode == 0, proc.stderr
    rows = json.loads(proc.stdout)
    failed = [r for r in rows if r["state"] == "failed"]
    assert len(failed) == 1 and failed[0]["task"] == "m-00000"
    assert failed[0]["why"] == "user: ValueError: the first attempt of m-00000 fails on purpose"
    won = [r for r in rows if r["state"] == "succeeded"]
    maps = [r for r in won if r["kind"] == "map"]
    assert {r["task"] for r in won} == {r["task"] for r in rows}  # each task won once
    assert sum(r["records_in"] for r in maps) == 3000
    assert sum(r["bytes_in"] for r in maps) == os.path.getsize(corpus)
    reduces = [r for r in won if r["kind"] == "reduce"]
    assert sum(r["records_out"] for r in reduces) == len(word_counts(corpus))
    assert {r["worker"] for r in rows} <= {"w0", "w1"}
    assert all(r["seconds"] >= 0 and r["start"] >= 0 for r in rows)
    table = blfs("tasks", job, "--history", str(d / "hist")).stdout.splitlines()
    assert table[0].split()[:3] == ["ATTEMPT", "WORKER", "STATE"]
    assert len(table) == 1 + len(rows)
    assert any(line.startswith("m-00000/0@") and "failed" in line and "ValueError" in line
               for line in table)


def test_logs_show_what_each_attempt_wrote_and_its_traceback(local_run):
    d, _, job, _ = local_run
    proc = blfs("logs", job, "m-00000", "--history", str(d / "hist"))
    assert proc.returncode == 0, proc.stderr
    text = proc.stdout
    first, second = text.split("==> ")[1:]  # its two attempts, in order
    assert "m-00000/0@" in first and ": failed, user <==" in first
    assert "hello from m-00000 attempt 0" in first
    assert "a warning from m-00000 attempt 0" in first
    assert "Traceback" in first and "ValueError: the first attempt of m-00000" in first
    assert "telling.py" in first  # the user's own frame
    assert "m-00000/1@" in second and "hello from m-00000 attempt 1" in second
    assert "Traceback" not in second
    missing = blfs("logs", job, "m-99999", "--history", str(d / "hist"))
    assert missing.returncode == 1 and "no task or attempt m-99999" in missing.stderr


def test_timeline_of_a_job_marks_its_failed_attempt(local_run):
    d, _, job, _ = local_run
    out = d / "again.svg"
    assert blfs("timeline", job, "-o", str(out), "--history", str(d / "hist")).returncode == 0
    for path in (d / "job.svg", out):
        svg = ET.parse(path).getroot()
        assert svg.tag.endswith("svg")
        body = path.read_text()
        assert "#d62728" in body  # the failed attempt, red
        assert f"job {job}" in body
    rows = json.loads(blfs("tasks", job, "--history", str(d / "hist"), "--json").stdout)
    bars = [e for e in ET.parse(out).getroot().iter() if e.tag.endswith("rect")
            and any(t.tag.endswith("title") for t in e)]
    assert len(bars) == len(rows)


def test_an_attempt_log_names_only_files_of_attempts():
    logs = AttemptLogs("/var/lib/blfs/work")
    assert logs.path("J/m-00001/0@ab").endswith("/logs/J/m-00001.0@ab.log")
    for bad in ("../../etc/passwd/x", "J/../x", "J/m-1", "J/m-1/0/1", "/etc/x/y", "J/.x/0",
                "J/m 1/0"):
        with pytest.raises(ValueError):
            logs.path(bad)


@root
@pytest.mark.root
def test_tasks_and_logs_on_a_cluster_fetch_the_output_from_the_workers(tmp_path):
    with LoopCluster(tmp_path, workers=2, slots=16) as cluster:
        corpus = make_corpus(tmp_path / "c.txt", 2000)
        proc = cluster.blfs("submit", TELLING, "--input", corpus, "--output",
                            str(tmp_path / "out"), "--split-size", "16K", timeout=120)
        assert "Counters: " in proc.stderr and "\ttelling\n\t\tlines=2000" in proc.stderr
        job = cluster.job_id_for(str(tmp_path / "out"))
        rows = json.loads(cluster.blfs("tasks", job, "--json").stdout)
        assert {r["worker"] for r in rows} == {"w0", "w1"}
        logs = json.loads(cluster.blfs("logs", job, "m-00000", "--json").stdout)
        first = logs["attempts"][0]
        assert first["state"] == "failed" and "ValueError" in first["error"]
        assert "hello from m-00000 attempt 0" in first["output"]  # from its worker's disk
        worker = logs["attempts"][1]["worker"]
        cluster.daemons[cluster.names.index(worker)].stop()
        gone = json.loads(cluster.blfs("logs", job, "m-00000", "--json").stdout)
        assert gone["attempts"][1]["output"] is None
        assert gone["attempts"][1]["unreachable"].startswith(f"worker {worker}: ")


def test_tasks_show_a_backup_attempt_and_why_the_slower_one_was_killed(tmp_path):
    """A straggling map gets a backup on another worker (speculation); whichever finishes
    first wins, and `blfs tasks` says that the other was killed because of it."""
    corpus = make_corpus(tmp_path / "c.txt", 2000)
    hist = tmp_path / "hist"
    proc = blfs("submit", os.path.join(JOBS, "straggler.py"), "--input", corpus, "--output",
                str(tmp_path / "out"), "--local", "--workers", "2", "--split-size", "8K",
                "--keep-history", str(hist), "--", "6")
    assert proc.returncode == 0, proc.stderr
    job = re.search(r"job (\S+) succeeded", proc.stderr).group(1)
    rows = json.loads(blfs("tasks", job, "--history", str(hist), "--json").stdout)
    m1 = [r for r in rows if r["task"] == "m-00001"]
    assert len(m1) == 2 and sum(r["backup"] for r in m1) == 1, m1
    won, lost = sorted(m1, key=lambda r: r["state"] != "succeeded")
    assert won["state"] == "succeeded" and lost["state"] == "killed"
    number = won["attempt"].split("/")[-1].split("@")[0]
    assert lost["why"] == f"attempt {number} won"
    assert won["worker"] != lost["worker"]
    failed = [r for r in rows if r["state"] == "failed"]
    assert [r["task"] for r in failed] == ["r-00000"]
    assert read_counts(str(tmp_path / "out")) == word_counts(corpus)


def test_attempt_logs_are_kept_as_long_as_the_master_keeps_job_records(tmp_path):
    """`[master] history_days` (30) prunes the master's job records; a worker prunes its
    jobs' attempt output after the same time, not after a number of jobs."""
    import time as _time

    class Kept:  # what an OutputTail gives AttemptLogs.save
        def __init__(self, text: str):
            self.total, self._text = len(text), text

        def text(self) -> str:
            return self._text

    logs = AttemptLogs(str(tmp_path), keep_days=30)
    for i in range(150):  # more jobs than the old limit of 100 kept
        logs.save(f"J{i:03d}/m-00000/0@e", Kept(f"hello {i}\n"))
    now = _time.time()
    old = tmp_path / "logs" / "J007"
    os.utime(old, (now - 31 * 86400, now - 31 * 86400))
    assert logs.prune(now) == ["J007"]
    assert logs.read("J007/m-00000/0@e") is None
    assert logs.read("J149/m-00000/0@e") == "hello 149\n"
    assert logs.read("J000/m-00000/0@e") == "hello 0\n"  # 150 jobs, all within 30 days
    assert AttemptLogs(str(tmp_path), keep_days=0).prune(now + 10**9) == []
