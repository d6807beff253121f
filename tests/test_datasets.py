"""Cluster storage (docs/ARCHITECTURE.md, Cluster storage): `blfs put` datasets, `--input NAME`, `--output NAME`,
`blfs cat`, `blfs get`, `blfs ls`, `blfs rm`, on a master and three workers whose disks are
ext4 images on loop devices (tests/cluster_helpers.py: each view its own loop device).

The files of datasets and outputs are created on a worker's own disk after its peers
mounted it, so a peer sees them only after remounting its view: the tests below make
peers read them (a worker stopped before its splits are mapped; an output read while the
worker that wrote it is down) and check the bytes against single-process references.
"""
from __future__ import annotations

import json
import re
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
from cluster_helpers import EXAMPLES, LoopCluster  # noqa: E402
from loopdev import root  # noqa: E402
from test_cluster_loop import write_corpus  # noqa: E402
import reference  # noqa: E402

pytestmark = [pytest.mark.root, pytest.mark.slow, root]

WORDCOUNT = str(EXAMPLES / "wordcount.py")


@pytest.fixture
def cluster(tmp_path):
    assert len(str(tmp_path)) < 80, f"tmp_path too long for a Unix socket: {tmp_path}"
    with LoopCluster(tmp_path, workers=3, image_size=64 << 20, slot_size=1 << 20,
                     slots=8, parallelism=2) as c:
        yield c


@pytest.fixture
def corpus(tmp_path) -> Path:
    path = tmp_path / "corpus.txt"
    write_corpus(path, 2 << 20, seed=20261122)
    return path


def expected_counts(path: Path) -> dict:
    return dict(Counter(w for line in reference.read_lines(path) for w in line.split()))


def parse_lines(text: str) -> dict:
    out = {}
    for line in text.splitlines():
        key, _, value = line.partition("\t")
        assert key not in out, f"key {key!r} twice"
        out[key] = int(value)
    return out


def split_files(cluster: LoopCluster, name: str) -> dict:
    """{node index: [split file paths]} as each owner sees its own disk."""
    found = {}
    for i in range(cluster.n):
        d = cluster.disk(i, i) / "data" / name
        found[i] = sorted(d.iterdir()) if d.exists() else []
    return found


def launch_order(cluster: LoopCluster, job: str) -> list:
    """[(map task, worker)] in the order the master launched them (its log)."""
    return re.findall(rf"launching {re.escape(job)}/(m-\d+)/\d+@\w+ on (\w+)",
                      cluster.master.log_tail(1 << 22))


def launches(cluster: LoopCluster, job: str) -> dict:
    """{map task: [workers it was launched on]}."""
    got: dict = {}
    for task, worker in launch_order(cluster, job):
        got.setdefault(task, []).append(worker)
    return got


def dataset(cluster: LoopCluster, name: str) -> dict:
    rows = json.loads(cluster.blfs("ls", "--json").stdout)
    (row,) = [r for r in rows if r["name"] == name]
    return row


def job_of_output(cluster: LoopCluster, name: str) -> str:
    rows = json.loads(cluster.blfs("jobs", "--json").stdout)
    (job,) = [r["job"] for r in rows if r.get("output") == name]
    return job


def counted(cluster: LoopCluster, source: str, corpus: Path, reducers: int = 0) -> str:
    """Word count of `source` (a dataset or a local path) into the cluster output "counts",
    checked with `blfs cat` against the reference; returns the job id."""
    extra = ["--reducers", str(reducers)] if reducers else []
    cluster.blfs("submit", WORDCOUNT, "--input", source, "--output", "counts", *extra,
                 "--quiet", timeout=120)
    assert parse_lines(cluster.blfs("cat", "counts").stdout) == expected_counts(corpus)
    return job_of_output(cluster, "counts")


# ------------------------------------------------------------------------------ tests

def test_put_submit_cat_get(cluster, corpus, tmp_path):
    # put: whole lines, spread over the three workers, recorded by the master
    done = cluster.blfs("put", str(corpus), "corpus", "--split-size", "200K")
    assert re.fullmatch(r"put corpus: \d+ splits, \d+ bytes on w0, w1, w2\n", done.stdout), \
        done.stdout
    files = split_files(cluster, "corpus")
    assert all(len(f) >= 3 for f in files.values()), files
    ordered = sorted((p.name, p) for fs in files.values() for p in fs)
    data = b"".join(p.read_bytes() for _, p in ordered)
    assert data == corpus.read_bytes()  # nothing lost, nothing doubled, in order
    assert all(p.read_bytes().endswith(b"\n") for _, p in ordered)  # cut on line ends
    row = dataset(cluster, "corpus")
    assert (row["kind"], row["files"], row["bytes"], row["nodes"]) == \
        ("dataset", len(ordered), corpus.stat().st_size, ["w0", "w1", "w2"])
    # a second put of the same name is refused, and changes nothing
    again = cluster.blfs("put", str(corpus), "corpus", check=False)
    assert again.returncode == 1 and "already exists" in again.stderr
    assert len(again.stderr.strip().splitlines()) == 1, again.stderr
    assert split_files(cluster, "corpus") == files

    # submit --input NAME --output NAME: maps run where their splits are
    job = counted(cluster, "corpus", corpus, reducers=3)
    want = expected_counts(corpus)
    order = launch_order(cluster, job)
    owner = {f"m-{int(p.name[6:]):05d}": f"w{i}" for i, fs in files.items() for p in fs}
    assert {task for task, _ in order} == set(owner)
    for n, (task, worker) in enumerate(order):
        if worker != owner[task]:  # another's split only once all of its own were started
            own = {t for t, w in owner.items() if w == worker}
            assert own <= {t for t, _ in order[:n]}, (task, worker, order)
    local = sum(1 for task, worker in order if worker == owner[task])
    assert local >= len(owner) - 2, order
    # parts stay on the workers that wrote them; nothing temporary is left
    parts = sorted(p for i in range(3)
                   for p in (cluster.disk(i, i) / "output" / "counts").glob("*"))
    assert sorted(p.name for p in parts) == ["part-00000", "part-00001", "part-00002"]

    # cat streams the parts in order; get writes the --local layout
    text = cluster.blfs("cat", "counts").stdout
    keys_by_part = [k for p in sorted(parts, key=lambda p: p.name)
                    for k in parse_lines(p.read_text())]
    assert [line.partition("\t")[0] for line in text.splitlines()] == keys_by_part
    got = tmp_path / "got"
    cluster.blfs("get", "counts", str(got))
    reference.check_output(str(got), want, parts=3)
    again = cluster.blfs("get", "counts", str(got), check=False)
    assert again.returncode == 2 and "_SUCCESS" in again.stderr

    # an output name is never overwritten
    clash = cluster.blfs("submit", WORDCOUNT, "--input", "corpus", "--output", "counts",
                         "--quiet", check=False)
    assert clash.returncode != 0 and "already exists" in clash.stderr

    # workers: each node's load, pool and disk
    table = cluster.blfs("workers").stdout
    for name in cluster.names:
        assert re.search(rf"^{name}\s+up\s+0/2\s+8/8x1\.0M\s+[\d.]+M/[\d.]+M\s+/\S+/{name}$",
                         table, re.M), table

    # rm removes the files on every node and the record
    cluster.blfs("rm", "corpus")
    assert split_files(cluster, "corpus") == {0: [], 1: [], 2: []}
    assert "corpus" not in cluster.blfs("ls").stdout
    missing = cluster.blfs("submit", WORDCOUNT, "--input", "corpus", "--output", "c2",
                           check=False)
    assert missing.returncode == 1 and "no dataset named 'corpus'" in missing.stderr


def test_splits_of_a_stopped_worker_are_read_by_its_peers(cluster, corpus):
    """w1 is stopped after the put: its splits are mapped by w0 and w2 through their views
    of w1's disk, which do not show files created after they were mounted until the
    worker remounts them. Then its output part is read through a peer's view too."""
    cluster.blfs("put", str(corpus), "corpus", "--split-size", "300K")
    w1_splits = [p.name for p in split_files(cluster, "corpus")[1]]
    assert w1_splits
    # as the views were mounted before the put, they cannot be trusted to show the split
    # files (missing, EBADMSG or EUCLEAN from a stale inode)
    stale = [not shows(cluster.disk(v, 1) / "data" / "corpus" / name,
                       cluster.disk(1, 1) / "data" / "corpus" / name)
             for v in (0, 2) for name in w1_splits]
    cluster.daemons[1].stop()
    job = counted(cluster, "corpus", corpus, reducers=2)
    placed = launches(cluster, job)
    for name in w1_splits:
        assert placed[f"m-{int(name[6:]):05d}"][-1] in ("w0", "w2"), placed
    if any(stale):
        assert "remounted the view of" in cluster.daemons[0].log_tail(1 << 20) + \
            cluster.daemons[2].log_tail(1 << 20)


def shows(view: Path, own: Path) -> bool:
    """Does a peer's view show the same bytes as the owner's own mount?"""
    try:
        return view.read_bytes() == own.read_bytes()
    except OSError:
        return False


