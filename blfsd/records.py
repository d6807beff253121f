"""Records: stable partitioning, key order, segment payload encoding, output lines."""
from __future__ import annotations

import codecs
import json
import zlib
from itertools import islice
from operator import itemgetter
from typing import Any, Callable, Iterable, Iterator

import msgpack

first = itemgetter(0)
second = itemgetter(1)


def key_bytes(key: Any) -> bytes:
    """The bytes a key is partitioned by: UTF-8 of a str, bytes as they are, msgpack else."""
    if isinstance(key, str):
        return key.encode("utf-8", "surrogatepass")
    if isinstance(key, bytes):
        return key
    return msgpack.packb(normalized(key), use_bin_type=True)


def normalized(x: Any) -> Any:
    """Equal values get equal encodings: maps with their items in canonical key order."""
    if isinstance(x, dict):
        return [[normalized(k), normalized(v)]
                for k, v in sorted(x.items(), key=lambda kv: canonical(kv[0]))]
    if isinstance(x, (list, tuple)):
        return [normalized(v) for v in x]
    return x


def default_partition(key: Any, n: int) -> int:
    """The same on every process and node (unlike hash(), which is salted per process)."""
    return zlib.crc32(key_bytes(key)) % n


_RANK = {type(None): 0, bool: 1, int: 2, float: 2, str: 3, bytes: 4, list: 5, tuple: 5,
         dict: 6}


def canonical(key: Any) -> tuple:
    """A total order over all msgpack values: by kind, then by value.

    It agrees with Python's own order wherever every key is a str, every key is bytes, or
    every key is a number (not a bool); those runs can be sorted and merged natively.
    """
    rank = _RANK.get(type(key), 7)
    if rank == 5:
        return (5, tuple(canonical(v) for v in key))
    if rank == 6:
        return (6, tuple(sorted((canonical(k), canonical(v)) for k, v in key.items())))
    if rank == 7:
        return (7, repr(key))
    return (rank, key)


_SIMPLE = ({str}, {bytes}, {int}, {float}, {int, float})


def natural_is_canonical(keys: Iterable) -> bool:
    """True when Python's order of these keys is the canonical order."""
    return set(map(type, keys)) in _SIMPLE


def sort_pairs(pairs: list, by_value: bool = False) -> bool:
    """Sort (key, value) pairs by key (and by value within a key, for a secondary sort)
    in place, always in canonical order.

    Returns True when the keys (or values) needed the canonical sort key (a flag on the
    segment), False when Python's own order was the same and faster.
    """
    natural = not pairs or natural_is_canonical(map(first, pairs))
    if by_value:
        natural = natural and (not pairs or natural_is_canonical(map(second, pairs)))
        pairs.sort(key=pair_order(not natural, True))
    else:
        pairs.sort(key=pair_order(not natural, False))
    return not natural


def pair_order(canonical_order: bool, by_value: bool) -> Callable[[Any], Any]:
    """The sort key of a pair: its key (and value), natural or canonical."""
    if by_value:
        return (lambda p: (canonical(p[0]), canonical(p[1]))) if canonical_order \
            else (lambda p: (p[0], p[1]))
    return (lambda p: canonical(p[0])) if canonical_order else first


# Text that came from bytes that are not UTF-8 holds lone surrogates (inputs.py decodes
# with surrogateescape): they cross the shuffle as they are.
_UNICODE = "surrogatepass"


def encode_pairs(pairs: list) -> bytes:
    """Pairs as one msgpack array. Packed strictly first: msgpack's C packer takes its
    fast path for text only without an error handler (a quarter faster on the sort
    benchmark's records); text with lone surrogates fails that and is packed again with
    surrogatepass. Both give the same bytes for any text that UTF-8 can carry."""
    try:
        return msgpack.packb(pairs, use_bin_type=True)
    except UnicodeEncodeError:
        return msgpack.packb(pairs, use_bin_type=True, unicode_errors=_UNICODE)


def decode_pairs(payload: bytes) -> list:
    return msgpack.unpackb(payload, raw=False, strict_map_key=False, use_list=True,
                           unicode_errors=_UNICODE)


