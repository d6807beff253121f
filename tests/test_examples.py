"""End-to-end runs of examples/*.py on an embedded local cluster.

Each test writes a small deterministic input under tmp_path, runs
``python -m blfsd submit EXAMPLE --local --workers 2`` in a subprocess and checks
that the output directory matches a single-process reference computation
(tests/reference.py) line for line: same lines, keys sorted within each part,
no key in two parts, the expected number of part files, and _SUCCESS.
"""
from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
import reference  # noqa: E402

REPO = Path(__file__).resolve().parent.parent
EXAMPLES = REPO / "examples"
TIMEOUT = 120

pytestmark = pytest.mark.slow


# ---------------------------------------------------------------- running a job

def submit(example, inputs, output, *, reducers=None, split_size="64K", args=(), workers=2):
    cmd = [sys.executable, "-m", "blfsd", "submit", str(EXAMPLES / example)]
    for path in inputs:
        cmd += ["--input", str(path)]
    cmd += ["--output", str(output), "--local", "--workers", str(workers)]
    if reducers is not None:
        cmd += ["--reducers", str(reducers)]
    if split_size is not None:
        cmd += ["--split-size", split_size]
    if args:
        cmd += ["--", *args]
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
    # Own session, so that on a timeout the whole local cluster (master and worker
    # processes) is killed, not only the submit process.
    proc = subprocess.Popen(cmd, cwd=output.parent, env=env, stdin=subprocess.DEVNULL,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)
    try:
        stdout, stderr = proc.communicate(timeout=TIMEOUT)
        status = f"exit {proc.returncode}"
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        stdout, stderr = proc.communicate()
        status = (f"no exit after {TIMEOUT} s (killed); "
                  f"_SUCCESS {'exists' if (output / '_SUCCESS').exists() else 'absent'}")
    finally:
        try:
            os.killpg(proc.pid, signal.SIGKILL)     # stray workers, if any
        except ProcessLookupError:
            pass
    assert proc.returncode == 0 and status.startswith("exit"), (
        f"{' '.join(cmd)}\n{status}\n"
        f"--- stdout\n{stdout[-4000:]}\n--- stderr\n{stderr[-4000:]}")
    assert (output / "_SUCCESS").exists(), f"exit 0 but no {output}/_SUCCESS"
    return stdout, stderr


# ---------------------------------------------------------------- input generators

def vocabulary(rng, size=600):
    letters = "abcdefghijklmnopqrstuvwxyz"
    words = {"".join(rng.choice(letters) for _ in range(rng.randint(1, 10)))
             for _ in range(size)}
    # a few capitalised, punctuated, numeric and non-ASCII tokens
    words |= {"The", "Zebra", "end.", "don't", "x1", "42", "café", "naïve", "Ünïcode", "日本"}
    return sorted(words)


def write_text(path, nbytes, seed, *, final_newline=True):
    """Roughly nbytes of Zipf-ish random text: lines of 0..14 words, some empty,
    some with runs of spaces; only '\\n' as line separator."""
    rng = random.Random(seed)
    vocab = vocabulary(random.Random(1))          # the same words in every file
    weights = [1 / (i + 1) for i in range(len(vocab))]
    lines, size = [], 0
    while size < nbytes:
        words = rng.choices(vocab, weights, k=rng.randint(0, 14))
        sep = "  " if rng.random() < 0.05 else " "
        line = (" " if rng.random() < 0.03 else "") + sep.join(words)
        lines.append(line)
        size += len(line.encode()) + 1
    text = "\n".join(lines) + ("\n" if final_newline else "")
    path.write_bytes(text.encode("utf-8"))
    return path


def write_log(path, nlines, seed):
    """A log-like file with many repeated lines, for grep."""
    rng = random.Random(seed)
    nodes = [f"node{i}" for i in range(8)]
    messages = ["disk full", "disk slow", "heartbeat missed", "task started", "task done",
                "fsync took 3 ms", "remounted peer disk", "checksum mismatch"]
    levels = ["INFO"] * 12 + ["WARN"] * 3 + ["ERROR"]
    with open(path, "w", encoding="utf-8") as f:
        for _ in range(nlines):
            f.write(f"{rng.choice(levels)} {rng.choice(nodes)} {rng.choice(messages)}\n")
    return path


# ---------------------------------------------------------------- tests

def test_reference_line_reading(tmp_path):
    """The reference's notion of lines (used by every lines-job check)."""
    p = tmp_path / "t"
    p.write_bytes(b"a b\n\nc")
    assert reference.read_lines(p) == ["a b", "", "c"]
    p.write_bytes(b"a b\n\nc\n")
    assert reference.read_lines(p) == ["a b", "", "c"]
    p.write_bytes(b"")
    assert reference.read_lines(p) == []


