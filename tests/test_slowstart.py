"""Reduces that start before the maps end (issue 13, point 2; Hadoop's slow start).

Once `[master] slow_start` of a reduce's producers have finished, the scheduler places
it with their segments (`partial`); it asks for the rest as it finishes (more_input, the
master's attempt_input) and merges finished maps' runs ahead while the other maps run
(runtime/early.py). A producer is told to a reduce attempt once: a map that runs again is
never mixed into what that attempt merges. The scheduler's side is tested here without
I/O; the whole path with `submit --local` against the same job without slow start."""
from __future__ import annotations

import json
import os
import random
import string

import pytest

from blfsd import scheduler as sch
from blfsd.errors import NotFound
from blfsd.messages import FailureKind, StepSpec
from blfsd.scheduler import Launch, Settings

from conftest import JOBS, submit_local
from test_scheduler import cluster, launched, make_spec, of, succeed

SLOW = Settings(slow_start=0.5, speculation=False)


def started(s, job_maps: int = 8, reducers: int = 2):
    s.submit("j", make_spec(maps=job_maps, reducers=reducers), 0)
    return launched(s.schedule(0))


def test_reduces_wait_for_their_share_of_the_maps_then_get_what_finished():
    s = cluster("w1", "w2", parallelism=8, settings_=SLOW)
    maps = started(s)
    assert set(maps) == {f"m-{i:05d}" for i in range(8)}
    for i in range(3):
        succeed(s, maps[f"m-{i:05d}"].attempt.id, 1)
    assert of(s.schedule(1), Launch) == []  # 3 of 8: below the half
    succeed(s, maps["m-00003"].attempt.id, 2)
    reduces = launched(s.schedule(2))
    assert set(reduces) == {"r-00000", "r-00001"}
    spec = reduces["r-00000"].attempt
    assert spec.partial and sorted({loc.map_task for loc in spec.segments}) == [0, 1, 2, 3]
    assert all(loc.partition == 0 for loc in spec.segments)


def test_more_input_tells_each_producer_once_and_then_that_it_is_complete():
    s = cluster("w1", "w2", parallelism=8, settings_=SLOW)
    maps = started(s)
    for i in range(4):
        succeed(s, maps[f"m-{i:05d}"].attempt.id, 1)
    r = launched(s.schedule(1))["r-00001"]
    rid, worker = r.attempt.id, r.worker
    assert sch.more_input(s, rid, worker) is None  # nothing finished since
    succeed(s, maps["m-00005"].attempt.id, 2)
    news = sch.more_input(s, rid, worker)
    assert [loc.map_task for loc in news["segments"]] == [5]
    assert news["complete"] is False and news["producers"] == 8
    assert sch.more_input(s, rid, worker) is None
    for i in (4, 6, 7):
        succeed(s, maps[f"m-{i:05d}"].attempt.id, 3)
    news = sch.more_input(s, rid, worker)
    assert sorted(loc.map_task for loc in news["segments"]) == [4, 6, 7]
    assert news["complete"] is True
    assert all(loc.partition == 1 for loc in news["segments"])
    again = sch.more_input(s, rid, worker)  # once complete, always complete
    assert again["segments"] == [] and again["complete"] is True


def test_a_map_run_again_is_never_told_twice_to_an_early_reduce():
    """r-00000 was told of m-00001's first attempt. r-00001 finds that output unreadable:
    m-00001 runs again and wins anew, yet r-00000 is not told of the new attempt (it
    reads the one it was told of, or fails and its next attempt is told of the new one);
    a new attempt of r-00001 is told of the new winner."""
    s = cluster("w1", "w2", parallelism=8, settings_=SLOW)
    maps = started(s, job_maps=4)
    for i in (0, 1):
        succeed(s, maps[f"m-{i:05d}"].attempt.id, 1)
    reduces = launched(s.schedule(1))
    r0, r1 = reduces["r-00000"], reduces["r-00001"]
    first = {loc.map_attempt for loc in r0.attempt.segments if loc.map_task == 1}
    s.attempt_failed(r1.attempt.id, FailureKind.FETCH, "bad crc", 2, {"map_task": 1})
    again = [l for l in of(s.schedule(2), Launch) if l.attempt.task == "m-00001"]
    assert again and again[0].attempt.attempt == 1
    succeed(s, again[0].attempt.id, 3)
    for i in (2, 3):
        succeed(s, maps[f"m-{i:05d}"].attempt.id, 3)
    news = sch.more_input(s, r0.attempt.id, r0.worker)
    assert sorted(loc.map_task for loc in news["segments"]) == [2, 3]
    assert news["complete"] is True
    assert first == {0}
    r1_again = launched(s.schedule(4))["r-00001"].attempt
    assert not r1_again.partial
    assert {loc.map_attempt for loc in r1_again.segments if loc.map_task == 1} == {1}


