"""mrjob jobs through blfsd.mrjob_compat: mrjob's shipped examples (and two jobs of ours)
on a simulated engine give what mrjob's own runners give for the same input."""
from __future__ import annotations

import gzip
import io
import math
import os
import random
import subprocess
import sys

import pytest

from blfsd import mrjob_compat as mc
from blfsd.errors import JobDefinitionError, UsageError

# mrjob's own use of distutils' LooseVersion, on the Pythons that still have it
pytestmark = pytest.mark.filterwarnings("ignore:distutils Version classes:DeprecationWarning")

try:
    mc.import_mrjob()
except JobDefinitionError as exc:
    pytest.skip(f"mrjob cannot be imported: {exc}", allow_module_level=True)

import mrjob_engine as me  # noqa: E402  (tests/ is on sys.path under pytest)

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
JOBS = os.path.join(REPO, "tests", "jobs")
WORDS = ("the quick brown fox jumps over lazy dog you under Quux US don't it's bureau "
         "unusual a an and of to naïve über").split()


def _text(rng: random.Random, lines: int, end: str = "\n") -> str:
    return "".join(" ".join(rng.choice(WORDS) for _ in range(rng.randint(0, 12))) + end
                   for _ in range(lines))


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> dict:
    """Small generated inputs: text, three .gz parts, CRLF and Latin-1 lines."""
    root = tmp_path_factory.mktemp("mrjob-inputs")
    rng = random.Random(11)
    text = root / "text.txt"
    text.write_text(_text(rng, 300), encoding="utf-8")
    parts = []
    for i in range(3):
        part = root / f"part{i}.txt.gz"
        part.write_bytes(gzip.compress(_text(rng, 40 + 30 * i).encode("utf-8")))
        parts.append(str(part))
    odd = root / "crlf-latin1.txt"
    odd.write_bytes(_text(rng, 50, "\r\n").encode("utf-8") + "café über\r\n".encode("latin-1")
                    + _text(rng, 50).encode("utf-8"))
    extra = root / "extra.txt"
    extra.write_text("extra!\n")
    stop = root / "stop.txt"
    stop.write_text("the\nquick\nfox\n")
    return {"text": [str(text)], "gz": parts, "odd": [str(odd)], "extra": str(extra),
            "stop": str(stop)}


@pytest.fixture
def shimmed_subprocesses(tmp_path, monkeypatch):
    """On Python 3.12+, mrjob's local runner starts Python tasks that import mrjob: give
    them our shims through a sitecustomize (mrjob's own code cannot import there)."""
    if sys.version_info >= (3, 12):
        (tmp_path / "sitecustomize.py").write_text(
            "from blfsd.mrjob_compat import install_shims\ninstall_shims()\n")
        path = os.pathsep.join([str(tmp_path), REPO, os.environ.get("PYTHONPATH", "")])
        monkeypatch.setenv("PYTHONPATH", path)


# ---------------------------------------------------------------- comparing outputs

def _close(a, b) -> bool:
    """Equal, floats within a few units in the last place (summation order differs)."""
    if isinstance(a, float) or isinstance(b, float):
        return isinstance(a, (int, float)) and isinstance(b, (int, float)) and \
            math.isclose(a, b, rel_tol=1e-12, abs_tol=1e-300)
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        return len(a) == len(b) and all(map(_close, a, b))
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(_close(a[k], b[k]) for k in a)
    return a == b


def _rounded(x):
    if isinstance(x, float):
        return float(f"{x:.9g}")
    if isinstance(x, (list, tuple)):
        return [_rounded(v) for v in x]
    if isinstance(x, dict):
        return {k: _rounded(v) for k, v in x.items()}
    return x


def _records(job, result: me.Result) -> list:
    """The output parsed with the job's OUTPUT_PROTOCOL, in a canonical order."""
    records = list(job.parse_output(result.parts))
    return sorted(records, key=lambda kv: (repr(kv[0]), repr(_rounded(kv[1]))))