def test_wordcount(tmp_path):
    inputs = [write_text(tmp_path / "a.txt", 300_000, seed=11),
              write_text(tmp_path / "b.txt", 120_000, seed=12)]
    out = tmp_path / "out"
    submit("wordcount.py", inputs, out, reducers=3)
    expected = reference.wordcount(inputs)
    assert sum(expected.values()) > 40_000
    reference.check_output(out, expected, parts=3)


def test_wordcount_awkward_inputs(tmp_path):
    """An empty file, a file without a final newline, and a line longer than a split
    (it must be read whole, exactly once, by one map task)."""
    empty = tmp_path / "empty.txt"
    empty.write_bytes(b"")
    no_newline = write_text(tmp_path / "nonl.txt", 50_000, seed=21, final_newline=False)
    long_line = tmp_path / "long.txt"
    rng = random.Random(22)
    vocab = vocabulary(random.Random(1))
    long_line.write_text(
        "first line\n" + " ".join(rng.choices(vocab, k=40_000)) + "\nlast line\n",
        encoding="utf-8")
    assert long_line.stat().st_size > 3 * 65536
    inputs = [empty, no_newline, long_line]
    out = tmp_path / "out"
    submit("wordcount.py", inputs, out, reducers=2)
    reference.check_output(out, reference.wordcount(inputs), parts=2)


def test_grep(tmp_path):
    inputs = [write_log(tmp_path / "node-a.log", 12_000, seed=31),
              write_log(tmp_path / "node-b.log", 6_000, seed=32)]
    pattern = r"^(ERROR|WARN) .*(disk|checksum)"
    out = tmp_path / "out"
    submit("grep.py", inputs, out, reducers=2, args=[pattern])
    expected = reference.grep(inputs, pattern)
    assert 10 < len(expected) < sum(expected.values())    # repeated lines are counted
    reference.check_output(out, expected, parts=2)


def test_inverted_index(tmp_path):
    docs = tmp_path / "docs"
    docs.mkdir()
    inputs = [write_text(docs / f"doc{i}.txt", 4_000 + 1_500 * i, seed=40 + i)
              for i in range(7)]
    out = tmp_path / "out"
    submit("inverted_index.py", inputs, out, reducers=3, split_size=None)
    expected = reference.inverted_index(inputs)
    assert any(len(d) == 7 for d in expected.values())    # common words: every document
    assert any(len(d) == 1 for d in expected.values())    # rare words: a single one
    assert "café" in expected and "don" in expected and "x" in expected
    reference.check_output(out, expected, parts=3)


def test_histogram(tmp_path):
    rng = random.Random(50)
    noise = tmp_path / "random.bin"
    noise.write_bytes(rng.randbytes(300_001))
    every = tmp_path / "every.bin"
    every.write_bytes(bytes(range(256)) * 1000)
    skewed = tmp_path / "skewed.bin"                      # few values: most keys absent
    skewed.write_bytes(bytes(rng.choice(b"\x00\n\xff") for _ in range(70_000)))
    out = tmp_path / "out"
    submit("histogram.py", [every], out, reducers=3)
    reference.check_output(out, {b: 1000 for b in range(256)}, key_type=int, parts=3)

    inputs = [noise, every, skewed]
    out2 = tmp_path / "out2"
    submit("histogram.py", inputs, out2, reducers=2)
    expected = reference.histogram(inputs)
    assert sum(expected.values()) == sum(p.stat().st_size for p in inputs)
    reference.check_output(out2, expected, key_type=int, parts=2)

    out3 = tmp_path / "out3"
    submit("histogram.py", [skewed], out3, reducers=4)
    reference.check_output(out3, reference.histogram([skewed]), key_type=int, parts=4)


def test_linear_regression(tmp_path):
    rng = random.Random(60)
    path = tmp_path / "points.txt"
    with open(path, "w") as f:
        f.write("# x y\n")
        for i in range(30_000):
            x = rng.randint(-1000, 1000)
            f.write(f"{x} {3 * x + 7 + rng.randint(-50, 50)}\n")
            if i % 5000 == 0:
                f.write("\n")
    out = tmp_path / "out"
    submit("linear_regression.py", [path], out)           # reducers = 1 in the job class
    expected = reference.linear_regression([path])
    assert abs(expected["slope"] - 3) < 0.01 and abs(expected["intercept"] - 7) < 1
    reference.check_output(out, expected, parts=1)
    got = reference.read_output(out)
    assert got["n"] == 30_000


def test_string_match(tmp_path):
    inputs = [write_text(tmp_path / "a.txt", 200_000, seed=71),
              write_text(tmp_path / "b.txt", 100_000, seed=72)]
    vocab = vocabulary(random.Random(1))
    keys = [vocab[0], vocab[7], vocab[300], "café", "not-in-the-input"]
    out = tmp_path / "out"
    submit("string_match.py", inputs, out, reducers=2, args=keys)
    expected = reference.string_match(inputs, keys)
    assert set(expected) == set(keys) - {"not-in-the-input"}
    reference.check_output(out, expected, parts=2)
