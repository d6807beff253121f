"""Records (blfsd.records) and the map side's output buffer (blfsd.runtime.MapOutput).

Job API: the default partition is the same in every process and on every node, keys
arrive sorted within a partition, output lines are `key<TAB>value` (str for str/int/float,
JSON for lists and maps). Data path: a map buffers and combines its output up to a limit,
then spills sorted segments per partition.
"""
from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from collections import Counter
from itertools import chain

import msgpack
import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from blfsd import storage
from blfsd.job import Job
from blfsd.records import (canonical, chunk_pairs, decode_pairs, default_partition,
                           encode_pairs, format_line, sort_pairs)
from blfsd.runtime import MapOutput

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# Built the same way in this process and in every child process.
KEYS_SRC = r'''[
    "", "a", "word", "Word", "ünïcödé", "日本語", "emoji 🎉", "tab\tsep", "\x00nul",
    "a" * 1000, "\ud800 lone surrogate",
    b"", b"bytes", b"\xff\xfe\x00", b"a",
    0, 1, -1, 255, 256, 2**31, 2**63 - 1, -2**63, 10**18,
    0.0, 1.5, -2.25, 1e300, 5e-324, float("inf"), float("-inf"),
    None, True, False,
    [], [1, 2, 3], ["a", [b"b", None]], [1.5, True], (1, 2),
    {}, {"a": 1}, {"k": [1, {"n": None}]}, {"x": b"y", "z": 2.5}, {1: "int key"},
]'''
NS = [1, 2, 3, 7, 10, 64, 1000, 2**31 - 1]
CHILD = f"""
import json
from blfsd.records import default_partition
keys = {KEYS_SRC}
print(json.dumps({{"hash": hash("blfs hash seed probe"),
                  "parts": [[default_partition(k, n) for n in {NS!r}] for k in keys]}}))
"""


def _in_child(seed: str) -> dict:
    env = dict(os.environ, PYTHONHASHSEED=seed)
    out = subprocess.run([sys.executable, "-c", CHILD], cwd=REPO, env=env, check=True,
                         capture_output=True, text=True, timeout=60)
    return json.loads(out.stdout)


# --------------------------------------------------------------- default_partition


def test_default_partition_is_the_same_in_every_process():
    keys = eval(KEYS_SRC)  # noqa: S307 - our own literal
    here = [[default_partition(k, n) for n in NS] for k in keys]
    children = {seed: _in_child(seed) for seed in ("0", "1", "2", "random")}
    # the seeds really differ (otherwise this test would prove nothing)
    assert len({c["hash"] for c in children.values()}) >= 3
    for seed, child in children.items():
        assert child["parts"] == here, f"PYTHONHASHSEED={seed} partitions differently"
    for k, row in zip(keys, here):
        for n, p in zip(NS, row):
            assert isinstance(p, int) and 0 <= p < n, (k, n, p)


def test_default_partition_of_a_tuple_matches_the_list_it_decodes_to():
    # a tuple key travels as a msgpack array and comes back as a list
    for n in (2, 7, 64):
        assert default_partition((1, "a"), n) == default_partition([1, "a"], n)
        k = decode_pairs(encode_pairs([((1, "a"), 0)]))[0][0]
        assert default_partition(k, n) == default_partition((1, "a"), n)


@pytest.mark.parametrize("n", [2, 3, 7, 8, 10, 16, 100])
@pytest.mark.parametrize("family", ["words", "ints", "floats", "bytes", "lists"])
def test_default_partition_spreads_keys(n, family):
    count = 20_000
    make = {
        "words": lambda i: f"word{i}",
        "ints": lambda i: i,
        "floats": lambda i: i / 7,
        "bytes": lambda i: i.to_bytes(4, "big"),
        "lists": lambda i: [i % 97, str(i)],
    }[family]
    seen = Counter(default_partition(make(i), n) for i in range(count))
    assert set(seen) == set(range(n)), f"unused partitions: {set(range(n)) - set(seen)}"
    expected = count / n
    worst = max(abs(c - expected) for c in seen.values())
    assert worst <= 5 * math.sqrt(expected), f"{family} over {n}: {sorted(seen.items())}"


def test_default_partition_of_one_partition_is_zero():
    for k in eval(KEYS_SRC):  # noqa: S307
        assert default_partition(k, 1) == 0


def test_equal_map_keys_get_the_same_partition():
    a = {"a": 1, "b": 2}
    b = {"b": 2, "a": 1}
    assert a == b
    assert [default_partition(a, n) for n in range(1, 40)] == \
        [default_partition(b, n) for n in range(1, 40)]