def assert_same(job, ours: me.Result, theirs: me.Result, exact: bool = True) -> None:
    assert ours.lines, "no output"
    if exact:  # the very lines mrjob writes, in any order across parts
        assert sorted(ours.lines) == sorted(theirs.lines)
    try:
        ref = _records(job, theirs)
    except ValueError:  # a command wrote the output: lines, not OUTPUT_PROTOCOL records
        assert exact
        return
    mine = _records(job, ours)
    assert len(mine) == len(ref) > 0
    for a, b in zip(mine, ref):
        assert _close(a, b), (a, b)


def compare(name_or_path: str, args: list, inputs: list, runner: str = "inline",
            exact: bool = True, **engine) -> tuple:
    path = name_or_path if os.sep in name_or_path else me.example_path(name_or_path)
    random.seed(1234)  # the log sampler draws, in the same order under both
    job, ours = me.run_adapter(path, args, inputs, **engine)
    random.seed(1234)
    theirs = me.run_mrjob(path, args, inputs, runner)
    assert_same(job, ours, theirs, exact)
    return job, ours, theirs


# ---------------------------------------------------------------- mrjob's examples

@pytest.mark.parametrize("name,args,inputs", [
    ("mr_word_freq_count", [], "text"),
    ("mr_most_used_word", [], "text"),
    ("mr_next_word_stats", [], "text"),
    ("mr_wc", [], "text"),
    ("mr_count_lines_right", [], "text"),
    ("mr_count_lines_wrong", [], "gz"),  # one map per .gz file under both: same records
    ("mr_count_lines_by_file", [], "gz"),
    ("mr_log_sampler", ["--sample-size", "20"], "text"),
    ("mr_log_sampler", ["--sample-size", "20", "--expected-length", "300"], "text"),
])
def test_example(data, name, args, inputs):
    compare(name, args, data[inputs])


def test_count_lines_by_file_mixed_inputs(data):
    _, ours, _ = compare("mr_count_lines_by_file", [], data["text"] + data["gz"])
    assert len(ours.lines) == 4


def test_most_used_word_with_its_stop_words_file_option(data):
    job, ours, _ = compare("mr_most_used_word", ["--stop-words-file", data["stop"]],
                           data["text"])
    assert "stop.txt" in mc.files(job) and "stop_words.txt" in mc.files(job)


def test_text_classifier_on_its_documents():
    docs = os.path.join(os.path.dirname(me.example_path("mr_text_classifier")),
                        "docs-to-classify")
    paths = sorted(os.path.join(docs, n) for n in os.listdir(docs))
    job, _, _ = compare("mr_text_classifier", [], paths, exact=False)
    assert mc.input_format(job) == "files"


@pytest.mark.usefixtures("shimmed_subprocesses")
@pytest.mark.parametrize("name,args", [
    ("mr_grep", ["-e", "qu"]),  # mapper_cmd
    ("mr_words_containing_u_freq_count", []),  # mapper_pre_filter
])
def test_command_example_against_the_local_runner(data, name, args):
    """mrjob's inline runner refuses commands; its local runner runs them."""
    compare(name, args, data["text"], runner="local")


def test_boom_fails_as_under_mrjob(data):
    with pytest.raises(Exception, match="BOOM"):
        me.run_mrjob(me.example_path("mr_boom"), [], data["text"])
    with pytest.raises(Exception, match="BOOM"):
        me.run_adapter(me.example_path("mr_boom"), [], data["text"])


def _wet_file(path: str) -> None:
    """A Common Crawl style .wet.gz: conversion records with phone numbers in them."""
    from warcio.warcwriter import WARCWriter
    rng = random.Random(3)
    with open(path, "wb") as f:
        writer = WARCWriter(f, gzip=True)
        for i in range(60):
            host = f"shop{rng.randint(1, 12)}.example.com"
            url = f"http://{host}/page/{i}{'x' * rng.randint(0, 5)}"
            phones = [f"({rng.randint(200, 299)}) 555-{rng.randint(1000, 1020)}"
                      for _ in range(rng.randint(0, 3))]
            text = f"{host}: call {' or '.join(phones)} today.\n".encode()
            kind = "text/plain" if i % 10 else "text/html"
            writer.write_record(writer.create_warc_record(
                url, "conversion", payload=io.BytesIO(text),
                warc_headers_dict={"Content-Type": kind}))


