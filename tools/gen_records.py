#!/usr/bin/env python3
"""Generate fixed-width records for the shuffle benchmarks (standard library only).

Every record is exactly 100 bytes: a 10-letter lowercase key, a TAB, an 88-byte payload
(letters, digits, '-' and '_'), and a newline.  Output is deterministic for a given
(size, seed, skew): the file is made of blocks of RECORDS_PER_BLOCK records, each from its
own RNG seeded by (seed, skew, block number), so it does not depend on how many processes
generated it.

Keys are unique (so that a sort by key has exactly one right answer, and sorting on the key
or on the whole line gives the same bytes): the first 7 letters are random, drawn without
bias and without repeats inside a block, and the last 3 letters spell the block number in
base 26.  That keeps them unique across blocks with no global table, and the first letter,
which the sort job's range partitioner uses, is uniform.

With --skew F (0 <= F < 1), a fraction F of the records of every block (chosen at random,
exactly round(F * block) of them) get the one key HOT_KEY instead; their payloads stay
random, so these records differ only in their payload.  Keys are then no longer unique: a
sort of such a file is defined up to the order of the hot records (see tools/bench.py).

    python tools/gen_records.py --size 256M                 # bench-data/records-256M-s1.txt
    python tools/gen_records.py --size 256M --skew 0.5      # bench-data/records-256M-s1-skew50.txt

A sidecar OUTPUT.meta.json records the parameters; when it matches and the file has the
recorded size, the file is reused (use --force to regenerate).  The file holds
floor(size / 100) records.
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import random
import string
import sys
import time

FORMAT_VERSION = 1
RECORD = 100
KEY_LEN = 10
PREFIX_LEN = 7  # random letters; the other KEY_LEN - PREFIX_LEN spell the block number
PAYLOAD_LEN = RECORD - KEY_LEN - 2  # 88: minus the TAB and the newline
RECORDS_PER_BLOCK = 16384
HOT_KEY = b"mmmmmmmmmm"
# Block numbers stay below the one whose suffix is "mmm" (8,436 blocks of 1.6 MB: 13.8 GB),
# so no random key can be HOT_KEY.
MAX_BLOCKS = (12 * 26 + 12) * 26 + 12  # "mmm" in base 26 (a = 0, m = 12)

LETTERS = string.ascii_lowercase.encode()
PAYLOAD_ALPHABET = (string.ascii_letters + string.digits + "-_").encode()  # 64 symbols
assert len(PAYLOAD_ALPHABET) == 64

# Random bytes to letters without bias: keep a byte only when its low 5 bits are < 26.
_LETTER_TABLE = bytes(LETTERS[b & 31] if (b & 31) < 26 else 0 for b in range(256))
_LETTER_REJECT = bytes(b for b in range(256) if (b & 31) >= 26)
# Random bytes to payload symbols: 64 symbols, so the low 6 bits are already unbiased.
_PAYLOAD_TABLE = bytes(PAYLOAD_ALPHABET[b & 63] for b in range(256))

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import datacache  # noqa: E402
from datacache import format_size, parse_size  # noqa: E402  (one size syntax for all tools)


def letters(rng: random.Random, n: int) -> bytes:
    """n uniformly random lowercase letters."""
    out = b""
    while len(out) < n:
        want = n - len(out)
        raw = rng.randbytes(want + want // 4 + 16)
        out += raw.translate(_LETTER_TABLE, _LETTER_REJECT)
    return out[:n]


def block_suffix(index: int) -> bytes:
    """The last KEY_LEN - PREFIX_LEN letters of every key of block `index` (base 26)."""
    if not 0 <= index < MAX_BLOCKS:
        raise ValueError(f"block {index} out of range (files are limited to {MAX_BLOCKS} blocks)")
    digits = []
    for _ in range(KEY_LEN - PREFIX_LEN):
        index, d = divmod(index, 26)
        digits.append(LETTERS[d])
    return bytes(reversed(digits))


def block_keys(rng: random.Random, index: int, n: int) -> list:
    """n distinct keys for block `index`: random unique prefixes + the block's suffix."""
    suffix = block_suffix(index)
    seen: set = set()
    keys: list = []
    while len(keys) < n:
        need = n - len(keys)
        raw = letters(rng, need * PREFIX_LEN)
        for i in range(0, len(raw), PREFIX_LEN):
            p = raw[i:i + PREFIX_LEN]
            if p not in seen:
                seen.add(p)
                keys.append(p + suffix)
    return keys