def test_equal_map_keys_are_equal_in_canonical_order():
    a = {"a": 1, "b": 2}
    b = {"b": 2, "a": 1}
    assert canonical(a) == canonical(b)


# --------------------------------------------------------------------- ordering

msgpack_scalars = (st.none() | st.booleans() | st.integers(-2**63, 2**64 - 1)
                   | st.floats(allow_nan=False) | st.text(max_size=8) | st.binary(max_size=8))
msgpack_values = st.recursive(
    msgpack_scalars,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=4), inner,
                                                                max_size=3),
    max_leaves=8)


def test_sort_pairs_natural_order():
    pairs = [("pear", 1), ("apple", 2), ("fig", 3), ("apple", 4)]
    assert sort_pairs(pairs) is False
    assert pairs == [("apple", 2), ("apple", 4), ("fig", 3), ("pear", 1)]
    nums = [(3, "a"), (1.5, "b"), (-2, "c"), (10**20, "d")]
    assert sort_pairs(nums) is False
    assert [k for k, _ in nums] == [-2, 1.5, 3, 10**20]
    lists = [([2, "b"], 0), ([1, "z"], 1), ([2, "a"], 2)]
    assert sort_pairs(lists) is True  # lists need the canonical key, and sort the same
    assert [k for k, _ in lists] == [[1, "z"], [2, "a"], [2, "b"]]
    empty: list = []
    assert sort_pairs(empty) is False and empty == []


def test_sort_pairs_canonical_order_for_mixed_types():
    pairs = [("b", 1), (2, 2), (None, 3), (b"x", 4), ([1], 5), ({"a": 1}, 6), (True, 7),
             (1.5, 8), ("a", 9), (-1, 10), (b"a", 11), (False, 12)]
    assert sort_pairs(pairs) is True
    assert [v for _, v in pairs] == [3, 12, 7, 10, 8, 2, 9, 1, 11, 4, 5, 6]
    assert [k for k, _ in pairs] == [None, False, True, -1, 1.5, 2, "a", "b", b"a", b"x", [1],
                                     {"a": 1}]


@settings(max_examples=300, deadline=None)
@given(st.lists(st.integers(0, 5), max_size=60))
def test_sort_pairs_is_stable(keys):
    pairs = [(k, i) for i, k in enumerate(keys)]
    assert sort_pairs(pairs) is False
    assert pairs == sorted(((k, i) for i, k in enumerate(keys)))  # (k, index): stable


@settings(max_examples=300, deadline=None)
@given(st.lists(st.sampled_from([0, 1, 2, 2.5, "a", "b", b"x", None, True, [1], [2], {"m": 1}]),
                max_size=60))
def test_sort_pairs_canonical_fallback_is_stable(keys):
    pairs = [(k, i) for i, k in enumerate(keys)]
    used = sort_pairs(pairs)
    if used:
        ck = [canonical(k) for k, _ in pairs]
        assert ck == sorted(ck)
    else:
        ks = [k for k, _ in pairs]
        assert all(a <= b for a, b in zip(ks, ks[1:]))
    # values of one key keep their original order (indexes ascending)
    by_key: dict = {}
    for k, i in pairs:
        by_key.setdefault((type(k).__name__, msgpack.packb(k)), []).append(i)
    for idx in by_key.values():
        assert idx == sorted(idx)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(msgpack_values, max_size=30))
def test_sort_pairs_never_fails_and_sorts_by_the_order_it_reports(keys):
    pairs = [(k, i) for i, k in enumerate(keys)]
    used = sort_pairs(pairs)
    assert sorted(i for _, i in pairs) == list(range(len(keys)))
    ks = [k for k, _ in pairs]
    ck = [canonical(k) for k in ks]
    assert ck == sorted(ck)  # whatever the path, the result is in canonical order
    if not used:
        assert all(a <= b for a, b in zip(ks, ks[1:]))


@pytest.mark.parametrize("keys", [[0, True], [[1.5], [2]], [[-1], [2]], [["aa"], ["b"]]],
                         ids=["zero-true", "float-list", "neg-list", "str-list"])
def test_natural_order_is_also_canonical_order(keys):
    """Runs from different maps merge by one order: every run is in canonical order."""
    pairs = [(k, i) for i, k in enumerate(keys)]
    sort_pairs(pairs)
    ck = [canonical(k) for k, _ in pairs]
    assert ck == sorted(ck)


# ------------------------------------------------------------------- chunk_pairs