def test_phone_to_url_reads_its_gz_input(tmp_path):
    pytest.importorskip("warcio", reason="mr_phone_to_url needs warcio (pip install warcio)")
    wet = str(tmp_path / "crawl.warc.wet.gz")
    _wet_file(wet)
    job, ours, _ = compare("mr_phone_to_url", [], [wet])
    assert mc.input_format(job) == "files" and len(ours.lines) > 10


# ---------------------------------------------------------------- raw lines

def test_raw_input_bytes_are_read_as_mrjob_reads_them(data):
    """Given the line bytes (CR included, Latin-1 not replaced), output is mrjob's."""
    compare("mr_word_freq_count", [], data["odd"], raw=True)
    compare("mr_wc", [], data["odd"], raw=True)


@pytest.mark.usefixtures("shimmed_subprocesses")
def test_commands_see_raw_lines_with_their_cr(data):
    # in the C locale, grep takes the Latin-1 line for text rather than binary
    _, ours, _ = compare("mr_grep", ["-e", "caf", "--cmdenv", "LC_ALL=C"],
                         data["odd"], runner="local", raw=True)
    assert b"caf\xe9 \xfcber\r\n" in ours.lines


def test_text_lines_differ_only_where_bytes_were_lost(data):
    """From blfs's text lines, only the Latin-1 line reads differently (replaced bytes)."""
    path = me.example_path("mr_word_freq_count")
    job, ours = me.run_adapter(path, [], data["odd"])
    theirs = me.run_mrjob(path, [], data["odd"])
    diff = {line.split(b"\t")[0] for line in set(ours.lines) ^ set(theirs.lines)}
    assert diff == {b'"caf\\u00e9"', b'"\\u00fcber"', b'"caf"', b'"ber"'}  # U+FFFD cuts words


# ---------------------------------------------------------------- our own jobs

def test_features_counters_status_files_jobconf_cmdenv(data):
    args = ["--prefix", "x", "--extra", data["extra"], "--jobconf", "my.setting=cli",
            "--cmdenv", "MY_CMDENV=yes"]
    job, ours, theirs = compare(os.path.join(JOBS, "mrjob_features.py"), args, data["text"])
    assert ours.counters == theirs.counters
    assert ours.counters["features"]["lines"] == 300
    assert "known words; seen" in ours.counters["features"]
    assert ours.statuses and set(ours.statuses) == {"mapping"}
    assert [s.reducers for s in mc.steps(job)] == [2, 1]
    assert set(mc.files(job)) == {"mrjob_features.py", "known.txt", "extra.txt"}
    assert b'"x:the"\t[' in b"".join(ours.parts)
    assert not any(k.startswith("mapreduce_") for k in os.environ)


@pytest.mark.usefixtures("shimmed_subprocesses")
def test_commands_and_pre_filters_everywhere(data):
    compare(os.path.join(JOBS, "mrjob_commands.py"), [], data["text"], runner="local")


def test_first_step_without_a_mapper_shuffles_the_raw_lines(tmp_path):
    """Hadoop streaming's `cat` mapper: input lines cut at their first tab."""
    path = tmp_path / "job.py"
    path.write_text(JOB_HEAD + "from mrjob.protocol import RawProtocol\n"
                    "class J(MRJob):\n    INPUT_PROTOCOL = RawProtocol\n"
                    "    def reducer(self, key, values):\n"
                    "        yield key, sorted(values)\n")
    rng = random.Random(5)
    lines = [f"{rng.choice(WORDS)}\t{rng.randint(0, 9)}" for _ in range(200)] + ["no tab"]
    (tmp_path / "in.txt").write_text("\n".join(lines) + "\n")
    compare(str(path), [], [str(tmp_path / "in.txt")])


def test_jobconf_reducers_from_the_command_line(data):
    job = mc.load(open(me.example_path("mr_wc")).read(), me.example_path("mr_wc"),
                  ["--jobconf", "mapred.reduce.tasks=4"])
    assert [s.reducers for s in mc.steps(job)] == [4]
    job = mc.load(open(me.example_path("mr_wc")).read(), me.example_path("mr_wc"), [])
    assert [s.reducers for s in mc.steps(job)] == [None]


