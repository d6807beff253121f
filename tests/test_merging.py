"""A reduce's merge (issue 13): at most merge_factor runs at once, more merged in passes
through scratch slots of its worker's pool, freed when the attempt ends (or as soon as a
pass has read them); the merge itself, in sorted chunks, gives exactly heapq.merge's order.
End to end: a sort and a job whose one key holds half of all records, through
`blfs submit --local` with merge_factor = 2, give the very bytes of a single merge; on the
loop-disk cluster, the reduces' scratch slots are free as soon as the reduces have ended."""
from __future__ import annotations

import heapq
import json
import os
import random
import string
import types
from itertools import chain

import pytest

from blfsd import records, storage
from blfsd.errors import FetchError, StorageError
from blfsd.runtime import reading
from blfsd.runtime.merging import Merge, Scratch, pass_groups
from blfsd.runtime.reading import merged_chunks
from blfsd.worker.attempts import TaskRequests
from conftest import JOBS, submit_local

ATTEMPT = "job1/r-00000/0@1"
SLOT = 64 << 10


# --------------------------------------------------------------------------- the plan

@pytest.mark.parametrize("count", range(0, 80))
@pytest.mark.parametrize("factor", [2, 3, 4, 16])
def test_passes_leave_at_most_factor_runs_and_keep_them_in_order(count, factor):
    runs = [[i] for i in range(count)]
    passes = 0
    while len(runs) > factor:
        groups = pass_groups(len(runs), factor)
        assert groups and all(2 <= len(g) <= factor for g in groups)
        merged, done = [], 0
        for g in groups:
            merged += runs[done:g.start] + [list(chain.from_iterable(runs[i] for i in g))]
            done = g.stop
        runs = merged + runs[done:]
        passes += 1
    assert list(chain.from_iterable(runs)) == list(range(count))  # consecutive groups
    assert len(runs) == min(count, factor)
    if factor < count <= factor * factor:
        assert passes == 1  # just enough in one pass, not every run rewritten


def test_one_pass_merges_just_enough_runs():
    assert pass_groups(48, 16) == [range(0, 16), range(16, 32), range(32, 35)]
    assert pass_groups(16, 16) == []


# ---------------------------------------------------------------------- the merge itself

def _blocks(run: list, rng: random.Random):
    i = 0
    while i < len(run):
        n = rng.randint(1, 7)
        yield run[i:i + n]
        i += n


@pytest.mark.parametrize("seed", range(200))
def test_the_merge_in_chunks_is_heapq_merge_with_equal_keys_in_run_order(seed):
    rng = random.Random(seed)
    keys = rng.choice([1, 2, 5, 60])
    by_value = seed % 4 == 0
    order = records.pair_order(False, by_value)
    runs = []
    for r in range(rng.randint(0, 8)):
        run = [[k, (r, i)] for i, k in enumerate(sorted(rng.randrange(keys)
                                                        for _ in range(rng.randint(0, 50))))]
        runs.append(sorted(run, key=order))
    got = list(chain.from_iterable(merged_chunks([_blocks(r, rng) for r in runs], order)))
    assert got == list(heapq.merge(*runs, key=order))


def test_keys_that_cannot_be_compared_are_an_order_error():
    runs = [iter([[[1, "a"]]]), iter([[["b", "c"]]])]
    with pytest.raises(reading.OrderError):
        list(chain.from_iterable(merged_chunks(runs, records.first)))


def test_pair_blocks_decode_like_decode_pairs():
    pairs = [["a", 1], ["b", [1, 2]], [None, {"x": b"y"}], ["\udcff", 2.5]] * 700
    payload = records.encode_pairs(pairs)
    count, blocks = records.pair_blocks(payload, 1000)
    blocks = list(blocks)
    assert count == len(pairs) and [len(b) for b in blocks] == [1000, 1000, 800]
    assert list(chain.from_iterable(blocks)) == records.decode_pairs(payload)


# ------------------------------------------------------------- passes through scratch slots