pair_values = st.one_of(st.integers(-2**63, 2**64 - 1), st.text(max_size=30),
                        st.binary(max_size=30), st.lists(st.integers(-2**63, 2**63 - 1),
                                                         max_size=5),
                        st.none(), st.booleans())


@settings(max_examples=300, deadline=None)
@given(st.lists(st.tuples(st.text(max_size=20), pair_values), max_size=80),
       st.integers(0, 400))
def test_chunk_pairs_respects_the_limit_and_decodes_back(pairs, extra):
    pairs.sort(key=lambda p: p[0])
    single = max((len(encode_pairs([p])) for p in pairs), default=1)
    limit = single + extra
    chunks = list(chunk_pairs(pairs, limit))
    assert all(0 < len(c) <= limit for c in chunks)
    back = list(chain.from_iterable(decode_pairs(c) for c in chunks))
    assert back == [list(p) for p in pairs]
    assert all(decode_pairs(c) for c in chunks)  # no empty chunk
    if len(encode_pairs(pairs)) <= limit:
        assert len(chunks) == (1 if pairs else 0)


@pytest.mark.parametrize("seed", range(12))
def test_large_partitions_respect_the_limit_and_decode_back(seed):
    """Partitions larger than the size sample, whose records may grow past it (the sample
    then guesses too small a size per record, and a chunk must shrink)."""
    import random
    rng = random.Random(seed)
    n = rng.randint(257, 3000)
    grow = rng.choice([1, 1, 20])  # records after the sample may be 20 times larger
    pairs = sorted((f"k{i:05d}", "v" * rng.randint(0, 60) * (grow if i > 256 else 1))
                   for i in range(n))
    limit = rng.randint(1300, 60_000)
    chunks = list(chunk_pairs(pairs, limit))
    assert all(0 < len(c) <= limit for c in chunks)
    assert list(chain.from_iterable(decode_pairs(c) for c in chunks)) == [list(p) for p in pairs]


def test_pairs_are_packed_strictly_unless_their_text_holds_lone_surrogates(monkeypatch):
    """encode_pairs packs without msgpack's error handler (its fast path for text) and
    falls back to surrogatepass only for text UTF-8 cannot carry: the same bytes as the
    handler gives, and lone surrogates still cross the shuffle as they are."""
    calls = []
    real = msgpack.packb
    monkeypatch.setattr(msgpack, "packb", lambda obj, **kw: calls.append(
        kw.get("unicode_errors")) or real(obj, **kw))
    plain = [("k1", "ünïcödé 日本語 🎉"), ("k2", b"\xff"), ("k3", [1, None])]
    assert encode_pairs(plain) == real(plain, use_bin_type=True, unicode_errors="surrogatepass")
    assert calls == [None]
    calls.clear()
    odd = [("k", "bad \udcff byte"), ("\ud800", "v")]
    data = encode_pairs(odd)
    assert calls == [None, "surrogatepass"]
    assert data == real(odd, use_bin_type=True, unicode_errors="surrogatepass")
    assert [tuple(p) for p in decode_pairs(data)] == odd


def test_a_large_partition_is_encoded_about_once(monkeypatch):
    """Issue 13's profile: a spill's partition was encoded whole, found too big, and encoded
    again in pieces. Now the pairs encoded in all are the partition once, and a sample."""
    from blfsd import records
    encoded = []
    real = records.encode_pairs
    monkeypatch.setattr(records, "encode_pairs", lambda ps: encoded.append(len(ps)) or real(ps))
    pairs = [(f"k{i:07d}", "v" * 88) for i in range(100_000)]
    chunks = list(records.chunk_pairs(pairs, 1 << 20))
    assert len(chunks) >= 10
    assert sum(encoded) <= len(pairs) * 1.15 + records.SAMPLE, (sum(encoded), len(encoded))


def test_chunk_pairs_edge_cases():
    assert list(chunk_pairs([], 10)) == []
    big = [("k", "x" * 100)]
    with pytest.raises(ValueError, match="over 50"):
        list(chunk_pairs(big, 50))
    # a record exactly at the limit fits
    limit = len(encode_pairs(big))
    assert list(chunk_pairs(big, limit)) == [encode_pairs(big)]
    # mixed: the oversized record fails even after smaller ones went out
    with pytest.raises(ValueError):
        list(chunk_pairs([("a", 1)] * 5 + big, 50))


def test_chunk_pairs_does_not_shrink_for_good_after_one_big_record():
    limit = 1000
    pairs = [("big", "x" * 980)] + [("k", i) for i in range(1000)]
    chunks = list(chunk_pairs(pairs, limit))
    total = sum(len(c) for c in chunks)
    assert len(chunks) <= 3 * math.ceil(total / limit) + 1, len(chunks)


