"""The user's side: the Job base class, and finding the Job class in a job file."""
from __future__ import annotations

import dis
import inspect
import types
from dataclasses import dataclass
from typing import Any, Iterable, Iterator, Optional

from .errors import JobDefinitionError
from .records import default_partition

INPUT_FORMATS = ("lines", "files", "bytes")


@dataclass
class Context:
    """What a task knows about itself: self.context inside map, combine and reduce."""
    job_id: str = ""
    task: str = ""
    attempt: int = 0
    worker: str = ""
    partition: Optional[int] = None


class Job:
    """Subclass this in a job file and define map, and usually reduce (and combine)."""

    reducers: Optional[int] = None
    input_format: str = "lines"

    def __init__(self, args: Optional[list] = None, context: Optional[Context] = None):
        self.args: list = list(args or [])
        self.context = context or Context()
        self._counters: dict[str, dict[str, int]] = {}
        self._status = ""
        self._status_changed = False

    def setup(self) -> None:
        """Called once per task before any record."""

    def map(self, key: Any, value: Any) -> Iterable:
        """Override: yield (key, value) pairs for one input record. The default passes it on."""
        yield key, value

    def reduce(self, key: Any, values: Iterator) -> Iterable:
        """Override: yield (key, value) pairs for one key and all its values."""
        for value in values:
            yield key, value

    def partition(self, key: Any, n: int) -> int:
        """The reduce partition of a key, in 0..n-1 (default: crc32, see records)."""
        return default_partition(key, n)

    def increment_counter(self, group: str, name: str, n: int = 1) -> None:
        """Add n to a counter; counters are summed per job (`blfs status`)."""
        g = self._counters.setdefault(str(group), {})
        g[str(name)] = g.get(str(name), 0) + n
        self._touch()

    def set_status(self, text: str) -> None:
        """A line about what the task is doing; it also proves the task is alive."""
        self._status = str(text)
        self._status_changed = True
        self._touch()

    def _touch(self) -> None:
        """Replaced in a task process: report that the task is alive (rate-limited)."""


_NOT_CONSTANT = object()


def constant_value(method: Any) -> Any:
    """The value object a generator method yields with every pair, if its code proves it.

    True when every `yield` of the method is written `yield <key>, <constant>` with one and
    the same constant, e.g. word count's `yield word, 1`: then every record is a pair and
    every value is that very object, and the map's output can be counted by key alone.
    Anything else (yield from, a computed value, a jump into the tuple, another bytecode
    version) returns _NOT_CONSTANT, and the output is checked record by record instead.
    """
    func = getattr(method, "__func__", method)
    code = getattr(func, "__code__", None)
    if code is None or not code.co_flags & inspect.CO_GENERATOR:
        return _NOT_CONSTANT
    ins = list(dis.get_instructions(code))
    if any(i.opname in ("SEND", "GET_YIELD_FROM_ITER", "YIELD_FROM") for i in ins):
        return _NOT_CONSTANT
    found: Any = _NOT_CONSTANT
    for n, i in enumerate(ins):
        if i.opname != "YIELD_VALUE":
            continue
        if n < 3:
            return _NOT_CONSTANT
        build, const = ins[n - 1], ins[n - 2]
        if (build.opname != "BUILD_TUPLE" or build.arg != 2 or const.opname != "LOAD_CONST"
                or i.is_jump_target or build.is_jump_target):
            return _NOT_CONSTANT
        value = code.co_consts[const.arg]
        if found is not _NOT_CONSTANT and value is not found:
            return _NOT_CONSTANT
        found = value
    return found


def has_combiner(job: Job) -> bool:
    """Whether the job defines combine."""
    return callable(getattr(type(job), "combine", None))


def load_job_class(source: str, filename: str, name: Optional[str] = None) -> type:
    """Execute a job file in a fresh module and return its one Job subclass."""
    try:
        code = compile(source, filename, "exec")
    except SyntaxError as exc:
        raise JobDefinitionError(f"{filename}:{exc.lineno}: syntax error: {exc.msg}") from None
    module = types.ModuleType("blfs_job")
    module.__file__ = filename
    exec(code, module.__dict__)  # the user's code, in the user's (or a task's) process
    classes = [v for k, v in vars(module).items()
               if isinstance(v, type) and issubclass(v, Job) and v is not Job
               and v.__module__ == "blfs_job"]
    if name:
        chosen = [c for c in classes if c.__name__ == name]
        if not chosen:
            raise JobDefinitionError(f"{filename}: no Job class named {name}")
        return chosen[0]
    if not classes:
        raise JobDefinitionError(f"{filename}: defines no subclass of blfsd.Job")
    if len(classes) > 1:
        names = ", ".join(sorted(c.__name__ for c in classes))
        raise JobDefinitionError(f"{filename}: defines several Job classes ({names}); "
                                 "pick one with --job NAME")
    return classes[0]


def job_attributes(cls: type, filename: str) -> dict:
    """The class-level settings the master needs, checked."""
    fmt = getattr(cls, "input_format", "lines")
    if fmt not in INPUT_FORMATS:
        raise JobDefinitionError(f"{filename}: input_format must be one of "
                                 f"{', '.join(INPUT_FORMATS)}, not {fmt!r}")
    reducers = getattr(cls, "reducers", None)
    if reducers is not None and (not isinstance(reducers, int) or reducers < 1):
        raise JobDefinitionError(f"{filename}: reducers must be a positive integer")
    return {"class": cls.__name__, "input_format": fmt, "reducers": reducers}

