"""Wire encoding: length-prefixed msgpack frames, message shapes and their validation.

No I/O here (see transport.py); this module only turns bytes into checked messages and back.
A request is a map with "op" and "id"; a reply has "id" and "result" or "error".
A request whose id is 0 is a notification: it gets no reply.
"""
from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import Any

import msgpack

from .errors import ProtocolError
from .messages import (AttemptSpec, AttemptState, FailureKind, JobSpec, Message, TaskResult,
                       check)

VERSION = 2  # 2: the TLS 1.3-style handshake and protected records (blfsd.secure)
LENGTH = struct.Struct(">I")
# Job source files and 4 MiB chunks of datasets travel in frames; intermediate data never does.
MAX_FRAME = 8 * 1024 * 1024


@dataclass(frozen=True)
class Limits:
    """What one frame may hold, enforced while decoding, before any handler runs."""

    frame: int  # body bytes
    string: int  # bytes of one str
    binary: int  # bytes of one bin
    items: int  # entries of one array or map
    depth: int  # nesting of arrays and maps
    total: int = 1 << 20  # entries of all arrays and maps of the frame together


# What a decoded frame costs in memory, as charged against a daemon's budget (aio.Budget):
# its bytes, and this much for each entry of its arrays and maps. An array of a million
# empty arrays is 1 MiB on the wire and some 60 MB once decoded; the `total` limit and
# this charge keep such frames from costing more than the configuration allows.
ENTRY_COST = 64


# Before a peer has proved it holds the key: room for a hello and nothing else.
HANDSHAKE_LIMITS = Limits(frame=4096, string=256, binary=64, items=16, depth=2, total=64)
# After: room for a 4 MiB chunk or a job file, and for a job of 100,000 splits.
SESSION_LIMITS = Limits(frame=MAX_FRAME, string=MAX_FRAME, binary=MAX_FRAME,
                        items=1 << 20, depth=16)


def pack(msg: dict) -> bytes:
    """A message's frame body (the msgpack map, without the length prefix); typed messages
    anywhere in it are written as their maps."""
    return msgpack.packb(msg, use_bin_type=True, default=_to_wire)


def encode(msg: dict) -> bytes:
    """One frame: 4-byte big-endian length, then the msgpack map."""
    body = pack(msg)
    return LENGTH.pack(len(body)) + body


def _to_wire(obj: Any) -> Any:
    """msgpack's hook for what it cannot pack: our messages, as their maps."""
    if isinstance(obj, Message):
        return obj.to_wire()
    raise TypeError(f"cannot encode {type(obj).__name__}")


def frame_length(header: bytes, limit: int = MAX_FRAME) -> int:
    """The body length announced by a 4-byte header, refused when over the limit."""
    (n,) = LENGTH.unpack(header)
    if n == 0 or n > limit:
        raise ProtocolError(f"frame length {n} outside 1..{limit}")
    return n


def most_cost(n: int, limits: Limits) -> int:
    """The most a frame of `n` body bytes can cost once decoded: each object in it takes
    at least one byte, and is counted at most twice (as an entry of its container, and
    as a container itself)."""
    return n + ENTRY_COST * min(2 * n, limits.total)


class _Entries:
    """Counts the entries of the arrays and maps msgpack builds (as its hooks), and stops
    the decoding once there are more than the frame may hold."""

    def __init__(self, limit: int):
        self.left = limit
        self.count = 0

    def __call__(self, container: Any) -> Any:
        self.count += len(container) + 1
        if self.count > self.left:
            raise ValueError("too many entries")
        return container


def decode(body: bytes, limits: Limits = SESSION_LIMITS) -> dict:
    """A frame body to a message map; anything else (or anything over the limits) is a
    ProtocolError."""
    return decode_counted(body, limits)[0]