# ------------------------------------------------------------------- format_line


@pytest.mark.parametrize("key,value,line", [
    ("word", 3, "word\t3\n"),
    ("ünï 日本", -7, "ünï 日本\t-7\n"),
    (42, "x", "42\tx\n"),
    (10**20, 0, "100000000000000000000\t0\n"),
    (1.5, 0.1, "1.5\t0.1\n"),
    (2.0, 1e-7, "2.0\t1e-07\n"),
    (True, False, "true\tfalse\n"),
    (None, None, "null\tnull\n"),
    ("k", [1, "a", None, True], 'k\t[1, "a", null, true]\n'),
    ("k", {"n": [1, 2], "s": "t"}, 'k\t{"n": [1, 2], "s": "t"}\n'),
    (["a", 1], {}, '["a", 1]\t{}\n'),
    (b"bytes", b"\xff\x00z", "bytes\t\\xff\x00z\n"),
    (b"caf\xc3\xa9", "", "café\t\n"),
    ("", "", "\t\n"),
])
def test_format_line(key, value, line):
    assert format_line(key, value) == line


@settings(max_examples=300, deadline=None)
@given(st.recursive(st.none() | st.booleans() | st.integers() | st.text()
                    | st.floats(allow_nan=False, allow_infinity=False),
                    lambda inner: st.lists(inner, max_size=3)
                    | st.dictionaries(st.text(max_size=5), inner, max_size=3),
                    max_leaves=10))
def test_format_line_lists_and_maps_are_json(value):
    line = format_line("k", value)
    assert line.startswith("k\t") and line.endswith("\n")
    field = line[2:-1]
    if isinstance(value, str):
        assert field == value
    elif isinstance(value, bool) or value is None or isinstance(value, (list, dict)):
        assert json.loads(field) == value
    else:  # int, float
        assert field == str(value)


class _Str(str):
    """A str subclass: formatted as format_field formats any str (as it is)."""


def test_format_line_text_fast_path_gives_what_format_field_gives():
    for key, value in (("k", "v"), ("", ""), ("ünï", "日本\t"), (_Str("s"), "v"),
                       ("k", _Str("w")), ("\udcff", "x")):
        assert format_line(key, value) == f"{key}\t{value}\n"


def test_part_lines_written_in_batches_are_the_lines_written_one_by_one(tmp_path):
    """PartOutput writes a batch of lines at once (write_lines): the same file, size and
    crc32 as line by line, also when a batch mixes text and bytes (an mrjob protocol)."""
    from blfsd.runtime.parts import PartOutput, PartWriter

    def written(name: str, batched: bool) -> tuple:
        path = tmp_path / name
        w = PartWriter(os.open(path, os.O_WRONLY | os.O_CREAT, 0o600), str(path))
        w.BLOCK = 4096  # several flushes
        if batched:
            out = PartOutput(w, lambda k, v: v)
            out.add_pairs((None, line) for line in lines)
            assert out.records == len(lines)
        else:
            for line in lines:
                w.write(line)
        w.finish()
        w.close()
        return path.read_bytes(), w.size, w.crc

    mixed = ["a\tb\n", "ü\t1\n", b"raw\tbytes\n", "t\n", b"x\n", b"y\n"] * 700
    text = [f"k{i}\tv\n" for i in range(3000)] + [b"tail\n"] * 1500
    for n, lines in enumerate((mixed, text)):
        data, size, crc = written(f"one-by-one-{n}", False)
        assert written(f"batched-{n}", True) == (data, size, crc)
        assert data == b"".join(x.encode() if isinstance(x, str) else x for x in lines)


def test_format_line_bytes_inside_json_are_decoded():
    assert format_line("k", [b"ab", {"x": b"\xc3\xa9"}]) == 'k\t["ab", {"x": "\\u00e9"}]\n'


def test_format_line_refuses_what_is_not_a_msgpack_value():
    with pytest.raises(TypeError):
        format_line("k", [object()])


def test_format_line_map_with_bytes_keys():
    line = format_line("k", {b"a": 1})
    assert json.loads(line.split("\t", 1)[1]) == {"a": 1}


# --------------------------------------------------------------------- MapOutput


