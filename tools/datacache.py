"""What the benchmark's input generators share: one size syntax, and files kept with a
sidecar OUTPUT.meta.json of the parameters that made them, so that a file made before
with the same parameters (and of its recorded size) is reused instead of made again."""
from __future__ import annotations

import argparse
import json
import os
import sys
from typing import BinaryIO, Callable, Optional

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from blfsd import inputs  # noqa: E402
from blfsd.errors import UsageError  # noqa: E402


def parse_size(text: str) -> int:
    """'64M' -> 67108864, as blfs reads sizes; for argparse, an ArgumentTypeError."""
    try:
        return inputs.parse_size(text)
    except UsageError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def format_size(n: int) -> str:
    """A size in a file name: 64M, 1G, or plain bytes when no unit divides it."""
    for unit, mult in (("G", 1 << 30), ("M", 1 << 20), ("K", 1 << 10)):
        if n % mult == 0:
            return f"{n // mult}{unit}"
    return str(n)


def meta_path(path: str) -> str:
    return path + ".meta.json"


def cached(path: str, want: dict, size: Optional[int] = None) -> Optional[dict]:
    """The recorded meta data of `path` if every `want` item matches and the file has the
    recorded size (`size`, else the meta data's "bytes"); else None."""
    try:
        with open(meta_path(path)) as f:
            meta = json.load(f)
        actual = os.path.getsize(path)
    except (OSError, ValueError):
        return None
    if any(meta.get(k) != v for k, v in want.items()):
        return None
    return meta if actual == (size if size is not None else meta.get("bytes")) else None


def write(path: str, fill: Callable[[BinaryIO], dict], meta: dict) -> dict:
    """Make `path` with `fill(file)` through a temporary file (nothing half made is ever
    left at `path`), then record `meta` and what `fill` returned beside it."""
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    _remove(meta_path(path))
    tmp = f"{path}.tmp-{os.getpid()}"
    try:
        with open(tmp, "wb", buffering=0) as out:
            meta = dict(meta, **fill(out))
        os.replace(tmp, path)
    except BaseException:
        _remove(tmp)
        raise
    with open(meta_path(path) + ".tmp", "w") as f:
        json.dump(meta, f, indent=1)
    os.replace(meta_path(path) + ".tmp", meta_path(path))
    return meta


def _remove(path: str) -> None:
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass
