"""Cluster on loop disks: a master and three workers, each its own OS process, over loopback
TCP with a cluster key, and a shuffle that really goes through shared block devices.

Worker wi owns an ext4 image, mounted read-write at <viewroot_i>/wi through its own loop
device; each peer disk wj is mounted ro,noload at <viewroot_i>/wj through a separate loop
device (9 loop devices, 9 mounts, 9 independent caches: three "hosts" on three "LUNs"). See
tests/cluster_helpers.py for the setup and the guaranteed teardown.

The test runs examples/wordcount.py (lines input, >= 6 maps, 3 reducers) and
examples/inverted_index.py (files input) with `blfs submit --master SOCKET` and checks that
the output equals a single-process reference, then proves that the intermediate data crossed
disks: each winning map's segments sit in the pool of the worker that ran it (read back here
with O_DIRECT through a *peer's* ro view) and were read by reducers running on other workers.
"""
from __future__ import annotations

import random
import re
import sys
import time
from collections import Counter
from pathlib import Path

import pytest

from blfsd import checksums
sys.path.insert(0, str(Path(__file__).resolve().parent))
from cluster_helpers import EXAMPLES, LoopCluster  # noqa: E402
from loopdev import root  # noqa: E402
import reference  # noqa: E402

pytestmark = [pytest.mark.root, pytest.mark.slow, root]

WORKERS = 3
REDUCERS = 3


@pytest.fixture
def cluster(tmp_path):
    # tmp_path can be long; the master's Unix socket path must stay under 108 bytes.
    assert len(str(tmp_path)) < 80, f"tmp_path too long for a Unix socket: {tmp_path}"
    with LoopCluster(tmp_path, workers=WORKERS, image_size=64 << 20, slot_size=1 << 20,
                     slots=8, parallelism=2) as c:
        yield c


# ---------------------------------------------------------------- inputs

def make_vocabulary(rng: random.Random, size: int = 3000) -> list:
    letters = "abcdefghijklmnopqrstuvwxyz"
    words = {"".join(rng.choice(letters) for _ in range(rng.randint(1, 9)))
             for _ in range(size)}
    words |= {"The", "Zebra", "end.", "don't", "x1", "42", "café", "naïve", "Ünïcode", "日本"}
    return sorted(words)


def write_corpus(path: Path, size: int, seed: int) -> None:
    """About `size` bytes of lines of words with a skewed (Zipf-like) word frequency."""
    rng = random.Random(seed)
    vocab = make_vocabulary(rng)
    weights = [1.0 / (rank + 1) for rank in range(len(vocab))]
    out, total = [], 0
    while total < size:
        words = rng.choices(vocab, weights, k=rng.randint(0, 14))
        sep = rng.choice([" ", " ", " ", "  ", "\t"])
        line = sep.join(words)
        out.append(line)
        total += len(line.encode()) + 1
    path.write_text("\n".join(out) + "\n", encoding="utf-8")


def write_documents(folder: Path, count: int, seed: int) -> list:
    rng = random.Random(seed)
    vocab = make_vocabulary(rng, 400) + ["Hello", "WORLD", "straße", "x2y", "under_score"]
    folder.mkdir()
    paths = []
    for i in range(count):
        p = folder / f"doc{i:02d}.txt"
        lines = [" ".join(rng.choices(vocab, k=rng.randint(1, 12))) + rng.choice([".", ",", ""])
                 for _ in range(rng.randint(20, 200))]
        p.write_text("\n".join(lines) + "\n", encoding="utf-8")
        paths.append(p)
    return paths


# ---------------------------------------------------------------- checks

_ATTEMPT = re.compile(r"^(?P<job>[^/]+)/(?P<kind>[mr])-(?P<index>\d+)/(?P<number>\d+)(@[0-9a-f]+)?$")