def test_cat_reads_a_part_through_a_peer_when_its_writer_is_down(cluster, corpus):
    cluster.blfs("put", str(corpus), "corpus")
    counted(cluster, "corpus", corpus, reducers=3)
    want = expected_counts(corpus)
    cluster.daemons[2].stop()  # w2 wrote one part; its disk is still there
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        rows = json.loads(cluster.blfs("workers", "--json").stdout)
        if not [r for r in rows if r["name"] == "w2"][0]["alive"]:
            break
        time.sleep(0.2)
    assert parse_lines(cluster.blfs("cat", "counts").stdout) == want


def test_local_input_with_a_named_output_is_put_first_and_removed_after(cluster, corpus):
    counted(cluster, str(corpus), corpus)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:  # the master drops the temporary dataset
        rows = json.loads(cluster.blfs("ls", "--json").stdout)
        if [r["kind"] for r in rows] == ["output"]:
            break
        time.sleep(0.2)
    assert [(r["kind"], r["name"]) for r in rows] == [("output", "counts")]
    assert all(not (cluster.disk(i, i) / "data").exists() or
               not any((cluster.disk(i, i) / "data").iterdir()) for i in range(3))


def test_bad_names_and_missing_outputs_get_one_line(cluster, corpus, tmp_path):
    for argv, words in ((("put", str(corpus), "../x"), "not a valid name"),
                        (("put", str(tmp_path / "nope"), "x"), "cannot read input"),
                        (("cat", "nothing"), "no output named 'nothing'"),
                        (("get", "nothing", str(tmp_path / "g")), "no output named"),
                        (("rm", "nothing"), "no output named")):
        res = cluster.blfs(*argv, check=False)
        assert res.returncode != 0 and words in res.stderr, (argv, res.stderr)
        assert len(res.stderr.strip().splitlines()) == 1, res.stderr
        assert res.stdout == ""