class FakeSink:
    def __init__(self, max_payload: int = 1 << 20):
        self.max_payload = max_payload
        self.writes: list = []  # (sid, payload, flags)

    def write(self, sid, payload: bytes, flags: int = 0) -> None:
        assert len(payload) <= self.max_payload
        self.writes.append((sid, payload, flags))

    def pairs(self, partition=None) -> list:
        return [tuple(p) for sid, payload, _ in self.writes
                if partition is None or sid[0] == partition for p in decode_pairs(payload)]


class FakeReporter:
    def __init__(self):
        self.counts: Counter = Counter()
        self.progress = 0.0

    def count(self, name: str, n: int) -> None:
        self.counts[name] += n

    def add_time(self, name: str, seconds: float) -> None:
        self.counts[name] += int(seconds * 1000)

    def maybe(self, progress: float) -> None:
        self.progress = progress


class Plain(Job):
    pass


class Recording(Job):
    """A combiner that records what it was given and passes it through as a list."""

    def __init__(self):
        super().__init__()
        self.calls: list = []

    def combine(self, key, values):
        values = list(values)
        self.calls.append((key, values))
        yield key, len(values)


def sid(p, run, seq):
    return (p, run, seq)


def make_out(job, reducers=3, limit=10**6, max_payload=1 << 20, segment_max=1 << 20):
    sink, rep = FakeSink(max_payload), FakeReporter()
    return MapOutput.for_job(job, reducers, sid, sink, limit, rep, segment_max), sink, rep


def one_pair(key, value):
    """A map that yields its input record as its one output pair."""
    yield key, value


def feed(out: MapOutput, pairs: list) -> None:
    """One batch of input records, each of which the map turns into that very pair."""
    out.add(one_pair, [k for k, _ in pairs], [v for _, v in pairs])


def test_map_output_without_combiner_partitions_and_sorts():
    out, sink, rep = make_out(Plain(), reducers=3)
    pairs = [(f"w{i % 17}", i) for i in range(100)]
    feed(out, pairs[:60])
    feed(out, pairs[60:])
    assert sink.writes == []  # nothing before the limit or the final spill
    out.spill()
    assert Counter(sink.pairs()) == Counter(pairs)
    for (p, run, seq), payload, flags in sink.writes:
        assert run == 0 and seq == 0 and flags == 0
        got = decode_pairs(payload)
        assert all(default_partition(k, 3) == p for k, _ in got)
        assert [k for k, _ in got] == sorted(k for k, _ in got)
        # stable: values of one key in the order the map gave them
        for key in {k for k, _ in got}:
            vals = [v for k, v in got if k == key]
            assert vals == sorted(vals)
    assert rep.counts["map_output_records"] == 100
    assert rep.counts["map_spills"] == 1


def test_combine_gets_all_values_of_a_key():
    job = Recording()
    out, sink, rep = make_out(job, reducers=2)
    words = "a b a c a b d a".split()
    for i in range(0, len(words), 3):
        feed(out, [(w, 1) for w in words[i:i + 3]])
    feed(out, [("a", 2), ("b", 5)])
    out.spill()
    calls = {k: sorted(v) for k, v in job.calls}
    assert len(job.calls) == len(calls)  # one call per key in one spill
    assert calls == {"a": [1, 1, 1, 1, 2], "b": [1, 1, 5], "c": [1], "d": [1]}
    assert dict(sink.pairs()) == {"a": 5, "b": 3, "c": 1, "d": 1}
    assert rep.counts["map_output_records"] == len(words) + 2


def test_combine_falls_back_to_a_list_midway_and_stays_exact():
    job = Recording()
    out, sink, rep = make_out(job, reducers=2)
    feed(out, [("a", 1), ("b", 1), ("a", 1)])          # counted
    feed(out, [("a", 1), ("c", [1, 2]), ("a", 1)])     # unhashable in the middle
    feed(out, [("b", 1), ("c", [3])])                  # after the fallback
    feed(out, [("d", 7)])
    out.spill()
    calls = {k: v for k, v in job.calls}
    assert len(job.calls) == len(calls)
    assert sorted(calls["a"]) == [1, 1, 1, 1]
    assert sorted(calls["b"]) == [1, 1]
    assert sorted(calls["c"]) == [[1, 2], [3]]
    assert calls["d"] == [7]
    assert dict(sink.pairs()) == {"a": 4, "b": 2, "c": 2, "d": 1}
    assert rep.counts["map_output_records"] == 9


