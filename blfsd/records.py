"""Records: stable partitioning, key order, segment payload encoding, output lines."""
from __future__ import annotations

import json
import zlib
from operator import itemgetter
from typing import Any, Iterable

import msgpack

first = itemgetter(0)


def key_bytes(key: Any) -> bytes:
    if isinstance(key, str):
        return key.encode("utf-8", "surrogatepass")
    if isinstance(key, bytes):
        return key
    return msgpack.packb(key, use_bin_type=True)


def default_partition(key: Any, n: int) -> int:
    """The same on every process and node (unlike hash(), which is salted per process)."""
    return zlib.crc32(key_bytes(key)) % n


_RANK = {type(None): 0, bool: 1, int: 2, float: 2, str: 3, bytes: 4, list: 5, tuple: 5,
         dict: 6}


def canonical(key: Any) -> tuple:
    """A total order over all msgpack values, used when keys are not mutually comparable."""
    rank = _RANK.get(type(key), 7)
    if rank in (5, 6, 7):
        return (rank, msgpack.packb(key, use_bin_type=True))
    return (rank, key)


def sort_pairs(pairs: list) -> bool:
    """Sort (key, value) pairs by key in place; True if the canonical order had to be used."""
    try:
        pairs.sort(key=first)
        return False
    except TypeError:
        pairs.sort(key=lambda p: canonical(p[0]))
        return True


def encode_pairs(pairs: list) -> bytes:
    return msgpack.packb(pairs, use_bin_type=True)


def decode_pairs(payload: bytes) -> list:
    return msgpack.unpackb(payload, raw=False, strict_map_key=False, use_list=True)


def chunk_pairs(pairs: list, limit: int) -> Iterable[bytes]:
    """Encode sorted pairs as consecutive payloads of at most limit bytes each."""
    start, step = 0, max(1, len(pairs))
    while start < len(pairs):
        data = encode_pairs(pairs[start:start + step])
        if len(data) > limit and step > 1:
            step = max(1, step // 2)
            continue
        if len(data) > limit:
            raise ValueError(f"one record encodes to {len(data)} bytes, over {limit}")
        yield data
        start += step


def format_field(x: Any) -> str:
    if isinstance(x, str):
        return x
    if isinstance(x, bool) or x is None:
        return json.dumps(x)
    if isinstance(x, (int, float)):
        return str(x)
    if isinstance(x, bytes):
        return x.decode("utf-8", "backslashreplace")
    return json.dumps(x, default=_json_default)


def _json_default(x: Any) -> Any:
    if isinstance(x, bytes):
        return x.decode("utf-8", "backslashreplace")
    raise TypeError(f"cannot write a {type(x).__name__} to the output")


def format_line(key: Any, value: Any) -> str:
    return f"{format_field(key)}\t{format_field(value)}\n"