def test_a_put_cut_short_leaves_nothing(cluster, tmp_path):
    """The client is killed in the middle of a put: the master removes what was stored on
    every worker and records nothing; the name is free again."""
    big = tmp_path / "big.txt"
    write_corpus(big, 24 << 20, seed=5)
    argv = [sys.executable, "-m", "blfsd", "--config", str(cluster.master_cfg), "put",
            str(big), "big", "--split-size", "1M", "--master", cluster.socket]
    proc = subprocess.Popen(argv, env=cluster.env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 30
        while not any(f for f in split_files_any(cluster, "big")):
            assert proc.poll() is None, "the put ended before it could be cut short"
            assert time.monotonic() < deadline, "no split file appeared"
            time.sleep(0.01)
        proc.kill()
    finally:
        proc.wait()
    deadline = time.monotonic() + 15
    while any(split_files_any(cluster, "big")) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not any(split_files_any(cluster, "big"))
    assert json.loads(cluster.blfs("ls", "--json").stdout) == []
    small_job(cluster, tmp_path, "big")  # the name is free again


def small_job(cluster: LoopCluster, tmp_path: Path, name: str) -> None:
    """Put a two-line file as `name` and count its words: the cluster still works."""
    small = tmp_path / "small.txt"
    small.write_text("a b\nb\n")
    cluster.blfs("put", str(small), name)
    cluster.blfs("submit", WORDCOUNT, "--input", name, "--output", "o", "--quiet")
    assert parse_lines(cluster.blfs("cat", "o").stdout) == {"a": 1, "b": 2}


def split_files_any(cluster: LoopCluster, name: str) -> list:
    """Every file (finished or in progress) of a dataset on any owner's disk."""
    return [p for i in range(cluster.n) for p in (cluster.disk(i, i) / "data" / name).glob("*")]


def test_a_put_that_fills_a_disk_fails_in_one_line_and_leaves_nothing(cluster, tmp_path):
    big = tmp_path / "big.txt"
    with open(big, "wb") as f:  # 192 MiB of lines: 64 MiB per worker, more than a disk holds
        for _ in range(48):
            f.write((b"x" * 1023 + b"\n") * 4096)
    res = cluster.blfs("put", str(big), "big", "--split-size", "8M", check=False, timeout=180)
    assert res.returncode == 1, res.stderr
    assert "No space left on device" in res.stderr, res.stderr
    assert len(res.stderr.strip().splitlines()) == 1, res.stderr
    assert json.loads(cluster.blfs("ls", "--json").stdout) == []
    deadline = time.monotonic() + 15
    while split_files_any(cluster, "big") and time.monotonic() < deadline:
        time.sleep(0.1)
    assert split_files_any(cluster, "big") == []
    big.unlink()
    # the pools were untouched: a job still runs
    small_job(cluster, tmp_path, "small")


# ------------------------------------------------------------------------------ replicas

def wait_alive(cluster: LoopCluster, names: list, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while True:
        rows = json.loads(cluster.blfs("workers", "--json").stdout)
        if sorted(r["name"] for r in rows if r["alive"]) == names:
            return
        assert time.monotonic() < deadline, rows
        time.sleep(0.2)


def test_a_dataset_kept_twice_is_read_from_its_replica_when_one_disk_is_lost(cluster,
                                                                               corpus):
    """`blfs put --replicas 2` with w2 away puts every split on both w0 and w1. Then w1
    and its disk are lost (every host's mount of it unmounted, its loop devices
    detached): a word count over the dataset is still exact, no attempt fails, and the
    maps that w2 (which keeps no copy) runs read the copy on w0 when w1's cannot be read."""
    cluster.daemons[2].stop()
    wait_alive(cluster, ["w0", "w1"])
    put = cluster.blfs("put", str(corpus), "corpus", "--split-size", "256K", "--replicas", "2")
    assert "2 replicas on w0, w1" in put.stdout, put.stdout
    row = dataset(cluster, "corpus")
    assert row["replicas"] == 2 and row["nodes"] == ["w0", "w1"], row
    assert re.search(r"corpus\s+\d+\s+\S+\s+2\s+w0, w1", cluster.blfs("ls").stdout)
    files = split_files(cluster, "corpus")
    assert [p.name for p in files[0]] == [p.name for p in files[1]] and len(files[0]) >= 6
    assert all(a.read_bytes() == b.read_bytes() for a, b in zip(files[0], files[1]))

    cluster.restart_worker(2)
    cluster.daemons[1].stop()
    cluster.detach_disk(1)
    wait_alive(cluster, ["w0", "w2"])
    job = counted(cluster, "corpus", corpus, reducers=2)
    status = cluster.status(job)
    assert status["failed_attempts"] == [], status["failed_attempts"]
    on_w2 = [t for t, workers in launches(cluster, job).items() if workers[-1] == "w2"]
    assert on_w2, launches(cluster, job)
    w2_log = cluster.daemons[2].log_tail(1 << 20)
    assert re.search(r"split-\d+: the replica on w1 cannot be read", w2_log), w2_log[-3000:]
    assert "read the replica on w0 instead" in w2_log


def test_more_replicas_than_disks_is_refused_in_one_line(cluster, corpus):
    res = cluster.blfs("put", str(corpus), "corpus", "--replicas", "4", check=False)
    assert res.returncode == 1, res.stderr
    assert res.stderr.strip() == ("blfs: cannot keep 4 replicas of each split: the cluster "
                                  "has 3 disks"), res.stderr
    assert json.loads(cluster.blfs("ls", "--json").stdout) == []


def test_an_output_kept_twice_is_read_when_the_disk_of_a_writer_is_lost(cluster, corpus):
    """`--output-replicas 2`: each part is copied, once committed, onto the next worker's
    disk; with w1 and its disk lost (every mount of it gone), `blfs cat` still gives the
    exact counts, each part read from a disk that keeps it."""
    cluster.blfs("put", str(corpus), "corpus")
    cluster.blfs("submit", WORDCOUNT, "--input", "corpus", "--output", "counts",
                 "--reducers", "3", "--output-replicas", "2", "--quiet", timeout=120)
    row = dataset(cluster, "counts")
    assert row["kind"] == "output" and row["replicas"] == 2, row
    holders = {}
    for owner in range(cluster.n):
        for part in sorted((cluster.disk(owner, owner) / "output" / "counts").glob("part-*")):
            holders.setdefault(part.name, []).append(part.read_bytes())
    assert sorted(holders) == ["part-00000", "part-00001", "part-00002"], holders
    assert all(len(copies) == 2 and copies[0] == copies[1] for copies in holders.values())
    cluster.daemons[1].stop()
    cluster.detach_disk(1)
    wait_alive(cluster, ["w0", "w2"])
    assert parse_lines(cluster.blfs("cat", "counts").stdout) == expected_counts(corpus)


def test_more_output_replicas_than_disks_is_refused_in_one_line(cluster, corpus):
    cluster.blfs("put", str(corpus), "corpus")
    res = cluster.blfs("submit", WORDCOUNT, "--input", "corpus", "--output", "counts",
                       "--output-replicas", "4", check=False)
    assert res.returncode != 0 and res.stderr.strip() == (
        "blfs: cannot keep 4 replicas of each part: the cluster has 3 disks"), res.stderr
    local = cluster.blfs("submit", WORDCOUNT, "--input", str(corpus), "--output",
                         str(corpus.parent / "out"), "--output-replicas", "2", check=False)
    assert "is for a cluster output" in local.stderr and local.returncode == 2, local.stderr
