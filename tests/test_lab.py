"""The MIT 6.5840 MapReduce lab's test families, against `blfs submit --local`."""
from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from conftest import (EXAMPLES, JOBS, assert_parts_sorted, make_corpus, read_counts,
                      read_parts, submit_local, word_counts)


@pytest.fixture
def corpus(tmp_path):
    return [make_corpus(tmp_path / f"pg-{i}.txt", 3000, seed=i) for i in range(3)]


def test_word_count(tmp_path, corpus, no_leftovers):
    out = tmp_path / "out"
    r = submit_local(os.path.join(EXAMPLES, "wordcount.py"), corpus, out, "--split-size",
                     "32K", "--reducers", "3")
    assert r.returncode == 0, r.stderr
    assert read_counts(out) == word_counts(*corpus)
    assert os.path.exists(out / "_SUCCESS")
    assert sorted(os.listdir(out)) == ["_SUCCESS", "part-00000", "part-00001", "part-00002"]
    assert_parts_sorted(out)


def test_indexer(tmp_path, no_leftovers):
    docs = tmp_path / "docs"
    docs.mkdir()
    texts = {"a.txt": "the cat sat\non the mat\n", "b.txt": "the dog\nsat down\n",
             "c.txt": "a cat and a dog\n"}
    for name, text in texts.items():
        (docs / name).write_text(text)
    out = tmp_path / "out"
    r = submit_local(os.path.join(EXAMPLES, "inverted_index.py"), [docs], out)
    assert r.returncode == 0, r.stderr
    got = dict(read_parts(out))
    expected: dict = {}
    for name, text in texts.items():
        for word in text.split():
            expected.setdefault(word, set()).add(name)
    assert set(got) == set(expected)
    for word, names in expected.items():
        for name in names:
            assert name in got[word], (word, got[word])


def _intervals(scratch, phase):
    rows = []
    for name in os.listdir(scratch):
        p, worker, start, end = open(os.path.join(scratch, name)).read().split()
        if p == phase:
            rows.append((worker, float(start), float(end)))
    return rows


def _overlap_on_different_workers(rows) -> bool:
    return any(a[0] != b[0] and a[1] < b[2] and b[1] < a[2]
               for i, a in enumerate(rows) for b in rows[i + 1:])


@pytest.mark.parametrize("phase", ["map", "reduce"])
def test_parallelism(tmp_path, shared_dir, corpus, phase, no_leftovers):
    """Two maps (or reduces) provably ran at the same time on different workers."""
    scratch = Path(shared_dir)
    out = tmp_path / "out"
    r = submit_local(os.path.join(JOBS, "lab_timing.py"), corpus, out, "--reducers", "2",
                     "--parallelism", "1", job_args=(str(scratch), phase))
    assert r.returncode == 0, r.stderr
    rows = _intervals(scratch, phase)
    assert len(rows) >= 2
    assert _overlap_on_different_workers(rows), rows


def test_job_count(tmp_path, shared_dir, corpus, no_leftovers):
    """When nothing fails, each map runs exactly once."""
    scratch = Path(shared_dir)
    out = tmp_path / "out"
    r = submit_local(os.path.join(JOBS, "lab_jobcount.py"), corpus, out, "--split-size", "16K",
                     job_args=(str(scratch),))
    assert r.returncode == 0, r.stderr
    runs = open(scratch / "map-runs").read().split("\n")[:-1]
    maps = sum(-(-os.path.getsize(p) // (16 << 10)) for p in corpus)
    assert len(runs) == maps
    assert len(set(runs)) == maps and all(line.endswith(" 0") for line in runs)
    assert read_counts(out) == word_counts(*corpus)


def test_early_exit(tmp_path, corpus):
    """Nothing changes in the output after submit has returned; nothing keeps running."""
    out = tmp_path / "out"
    r = submit_local(os.path.join(EXAMPLES, "wordcount.py"), corpus, out, "--split-size", "32K")
    assert r.returncode == 0, r.stderr

    def snapshot():
        return {n: (os.stat(out / n).st_mtime_ns, (out / n).read_bytes())
                for n in sorted(os.listdir(out))}

    first = snapshot()
    time.sleep(1.5)
    assert snapshot() == first
    assert "_temporary" not in first


@pytest.mark.slow
def test_crash(tmp_path, corpus, no_leftovers):
    """Tasks exit at random one time in three, or stall; the output is still exact."""
    out = tmp_path / "out"
    r = submit_local(os.path.join(JOBS, "crashy.py"), corpus, out, "--split-size", "16K",
                     "--reducers", "3", "--task-timeout", "2", "--max-attempts", "30",
                     job_args=("0.33", "0.1"), timeout=300)
    assert r.returncode == 0, r.stderr
    assert read_counts(out) == word_counts(*corpus)
    assert "failed (crashed)" in r.stderr  # faults really happened