@pytest.mark.parametrize("where", [0, 1, 2])
def test_unhashable_first_middle_or_last_in_its_batch(where):
    job = Recording()
    out, sink, rep = make_out(job, reducers=1)
    feed(out, [("x", 1), ("x", 1)])
    batch = [("x", 1), ("x", 1)]
    batch.insert(where, ("y", {"m": 1}))
    feed(out, batch)
    out.spill()
    calls = dict(job.calls)
    assert calls == {"x": [1, 1, 1, 1], "y": [{"m": 1}]}
    assert rep.counts["map_output_records"] == 5


def test_fallback_in_a_later_chunk_of_one_big_batch():
    """One add() of more records than MapOutput counts at once: the first chunks are
    counted, a later one holds a list value; nothing is lost or counted twice."""
    job = Recording()
    out, sink, rep = make_out(job, reducers=2)
    n = 3 * MapOutput.BATCH + 17
    pairs = [(f"k{i % 5}", 1) for i in range(n)]
    pairs[2 * MapOutput.BATCH + 3] = ("k1", [9, 9])
    feed(out, pairs)
    out.spill()
    calls = {k: v for k, v in job.calls}
    assert len(job.calls) == len(calls) == 5
    expected: dict = {}
    for k, v in pairs:
        expected.setdefault(k, []).append(v)
    assert {k: sorted(map(repr, v)) for k, v in calls.items()} == \
        {k: sorted(map(repr, v)) for k, v in expected.items()}
    assert rep.counts["map_output_records"] == n


def test_unhashable_key_in_a_batch_of_equal_values():
    job = Recording()
    out, sink, rep = make_out(job, reducers=1)
    feed(out, [("a", 1), ("b", 1)])
    feed(out, [("a", 1), (["list", "key"], 1), ("b", 1), ("a", 1)])  # all values equal
    feed(out, [("a", 1), ("c", 2)])
    out.spill()
    calls = {repr(k): sorted(v) for k, v in job.calls}
    assert calls == {"'a'": [1, 1, 1, 1], "'b'": [1, 1], "['list', 'key']": [1], "'c'": [2]}
    assert rep.counts["map_output_records"] == 8


def test_equal_value_batches_and_mixed_batches_combine_together():
    job = Recording()
    out, sink, rep = make_out(job, reducers=1)
    feed(out, [("a", 1)] * 5 + [("b", 1)] * 3)   # all values 1
    feed(out, [("a", 2), ("b", 3), ("a", 1)])    # mixed values
    feed(out, [("a", 7), ("c", 7)])              # all values 7
    out.spill()
    calls = {k: sorted(v) for k, v in job.calls}
    assert len(job.calls) == 3
    assert calls == {"a": [1, 1, 1, 1, 1, 1, 2, 7], "b": [1, 1, 1, 3], "c": [7]}


def test_map_runs_once_per_record_and_may_yield_any_number_of_pairs():
    calls = []

    def mapper(key, value):
        calls.append(key)
        for word in value.split():
            yield word, 1

    job = Recording()
    out, sink, rep = make_out(job, reducers=2)
    lines = ["a b", "", "b c c", "a"] * 100
    out.add(mapper, list(range(len(lines))), lines)
    out.spill()
    assert calls == list(range(len(lines)))
    assert dict(sink.pairs()) == {"a": 200, "b": 200, "c": 200}
    assert rep.counts["map_output_records"] == 600


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.lists(st.tuples(st.sampled_from("abcde"),
                                   st.integers(0, 3) | st.lists(st.integers(0, 3), max_size=2)),
                         max_size=12)
                | st.tuples(st.lists(st.sampled_from("abcde") | st.just(["k"]), max_size=300),
                            st.sampled_from([1, 2, [1]])).map(
                                lambda kv: [(k, kv[1]) for k in kv[0]]),  # one value
                max_size=8),
       st.integers(1, 30), st.integers(1, 4))
def test_combined_output_is_exact_whatever_the_batches(batches, limit, reducers):
    job = Recording()
    out, sink, rep = make_out(job, reducers=reducers, limit=limit)
    for b in batches:
        feed(out, b)
    out.spill()
    expected: dict = {}
    for k, v in chain.from_iterable(batches):
        expected.setdefault(repr(k), []).append(msgpack.packb(v))
    seen: dict = {}
    for k, values in job.calls:
        seen.setdefault(repr(k), []).extend(msgpack.packb(v) for v in values)
    assert {k: sorted(v) for k, v in seen.items()} == {k: sorted(v) for k, v in expected.items()}
    # the combiner's outputs, summed over spills, account for every record
    totals: Counter = Counter()
    for k, n in sink.pairs():
        totals[repr(k)] += n
        assert default_partition(k, reducers) in range(reducers)
    assert totals == Counter({k: len(v) for k, v in expected.items()})
    assert rep.counts["map_output_records"] == sum(len(b) for b in batches)
    # each spill's segments: one run number per spill, keys sorted, right partition
    for (p, run, seq), payload, flags in sink.writes:
        keys = [k for k, _ in decode_pairs(payload)]
        order = [canonical(k) for k in keys] if flags else keys
        assert order == sorted(order)
        assert len(set(map(repr, keys))) == len(keys)
        assert all(default_partition(k, reducers) == p for k in keys)
        assert run < rep.counts["map_spills"]