def decode_counted(body: bytes, limits: Limits = SESSION_LIMITS) -> tuple[dict, int]:
    """decode(), and what the message costs in memory (see ENTRY_COST)."""
    entries = _Entries(limits.total)
    try:
        msg = msgpack.unpackb(body, raw=False, strict_map_key=False,
                              max_str_len=limits.string, max_bin_len=limits.binary,
                              max_array_len=limits.items, max_map_len=limits.items,
                              max_ext_len=0, list_hook=entries, object_hook=entries)
    except ValueError as exc:
        if entries.count > entries.left:
            raise ProtocolError(f"a frame holds more than {limits.total} entries") from None
        raise ProtocolError(f"undecodable frame: {exc.__class__.__name__}") from None
    except Exception as exc:  # msgpack raises several unrelated types on garbage
        raise ProtocolError(f"undecodable frame: {exc.__class__.__name__}") from None
    _check_message(msg, limits)
    return msg, len(body) + ENTRY_COST * entries.count


def _check_message(msg: Any, limits: Limits) -> None:
    """The frame's shape: a map, not too deep, a request or a reply."""
    if not isinstance(msg, dict):
        raise ProtocolError("a frame must hold a map")
    check_depth(msg, limits.depth)
    if "op" in msg:
        if not isinstance(msg["op"], str):
            raise ProtocolError("op must be a string")
        if not isinstance(msg.get("id", 0), int) or isinstance(msg.get("id"), bool):
            raise ProtocolError("id must be an integer")
    elif (not isinstance(msg.get("id"), int) or isinstance(msg.get("id"), bool)
          or ("result" not in msg and "error" not in msg)):
        raise ProtocolError("a message needs an op, or an id with a result or an error")


def check_depth(value: Any, limit: int) -> None:
    """Refuse maps and arrays nested deeper than `limit` (handlers recurse over messages:
    a deep one must not reach them). Iterative, so that it cannot overflow itself."""
    stack = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if depth > limit:
            raise ProtocolError(f"a message nests deeper than {limit} levels")
        if isinstance(item, dict):
            stack.extend((v, depth + 1) for v in item.values() if isinstance(v, (dict, list)))
            stack.extend((k, depth + 1) for k in item if isinstance(k, (dict, list)))
        elif isinstance(item, list):
            stack.extend((v, depth + 1) for v in item if isinstance(v, (dict, list)))


def request(op: str, msg_id: int, **fields: Any) -> dict:
    """A request; msg_id 0 makes it a notification (no reply)."""
    return {"op": op, "id": msg_id, **fields}


def reply(msg_id: int, result: Any) -> dict:
    """A successful reply to the request with this id."""
    return {"id": msg_id, "result": result}


def error_reply(msg_id: int, code: str, message: str) -> dict:
    """An error reply: a code (errors.BlfsError.code) and one line for people."""
    return {"id": msg_id, "error": {"code": code, "message": message}}


# ------------------------------------------------------------------------------ schemas
#
# The fields of every op, by direction. A type is what messages.check takes (a plain type,
# a tuple of them, a Message); a field whose name ends in "?" is optional. Each daemon
# serves exactly the ops of its directions through a handler table (tests/test_handlers.py
# checks both ways), and unknown ops and mistyped fields are refused before a handler runs.
_NUM = (int, float)
_OPT_STR = (str, type(None))
_OPT_INT = (int, type(None))

# the handshake (auth.server_handshake); every daemon also answers ping, on any connection
HELLO = {"hello": {"version": int, "role": str, "name": str, "nonce?": bytes, "share?": bytes}}
PING = {"ping": {"time?": _NUM}}

CLIENT_TO_MASTER: dict[str, dict[str, Any]] = {
    **PING,
    "submit": {"spec": JobSpec},
    "status": {"job?": _OPT_STR},
    "jobs": {},
    "workers": {},
    "cancel": {"job": str},
    "wait": {"job": str, "version": int, "timeout?": _NUM},
    "logs": {"job": str, "task?": _OPT_STR},
    "put_begin": {"name": str, "splits": int, "size": int, "replicas?": int},
    "put_data": {"put": str, "index": int, "offset": int, "data": bytes, "last": bool},
    "put_end": {"put": str},
    "put_abort": {"put": str},
    "dataset": {"name": str},
    "output": {"name": str},
    "read": {"name": str, "part": int, "offset": int, "length": int},
    "ls": {},
    "remove": {"name": str},
}

