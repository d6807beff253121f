"""Every op has a handler and every handler an op: the daemons' handler tables against
protocol's schemas, for each direction, down to the names of the fields."""
from __future__ import annotations

import inspect

import pytest

from blfsd import protocol
from blfsd.config import Config
from blfsd.master import Master
from blfsd.worker import Worker


def tables() -> dict:
    """Each direction's handler table, as the daemons serve it."""
    master = Master(Config(state_dir="", nodes=[]), None)
    worker = Worker(Config(), None)
    return {"client->master": master.client_handlers,
            "worker->master": master.links.handlers,
            "announcer->master": master.announcer_handlers,
            "master->worker": worker.handlers,
            "task->worker": worker.attempts.requests.handlers}


def test_every_direction_is_covered():
    assert set(tables()) == set(protocol.DIRECTIONS)


@pytest.mark.parametrize("direction", sorted(protocol.DIRECTIONS))
def test_handler_keys_equal_the_schema_ops(direction):
    handlers = tables()[direction]
    ops = protocol.DIRECTIONS[direction]
    assert sorted(set(ops) - set(handlers)) == [], "ops without a handler"
    assert sorted(set(handlers) - set(ops)) == [], "handlers without a schema"


@pytest.mark.parametrize("direction", sorted(protocol.DIRECTIONS))
def test_handlers_take_exactly_the_schema_fields(direction):
    """A handler is called as handler(context, **fields): its parameters after the first
    are the op's fields, with a default exactly where the field is optional."""
    for op, handler in tables()[direction].items():
        params = list(inspect.signature(handler).parameters.values())[1:]
        assert all(p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY) for p in params), op
        got = {p.name: p.default is not p.empty for p in params}
        want = {f.rstrip("?"): f.endswith("?") for f in protocol.DIRECTIONS[direction][op]}
        assert got == want, f"{direction} {op}: handler takes {got}, schema says {want}"


def test_every_schema_op_is_served_somewhere_or_is_the_handshake():
    served = set().union(*(set(t) for t in tables().values()))
    assert set(protocol.SCHEMAS) - served == {"hello"}