class Files:
    """A task's WorkerFiles over a pool at a path, leasing as its worker would."""

    def __init__(self, disk: str, leases: storage.SlotLeases):
        self.disk, self.leases = disk, leases
        self.given_back: list = []
        self.scratch_leases = 0

    def lease(self, scratch: bool = False) -> tuple[int, int]:
        self.scratch_leases += scratch
        slot = self.leases.lease(storage.scratch_holder(ATTEMPT) if scratch else ATTEMPT)
        return slot, os.open(storage.slot_path(self.disk, slot), os.O_WRONLY)

    def flush_device(self) -> None:
        pass

    def slot(self, loc) -> int:
        return storage.open_for_read(storage.slot_path(self.disk, loc.slot), True)[0]

    def release_scratch(self, slots: list) -> None:
        self.given_back += slots
        self.leases.release_scratch(ATTEMPT, slots)


class Reporter:
    def __init__(self):
        self.counters: dict = {}
        self.progress = 0.0

    def count(self, name: str, n: int) -> None:
        self.counters[name] = self.counters.get(name, 0) + n

    def add_time(self, name: str, seconds: float) -> None:
        self.count(name, int(seconds * 1000))

    def maybe(self, progress: float) -> None:
        self.progress = progress


def _producer_runs(disk: str, leases: storage.SlotLeases, runs: list) -> list:
    """Each run as the segments (of at most 2 KiB) of its own map task."""
    locs = []
    for task, pairs in enumerate(runs):
        sink = storage.SegmentSink.on_disk(disk, "n", 1, SLOT,
                                           lambda: leases.lease(f"job1/m-{task:05d}/0@1"))
        for seq, payload in enumerate(records.chunk_pairs(pairs, 2048)):
            sink.write(storage.SegmentId("job1", task, 0, 0, 0, seq), payload)
        locs += [loc.replace(map_task=task, map_attempt=0) for loc in sink.commit()]
        sink.close()
    return locs


@pytest.fixture
def pool(tmp_path):
    storage.prepare_pool(str(tmp_path), "n", 256, SLOT, durable=False, fill=False)
    return str(tmp_path), storage.SlotLeases(256)


def _spec(locs: list, segment_format=None):
    return types.SimpleNamespace(job="job1", index=0, attempt=0, stage=1, segments=locs,
                                 merge_values=False, segment_format=segment_format)


def _skewed_runs(count: int, seed: int = 3) -> list:
    """Sorted runs where one key holds half of all records; values say where they came
    from, so that their order is checked too."""
    rng = random.Random(seed)
    runs = []
    for r in range(count):
        keys = ["hot" if rng.random() < 0.5 else "".join(rng.choices(string.ascii_lowercase,
                                                                     k=6))
                for _ in range(rng.randint(50, 300))]
        runs.append(sorted(([k, f"{r}:{i}"] for i, k in enumerate(keys)),
                           key=records.first))
    return runs


@pytest.mark.parametrize("factor", [2, 3, 7])
def test_a_merge_in_passes_gives_a_single_merge_and_gives_its_scratch_back(pool, factor):
    disk, leases = pool
    runs = _skewed_runs(23)
    spec = _spec(_producer_runs(disk, leases, runs))
    free_before = leases.free_count()
    files, reporter = Files(disk, leases), Reporter()
    scratch = Scratch(spec, files, "n", 1, SLOT, 2048)
    merge = Merge(spec, files, reporter, False, scratch, factor)
    try:
        got = list(merge.merged())
    finally:
        merge.close()
        scratch.close()
    assert got == list(heapq.merge(*runs, key=records.first))
    assert reporter.counters["reduce_merge_passes"] >= 1
    assert reporter.counters["reduce_input_records"] == sum(map(len, runs))
    assert reporter.counters["reduce_segments_read"] == len(spec.segments)
    held = [s for s, a in leases.holder.items() if a == storage.scratch_holder(ATTEMPT)]
    assert held
    if reporter.counters["reduce_merge_passes"] > 1:  # a pass gave back what it had read
        assert files.given_back and len(held) < files.scratch_leases
    assert sorted(leases.release_scratch(ATTEMPT)) == sorted(held)  # it ends: all back
    assert leases.free_count() == free_before


def test_no_pass_when_there_are_few_runs(pool):
    disk, leases = pool
    runs = _skewed_runs(4)
    spec = _spec(_producer_runs(disk, leases, runs))
    files, reporter = Files(disk, leases), Reporter()
    merge = Merge(spec, files, reporter, False, Scratch(spec, files, "n", 1, SLOT, 2048), 4)
    assert list(merge.merged()) == list(heapq.merge(*runs, key=records.first))
    merge.close()
    assert "reduce_merge_passes" not in reporter.counters
    assert storage.scratch_holder(ATTEMPT) not in leases.holder.values()