def test_spill_when_the_record_limit_is_reached():
    out, sink, rep = make_out(Plain(), reducers=1, limit=5)
    feed(out, [("a", i) for i in range(3)])
    assert sink.writes == []
    feed(out, [("b", i) for i in range(3)])  # 6 >= 5: spill now
    assert [w[0] for w in sink.writes] == [(0, 0, 0)]
    assert len(sink.pairs()) == 6
    feed(out, [("c", i) for i in range(5)])  # exactly the limit: spill
    assert [w[0] for w in sink.writes] == [(0, 0, 0), (0, 1, 0)]
    feed(out, [("d", 0)])
    out.spill()
    assert [w[0] for w in sink.writes] == [(0, 0, 0), (0, 1, 0), (0, 2, 0)]
    assert rep.counts["map_spills"] == 3
    assert rep.counts["map_output_records"] == 12
    # each spill is one sorted run
    for _, payload, _ in sink.writes:
        keys = [k for k, _ in decode_pairs(payload)]
        assert keys == sorted(keys)


def test_combiner_limit_counts_distinct_records():
    job = Recording()
    out, sink, rep = make_out(job, reducers=1, limit=5)
    for _ in range(50):
        feed(out, [("same", 1)] * 10)  # 500 records, one distinct pair
    assert sink.writes == []
    feed(out, [(f"k{i}", 1) for i in range(4)])  # 5 distinct pairs: spill
    assert len(sink.writes) == 1
    assert dict(sink.pairs())["same"] == 500
    assert rep.counts["map_output_records"] == 504


def test_segments_are_chunked_to_the_payload_limit():
    out, sink, rep = make_out(Plain(), reducers=2, max_payload=200, segment_max=10**6)
    assert out.segment_max == 200
    pairs = [(f"key-{i:04d}", "v" * 20) for i in range(200)]
    feed(out, pairs)
    out.spill()
    assert all(len(payload) <= 200 for _, payload, _ in sink.writes)
    for p in range(2):
        seqs = [s[2] for s, _, _ in sink.writes if s[0] == p]
        assert seqs == list(range(len(seqs))) and len(seqs) > 1
        got = sink.pairs(p)
        assert [k for k, _ in got] == sorted(k for k, _ in got)
    assert Counter(sink.pairs()) == Counter(pairs)


def test_mixed_key_types_are_flagged_canonical():
    out, sink, rep = make_out(Plain(), reducers=1)
    feed(out, [("b", 1), (2, 2), (None, 3), (b"x", 4), ("a", 5)])
    out.spill()
    ((s, payload, flags),) = sink.writes
    assert flags == storage.FLAG_CANONICAL_ORDER
    keys = [k for k, _ in decode_pairs(payload)]
    assert keys == [None, 2, "a", "b", b"x"]
    out2, sink2, _ = make_out(Plain(), reducers=1)
    feed(out2, [("b", 1), ("a", 2)])
    out2.spill()
    assert sink2.writes[0][2] == 0


class ByLength(Job):
    def partition(self, key, n):
        return len(key) % n


class Returns(Job):
    value = None

    def partition(self, key, n):
        return self.value


def test_custom_partition_is_used():
    out, sink, _ = make_out(ByLength(), reducers=3)
    feed(out, [("a", 1), ("bb", 2), ("ccc", 3), ("dddd", 4)])
    out.spill()
    assert {s[0]: [k for k, _ in decode_pairs(p)] for s, p, _ in sink.writes} == \
        {1: ["a", "dddd"], 2: ["bb"], 0: ["ccc"]}


@pytest.mark.parametrize("bad", [3, 4, -1, "1", 1.0, None, [0]])
@pytest.mark.parametrize("key", ["hashable", ["unhashable"]])
@pytest.mark.parametrize("combiner", [False, True])
def test_custom_partition_out_of_range_raises(bad, key, combiner):
    cls = type("BadPart", (Returns,) + ((Recording,) if combiner else ()), {"value": bad})
    out, sink, _ = make_out(cls(), reducers=3)
    feed(out, [(key, 1)])
    with pytest.raises(ValueError, match=r"partition\(\) returned"):
        out.spill()
    assert sink.writes == []