def winners(status: dict) -> dict:
    """{("m"|"r", index): (worker, attempt number)} of the succeeded attempts."""
    found: dict = {}
    for a in status["attempts"]:
        if a["state"] != "succeeded":
            continue
        m = _ATTEMPT.match(a["attempt"])
        assert m, f"unexpected attempt id {a['attempt']!r}"
        key = (m["kind"], int(m["index"]))
        assert key not in found, f"two succeeded attempts of {key}: {status['attempts']}"
        found[key] = (a["worker"], int(m["number"]))
    return found


def check_shuffle_crossed_disks(cluster: LoopCluster, job: str, status: dict) -> dict:
    """Segments written by wi are on wi's disk, and reducers on wj != wi consumed them."""
    # In a healthy cluster no attempt fails; a fetch failure here would mean a reducer read
    # a peer's segment wrongly through its view (the very thing the storage rules prevent).
    assert not status["failed_attempts"], status["failed_attempts"]
    win = winners(status)
    maps = {i: w for (k, i), w in win.items() if k == "m"}
    reduces = {i: w for (k, i), w in win.items() if k == "r"}
    assert len(maps) == status["maps"]["total"], win
    assert len(reduces) == status["reduces"]["total"] == REDUCERS, win
    map_workers = {w for w, _ in maps.values()}
    reduce_workers = {w for w, _ in reduces.values()}
    assert len(map_workers) >= 2, f"all maps ran on one worker: {maps}"
    assert len(reduce_workers) >= 2, f"all reduces ran on one worker: {reduces}"

    # Read every pool through a PEER's ro view, with O_DIRECT: as a reducer there would.
    on_disk: dict = {}  # worker name -> headers of this job's segments in its pool
    for owner in range(cluster.n):
        viewer = (owner + 1) % cluster.n
        headers = [h for h in cluster.segment_headers(owner, viewer) if h["job"] == job]
        on_disk[cluster.names[owner]] = headers
    # Every worker said at sync which formats it reads; the master chose one for all.
    chosen = checksums.choose([checksums.formats()] * cluster.n)
    formats = {h["format"] for hs in on_disk.values() for h in hs}
    assert formats == {chosen}, f"segments of formats {formats}, the cluster's is {chosen}"
    disks_with_segments = [w for w, hs in on_disk.items() if hs]
    assert len(disks_with_segments) >= 2, \
        f"segments of {job} on fewer than 2 disks: { {w: len(h) for w, h in on_disk.items()} }"

    crossed = []  # (map index, writer, partition, reducer worker) with writer != reducer
    for index, (writer, number) in maps.items():
        mine = [h for h in on_disk[writer]
                if h["map_task"] == index and h["attempt"] == number]
        others = [w for w, hs in on_disk.items() if w != writer
                  and any(h["map_task"] == index and h["attempt"] == number for h in hs)]
        assert not others, f"map {index} attempt {number} ran on {writer} but its " \
                           f"segments are also on {others}"
        assert mine, f"no segment of map {index} attempt {number} in {writer}'s pool"
        for h in mine:
            reducer = reduces[h["partition"]][0]
            if reducer != writer:
                crossed.append((index, writer, h["partition"], reducer))
    assert crossed, "no segment was read by a reducer on another worker than its writer"
    # Every (writer, reader) direction that happened went through a distinct ro view.
    directions = {(w, r) for _, w, _, r in crossed}
    assert len(directions) >= 2, directions

    segments_read = (status.get("counters") or {}).get("blfs", {}).get("reduce_segments_read")
    winning_segments = sum(1 for w, hs in on_disk.items() for h in hs
                           if maps.get(h["map_task"]) == (w, h["attempt"]))
    assert segments_read == winning_segments, (segments_read, winning_segments)
    return {"maps": maps, "reduces": reduces, "crossed": len(crossed),
            "directions": sorted(directions)}


# ---------------------------------------------------------------- the test