def test_a_bad_scratch_segment_fails_the_attempt_and_blames_no_map(pool, monkeypatch):
    disk, leases = pool
    spec = _spec(_producer_runs(disk, leases, _skewed_runs(6)))
    files = Files(disk, leases)
    merge = Merge(spec, files, Reporter(), False, Scratch(spec, files, "n", 1, SLOT, 2048), 2)
    real = reading.read_verified

    def read(reader, job, loc):
        if loc.flags & storage.FLAG_MERGED:
            raise FetchError("checksum mismatch", map_task=loc.map_task, node=loc.node)
        return real(reader, job, loc)

    monkeypatch.setattr("blfsd.runtime.merging.read_verified", read)
    with pytest.raises(StorageError, match="merge pass's own segment") as err:
        list(merge.merged())
    assert not isinstance(err.value, FetchError)
    merge.close()


def test_the_worker_leases_scratch_to_the_attempt_and_frees_only_its_own(tmp_path):
    storage.prepare_pool(str(tmp_path), "n", 4, SLOT, durable=False, fill=False)
    disk = types.SimpleNamespace(path=str(tmp_path), leases=storage.SlotLeases(4))
    requests = TaskRequests(None, disk, None, types.SimpleNamespace(paths=None), None,
                            None)
    mine = types.SimpleNamespace(id=ATTEMPT)
    other = types.SimpleNamespace(id="job1/r-00001/0@1")
    for attempt, scratch in ((mine, True), (mine, False), (other, True)):
        requests.lease(attempt, scratch=scratch).close()
    assert disk.leases.holder == {0: storage.scratch_holder(ATTEMPT), 1: ATTEMPT,
                                  2: storage.scratch_holder(other.id)}
    requests.release_scratch(mine, [1, 2, 3, "x"])  # not its scratch: kept
    assert len(disk.leases.holder) == 3
    requests.release_scratch(mine, [0])
    assert disk.leases.holder == {1: ATTEMPT, 2: storage.scratch_holder(other.id)}
    assert disk.leases.release_job("job1") == [1, 2]


# ------------------------------------------------------------------------- end to end

def _records(path, count: int, hot: float, seed: int) -> list:
    """KEY<TAB>PAYLOAD lines (a share `hot` of them with the one key "hot")."""
    rng = random.Random(seed)
    lines = []
    for i in range(count):
        key = "hot" if rng.random() < hot else "".join(rng.choices(string.ascii_lowercase,
                                                                   k=8))
        lines.append(f"{key}\t{i:07d}-{rng.randrange(10 ** 9)}\n")
    with open(path, "w") as f:
        f.writelines(lines)
    return lines


def _run(job: str, data, out, tmp_path, factor: int) -> dict:
    cfg = tmp_path / f"factor-{factor}.toml"
    cfg.write_text(f"[worker]\nmerge_factor = {factor}\n")
    r = submit_local(job, [data], out, "--split-size", "64K", "--spill-records", "400",
                     "--json", config=cfg)
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout)["counters"]["blfs"]


def _output(out) -> bytes:
    names = sorted(n for n in os.listdir(out) if n.startswith("part-"))
    return b"".join(open(os.path.join(out, n), "rb").read() for n in names)


@pytest.mark.parametrize("hot", [0.0, 0.5], ids=["uniform", "one-key-half"])
def test_merge_passes_give_the_bytes_of_a_single_merge(tmp_path, no_leftovers, hot):
    """Every reduce has some 40 runs; merged 2 at a time, in passes through scratch slots,
    the output is byte for byte that of one merge of every run, which is the input sorted
    by key with equal keys in input order (the skewed key's values streamed to reduce)."""
    data = tmp_path / "in.txt"
    lines = _records(data, 30_000, hot, seed=11)
    single = _run(os.path.join(JOBS, "skewed.py"), data, tmp_path / "one", tmp_path, 1000)
    passes = _run(os.path.join(JOBS, "skewed.py"), data, tmp_path / "passes", tmp_path, 2)
    assert "reduce_merge_passes" not in single
    assert passes["reduce_merge_passes"] >= 2 and passes["reduce_merge_bytes"] > 0
    assert passes["reduce_input_records"] == single["reduce_input_records"] == len(lines)
    expected = "".join(sorted(lines, key=lambda line: line.split("\t", 1)[0])).encode()
    assert _output(tmp_path / "passes") == _output(tmp_path / "one")
    assert _output(tmp_path / "one") == expected


