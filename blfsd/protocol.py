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


# Before a peer has proved it holds the key: room for a hello and nothing else.
HANDSHAKE_LIMITS = Limits(frame=4096, string=256, binary=64, items=16, depth=2)
# After: room for a 4 MiB chunk or a job file, and for a job of 100,000 splits.
SESSION_LIMITS = Limits(frame=MAX_FRAME, string=MAX_FRAME, binary=MAX_FRAME,
                        items=1 << 20, depth=16)


def pack(msg: dict) -> bytes:
    """A message's frame body (the msgpack map, without the length prefix)."""
    return msgpack.packb(msg, use_bin_type=True)


def encode(msg: dict) -> bytes:
    """One frame: 4-byte big-endian length, then the msgpack map."""
    body = pack(msg)
    return LENGTH.pack(len(body)) + body


def frame_length(header: bytes, limit: int = MAX_FRAME) -> int:
    """The body length announced by a 4-byte header, refused when over the limit."""
    (n,) = LENGTH.unpack(header)
    if n == 0 or n > limit:
        raise ProtocolError(f"frame length {n} outside 1..{limit}")
    return n


def decode(body: bytes, limits: Limits = SESSION_LIMITS) -> dict:
    """A frame body to a message map; anything else (or anything over the limits) is a
    ProtocolError."""
    try:
        msg = msgpack.unpackb(body, raw=False, strict_map_key=False,
                              max_str_len=limits.string, max_bin_len=limits.binary,
                              max_array_len=limits.items, max_map_len=limits.items,
                              max_ext_len=0)
    except Exception as exc:  # msgpack raises several unrelated types on garbage
        raise ProtocolError(f"undecodable frame: {exc.__class__.__name__}") from None
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
    return msg


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
    return {"op": op, "id": msg_id, **fields}


def reply(msg_id: int, result: Any) -> dict:
    return {"id": msg_id, "result": result}


def error_reply(msg_id: int, code: str, message: str) -> dict:
    return {"id": msg_id, "error": {"code": code, "message": message}}


# Field types per op. Unknown ops and mistyped fields are refused before any handler runs.
# A type may be a tuple of types; fields named with a trailing "?" are optional.
_NUM = (int, float)
_OPT_STR = (str, type(None))
SCHEMAS: dict[str, dict[str, Any]] = {
    # every connection
    "hello": {"version": int, "role": str, "name": str, "nonce?": bytes, "share?": bytes},
    "ping": {"time?": _NUM},
    # client -> master
    "submit": {"spec": dict},
    "status": {"job?": _OPT_STR},
    "jobs": {},
    "workers": {},
    "cancel": {"job": str},
    "wait": {"job": str, "version": int, "timeout?": _NUM},
    "shutdown": {},
    "put_begin": {"name": str, "splits": int, "size": int},
    "put_data": {"put": str, "index": int, "offset": int, "data": bytes, "last": bool},
    "put_end": {"put": str},
    "put_abort": {"put": str},
    "dataset": {"name": str},
    "output": {"name": str},
    "read": {"name": str, "part": int, "offset": int, "length": int},
    "ls": {},
    "remove": {"name": str},
    # master -> worker
    "launch": {"attempt": dict},
    "kill": {"attempt": str},
    "commit": {"attempt": str, "source": str, "target": str},
    "uncommit": {"target": str},
    "success": {"output": str},
    "release_job": {"job": str, "output_tmp?": _OPT_STR, "output_name?": _OPT_STR},
    "store": {"name": str, "index": int, "offset": int, "data": bytes, "last": bool},
    "abort_put": {"name": str},
    "drop": {"kind": str, "name": str},
    "fetch": {"node": str, "file": str, "offset": int, "length": int, "size": int,
              "crc?": (int, type(None))},
    "sync": {"held": list, "generation_of": dict},
    # worker -> master
    "attempt_update": {"attempt": str, "state": str, "info?": dict},
    "pool_changed": {"generation": int, "slots": int},
}


def _type_name(t: Any) -> str:
    if isinstance(t, tuple):
        return " or ".join(x.__name__ for x in t)
    return t.__name__


def validate(msg: dict) -> None:
    """Check a request against its op's schema; raise ProtocolError naming the problem."""
    op = msg["op"]
    schema = SCHEMAS.get(op)
    if schema is None:
        raise ProtocolError(f"unknown op {op[:64]!r}")
    for field, typ in schema.items():
        optional = field.endswith("?")
        name = field.rstrip("?")
        if name not in msg:
            if optional:
                continue
            raise ProtocolError(f"{op}: missing field {name!r}")
        value = msg[name]
        if isinstance(value, bool) and typ in (int, _NUM):
            raise ProtocolError(f"{op}: field {name!r} must be {_type_name(typ)}")
        if not isinstance(value, typ):
            raise ProtocolError(f"{op}: field {name!r} must be {_type_name(typ)}")
