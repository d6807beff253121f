"""The user's side: the Job base class, and finding the Job class in a job file."""
from __future__ import annotations

import dis
import inspect
import types
from dataclasses import dataclass
from typing import Any, Iterable, Iterator, Optional

from .errors import JobDefinitionError
from .messages import StepSpec
from .records import default_partition
from .steps import Step

INPUT_FORMATS = ("lines", "files", "bytes")


@dataclass
class Context:
    """What a task knows about itself: self.context inside map, combine and reduce."""
    job_id: str = ""
    task: str = ""
    attempt: int = 0
    worker: str = ""
    partition: Optional[int] = None
    step: int = 0  # the step this task belongs to (0 for a job of one step)
    kind: str = "map"  # map or reduce
    input_path: Optional[str] = None  # a first map's input file (a dataset's: node:file)


class Job:
    """Subclass this in a job file and define map, and usually reduce (and combine).

    A pipeline defines steps() instead: a list of blfsd.Step, each with its own map,
    combine and reduce (any may be absent), reducers, partition and sort_values."""

    reducers: Optional[int] = None
    input_format: str = "lines"
    sort_values: bool = False  # values arrive sorted within each key (a secondary sort)
    files: tuple = ()  # paths (relative to the job file) placed in each task's directory

    def __init__(self, args: Optional[list] = None, context: Optional[Context] = None):
        self.args: list = list(args or [])
        self.context = context or Context()
        self._counters: dict[str, dict[str, int]] = {}
        self._status = ""
        self._status_changed = False

    def setup(self) -> None:
        """Called once per task before any record."""

    def finish(self) -> Iterable:
        """Called once at the end of each map and reduce task (self.context.kind says
        which); may yield (key, value) pairs into that task's output (mrjob's
        mapper_final / reducer_final)."""
        return ()

    def steps(self) -> Optional[list]:
        """The job's steps (blfsd.Step), for a pipeline; None: one step of this class's
        own map, combine and reduce."""
        return None

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
        """Add n to a counter; counters are summed per job (`blfs status`). A task keeps
        at most MAX_COUNTERS of them (names cut to MAX_COUNTER_NAME characters); what
        goes to others is counted in blfs.counters_dropped."""
        group, name = str(group)[:MAX_COUNTER_NAME], str(name)[:MAX_COUNTER_NAME]
        g = self._counters.get(group)
        if g is not None and name in g:
            g[name] += n
        elif sum(len(names) for names in self._counters.values()) < MAX_COUNTERS:
            self._counters.setdefault(group, {})[name] = n
        else:
            dropped = self._counters.setdefault("blfs", {})
            dropped["counters_dropped"] = dropped.get("counters_dropped", 0) + 1
        self._touch()

    def set_status(self, text: str) -> None:
        """A line about what the task is doing; it also proves the task is alive. Kept to
        MAX_STATUS characters, with a marker when cut."""
        self._status = truncate(str(text), MAX_STATUS)
        self._status_changed = True
        self._touch()

    def _touch(self) -> None:
        """Replaced in a task process: report that the task is alive (rate-limited)."""


MAX_COUNTERS = 1000  # distinct counters one task keeps
MAX_COUNTER_NAME = 200  # characters of a counter's group or name
MAX_STATUS = 2000  # characters of a task's status line
TRUNCATED = " [...truncated]"


def truncate(text: str, limit: int) -> str:
    """`text`, cut to `limit` characters with a marker saying so."""
    return text if len(text) <= limit else text[:limit - len(TRUNCATED)] + TRUNCATED


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


def native_steps(job: Job, filename: str = "the job") -> list:
    """A Job's steps: those it declares (steps()), or one of its own methods."""
    declared = job.steps()
    if declared is None:
        return [Step(map=job.map, combine=job.combine if has_combiner(job) else None,
                     reduce=job.reduce, reducers=job.reducers, partition=job.partition,
                     sort_values=bool(job.sort_values))]
    if not isinstance(declared, (list, tuple)) or not declared \
            or not all(isinstance(s, Step) for s in declared):
        raise JobDefinitionError(f"{filename}: steps() must return a list of blfsd.Step")
    for number, step in enumerate(declared):
        if not (step.has_map or step.has_reduce):
            raise JobDefinitionError(f"{filename}: step {number} has neither map nor reduce")
        if step.reducers is not None and (not isinstance(step.reducers, int)
                                          or step.reducers < 1):
            raise JobDefinitionError(f"{filename}: step {number}: reducers must be a "
                                     "positive integer")
    return list(declared)


def step_specs(steps: list) -> list:
    """What the master needs to know of each step (messages.StepSpec)."""
    return [StepSpec(map=s.has_map, combine=s.has_combine, reduce=s.has_reduce,
                     reducers=s.reducers, sort_values=bool(s.sort_values)) for s in steps]


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
    return one_job_class(classes, filename, name, "Job", "blfsd.Job")


def one_job_class(classes: list, filename: str, name: Optional[str], kind: str,
                  base: str) -> type:
    """The job class of a file: the one named `name` (--job), else the only one; one line
    for the user when there is none, or several. `kind` is Job or MRJob, `base` the class
    they derive from."""
    if name:
        chosen = [c for c in classes if c.__name__ == name]
        if not chosen:
            raise JobDefinitionError(f"{filename}: no {kind} class named {name}")
        return chosen[0]
    if not classes:
        raise JobDefinitionError(f"{filename}: defines no subclass of {base}")
    if len(classes) > 1:
        names = ", ".join(sorted(c.__name__ for c in classes))
        raise JobDefinitionError(f"{filename}: defines several {kind} classes ({names}); "
                                 "pick one with --job NAME")
    return classes[0]


_MRJOB_NAMES = {"mapper": "map", "combiner": "combine", "reducer": "reduce",
                "mapper_init": "setup", "reducer_init": "setup", "mapper_final": "finish",
                "reducer_final": "finish"}


def _mrjob_names(cls: type) -> list:
    """mrjob's method names on a Job subclass that defines none of ours: it would run
    as an identity job, silently. What to rename, in one phrase each."""
    if any(getattr(cls, ours) is not getattr(Job, ours) for ours in ("map", "reduce")) \
            or cls.steps is not Job.steps:
        return []
    return [f"{theirs} to {ours}" for theirs, ours in _MRJOB_NAMES.items()
            if callable(getattr(cls, theirs, None))]


def job_attributes(cls: type, filename: str) -> dict:
    """The class-level settings the master needs, checked."""
    renames = _mrjob_names(cls)
    if renames:
        raise JobDefinitionError(
            f"{filename}: {cls.__name__} names its methods as mrjob does; a blfsd.Job "
            f"needs map/combine/reduce: rename {', '.join(renames)} (or subclass "
            "mrjob.job.MRJob to run it as an mrjob job)")
    fmt = getattr(cls, "input_format", "lines")
    if fmt not in INPUT_FORMATS:
        raise JobDefinitionError(f"{filename}: input_format must be one of "
                                 f"{', '.join(INPUT_FORMATS)}, not {fmt!r}")
    reducers = getattr(cls, "reducers", None)
    if reducers is not None and (not isinstance(reducers, int) or reducers < 1):
        raise JobDefinitionError(f"{filename}: reducers must be a positive integer")
    return {"class": cls.__name__, "input_format": fmt, "reducers": reducers}