# ------------------------------------------------------------- on the loop-disk cluster

@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    if os.geteuid() != 0:
        pytest.skip("needs root: loop devices")
    from cluster_helpers import LoopCluster
    with LoopCluster(tmp_path_factory.mktemp("mergecluster"), workers=2, slots=24,
                     image_size=64 << 20,
                     worker_extra="merge_factor = 2\nspill_records = 200\n") as c:
        yield c


def _second_step_waits(cluster, out: str) -> bool:
    """Both maps of the second step run (they wait for the flag): the reduces are done."""
    rows = [r for r in json.loads(cluster.blfs("jobs", "--json").stdout)
            if r.get("output") == out]
    if not rows:
        return False
    running = cluster.status(rows[0]["job"])["running"]
    return sum(a["attempt"].split("/")[1].startswith("s1-m-") for a in running) == 2


def _free(cluster) -> int:
    return sum(r["info"]["free_slots"] for r in json.loads(cluster.blfs("workers",
                                                                        "--json").stdout))


@pytest.mark.root
@pytest.mark.parametrize("first", ["succeeds", "fails"])
def test_scratch_slots_are_free_once_the_reduces_have_ended(cluster, tmp_path, shared_dir,
                                                            first):
    """Between the two steps of a pipeline whose reduces merged in passes on real block
    devices, every slot is free but the two the reduces' output is in: their scratch slots
    went back when they ended (a failed first attempt's too), not with the job. The output
    is exact."""
    import subprocess
    import sys
    import time
    data = tmp_path / "in.txt"
    lines = _records(data, 20_000, 0.5, seed=5)
    flag, out = os.path.join(shared_dir, "go"), tmp_path / "out"
    argv = [sys.executable, "-m", "blfsd", "--config", str(cluster.master_cfg), "submit",
            os.path.join(JOBS, "merge_then_wait.py"), "--input", str(data), "--output",
            str(out), "--split-size", "64K", "--json", "--master", cluster.socket, "--",
            flag] + (["fail"] if first == "fails" else [])
    proc = subprocess.Popen(argv, env=cluster.env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 90
        while not _second_step_waits(cluster, str(out)) and time.monotonic() < deadline:
            time.sleep(0.2)
        # the master hears of slots from heartbeats: a moment after they change
        expected, deadline = cluster.n * cluster.slots - 2, time.monotonic() + 5
        free = _free(cluster)
        while free != expected and time.monotonic() < deadline:
            time.sleep(0.2)
            free = _free(cluster)
        open(flag, "w").close()
        stdout, stderr = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, stderr
    assert free == expected, f"{free} slots free between the steps, not {expected}"
    assert json.loads(stdout)["counters"]["blfs"]["reduce_merge_passes"] >= 2
    attempts = cluster.status(cluster.job_id_for(str(out)))["attempts"]
    failed = [a for a in attempts if a["task"].startswith("r-") and a["state"] == "failed"]
    assert len(failed) == (2 if first == "fails" else 0), attempts
    want = "".join(sorted(lines, key=lambda line: line.split("\t", 1)[0])).encode()
    assert _output(out) == want
    assert cluster.free_slots() == [cluster.slots] * cluster.n


def test_keys_of_runs_that_cannot_be_compared_start_the_merge_over_canonically(pool):
    """An int-keyed run and str-keyed ones: the natural merge fails (in a pass or after),
    the reduce starts over in canonical order with the same scratch, and nothing leaks."""
    disk, leases = pool
    runs = [[[i, "int"] for i in range(40)]] + \
        [[[f"k{r}-{i:03d}", "str"] for i in range(40)] for r in range(5)]
    spec = _spec(_producer_runs(disk, leases, runs))
    free_before = leases.free_count()
    files = Files(disk, leases)
    scratch = Scratch(spec, files, "n", 1, SLOT, 2048)
    with pytest.raises(reading.OrderError):
        list(Merge(spec, files, Reporter(), False, scratch, 2).merged())
    got = list(Merge(spec, files, Reporter(), True, scratch, 2).merged())
    scratch.close()
    order = records.pair_order(True, False)
    assert got == list(heapq.merge(*runs, key=order))
    leases.release_scratch(ATTEMPT)
    assert leases.free_count() == free_before