def test_combine_receives_the_values_the_map_emitted():
    job = Recording()
    out, sink, _ = make_out(job, reducers=1)
    feed(out, [("k", 1), ("k", 1.0), ("k", True)])
    out.spill()
    ((key, values),) = job.calls
    assert sorted(repr(v) for v in values) == ["1", "1.0", "True"]


def test_partition_of_a_key_does_not_depend_on_earlier_keys():
    n = 3
    assert default_partition(1, n) != default_partition(True, n)  # the setting of the bug
    alone, sink_a, _ = make_out(Plain(), reducers=n)
    feed(alone, [(True, "t")])
    alone.spill()
    after, sink_b, _ = make_out(Plain(), reducers=n)
    feed(after, [(1, "one"), (True, "t")])
    after.spill()
    where_a = [s[0] for s, p, _ in sink_a.writes if any(v == "t" for _, v in decode_pairs(p))]
    where_b = [s[0] for s, p, _ in sink_b.writes if any(v == "t" for _, v in decode_pairs(p))]
    assert len(where_a) == len(where_b) == 1
    assert where_a == where_b


class Numbering(Recording):
    """A map with per-task state (as `setup` invites): it numbers the records it sees."""

    def setup(self):
        self.seen = 0

    def map(self, key, value):
        self.seen += 1
        if value == "list":
            yield "l", [self.seen]
        else:
            yield "n", self.seen


def test_fallback_does_not_run_the_map_twice():
    job = Numbering()
    job.setup()
    out, sink, _ = make_out(job, reducers=1)
    keys, values = [0, 1, 2], ["x", "list", "y"]
    out.add(job.map, keys, values)
    out.spill()
    assert job.seen == 3
    got = {k: sorted(map(repr, v)) for k, v in job.calls}
    assert got == {"n": ["1", "3"], "l": ["[2]"]}


def test_a_record_that_is_not_a_pair_fails_with_or_without_combiner():
    out, sink, _ = make_out(Recording(), reducers=1)
    with pytest.raises((ValueError, TypeError)):
        out.add(lambda k, v: [(k, 1, "extra")], ["a", "b"], [0, 0])
        out.spill()


def test_the_partition_memo_is_kept_only_while_it_pays():
    """Issue 13's profile: with keys that never repeat (a sort), memoizing each key's
    partition cost three times what partitioning did. The memo now stops after
    MEMO_TRIAL keys if most were new; keys that repeat keep it. Partitions stay exact."""
    from blfsd.runtime.spill import MEMO_TRIAL
    unique, _, _ = make_out(Plain(), reducers=5)
    keys = [f"key-{i}" for i in range(3 * MEMO_TRIAL)]
    assert [unique.part(k) for k in keys] == [default_partition(k, 5) for k in keys]
    assert unique._memo is None
    repeating, _, _ = make_out(Plain(), reducers=5)
    words = [f"w{i % 300}" for i in range(10 * MEMO_TRIAL)]
    assert [repeating.part(k) for k in words] == [default_partition(k, 5) for k in words]
    assert repeating._memo is not None and len(repeating._memo) == 300


@pytest.mark.parametrize("size", [20, 200, 1000])
def test_a_map_spills_by_bytes_whatever_the_size_of_its_records(size):
    """Issue 13: a map spilled every million records, whatever their size, so its memory
    grew with its records. With spill_bytes, each spill holds about that many bytes."""
    budget = 2 << 20
    sink, rep = FakeSink(), FakeReporter()
    out = MapOutput.for_job(Plain(), 3, sid, sink, 10**6, rep, 1 << 20)
    out.spill_bytes, out._sized = budget, False  # as a worker's TaskEnv sets them
    record = len(encode_pairs([("k00000000", "v" * size)])) - 1  # less the array header
    n = 10 * budget // record
    for i in range(0, n, 500):
        feed(out, [(f"k{j:08d}", "v" * size) for j in range(i, min(n, i + 500))])
    out.spill()
    by_run: dict = {}
    for (_, run, _), payload, _ in sink.writes:
        by_run[run] = by_run.get(run, 0) + len(payload)
    assert 9 <= len(by_run) <= 12, by_run  # about 10 spills of about 2 MiB each
    assert max(by_run.values()) <= 1.3 * budget
    assert sorted(p[0] for p in sink.pairs()) == [f"k{j:08d}" for j in range(n)]