# ---------------------------------------------------------------- commands

def _reporter():
    seen = {"counters": [], "status": []}
    ctx = mc.TaskContext(increment_counter=lambda *a: seen["counters"].append(a),
                         set_status=seen["status"].append)
    return mc._Reporter(ctx), seen


def test_piped_command_streams_both_ways_and_reports():
    reporter, seen = _reporter()
    lines = (b"%d" % i for i in range(200_000))  # far more than a pipe holds
    script = "cat; echo reporter:counter:g,c,2 >&2; echo reporter:status:done >&2"
    out = mc._piped(["sh", "-c", script], lines, reporter)
    assert sum(1 for _ in out) == 200_000
    assert seen == {"counters": [("g", "c", 2)], "status": ["done"]}


def test_failing_command_fails_the_task():
    reporter, _ = _reporter()
    with pytest.raises(mc.CommandFailed, match="exited with status 3"):
        list(mc._piped(["sh", "-c", "cat >/dev/null; exit 3"], [b"x"], reporter))


# ---------------------------------------------------------------- refusals

@pytest.mark.parametrize("name,feature", [
    ("mr_jar_step_example", "JarStep"),
    ("mr_spark_wordcount", "SparkStep"),
    ("mr_spark_wordcount_script", "SparkScriptStep"),
    ("mr_sparkaboom", "SparkStep"),
    ("mr_nick_nack", "HADOOP_OUTPUT_FORMAT"),
    ("mr_nick_nack_input_format", "HADOOP_INPUT_FORMAT"),
])
def test_refused_examples(name, feature):
    path = me.example_path(name)
    job = mc.load(open(path).read(), path, [])
    why = mc.refused(job)
    assert feature in why and "\n" not in why
    with pytest.raises(JobDefinitionError, match=feature):
        mc.steps(job)


JOB_HEAD = "from mrjob.job import MRJob\nfrom mrjob.step import MRStep\n"


def _load(tmp_path, body: str, args=(), name="job.py"):
    path = tmp_path / name
    path.write_text(JOB_HEAD + body)
    return mc.load(path.read_text(), str(path), list(args))


@pytest.mark.parametrize("body,args,feature", [
    ("class J(MRJob):\n    PARTITIONER = 'org.example.Mine'\n"
     "    def mapper(self, k, v): yield k, v\n", [], "PARTITIONER"),
    ("class J(MRJob):\n    LIBJARS = ['x.jar']\n    def mapper(self, k, v): yield k, v\n",
     [], "LIBJARS"),
    ("class J(MRJob):\n    def mapper(self, k, v): yield k, v\n", ["--archives", "a.tar.gz"],
     "ARCHIVES"),
    ("class J(MRJob):\n    def mapper(self, k, v): yield k, v\n", ["--setup", "true"],
     "--setup"),
    ("class J(MRJob):\n    JOBCONF = {'mapred.output.key.comparator.class': 'x.Y'}\n"
     "    def mapper(self, k, v): yield k, v\n", [], "comparator"),
    ("class J(MRJob):\n    def steps(self):\n        return [MRStep(reducer=self.r), "
     "MRStep(mapper_raw=self.m)]\n    def r(self, k, v): yield k, v\n"
     "    def m(self, p, u): yield p, u\n", [], "mapper_raw"),
    ("class J(MRJob):\n    pass\n", [], "no steps"),
])
def test_refused_features(tmp_path, body, args, feature):
    why = mc.refused(_load(tmp_path, body, args))
    assert why and feature in why and "\n" not in why


def test_hash_partitioner_is_the_default_and_accepted(tmp_path):
    job = _load(tmp_path, "class J(MRJob):\n    PARTITIONER = "
                "'org.apache.hadoop.mapred.lib.HashPartitioner'\n"
                "    def mapper(self, k, v): yield k, v\n")
    assert mc.refused(job) is None


# ---------------------------------------------------------------- finding and loading