def test_only_a_running_reduce_of_that_worker_may_ask():
    s = cluster("w1", "w2", parallelism=8, settings_=SLOW)
    maps = started(s, job_maps=2)
    succeed(s, maps["m-00000"].attempt.id, 1)
    r = launched(s.schedule(1))["r-00000"]
    other = "w2" if r.worker == "w1" else "w1"
    with pytest.raises(NotFound):
        sch.more_input(s, r.attempt.id, other)
    with pytest.raises(NotFound):
        sch.more_input(s, maps["m-00001"].attempt.id, maps["m-00001"].worker)
    s.cancel("j", 2)
    with pytest.raises(NotFound):
        sch.more_input(s, r.attempt.id, r.worker)


def test_without_slow_start_a_reduce_waits_for_every_map():
    s = cluster("w1", "w2", parallelism=8)
    maps = started(s, job_maps=4)
    for i in range(3):
        succeed(s, maps[f"m-{i:05d}"].attempt.id, 1)
    assert of(s.schedule(1), Launch) == []
    succeed(s, maps["m-00003"].attempt.id, 2)
    assert not launched(s.schedule(2))["r-00000"].attempt.partial


# ----------------------------------------------------------------------- end to end

def records(path, count: int, seed: int) -> list:
    rng = random.Random(seed)
    lines = [f"{''.join(rng.choices(string.ascii_lowercase, k=6))}\t{i:06d}\n"
             for i in range(count)]
    path.write_text("".join(lines))
    return lines


def run(tmp_path, data, name: str, slow_start: float) -> dict:
    cfg = tmp_path / f"{name}.toml"
    cfg.write_text(f"[master]\nslow_start = {slow_start}\n[worker]\nmerge_factor = 3\n")
    r = submit_local(os.path.join(JOBS, "slow_tail.py"), [data], tmp_path / name,
                     "--split-size", "16K", "--reducers", "2", "--parallelism", "3",
                     "--json", "--", "14", "2.0", config=cfg)
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout)


def output(out) -> str:
    names = sorted(n for n in os.listdir(out) if n.startswith("part-"))
    return "".join(open(os.path.join(out, n)).read() for n in names)


def test_early_reduces_merge_ahead_and_give_the_output_of_late_ones(tmp_path):
    """16 maps; the last two sleep 2 s. With slow_start 0.5 the reduces start while they
    sleep and merge the 14 finished maps' runs ahead, 3 at a time; the output is byte for
    byte that of the same job with slow_start 1.0 (each part sorted by key, equal keys in
    input order)."""
    data = tmp_path / "in.txt"
    lines = records(data, 18000, seed=5)  # about 16 maps of 16K
    early = run(tmp_path, data, "early", 0.5)
    late = run(tmp_path, data, "late", 1.0)
    phases = {p["name"]: p for p in early["phases"]}
    assert phases["reduce"]["start"] < phases["map"]["end"] - 1.0, phases
    late_phases = {p["name"]: p for p in late["phases"]}
    assert late_phases["reduce"]["start"] >= late_phases["map"]["end"], late_phases
    assert early["counters"]["blfs"].get("reduce_early_merges", 0) >= 2, early["counters"]
    assert "reduce_early_merges" not in late["counters"]["blfs"]
    assert output(tmp_path / "early") == output(tmp_path / "late")
    # each part: its keys sorted, equal keys in input order; every line in one part
    place = {line: i for i, line in enumerate(lines)}
    out = tmp_path / "early"
    parts = [open(out / n).read().splitlines(keepends=True)
             for n in sorted(os.listdir(out)) if n.startswith("part-")]
    assert len(parts) == 2 and sorted(sum(parts, [])) == sorted(lines)
    for part in parts:
        assert part == sorted(part, key=lambda line: (line.split("\t", 1)[0], place[line]))