# a worker not in [nodes.*], on the master's listener (role "worker"), says where to dial
# it (master/announced.py); that connection may do nothing else
ANNOUNCER_TO_MASTER: dict[str, dict[str, Any]] = {
    **PING,
    "announce": {"address": str},
}

WORKER_TO_MASTER: dict[str, dict[str, Any]] = {
    **PING,
    # info: a Progress, a Success or a Failure, by state (master.links.WorkerLinks)
    "attempt_update": {"attempt": str, "state": AttemptState, "info?": dict},
    "pool_changed": {"generation": int, "slots": int},
    "job_files": {"job": str},
    # an early reduce's input that finished since (scheduler.more_input): answered when
    # there is some, or after a few seconds with none
    "attempt_input": {"attempt": str},
}

MASTER_TO_WORKER: dict[str, dict[str, Any]] = {
    **PING,
    "sync": {"held": list},
    "launch": {"attempt": AttemptSpec},
    "kill": {"attempt": str},
    "commit": {"source": str, "target": str, "again?": bool},
    "uncommit": {"target": str},
    "success": {"output": str},
    "release_job": {"job": str, "output_tmp?": _OPT_STR, "output_name?": _OPT_STR},
    "release_attempts": {"attempts": list},
    "store": {"name": str, "index": int, "offset": int, "data": bytes, "last": bool,
              "kind?": str},
    "abort_put": {"name": str},
    "drop": {"kind": str, "name": str},
    "fetch": {"node": str, "file": str, "offset": int, "length": int, "size": int,
              "crc?": _OPT_INT},
    "attempt_log": {"attempt": str},
}

# a task process to its worker, over their socketpair (taskchannel.py). The replies to
# lease, device, open_split, open_slot and create_output carry a descriptor: a task may
# open nothing on the disks itself. A `scratch` lease (a reduce's merge pass) is freed when
# the attempt ends, however it ends, or earlier when the task gives it back (release_scratch).
TASK_TO_WORKER: dict[str, dict[str, Any]] = {
    "lease": {"scratch?": bool},
    "device": {},
    "open_split": {},
    "open_slot": {"node": str, "slot": int, "generation": int},
    "create_output": {},
    "release_scratch": {"slots": list},
    "more_input": {},
    "progress": {"progress": _NUM, "status": str, "counters": dict},
    "done": {"result": TaskResult},
    "failed": {"kind": FailureKind, "error": str, "info?": dict},
}

DIRECTIONS = {"client->master": CLIENT_TO_MASTER, "worker->master": WORKER_TO_MASTER,
              "announcer->master": ANNOUNCER_TO_MASTER,
              "master->worker": MASTER_TO_WORKER, "task->worker": TASK_TO_WORKER}


def _union(*tables: dict) -> dict:
    """Every op once; an op that two directions share must carry the same fields."""
    merged: dict = {}
    for table in tables:
        for op, schema in table.items():
            if merged.setdefault(op, schema) != schema:
                raise TypeError(f"two schemas for {op}")
    return merged


SCHEMAS: dict[str, dict[str, Any]] = _union(HELLO, *DIRECTIONS.values())


def fields(msg: dict) -> dict:
    """The checked fields of a request, by name (optional ones only when sent), as its
    handler takes them; ProtocolError naming the first problem."""
    op = msg["op"]
    schema = SCHEMAS.get(op)
    if schema is None:
        raise ProtocolError(f"unknown op {op[:64]!r}")
    checked = {}
    for field, typ in schema.items():
        name = field.rstrip("?")
        if name in msg:
            checked[name] = check(msg[name], typ, f"{op}: field {name!r}")
        elif not field.endswith("?"):
            raise ProtocolError(f"{op}: missing field {name!r}")
    return checked


def validate(msg: dict) -> None:
    """Check a request against its op's schema; raise ProtocolError naming the problem."""
    fields(msg)