@pytest.mark.parametrize("source,expected", [
    (JOB_HEAD + "class J(MRJob): pass\n", True),
    ("from mrjob.job import MRJob as Base\nclass J(Base): pass\n", True),
    ("import mrjob.job as mj\nclass J(mj.MRJob): pass\n", True),
    ("import mrjob.job\nclass J(mrjob.job.MRJob): pass\n", True),
    ("from mrjob import job\nclass J(job.MRJob): pass\n", True),
    (JOB_HEAD + "class A(MRJob): pass\nclass B(A): pass\n", True),
    ("from blfsd import Job\nclass J(Job): pass\n", False),
    ("class MRJob: pass\nclass J(MRJob): pass\n", False),
    ("this is not python(\n", False),
])
def test_is_mrjob_source(source, expected):
    assert mc.is_mrjob_source(source) is expected


def test_load_picks_the_class_the_file_runs(tmp_path):
    body = ("class A(MRJob):\n    def mapper(self, k, v): yield k, v\n"
            "class B(MRJob):\n    def mapper(self, k, v): yield k, v\n"
            "if __name__ == '__main__':\n    B.run()\n")
    assert type(_load(tmp_path, body)).__name__ == "B"
    path = tmp_path / "job.py"
    assert type(mc.load(path.read_text(), str(path), [], name="A")).__name__ == "A"
    with pytest.raises(JobDefinitionError, match="no MRJob class named C"):
        mc.load(path.read_text(), str(path), [], name="C")


def test_load_errors_are_one_line(tmp_path):
    with pytest.raises(UsageError, match="sample-size") as exc:
        mc.load(open(me.example_path("mr_log_sampler")).read(),
                me.example_path("mr_log_sampler"), [])
    assert "\n" not in str(exc.value)
    with pytest.raises(JobDefinitionError, match="syntax error"):
        mc.load("from mrjob.job import MRJob\nclass J(MRJob)\n", str(tmp_path / "j.py"), [])
    with pytest.raises(JobDefinitionError, match="several MRJob classes"):
        _load(tmp_path, "class A(MRJob): pass\nclass B(MRJob): pass\n")


# ---------------------------------------------------------------- importing mrjob

def _python(code: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=REPO)
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          env=env, timeout=60)


def test_without_mrjob_one_line_says_how_to_install_it():
    code = ("import sys; sys.modules['mrjob'] = None\n"
            "from blfsd import mrjob_compat as m\n"
            "try:\n    m.load('from mrjob.job import MRJob\\n', 'j.py', [])\n"
            "except Exception as e:\n    print(type(e).__name__, e)\n")
    out = _python(code)
    assert out.returncode == 0, out.stderr
    assert out.stdout.startswith("JobDefinitionError ") and out.stdout.count("\n") == 1
    assert "pip install mrjob" in out.stdout


def test_shims_stand_in_for_pipes_and_distutils():
    """As on Python 3.12/3.13, where these modules are gone."""
    hide = "; ".join(f"sys.modules[{m!r}] = None"
                     for m in ("pipes", "distutils", "distutils.spawn", "distutils.version"))
    code = (f"import sys; {hide}\n"
            "from blfsd import mrjob_compat as m\n"
            "m.import_mrjob()\n"
            "import pipes, mrjob.util, mrjob.compat, mrjob.inline, mrjob.local\n"
            "from distutils.version import LooseVersion as V\n"
            "from distutils.spawn import find_executable\n"
            "assert pipes.__doc__.startswith('blfs')\n"
            "assert mrjob.util.cmd_line(['a b', 'c']) == \"'a b' c\"\n"
            "assert mrjob.compat.version_gte('2.10.1', '2.9')\n"
            "assert mrjob.compat.uses_yarn('2.7.1') and not mrjob.compat.uses_yarn('1.2')\n"
            "assert mrjob.compat.translate_jobconf('mapreduce.job.reduces', '1.0')"
            " == 'mapred.reduce.tasks'\n"
            "assert V('1.10') > V('1.9') and V('0.20') < '0.20.1' and str(V('2.0')) == '2.0'\n"
            "assert find_executable('sh')\n"
            "print('ok')\n")
    out = _python(code)
    assert out.stdout == "ok\n", out.stderr
