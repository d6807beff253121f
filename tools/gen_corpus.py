#!/usr/bin/env python3
"""Generate a synthetic text corpus for benchmarking blfs (standard library only).

The corpus is made of pseudo-words drawn from a Zipf distribution over a fixed
vocabulary (default: 50,000 words, exponent 1.1), ten words per line, like the
original system's input generator.  Output is deterministic for a given
(size, seed, vocabulary, exponent): the text is produced in fixed-size blocks,
each block from its own RNG seeded by (seed, block number), so the result does
not depend on how many processes generated it.

    python tools/gen_corpus.py --size 64M --output bench-data/corpus-64M.txt

A sidecar file OUTPUT.meta.json records the parameters; when it matches and the
corpus has the recorded size, the existing file is reused (use --force to
regenerate).  The file is at most --size bytes and ends on a line boundary
(it is cut after the last complete line that fits).
"""

from __future__ import annotations

import argparse
import itertools
import json
import multiprocessing
import os
import random
import sys
import time

FORMAT_VERSION = 1
WORDS_PER_LINE = 10
LINES_PER_BLOCK = 50_000  # roughly 3.5 MB of text per block

_CONSONANTS = "bcdfghjklmnprstvwz"
_VOWELS = "aeiou"


def parse_size(text: str) -> int:
    """'64M' -> 67108864; accepts K, M, G (powers of 1024), optional 'iB'/'B'."""
    s = text.strip().upper()
    for suffix in ("IB", "B"):
        if s.endswith(suffix) and len(s) > len(suffix) and s[-len(suffix) - 1] in "KMGT":
            s = s[: -len(suffix)]
            break
    mult = 1
    if s and s[-1] in "KMGT":
        mult = 1024 ** ("KMGT".index(s[-1]) + 1)
        s = s[:-1]
    try:
        value = float(s)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a size: {text!r}") from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f"size must be positive: {text!r}")
    return int(value * mult)


def format_size(n: int) -> str:
    for unit, mult in (("G", 1024 ** 3), ("M", 1024 ** 2), ("K", 1024)):
        if n % mult == 0:
            return f"{n // mult}{unit}"
    return str(n)