def test_cluster_on_loop_disks(cluster, tmp_path):
    t0 = time.monotonic()
    n = cluster.n
    # The disk topology really is 3 images x 3 views on 9 distinct loop devices.
    assert len(set(cluster.devices.values())) == n * n
    for i in range(n):
        for j in range(n):
            opts = cluster.mount_options(i, j)
            assert opts is not None, f"view {i} of disk {j} is not mounted"
            flags = opts.split(",")
            assert ("rw" if i == j else "ro") in flags, (i, j, opts)

    rows = cluster.blfs("workers", "--json").stdout
    assert all(f'"{w}"' in rows for w in cluster.names), rows

    # ---- word count: lines input, >= 6 maps, 3 reducers
    corpus = tmp_path / "corpus.txt"
    write_corpus(corpus, 3 << 20, seed=20261101)
    out = tmp_path / "wc-out"
    cluster.blfs("submit", str(EXAMPLES / "wordcount.py"), "--input", str(corpus),
                 "--output", str(out), "--reducers", str(REDUCERS), "--split-size", "400K",
                 "--quiet", timeout=90)
    want = Counter(w for line in reference.read_lines(corpus) for w in line.split())
    assert (out / "_SUCCESS").exists()
    got = reference.read_output(str(out), value_type=int)
    assert got == dict(want), (len(got), len(want))
    reference.check_output(str(out), dict(want), parts=REDUCERS)  # sorted parts, no dupes

    job = cluster.job_id_for(str(out))
    status = cluster.status(job)
    assert status["state"] == "succeeded", status
    assert status["maps"]["total"] >= 6, status["maps"]
    # Check the pools before the next job reuses (and overwrites) the released slots.
    wc = check_shuffle_crossed_disks(cluster, job, status)

    # ---- inverted index: files input, one map per document
    docs = write_documents(tmp_path / "docs", 9, seed=7)
    out2 = tmp_path / "ii-out"
    argv = ["submit", str(EXAMPLES / "inverted_index.py")]
    for p in docs:
        argv += ["--input", str(p)]
    cluster.blfs(*argv, "--output", str(out2), "--reducers", str(REDUCERS), "--quiet",
                 timeout=90)
    want2 = reference.inverted_index([str(p) for p in docs])
    assert (out2 / "_SUCCESS").exists()
    assert reference.read_output(str(out2)) == want2
    reference.check_output(str(out2), want2, parts=REDUCERS)

    job2 = cluster.job_id_for(str(out2))
    status2 = cluster.status(job2)
    assert status2["state"] == "succeeded", status2
    assert status2["maps"]["total"] == len(docs)
    ii = check_shuffle_crossed_disks(cluster, job2, status2)

    # All three daemons' workers are still up after two jobs.
    cluster.wait_workers_up(time.monotonic() + 5)
    print(f"\nwordcount: {wc['crossed']} cross-disk segment reads, {wc['directions']}; "
          f"inverted index: {ii['crossed']}; {time.monotonic() - t0:.1f} s")


def test_a_job_whose_map_output_cannot_fit_fails_with_the_pool_named(cluster, tmp_path):
    """8 slots of 1 MiB per worker cannot hold ~100 MiB of map output: every attempt that
    runs out of slots fails with a `pool` error, and the job fails naming it, instead of
    hanging; the slots are all free again afterwards."""
    corpus = tmp_path / "corpus.txt"
    write_corpus(corpus, 2 << 20, seed=3)
    out = tmp_path / "bloat-out"
    res = cluster.blfs("submit", str(Path(__file__).parent / "jobs" / "bloat.py"), "--input",
                       str(corpus), "--output", str(out), "--quiet", "--max-attempts", "2",
                       check=False, timeout=120)
    assert res.returncode == 1, res.stderr
    assert "out of pool slots on w" in res.stderr, res.stderr
    assert not (out / "_SUCCESS").exists()
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        rows = cluster.wait_workers_up(time.monotonic() + 5)
        if all(r["info"]["free_slots"] == 8 for r in rows):
            break
        time.sleep(0.3)
    assert [r["info"]["free_slots"] for r in rows] == [8, 8, 8]
