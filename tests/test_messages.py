"""blfsd.messages: typed messages, their wire form, and the one checker behind both them
and protocol.validate."""
from __future__ import annotations

from typing import Any, Optional

import msgpack
import pytest

from blfsd import protocol
from blfsd.errors import ProtocolError
from blfsd.messages import (FINISHED, AttemptSpec, Failure, FailureKind, JobSpec, JobState,
                            SegmentLocation, Split, TaskKind, TaskResult, check)

SPEC = {"name": "wc", "job_file": "wc.py", "source": "pass\n", "class": "WordCount",
        "args": ["-x"], "input_format": "lines",
        "splits": [{"path": "/in/a", "start": 0, "end": 10},
                   {"path": "w1:data/d/split-00000", "file": "data/d/split-00000",
                    "node": "w1", "start": 0, "end": 5, "crc": 7}],
        "output": "/out", "reducers": 2, "task_timeout": 30, "max_attempts": 3,
        "datasets": ["d"]}
LOC = {"node": "w1", "slot": 3, "offset": 4096, "length": 200, "crc": 9, "generation": 5,
       "partition": 1, "run": 0, "seq": 2, "flags": 0, "stage": 0}


def test_a_job_spec_round_trips_through_its_wire_form():
    spec = JobSpec.from_wire(SPEC)
    assert spec.job_class == "WordCount" and spec.splits[1] == Split(
        path="w1:data/d/split-00000", file="data/d/split-00000", node="w1", start=0, end=5,
        crc=7)
    wire = spec.to_wire()
    assert wire["class"] == "WordCount" and "job_class" not in wire
    assert "output_name" not in wire  # None and optional: left out
    assert JobSpec.from_wire(msgpack.unpackb(msgpack.packb(wire))) == spec
    assert JobSpec.from_wire(spec) is spec  # already typed


@pytest.mark.parametrize("change,problem", [
    ({"name": 5}, "spec.name must be str"),
    ({"args": ["a", 1]}, r"spec.args\[1\] must be str"),
    ({"splits": []}, "the input is empty"),
    ({"splits": [{"path": "/a", "start": 5, "end": 4}]}, "start <= end"),
    ({"splits": [{"path": "/a", "start": False, "end": 4}]}, "start must be int"),
    ({"output": "relative/dir"}, "absolute path or a name"),
    ({"output": "counts", "output_name": "other"}, "valid name equal to output"),
    ({"output": "../x", "output_name": "../x"}, "valid name equal to output"),
    ({"reducers": 0}, "reducers must be an integer from 1 to 10000"),
    ({"reducers": True}, "reducers must be int"),
    ({"max_attempts": 1001}, "max_attempts must be an integer from 1 to 1000"),
    ({"task_timeout": 0}, "task_timeout must be a positive number"),
    ({"task_timeout": float("nan")}, "task_timeout must be a positive number"),
    ({"task_timeout": True}, "task_timeout must be"),
    ({"datasets": "d"}, "datasets must be a list"),
])
def test_a_job_spec_refuses_what_the_master_cannot_run(change, problem):
    with pytest.raises(ProtocolError, match=problem):
        JobSpec.from_wire({**SPEC, **change}, "submit: spec")


def test_missing_fields_are_named_with_where_they_are():
    wire = dict(SPEC)
    del wire["class"]
    with pytest.raises(ProtocolError, match=r"^submit: spec: missing field 'class'$"):
        JobSpec.from_wire(wire, "submit: spec")


def test_a_named_output_is_a_name():
    spec = JobSpec.from_wire({**SPEC, "output": "counts", "output_name": "counts"})
    assert spec.output_name == "counts"


def _attempt(**change: Any) -> dict:
    wire = {"id": "j/m-00000/0@e", "job": "j", "task": "m-00000", "kind": "map", "index": 0,
            "attempt": 0, "source": "", "job_file": "j.py", "class": "J",
            "input_format": "lines", "reducers": 1, "output": "/out",
            "split": {"path": "/in", "start": 0, "end": 1}}
    wire.update(change)
    return {k: v for k, v in wire.items() if v is not None}


def test_an_attempt_spec_needs_its_input_and_a_known_kind():
    assert AttemptSpec.from_wire(_attempt()).kind is TaskKind.MAP
    assert AttemptSpec.from_wire(_attempt()).args == []  # optional
    with pytest.raises(ProtocolError, match="a map attempt needs a split"):
        AttemptSpec.from_wire(_attempt(split=None))
    with pytest.raises(ProtocolError, match="a reduce attempt needs segments"):
        AttemptSpec.from_wire(_attempt(kind="reduce"))
    with pytest.raises(ProtocolError, match="kind must be one of map, reduce"):
        AttemptSpec.from_wire(_attempt(kind="sort"))
    reduce = AttemptSpec.from_wire(_attempt(kind="reduce", split=None,
                                            segments=[dict(LOC, map_task=0, map_attempt=1)]))
    assert reduce.segments == [SegmentLocation(**LOC, map_task=0, map_attempt=1)]


def test_results_carry_typed_segments_and_encode_anywhere_in_a_frame():
    result = TaskResult(segments=[SegmentLocation(**LOC)], counters={"g": {"n": 1}})
    frame = protocol.encode(protocol.request("done", 0, result=result))
    msg = protocol.decode(frame[4:])
    assert msg["result"]["segments"] == [LOC]  # None fields (map_task...) left out
    assert protocol.fields(msg)["result"] == result
    assert TaskResult.from_wire({"path": "p", "target": "t"}).segments == []


def test_enums_are_their_strings_on_the_wire_and_in_comparisons():
    failure = Failure(kind=FailureKind.FETCH, error="bad crc", info={"map_tasks": [1]})
    wire = msgpack.unpackb(protocol.encode({"id": 1, "result": failure})[4:])["result"]
    assert wire == {"kind": "fetch", "error": "bad crc", "info": {"map_tasks": [1]}}
    assert Failure.from_wire(wire) == failure and FailureKind("fetch") == "fetch"
    assert [k for k in FailureKind if k.counted] == [
        FailureKind.USER, FailureKind.CRASHED, FailureKind.OOM, FailureKind.TIMEOUT,
        FailureKind.POOL]
    assert [k for k in FailureKind if k.apart] == [
        FailureKind.LOST, FailureKind.DISK_FULL, FailureKind.INTERNAL]
    assert JobState.CANCELLED in FINISHED and "running" not in FINISHED


@pytest.mark.parametrize("value,typ,ok", [
    (1, int, True), (True, int, False), (1.5, int, False),
    (1, float, True), (1.5, float, True), (False, float, False),
    (True, bool, True), (b"x", bytes, True), ("x", bytes, False),
    (None, Optional[int], True), (3, Optional[int], True), ("3", Optional[int], False),
    ([1, 2], list[int], True), ([1, "2"], list[int], False), ({}, list, False),
    ({"a": 1}, dict, True), ([], dict, False),
    (None, (str, type(None)), True), (5, (str, type(None)), False),
    (1.0, (int, float), True), (True, (int, float), False),
])
def test_check_follows_the_types(value, typ, ok):
    if ok:
        assert check(value, typ, "f") == value
    else:
        with pytest.raises(ProtocolError, match="^f"):
            check(value, typ, "f")


def test_errors_never_echo_the_value():
    with pytest.raises(ProtocolError) as err:
        JobSpec.from_wire({**SPEC, "name": ["x" * 100_000]}, "submit: spec")
    assert len(str(err.value)) < 200
