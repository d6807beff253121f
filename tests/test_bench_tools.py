"""The benchmark tools' own logic (tools/): generators, /proc sampling, output checks,
profile summaries, the scheduler simulation. Fast, and no assertion about how fast
anything is. One end-to-end run of examples/sort.py is marked slow."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "tools"))

import baselines  # noqa: E402
import bench  # noqa: E402
import bench_scheduler  # noqa: E402
import blfs_run  # noqa: E402
import gen_records  # noqa: E402
import profile_summary  # noqa: E402
import proctree  # noqa: E402


# ------------------------------------------------------------------------ gen_records

def test_block_records_are_fixed_width_with_unique_keys():
    data = gen_records.make_block(1, 0.0, 5, 2000)
    lines = data.split(b"\n")
    assert lines.pop() == b""
    assert len(lines) == 2000 and len(data) == 2000 * gen_records.RECORD
    keys = [line[:10] for line in lines]
    assert len(set(keys)) == len(keys)
    for line in lines:
        key, tab, payload = line[:10], line[10:11], line[11:]
        assert tab == b"\t" and len(payload) == gen_records.PAYLOAD_LEN
        assert key.isalpha() and key.islower()
        assert b"\t" not in payload and b"\r" not in payload
        assert key.endswith(gen_records.block_suffix(5))


def test_blocks_are_deterministic_and_differ_by_seed_and_index():
    a = gen_records.make_block(1, 0.0, 0, 500)
    assert a == gen_records.make_block(1, 0.0, 0, 500)
    assert a != gen_records.make_block(2, 0.0, 0, 500)
    assert a != gen_records.make_block(1, 0.0, 1, 500)


def test_keys_are_unique_across_blocks_and_never_the_hot_key():
    keys = set()
    for index in (0, 1, 26, gen_records.MAX_BLOCKS - 1):
        block = gen_records.make_block(3, 0.0, index, 300)
        new = {line[:10] for line in block.split(b"\n")[:-1]}
        assert not keys & new
        keys |= new
    assert gen_records.HOT_KEY not in keys
    assert gen_records.block_suffix(gen_records.MAX_BLOCKS - 1) < gen_records.HOT_KEY[7:]
    with pytest.raises(ValueError):
        gen_records.block_suffix(gen_records.MAX_BLOCKS)


def test_skew_gives_the_hot_key_exactly_that_share():
    block = gen_records.make_block(1, 0.5, 2, 1000)
    keys = Counter(line[:10] for line in block.split(b"\n")[:-1])
    assert keys[gen_records.HOT_KEY] == 500
    assert max(c for k, c in keys.items() if k != gen_records.HOT_KEY) == 1


def test_letters_cover_the_alphabet_and_first_letters_spread():
    import random
    rng = random.Random(7)
    text = gen_records.letters(rng, 26_000)
    counts = Counter(text)
    assert set(counts) == set(gen_records.LETTERS)
    assert min(counts.values()) > 700 and max(counts.values()) < 1300  # 1000 expected each


def test_generate_writes_meta_and_reuses_the_file(tmp_path):
    path = str(tmp_path / "r.txt")
    size = 3 * gen_records.RECORDS_PER_BLOCK * gen_records.RECORD // 2 + 55
    info = gen_records.generate(path, size, seed=4, processes=2)
    assert not info["cached"] and info["records"] == size // 100
    assert os.path.getsize(path) == info["records"] * 100
    again = gen_records.generate(path, size, seed=4)
    assert again["cached"]
    single = str(tmp_path / "s.txt")
    gen_records.generate(single, size, seed=4, processes=1)
    assert Path(single).read_bytes() == Path(path).read_bytes()
    meta = json.loads(Path(path + ".meta.json").read_text())
    assert meta["skew"] == 0.0 and meta["bytes"] == info["records"] * 100
    assert gen_records.default_path("/d", 1 << 28, 1, 0.5) == "/d/records-256M-s1-skew50.txt"


# ------------------------------------------------------------------------ proctree

def test_parse_stat_with_an_awkward_command_name():
    fields = ["S", "41", "41", "1", "0", "-1", "0", "0", "0", "0", "0",
              str(3 * proctree.CLK_TCK), str(proctree.CLK_TCK), "0", "0", "20", "0", "1", "0",
              "12345", "1000", "25"]
    st = proctree.parse_stat("4242 (a (b) c) " + " ".join(fields))
    assert st["pid"] == 4242 and st["comm"] == "a (b) c" and st["ppid"] == 41
    assert st["utime"] == 3.0 and st["stime"] == 1.0 and st["rss"] == 25 * proctree.PAGE


def test_parse_status_and_real_proc_files():
    text = "Name:\tx\nVmHWM:\t  2048 kB\nVmRSS:\t  1024 kB\nRssAnon:\t 10 kB\n"
    assert proctree.parse_status(text) == {"VmHWM": 2 << 20, "VmRSS": 1 << 20,
                                           "RssAnon": 10 << 10}
    with open(f"/proc/{os.getpid()}/stat") as f:
        assert proctree.parse_stat(f.read())["pid"] == os.getpid()


def test_classify_task_by_open_files(tmp_path):
    inp = tmp_path / "in.txt"
    inp.write_text("x")
    out = tmp_path / "out"
    assert proctree.classify_task([str(inp)], [str(inp)], str(out)) == "map"
    temp = str(out / "_temporary" / "job" / "r-00000.0" / "part-00000")
    assert proctree.classify_task(["/dev/null", temp], [str(inp)], str(out)) == "reduce"
    assert proctree.classify_task(["/dev/null"], [str(inp)], str(out)) == ""


def test_read_rate_uses_the_samples_around_the_reads():
    reads = [(0.0, 0), (0.1, 0), (0.2, 100), (0.3, 300), (0.4, 300), (0.5, 300)]
    got, seconds = proctree.read_rate(reads)
    assert got == 300 and seconds == pytest.approx(0.2)
    assert proctree.read_rate([(0.0, 5), (0.1, 5)]) is None
    assert proctree.read_rate([]) is None


def test_measure_sees_the_tree_its_cpu_and_output():
    code = ("import os, time\n"
            "pid = os.fork()\n"
            "if pid == 0:\n"
            "    x = bytearray(40 << 20)\n"
            # CPU time, not wall time: on a busy machine it still burns 0.4 s
            "    while time.process_time() < 0.4: pass\n"
            "    os._exit(0)\n"
            "print('hello', flush=True)\n"
            "os.waitpid(pid, 0)\n")
    m = proctree.measure([sys.executable, "-c", code], interval=0.02,
                         roles=("main", "child"))
    assert m.returncode == 0
    assert [line for _, line in m.output] == ["hello"]
    assert m.cpu >= 0.3 and m.wall >= 0.4 and 0 < m.cpu_share <= 2.5
    child = m.largest("child")
    assert child is not None and child.depth == 1 and child.hwm >= 40 << 20
    assert m.maxrss >= child.hwm and m.tree_peak >= child.rss
    first, last = m.phase("child")
    assert 0 <= first <= last <= m.wall


def test_measure_reports_a_failing_command():
    m = proctree.measure([sys.executable, "-c", "import sys; sys.exit(3)"], interval=0.01)
    assert m.returncode == 3


# ------------------------------------------------------------------------ bench checks

def _write(path: Path, data: bytes) -> str:
    path.write_bytes(data)
    return str(path)


def test_same_bytes_across_files_and_chunks(tmp_path, monkeypatch):
    monkeypatch.setattr(bench, "READ_CHUNK", 7)
    a1 = _write(tmp_path / "a1", b"0123456789")
    a2 = _write(tmp_path / "a2", b"abcdefghij")
    b = _write(tmp_path / "b", b"0123456789abcdefghij")
    c = _write(tmp_path / "c", b"0123456789abcdXfghij")
    assert bench.same_bytes([a1, a2], [b]) is None
    assert bench.same_bytes([a1, a2], [c]) == 14
    assert bench.same_bytes([a1], [b]) == 10  # one is a prefix of the other


def test_keys_in_order(tmp_path):
    p1 = _write(tmp_path / "p1", b"aaaaaaaaaa\tx\nbbbbbbbbbb\ty\n")
    p2 = _write(tmp_path / "p2", b"bbbbbbbbbb\ta\ncccccccccc\tz\n")
    p3 = _write(tmp_path / "p3", b"aaaaaaaaab\tz\n")
    assert bench.keys_in_order([p1, p2]) is None
    assert "p3:1" in bench.keys_in_order([p1, p2, p3])


def test_check_sort_identical_ties_and_mismatch(tmp_path, monkeypatch):
    monkeypatch.setattr(bench, "DATA", str(tmp_path))
    (tmp_path / "out").mkdir()
    gnu = _write(tmp_path / "gnu", b"aaaaaaaaaa\t1\nmmmmmmmmmm\t2\nmmmmmmmmmm\t1\nzzzzzzzzzz\t3\n")
    py = _write(tmp_path / "py", b"aaaaaaaaaa\t1\nmmmmmmmmmm\t1\nmmmmmmmmmm\t2\nzzzzzzzzzz\t3\n")
    same = [_write(tmp_path / "s0", b"aaaaaaaaaa\t1\nmmmmmmmmmm\t2\nmmmmmmmmmm\t1\n"),
            _write(tmp_path / "s1", b"zzzzzzzzzz\t3\n")]
    assert bench.check_sort(same, gnu, py, ties=True).startswith("identical")
    swapped = [_write(tmp_path / "w0", b"aaaaaaaaaa\t1\nmmmmmmmmmm\t1\nmmmmmmmmmm\t2\n"),
               _write(tmp_path / "w1", b"zzzzzzzzzz\t3\n")]
    assert bench.check_sort(swapped, gnu, py, ties=True).startswith("equal to GNU sort up to")
    assert bench.check_sort(swapped, gnu, py, ties=False).startswith("MISMATCH")
    lost = [_write(tmp_path / "l0", b"aaaaaaaaaa\t1\nmmmmmmmmmm\t1\nmmmmmmmmmm\t1\n"),
            _write(tmp_path / "l1", b"zzzzzzzzzz\t3\n")]
    assert "lines differ" in bench.check_sort(lost, gnu, py, ties=True)
    unordered = [_write(tmp_path / "u0", b"zzzzzzzzzz\t3\n"),
                 _write(tmp_path / "u1", b"aaaaaaaaaa\t1\nmmmmmmmmmm\t1\nmmmmmmmmmm\t2\n")]
    assert "out of order" in bench.check_sort(unordered, gnu, py, ties=True)


def test_counts_read_and_compared(tmp_path):
    part = _write(tmp_path / "part-00000", b"a\t1\nb\t2\n")
    assert bench.read_counts([part]) == {"a": 1, "b": 2}
    dup = _write(tmp_path / "part-00001", b"a\t5\n")
    with pytest.raises(bench.RunFailed):
        bench.read_counts([part, dup])
    problems = bench.compare_counts({"a": 1, "c": 1}, {"a": 2, "b": 2})
    assert len(problems) == 3


def test_median_run_picks_the_middle_wall_time():
    class R:
        def __init__(self, wall):
            self.wall = wall
    runs = [R(3.0), R(1.0), R(2.0)]
    assert bench.median_run(runs).wall == 2.0
    assert bench.median_run(runs[:2]).wall == 1.0


def test_phase_line_and_counters_without_engine_timers():
    m = proctree.Measurement(["x"], wall=10.0)
    m.procs = {1: proctree.Proc(1, 0, "master", 0.0, 9.9, cpu=0.5),
               2: proctree.Proc(2, 1, "worker", 0.1, 9.8, cpu=0.2),
               3: proctree.Proc(3, 2, "map", 1.0, 5.0, cpu=3.0),
               4: proctree.Proc(4, 2, "map", 1.1, 6.0, cpu=3.5),
               5: proctree.Proc(5, 2, "reduce", 6.5, 9.0, cpu=2.0)}
    run = bench.Run("blfs", m, {"counters": {"blfs": {"map_spills": 4}}})
    d = bench.phase_line(run)
    assert d["startup"] == 1.0 and d["map"] == pytest.approx(5.0)
    assert d["between"] == pytest.approx(0.5) and d["reduce"] == pytest.approx(2.5)
    assert d["end"] == pytest.approx(1.0) and d["map_cpu"] == 6.5 and d["maps"] == 2
    assert d["spills"] == 4 and d["map_seconds"] is None
    m.procs[5].hwm = 90 << 20
    assert run.task_peak() == (90 << 20, "reduce")


# ------------------------------------------------------------------------ baselines

def test_python_sort_baseline(tmp_path):
    inp = _write(tmp_path / "in", b"b\t2\na\t1\nc\t3\n")
    out = str(tmp_path / "out")
    assert baselines.sort_file(inp, out) == 3
    assert Path(out).read_bytes() == b"a\t1\nb\t2\nc\t3\n"


def test_wordcount_baseline_splits_on_lines(tmp_path):
    text = "the cat\nthe dog and the bird\n" * 50 + "last line without newline"
    inp = _write(tmp_path / "in", text.encode())
    out = str(tmp_path / "out.tsv")
    counts = baselines.wordcount(inp, out, processes=3)
    assert counts == dict(Counter(text.split()))
    assert Path(out).read_text().splitlines()[0] == "and\t50"


# ------------------------------------------------------------------------ blfs_run

def test_blfs_run_writes_the_final_status(tmp_path, monkeypatch):
    from blfsd import cli
    seen = {}

    def fake_main(argv):
        seen["argv"] = argv
        return cli._report_end({"job": "j", "state": "failed", "counters": {"g": {"n": 1}}},
                               {"output": str(tmp_path / "nowhere")})

    monkeypatch.setattr(cli, "main", fake_main)
    status = tmp_path / "status.json"
    code = blfs_run.main(["--status-file", str(status), "submit", "x.py"])
    assert code == 1 and seen["argv"] == ["submit", "x.py"]
    assert json.loads(status.read_text())["counters"] == {"g": {"n": 1}}


# ------------------------------------------------------------------------ profile_summary

RAW = [
    'process 1:"python -m blfsd submit x";main (blfsd/cli.py:1);select (selectors.py:9) 5\n',
    'process 1:"python -m blfsd submit x";process 2:"python -m blfsd worker --name w0";'
    'run (asyncio/runners.py:1);select (selectors.py:9) 3\n',
    'process 1:"python -m blfsd submit x";process 2:"python -m blfsd worker --name w0";'
    'process 3:"python -m blfsd worker --name w0";run_attempt (blfsd/runtime.py:468);'
    'run_map (blfsd/runtime.py:306);spill (blfsd/runtime.py:261);packb (msgpack/__init__.py:35) 30\n',
    'process 1:"python -m blfsd submit x";process 2:"python -m blfsd worker --name w0";'
    'process 3:"python -m blfsd worker --name w0";run_attempt (blfsd/runtime.py:468) 2\n',
    'process 1:"python -m blfsd submit x";process 2:"python -m blfsd worker --name w0";'
    'process 4:"python -m blfsd worker --name w0";run_reduce (blfsd/runtime.py:1);'
    'decode_pairs (blfsd/records.py:82) 10\n',
    'garbage line\n',
]


def test_profile_lines_parse_and_split_outside_quotes():
    procs, frames, n = profile_summary.parse_line(
        'process 9:"sh -c \'a;b\'";f (x.py:1);g (y.py:2) 7\n')
    assert procs == ['process 9:"sh -c \'a;b\'"'] and frames == ["f (x.py:1)", "g (y.py:2)"]
    assert n == 7
    assert profile_summary.parse_line("no count here\n") is None
    assert profile_summary.function("packb (msgpack/__init__.py:35)") == \
        "packb (msgpack/__init__.py)"


def test_profile_roles_follow_the_task_process():
    parsed = [p for p in map(profile_summary.parse_line, RAW) if p]
    roles = profile_summary.roles_by_process(parsed)
    assert roles == {"process 1": "master", "process 2": "worker", "process 3": "map",
                     "process 4": "reduce"}
    text = "\n".join(profile_summary.summarise(RAW, top=5))
    assert text.startswith("50 samples: map 64%, reduce 20%, worker 6%, master 10%")
    assert " 93.8%  60.0%  packb (msgpack/__init__.py)" in text


# ------------------------------------------------------------------------ bench_scheduler

def test_scenario_runs_a_job_with_failures_to_success():
    sc = bench_scheduler.Scenario(workers=4, parallelism=2, maps=60, reduces=6, seed=3,
                                  worker_failures=1, fail_rate=0.05, task_timeout=30.0)
    sc.run()
    assert sc.ended is not None and sc.ended.state == "succeeded"
    assert sc.stats["map attempts"] >= 60 and sc.stats["reduce attempts"] >= 6
    assert sc.stats["reduce fetch failures"] >= 1  # the forced one
    assert sc.t.calls["tick (timeouts + schedule)"]
    assert any("held_slots" in k for k in sc.t.calls)
    lines = bench_scheduler.report_scenario(sc, 1.0) + bench_scheduler.master_estimate(sc)
    assert any("tick" in line for line in lines)


def test_scenario_replaying_the_master_exactly():
    sc = bench_scheduler.Scenario(workers=3, parallelism=2, maps=20, reduces=3, seed=1,
                                  schedule_every=0.0, worker_failures=0)
    sc.run()
    assert sc.ended is not None and sc.ended.state == "succeeded"
    assert sc.t.calls["schedule (after an event)"]


def test_probe_measures_every_decision_kind():
    costs = bench_scheduler.probe(workers=3, parallelism=2, maps=30, reduces=4)
    assert set(costs) >= {"schedule, map phase, all slots busy",
                          "launch of one reduce (schedule / reduces)",
                          "held_slots (one worker's sync)", "job_status, map tail"}
    assert all(v >= 0 for v in costs.values())


def test_slope_and_verdicts():
    sizes = [1000, 2000, 4000]
    assert bench_scheduler.slope(sizes, [1.0, 2.0, 4.0]) == pytest.approx(1.0)
    assert bench_scheduler.slope(sizes, [1.0, 4.0, 16.0]) == pytest.approx(2.0)
    verdicts = bench_scheduler.verdicts({
        "quadratic": {"tasks": (2.0, 1.0), "maps": (1.0, 1.0)},
        "n log n": {"tasks": (1.4, 1.0)},
        "linear": {"tasks": (1.0, 1.0), "maps": (1.0, 1.0), "workers": (0.0, 1.0)},
        "per worker": {"tasks": (1.0, 1.0), "workers": (1.0, 1.0)},
        "cheap": {"tasks": (3.0, 1e-6)},
    })
    text = "\n".join(verdicts)
    assert "SUPER-LINEAR quadratic: slope 2.00 against the job's tasks (quadratic)" in text
    assert "SUPER-LINEAR n log n: slope 1.40" in text
    assert "x WORKERS    per worker" in text
    assert "   linear       linear: slope 1.00 against the job's tasks, 0.00 against workers" \
        in text
    assert "   negligible   cheap: at most 1 µs" in text
    assert "linear       quadratic" not in text and "linear       per worker" not in text
    assert text.endswith("3 decisions grow faster than the number of tasks of its job")
    assert bench_scheduler.verdicts({"linear": {"tasks": (1.0, 1.0)}}) == \
        ["   linear       linear: slope 1.00 against the job's tasks, 0.00 against workers",
         "   no decision grows faster than the number of tasks of its job"]


# ------------------------------------------------------------------------ the sort job

@pytest.mark.slow
def test_sort_example_output_is_the_sorted_input(tmp_path):
    inp = tmp_path / "records.txt"
    with open(inp, "wb") as f:
        f.write(gen_records.make_block(9, 0.0, 0, 3000))
        f.write(b"Zcapital00\tfirst letter not lowercase\n")
    out = tmp_path / "out"
    env = dict(os.environ, PYTHONPATH=str(REPO))
    proc = subprocess.run([sys.executable, "-m", "blfsd", "submit", str(REPO / "examples/sort.py"),
                           "--input", str(inp), "--output", str(out), "--local", "--workers", "2",
                           "--split-size", "64K", "--quiet"], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    parts = sorted(out.glob("part-*"))
    assert len(parts) == 2
    got = b"".join(p.read_bytes() for p in parts)
    assert got == b"".join(sorted(inp.read_bytes().splitlines(keepends=True)))


def test_bench_shuffle_takes_the_reader_rate_from_the_counters_the_engine_keeps():
    # the engine counts shuffle_read_ms (integer milliseconds) and shuffle_read_bytes
    import bench_shuffle
    assert bench_shuffle.counter_rate({"shuffle_read_ms": 500, "shuffle_read_bytes": 1000},
                                      size=7) == 2000.0
    assert bench_shuffle.counter_rate({"shuffle_read_ms": 0, "shuffle_read_bytes": 1000},
                                      size=7) is None
    assert bench_shuffle.counter_rate({}, size=7) is None