def make_vocabulary(n: int, seed: int) -> list[str]:
    """n distinct pronounceable pseudo-words; frequent ranks get shorter words."""
    rng = random.Random(f"blfs-vocab-{seed}")
    words: set[str] = set()
    out: list[str] = []
    syllables = 1
    # Each syllable length has a limited number of distinct words; grow as needed.
    while len(out) < n:
        capacity = (len(_CONSONANTS) * len(_VOWELS)) ** syllables
        want = min(n - len(out), capacity // 3 or 1)
        tries = 0
        added = 0
        while added < want and tries < want * 20:
            tries += 1
            w = "".join(rng.choice(_CONSONANTS) + rng.choice(_VOWELS) for _ in range(syllables))
            if rng.random() < 0.3:
                w += rng.choice(_CONSONANTS)
            if w not in words:
                words.add(w)
                out.append(w)
                added += 1
        syllables += 1
    return out[:n]


def cumulative_weights(n: int, exponent: float) -> list[float]:
    return list(itertools.accumulate(1.0 / (r ** exponent) for r in range(1, n + 1)))


# Per-process state for the block generator (set by _init in each worker).
_STATE: dict = {}


def _init(vocab_size: int, exponent: float, seed: int) -> None:
    vocab = make_vocabulary(vocab_size, seed)
    _STATE["sp"] = [w + " " for w in vocab]
    _STATE["nl"] = [w + "\n" for w in vocab]
    _STATE["cum"] = cumulative_weights(vocab_size, exponent)
    _STATE["seed"] = seed


def _block(index: int) -> bytes:
    """Block `index`: LINES_PER_BLOCK lines of WORDS_PER_LINE words, as bytes."""
    rng = random.Random(f"blfs-corpus-{_STATE['seed']}-{index}")
    cum = _STATE["cum"]
    n = LINES_PER_BLOCK
    k = WORDS_PER_LINE - 1
    inner = rng.choices(_STATE["sp"], cum_weights=cum, k=n * k)
    last = rng.choices(_STATE["nl"], cum_weights=cum, k=n)
    out: list = [None] * (n * WORDS_PER_LINE)
    for j in range(k):
        out[j::WORDS_PER_LINE] = inner[j::k]
    out[k::WORDS_PER_LINE] = last
    return "".join(out).encode("ascii")


def _meta_path(path: str) -> str:
    return path + ".meta.json"


def _wanted_meta(size: int, seed: int, vocab: int, exponent: float) -> dict:
    return {
        "format": FORMAT_VERSION,
        "size": size,
        "seed": seed,
        "vocabulary": vocab,
        "exponent": exponent,
        "words_per_line": WORDS_PER_LINE,
        "lines_per_block": LINES_PER_BLOCK,
    }


def cached(path: str, size: int, seed: int = 1, vocab: int = 50_000, exponent: float = 1.1) -> bool:
    """True if `path` already holds the corpus for these parameters."""
    try:
        with open(_meta_path(path)) as f:
            meta = json.load(f)
        actual = os.path.getsize(path)
    except (OSError, ValueError):
        return False
    want = _wanted_meta(size, seed, vocab, exponent)
    return all(meta.get(k) == v for k, v in want.items()) and meta.get("bytes") == actual


def generate(path: str, size: int, seed: int = 1, vocab: int = 50_000, exponent: float = 1.1,
             processes: int | None = None, force: bool = False, quiet: bool = False) -> dict:
    """Write the corpus to `path` (reusing a cached one). Returns info incl. seconds spent."""
    t0 = time.monotonic()
    if not force and cached(path, size, seed, vocab, exponent):
        with open(_meta_path(path)) as f:
            meta = json.load(f)
        meta.update(path=path, cached=True, seconds=time.monotonic() - t0)
        return meta

    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    try:
        os.unlink(_meta_path(path))
    except FileNotFoundError:
        pass
    processes = processes or os.cpu_count() or 1
    tmp = f"{path}.tmp-{os.getpid()}"
    written = 0
    lines = 0
    try:
        with open(tmp, "wb", buffering=0) as out:
            if processes > 1:
                ctx = multiprocessing.get_context("fork" if sys.platform != "win32" else "spawn")
                pool = ctx.Pool(processes, initializer=_init, initargs=(vocab, exponent, seed))
                blocks = pool.imap(_block, itertools.count(), chunksize=1)
            else:
                pool = None
                _init(vocab, exponent, seed)
                blocks = map(_block, itertools.count())
            try:
                for data in blocks:
                    room = size - written
                    if len(data) >= room:
                        cut = data.rfind(b"\n", 0, room) + 1  # 0 if no full line fits
                        data = data[:cut]
                        out.write(data)
                        written += len(data)
                        lines += data.count(b"\n")
                        break
                    out.write(data)
                    written += len(data)
                    lines += LINES_PER_BLOCK
            finally:
                if pool is not None:
                    pool.terminate()
                    pool.join()
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise
    meta = _wanted_meta(size, seed, vocab, exponent)
    meta.update(bytes=written, lines=lines, words=lines * WORDS_PER_LINE)
    with open(_meta_path(path) + ".tmp", "w") as f:
        json.dump(meta, f, indent=1)
    os.replace(_meta_path(path) + ".tmp", _meta_path(path))
    meta.update(path=path, cached=False, seconds=time.monotonic() - t0)
    return meta


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--size", type=parse_size, default=parse_size("64M"),
                    help="corpus size, e.g. 8M, 64M, 256M, 1G (default 64M)")
    ap.add_argument("--output", "-o", help="output file (default bench-data/corpus-SIZE-sSEED.txt)")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--vocabulary", type=int, default=50_000)
    ap.add_argument("--exponent", type=float, default=1.1)
    ap.add_argument("--processes", "-j", type=int, default=None, help="default: number of CPUs")
    ap.add_argument("--force", action="store_true", help="regenerate even if cached")
    args = ap.parse_args(argv)
    path = args.output or os.path.join(
        os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "bench-data",
        f"corpus-{format_size(args.size)}-s{args.seed}.txt")
    info = generate(path, args.size, args.seed, args.vocabulary, args.exponent,
                    args.processes, args.force)
    how = "reused cached" if info["cached"] else "generated"
    print(f"{how} {path}: {info['bytes']:,} bytes, {info['lines']:,} lines, "
          f"{info['words']:,} words in {info['seconds']:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
