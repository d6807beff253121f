"""mrjob job files run unmodified by `blfs submit --local` (issue 11, point 5): mrjob's
shipped examples give the records mrjob's own runner gives for the same input."""
from __future__ import annotations

import os
import random
import subprocess
import sys

import pytest

from blfsd import mrjob_compat as mc
from blfsd.errors import JobDefinitionError

pytestmark = [pytest.mark.slow,
              pytest.mark.filterwarnings("ignore:distutils Version classes:DeprecationWarning")]

try:
    mc.import_mrjob()
except JobDefinitionError as exc:
    pytest.skip(f"mrjob cannot be imported: {exc}", allow_module_level=True)

import mrjob_engine as me  # noqa: E402
from test_mrjob_compat import _wet_file, assert_same, data  # noqa: E402,F401  (a fixture)

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def run_blfs(path: str, args: list, inputs: list, out: str, *extra: str) -> me.Result:
    """The job through `blfs submit --local --workers 2`; its part files, as bytes."""
    argv = [sys.executable, "-m", "blfsd", "submit", path, "--output", out, "--local",
            "--workers", "2", "--quiet", *extra]
    for i in inputs:
        argv += ["--input", i]
    if args:
        argv += ["--", *args]
    done = subprocess.run(argv, cwd=REPO, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    parts = sorted(p for p in os.listdir(out) if p.startswith("part-"))
    return me.Result(parts=[open(os.path.join(out, p), "rb").read() for p in parts])


def compare_with_mrjob(tmp_path, name: str, args: list, inputs: list, runner: str = "inline",
                       exact: bool = True, *extra: str) -> me.Result:
    path = me.example_path(name)
    ours = run_blfs(path, args, inputs, str(tmp_path / "out"), *extra)
    random.seed(1234)
    theirs = me.run_mrjob(path, args, inputs, runner)
    job = mc.load(open(path).read(), path, args)
    assert_same(job, ours, theirs, exact)
    return ours


@pytest.mark.parametrize("name,args,inputs", [
    ("mr_word_freq_count", [], "text"),
    ("mr_most_used_word", [], "text"),  # with its stop_words.txt
    ("mr_next_word_stats", [], "text"),  # SORT_VALUES, a reduce-only second step
    ("mr_wc", [], "text"),
    ("mr_count_lines_right", [], "text"),
    ("mr_count_lines_wrong", [], "gz"),
    ("mr_count_lines_by_file", [], "gz"),
])
def test_mrjob_example_through_blfs(tmp_path, data, name, args, inputs):  # noqa: F811
    compare_with_mrjob(tmp_path, name, args, data[inputs])


def test_log_sampler_through_blfs(tmp_path, data):  # noqa: F811
    """A random sample: as many lines as asked, each one of the input's."""
    out = run_blfs(me.example_path("mr_log_sampler"), ["--sample-size", "20"], data["text"],
                   str(tmp_path / "out"))
    with open(data["text"][0], "rb") as f:
        lines = set(f.read().splitlines())
    sampled = [line.rstrip(b"\n") for line in out.lines]
    assert len(sampled) == 20 and all(s in lines for s in sampled)


def test_text_classifier_through_blfs(tmp_path):
    docs = os.path.join(os.path.dirname(me.example_path("mr_text_classifier")),
                        "docs-to-classify")
    paths = sorted(os.path.join(docs, n) for n in os.listdir(docs))
    compare_with_mrjob(tmp_path, "mr_text_classifier", [], paths, "inline", False)


@pytest.mark.parametrize("name,args", [("mr_grep", ["-e", "qu"]),
                                       ("mr_words_containing_u_freq_count", [])])
def test_command_examples_through_blfs(tmp_path, data, name, args):  # noqa: F811
    compare_with_mrjob(tmp_path, name, args, data["text"], "local")


def test_boom_fails_with_its_exception(tmp_path, data):  # noqa: F811
    argv = [sys.executable, "-m", "blfsd", "submit", me.example_path("mr_boom"), "--input",
            data["text"][0], "--output", str(tmp_path / "out"), "--local", "--max-attempts",
            "1"]
    done = subprocess.run(argv, cwd=REPO, capture_output=True, text=True, timeout=120)
    assert done.returncode == 1 and "BOOM" in done.stderr, done.stderr


def test_phone_to_url_reads_its_gz_input_through_blfs(tmp_path):
    pytest.importorskip("warcio")
    wet = tmp_path / "crawl.wet.gz"
    _wet_file(str(wet))
    compare_with_mrjob(tmp_path, "mr_phone_to_url", [], [str(wet)])