def pair_blocks(payload: bytes, size: int) -> tuple[int, Iterator[list]]:
    """A payload's number of pairs, and its pairs in lists of at most `size`, decoded as
    they are taken (msgpack's Unpacker, in C): a reduce merging many runs holds each run's
    encoded bytes and one block, not a whole segment of Python objects (three times as
    large); and this is faster than decoding it at once and iterating over the list."""
    unpacker = msgpack.Unpacker(raw=False, strict_map_key=False, use_list=True,
                                unicode_errors=_UNICODE,
                                max_buffer_size=max(len(payload), 1 << 10))
    unpacker.feed(payload)
    count = unpacker.read_array_header()
    return count, _taken(unpacker, count, size)


def _taken(unpacker: msgpack.Unpacker, count: int, size: int) -> Iterator[list]:
    while count > 0:
        n = min(size, count)
        yield list(islice(unpacker, n))
        count -= n


SAMPLE = 256  # pairs encoded to guess the size of the first chunk


def chunk_pairs(pairs: list, limit: int) -> Iterable[bytes]:
    """Encode sorted pairs as consecutive payloads of at most limit bytes each.

    The first chunk's size is guessed from the bytes per pair of a small sample: encoding
    the whole partition first, only to find it too big and encode it again in pieces,
    took half of all the packing of a large spill."""
    start, step = 0, max(1, len(pairs))
    if len(pairs) > SAMPLE:
        sample = len(encode_pairs(pairs[:SAMPLE]))
        if sample * len(pairs) > limit * SAMPLE:  # it will not fit in one
            step = max(1, int(SAMPLE * limit / sample * 0.9))
    while start < len(pairs):
        data = encode_pairs(pairs[start:start + step])
        if len(data) > limit and step > 1:
            step = max(1, int(step * limit / len(data) * 0.9))
            continue
        if len(data) > limit:
            raise ValueError(f"one record encodes to {len(data)} bytes, over {limit}")
        yield data
        start += step
        # aim the next chunk at the limit, from this chunk's bytes per record
        step = max(1, int(step * limit / max(1, len(data)) * 0.9))


def format_field(x: Any) -> str:
    """A key or value in an output line: str for str/int/float, JSON for the rest."""
    if isinstance(x, str):
        return x
    if isinstance(x, bool) or x is None:
        return json.dumps(x)
    if isinstance(x, (int, float)):
        return str(x)
    if isinstance(x, bytes):
        return x.decode("utf-8", "backslashreplace")
    return json.dumps(_jsonable(x))


def _jsonable(x: Any) -> Any:
    """What json can write: bytes as text, map keys that are not str as their text."""
    if isinstance(x, bytes):
        return x.decode("utf-8", "backslashreplace")
    if isinstance(x, dict):
        return {(k if isinstance(k, str) else format_field(k)): _jsonable(v)
                for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_jsonable(v) for v in x]
    return x


def format_line(key: Any, value: Any) -> str:
    """One output line: key TAB value, newline (text as it is: the common case first)."""
    if type(key) is str and type(value) is str:
        return f"{key}\t{value}\n"
    return f"{format_field(key)}\t{format_field(value)}\n"


def _output_errors(exc: UnicodeError) -> tuple:
    """How text that UTF-8 cannot carry is written out: the bytes that surrogateescape
    stands for (an input line that was not UTF-8 comes out as it came in), any other
    lone surrogate as a \\uXXXX escape."""
    if not isinstance(exc, UnicodeEncodeError):
        raise exc
    out = bytearray()
    for ch in exc.object[exc.start:exc.end]:
        code = ord(ch)
        out += bytes([code - 0xDC00]) if 0xDC80 <= code <= 0xDCFF else \
            f"\\u{code:04x}".encode()
    return bytes(out), exc.end


OUTPUT_ERRORS = "blfs-output"  # the error handler of output lines: "utf-8", OUTPUT_ERRORS
codecs.register_error(OUTPUT_ERRORS, _output_errors)
