"""blfsd.rpc.dispatch and respond: requests through handler tables (or one function)."""
from __future__ import annotations

import asyncio

import pytest

from blfsd import rpc
from blfsd.errors import NotFound, ProtocolError


def run(coro):
    return asyncio.run(coro)


def test_a_table_handler_gets_the_checked_fields_by_name():
    seen = {}

    async def wait(peer, job, version, timeout=None):
        seen.update(peer=peer, job=job, version=version, timeout=timeout)
        return "ok"

    msg = {"op": "wait", "id": 1, "job": "j", "version": 3, "junk": [1]}
    assert run(rpc.dispatch({"wait": wait}, "ctx", msg)) == "ok"
    assert seen == {"peer": "ctx", "job": "j", "version": 3, "timeout": None}
    assert run(rpc.dispatch({"jobs": lambda peer: [1]}, None, {"op": "jobs", "id": 2})) == [1]


def test_unknown_and_unserved_ops_and_bad_fields_are_refused_before_any_handler():
    called = []
    table = {"jobs": lambda peer: called.append(1)}
    with pytest.raises(ProtocolError, match="unknown op 'nope'"):
        run(rpc.dispatch(table, None, {"op": "nope", "id": 1}))
    with pytest.raises(ProtocolError, match="does not serve 'launch'"):
        run(rpc.dispatch(table, None, {"op": "launch", "id": 1, "attempt": {}}))
    with pytest.raises(ProtocolError, match="must be"):
        run(rpc.dispatch({"cancel": lambda peer, job: called.append(job)}, None,
                         {"op": "cancel", "id": 1, "job": 5}))
    assert called == []


def test_one_function_may_serve_every_op():
    async def handle(peer, msg):
        return msg["op"]

    assert run(rpc.dispatch(handle, None, {"op": "ping", "id": 1})) == "ping"
    with pytest.raises(ProtocolError, match="unknown op"):
        run(rpc.dispatch(handle, None, {"op": "nope", "id": 1}))


def test_respond_makes_replies_and_error_replies_and_stays_silent_for_notifications():
    def status(peer, job=None):
        if job == "missing":
            raise NotFound("no job missing")
        return {"job": job}

    table = {"status": status}
    assert run(rpc.respond(table, None, {"op": "status", "id": 4, "job": "j"}, "t")) == \
        {"id": 4, "result": {"job": "j"}}
    assert run(rpc.respond(table, None, {"op": "status", "id": 5, "job": "missing"}, "t")) == \
        {"id": 5, "error": {"code": "not_found", "message": "no job missing"}}
    assert run(rpc.respond(table, None, {"op": "status", "id": 0}, "t")) is None
    assert run(rpc.respond(table, None, {"op": "status", "job": "missing"}, "t")) is None


def test_respond_lets_a_bug_of_ours_through():
    def broken(peer):
        raise KeyError("oops")

    with pytest.raises(KeyError):
        run(rpc.respond({"jobs": broken}, None, {"op": "jobs", "id": 1}, "t"))