def test_an_early_reduce_leaves_a_slot_for_each_map_still_to_finish():
    """Two slots, one straggling map: an early reduce would take the last free slot, which
    the straggler's backup (or its re-run) needs; the backup gets it, the reduce waits."""
    s = cluster("w1", "w2", parallelism=1, settings_=Settings(slow_start=0.5))
    maps = started(s, job_maps=3, reducers=1)
    assert len(maps) == 2
    succeed(s, maps["m-00000"].attempt.id, 1)
    (third,) = launched(s.schedule(1)).values()
    assert third.attempt.task == "m-00002"
    succeed(s, third.attempt.id, 2)
    # m-00001 runs on; 1 slot free, 1 map left: not the early reduce but the straggler's
    # backup goes there
    (backup,) = of(s.schedule(2), Launch)
    assert backup.attempt.task == "m-00001" and backup.attempt.attempt == 1
    succeed(s, backup.attempt.id, 3)
    assert not launched(s.schedule(3))["r-00000"].attempt.partial


def test_a_map_that_finds_no_slot_takes_one_from_an_early_reduce_still_waiting():
    """Job j's early reduces and job b's maps fill w1 and w2; w3, where j's last map ran,
    is lost. With no slot free anywhere while that map waits, the youngest early reduce
    of j gives its slot back (killed, pending again, no failure counted)."""
    s = cluster("w1", "w2", "w3", parallelism=2, settings_=SLOW)
    maps = started(s, job_maps=3, reducers=2)
    assert maps["m-00002"].worker == "w3"
    succeed(s, maps["m-00000"].attempt.id, 1)
    succeed(s, maps["m-00001"].attempt.id, 1)
    reduces = launched(s.schedule(1))
    assert {r.worker for r in reduces.values()} <= {"w1", "w2"}
    assert all(r.attempt.partial for r in reduces.values())
    s.submit("b", make_spec(maps=3, reducers=1), 2)
    assert len(of(s.schedule(2), Launch)) == 3
    acts = s.worker_down("w3", 3) + s.schedule(3)
    kills = [a for a in acts if isinstance(a, sch.Kill)]
    assert [k.attempt.split("/")[1] for k in kills if k.attempt.startswith("j/")] in (
        ["r-00000"], ["r-00001"])
    victim = s.jobs["j"].reduces[int(kills[-1].attempt.split("/")[1][2:])]
    assert victim.state == "pending" and victim.failures == 0 and victim.lost == 0
    assert "needed by a map" in victim.attempts[-1].why
    assert s.jobs["j"].maps[2].state == "pending"
    assert any(w.free > 0 for w in s.workers.values() if w.alive)


def test_a_later_steps_maps_waiting_for_their_input_take_no_slot_from_an_early_reduce():
    """A two-step job: its second step's maps are pending, but they wait for the very
    reduces that run early; with every slot busy, those reduces keep their slots (only a
    map that could run now takes one back)."""
    s = cluster("w1", "w2", parallelism=2, settings_=SLOW)
    s.submit("j", make_spec(maps=3, reducers=2, steps=[StepSpec(), StepSpec()]), 0)
    maps = launched(s.schedule(0))
    succeed(s, maps["m-00000"].attempt.id, 1)
    succeed(s, maps["m-00001"].attempt.id, 1)
    reduces = launched(s.schedule(1))
    assert set(reduces) == {"r-00000", "r-00001"}
    s.submit("b", make_spec(maps=1, reducers=1), 2)
    actions = s.schedule(2)
    assert [l.attempt.job for l in of(actions, Launch)] == ["b"]
    assert of(actions, sch.Kill) == []
    assert not any(w.free for w in s.workers.values())
    for now in (3, 4):
        assert of(s.schedule(now), sch.Kill) == []
    assert [t.state for t in s.jobs["j"].stages[1].tasks] == ["running", "running"]
