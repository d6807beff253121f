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
import multiprocessing
import os
import random
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import datacache  # noqa: E402
from datacache import format_size, parse_size  # noqa: E402  (one size syntax for all tools)

FORMAT_VERSION = 1
WORDS_PER_LINE = 10
LINES_PER_BLOCK = 50_000  # roughly 3.5 MB of text per block

_CONSONANTS = "bcdfghjklmnprstvwz"
_VOWELS = "aeiou"


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
    return datacache.cached(path, _wanted_meta(size, seed, vocab, exponent)) is not None


def generate(path: str, size: int, seed: int = 1, vocab: int = 50_000, exponent: float = 1.1,
             processes: int | None = None, force: bool = False, quiet: bool = False) -> dict:
    """Write the corpus to `path` (reusing a cached one). Returns info incl. seconds spent."""
    t0 = time.monotonic()
    want = _wanted_meta(size, seed, vocab, exponent)
    meta = None if force else datacache.cached(path, want)
    if meta is not None:
        return dict(meta, path=path, cached=True, seconds=time.monotonic() - t0)
    processes = processes or os.cpu_count() or 1

    def fill(out) -> dict:
        if processes > 1:
            ctx = multiprocessing.get_context("fork" if sys.platform != "win32" else "spawn")
            pool = ctx.Pool(processes, initializer=_init, initargs=(vocab, exponent, seed))
            blocks = pool.imap(_block, itertools.count(), chunksize=1)
        else:
            pool = None
            _init(vocab, exponent, seed)
            blocks = map(_block, itertools.count())
        try:
            written, lines = _write_blocks(out, blocks, size)
        finally:
            if pool is not None:
                pool.terminate()
                pool.join()
        return {"bytes": written, "lines": lines, "words": lines * WORDS_PER_LINE}

    meta = datacache.write(path, fill, want)
    return dict(meta, path=path, cached=False, seconds=time.monotonic() - t0)


def _write_blocks(out, blocks, size: int) -> tuple[int, int]:
    """Blocks of lines to `out` up to `size` bytes, cut after the last whole line that
    fits; (bytes, lines) written."""
    written = lines = 0
    for data in blocks:
        room = size - written
        if len(data) >= room:
            data = data[:data.rfind(b"\n", 0, room) + 1]  # nothing if no whole line fits
            out.write(data)
            return written + len(data), lines + data.count(b"\n")
        out.write(data)
        written += len(data)
        lines += LINES_PER_BLOCK
    return written, lines


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