def make_block(seed: int, skew: float, index: int, n: int = RECORDS_PER_BLOCK) -> bytes:
    """Block `index`: n records of exactly RECORD bytes."""
    rng = random.Random(f"blfs-records-{FORMAT_VERSION}-{seed}-{skew!r}-{index}")
    keys = block_keys(rng, index, n)
    hot = round(skew * n)
    if hot:
        for i in rng.sample(range(n), hot):
            keys[i] = HOT_KEY
    flat_keys = b"".join(keys)
    payload = rng.randbytes(n * PAYLOAD_LEN).translate(_PAYLOAD_TABLE)
    buf = bytearray(n * RECORD)
    for j in range(KEY_LEN):  # column by column: each a C-level strided copy
        buf[j::RECORD] = flat_keys[j::KEY_LEN]
    buf[KEY_LEN::RECORD] = b"\t" * n
    for j in range(PAYLOAD_LEN):
        buf[KEY_LEN + 1 + j::RECORD] = payload[j::PAYLOAD_LEN]
    buf[RECORD - 1::RECORD] = b"\n" * n
    return bytes(buf)


def split_record(line: bytes) -> tuple[bytes, bytes]:
    """(key, payload) of one record line (with or without its newline)."""
    return line[:KEY_LEN], line[KEY_LEN + 1:].rstrip(b"\n")


# Per-process state for the pool (set by _init).
_STATE: dict = {}


def _init(seed: int, skew: float) -> None:
    _STATE.update(seed=seed, skew=skew)


def _block(args: tuple) -> bytes:
    index, n = args
    return make_block(_STATE["seed"], _STATE["skew"], index, n)


def wanted_meta(size: int, seed: int, skew: float) -> dict:
    records = size // RECORD
    return {"format": FORMAT_VERSION, "kind": "records", "size": size, "seed": seed,
            "skew": skew, "record_bytes": RECORD, "key_bytes": KEY_LEN,
            "records_per_block": RECORDS_PER_BLOCK, "records": records,
            "bytes": records * RECORD,
            "hot_key": HOT_KEY.decode() if skew else None}


def default_path(data_dir: str, size: int, seed: int = 1, skew: float = 0.0) -> str:
    tail = f"-skew{round(skew * 100)}" if skew else ""
    return os.path.join(data_dir, f"records-{format_size(size)}-s{seed}{tail}.txt")


def cached(path: str, size: int, seed: int = 1, skew: float = 0.0) -> bool:
    want = wanted_meta(size, seed, skew)
    return datacache.cached(path, want, want["bytes"]) is not None


def generate(path: str, size: int, seed: int = 1, skew: float = 0.0,
             processes: int | None = None, force: bool = False) -> dict:
    """Write the records to `path` (reusing a cached file). Returns the meta data with
    `cached` and `seconds`."""
    if not 0 <= skew < 1:
        raise ValueError("skew must be in [0, 1)")
    t0 = time.monotonic()
    meta = wanted_meta(size, seed, skew)
    if not force and cached(path, size, seed, skew):
        return dict(meta, path=path, cached=True, seconds=time.monotonic() - t0)
    records = meta["records"]
    blocks = -(-records // RECORDS_PER_BLOCK)
    if blocks > MAX_BLOCKS:
        raise ValueError(f"at most {MAX_BLOCKS * RECORDS_PER_BLOCK * RECORD:,} bytes")
    work = [(i, min(RECORDS_PER_BLOCK, records - i * RECORDS_PER_BLOCK)) for i in range(blocks)]
    processes = processes or os.cpu_count() or 1

    def fill(out) -> dict:
        if processes > 1 and blocks > 1:
            ctx = multiprocessing.get_context("fork")
            with ctx.Pool(processes, initializer=_init, initargs=(seed, skew)) as pool:
                for data in pool.imap(_block, work, chunksize=1):
                    out.write(data)
        else:
            _init(seed, skew)
            for data in map(_block, work):
                out.write(data)
        return {}

    meta = datacache.write(path, fill, meta)
    return dict(meta, path=path, cached=False, seconds=time.monotonic() - t0)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--size", type=parse_size, default=parse_size("256M"),
                    help="file size, e.g. 8M, 256M, 1G (default 256M)")
    ap.add_argument("--output", "-o",
                    help="output file (default bench-data/records-SIZE-sSEED[-skewPCT].txt)")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--skew", type=float, default=0.0,
                    help=f"fraction of records whose key is {HOT_KEY.decode()} (default 0)")
    ap.add_argument("--processes", "-j", type=int, default=None, help="default: number of CPUs")
    ap.add_argument("--force", action="store_true", help="regenerate even if cached")
    args = ap.parse_args(argv)
    repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    path = args.output or default_path(os.path.join(repo, "bench-data"), args.size, args.seed,
                                       args.skew)
    info = generate(path, args.size, args.seed, args.skew, args.processes, args.force)
    how = "reused cached" if info["cached"] else "generated"
    print(f"{how} {path}: {info['bytes']:,} bytes, {info['records']:,} records "
          f"in {info['seconds']:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
