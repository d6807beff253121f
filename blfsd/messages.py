"""Typed messages: what crosses processes, the names of states and kinds, and the one
way wire data is checked.

A message is a frozen dataclass (a `Message`). On the wire, and in the master's records, it
is a msgpack map of its fields (a field may have another name there: `class` is a Python
keyword); `to_wire` writes that map (fields that are None and optional are left out) and
`protocol.encode` calls it for any message it meets. `from_wire` builds a message from a
map, checking each field with `check`, which is also what `protocol.validate` uses for the
fields of every op: a missing field, a field of the wrong type or a value a message refuses
(its `_refuse`) all become one ProtocolError naming the field, and nothing else reads
wire data by hand.

The enums are `StrEnum`s: plain strings on the wire and in records, equal to those strings.
"""
from __future__ import annotations

import dataclasses
import enum
import functools
import os
import types
import typing
from dataclasses import dataclass, field
from typing import Any, Optional, Union

from .catalog import is_name
from .errors import ProtocolError

# ----------------------------------------------------------------------------------- enums


class JobState(enum.StrEnum):
    """A job's life: queued, running, committing (every part is done), then finished."""
    QUEUED = "queued"
    RUNNING = "running"
    COMMITTING = "committing"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"


FINISHED = frozenset({JobState.SUCCEEDED, JobState.FAILED, JobState.CANCELLED})


class TaskState(enum.StrEnum):
    """A task: pending (to be placed), running (an attempt runs), succeeded."""
    PENDING = "pending"
    RUNNING = "running"
    SUCCEEDED = "succeeded"


class AttemptState(enum.StrEnum):
    """An attempt as the scheduler keeps it. A worker reports running (progress),
    succeeded or failed (attempt_update); killed is what the master did to it."""
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    KILLED = "killed"


class FailureKind(enum.StrEnum):
    """Why an attempt failed. Whose fault it was decides whether it counts."""
    USER = "user"  # the user's code raised
    CRASHED = "crashed"  # the task process died (a signal, an exit without a report)
    OOM = "oom"  # killed by the kernel at its memory limit
    TIMEOUT = "timeout"  # no progress for task_timeout seconds
    LOST = "lost"  # its worker went away (counted apart, with a higher limit)
    DISK_FULL = "disk_full"  # no room on a node's disk (counted apart; that node avoided)
    INTERNAL = "internal"  # a fault of ours, not of the job (counted apart)
    FETCH = "fetch"  # a reduce could not read a map's output (counted against the map)
    POOL = "pool"  # no free slot on its worker
    KILLED = "killed"  # killed, but not by the master (it forgets what it kills)

    @property
    def counted(self) -> bool:
        """Whether it counts toward --max-attempts of its task."""
        return self in _COUNTED

    @property
    def apart(self) -> bool:
        """Not the job's fault: counted apart, with twice the limit (lost workers, full
        disks, our own faults)."""
        return self in _APART


_COUNTED = frozenset({FailureKind.USER, FailureKind.CRASHED, FailureKind.OOM,
                      FailureKind.TIMEOUT, FailureKind.POOL})
_APART = frozenset({FailureKind.LOST, FailureKind.DISK_FULL, FailureKind.INTERNAL})


class Priority(enum.StrEnum):
    """A job's claim on the cluster's task slots, against other running jobs."""
    HIGH = "high"
    NORMAL = "normal"
    LOW = "low"

    @property
    def weight(self) -> int:
        """Its share of the slots, against the others' (high 4 : normal 2 : low 1)."""
        return {"high": 4, "normal": 2, "low": 1}[self.value]


class TaskKind(enum.StrEnum):
    """What a task runs: a map (over a split) or a reduce (of a partition)."""
    MAP = "map"
    REDUCE = "reduce"


# ------------------------------------------------------------------------ the checker

def check(value: Any, typ: Any, where: str) -> Any:
    """`value` as `typ`, or a ProtocolError that says what `where` must be.

    `typ` is a plain type (an int is never a bool, a float may be an int), a tuple of plain
    types (any of them), Optional[X], list[X], dict, an enum (from its value), a Message
    (from its map) or Any. Values are never echoed: a message must stay short.
    """
    if typ is Any:
        return value
    if isinstance(typ, tuple):
        if any(_is(value, t) for t in typ):
            return value
        raise ProtocolError(f"{where} must be {_describe(typ)}")
    origin = typing.get_origin(typ)
    if origin in (Union, types.UnionType):
        return _check_optional(value, typ, where)
    if origin is list or typ is list:
        return _check_list(value, typ, where)
    if origin is dict:
        typ = dict
    if isinstance(typ, type) and issubclass(typ, enum.Enum):
        return _check_enum(value, typ, where)
    if isinstance(typ, type) and issubclass(typ, Message):
        return typ.from_wire(value, where)
    if _is(value, typ):
        return value
    raise ProtocolError(f"{where} must be {_describe(typ)}")


def _is(value: Any, t: type) -> bool:
    """isinstance, except that a bool is not a number here (True is not 1 on the wire)."""
    if t is type(None):
        return value is None
    if isinstance(value, bool) and t in (int, float):
        return False
    if t is float:
        return isinstance(value, (int, float))
    return isinstance(value, t)


def _check_optional(value: Any, typ: Any, where: str) -> Any:
    args = [a for a in typing.get_args(typ) if a is not type(None)]
    if value is None:
        return None
    return check(value, args[0] if len(args) == 1 else tuple(args), where)


def _check_list(value: Any, typ: Any, where: str) -> list:
    if not isinstance(value, list):
        raise ProtocolError(f"{where} must be a list")
    (item,) = typing.get_args(typ) or (Any,)
    if item is Any:
        return value
    return [check(v, item, f"{where}[{i}]") for i, v in enumerate(value)]


def _check_enum(value: Any, typ: type, where: str) -> Any:
    if isinstance(value, str):
        try:
            return typ(value)
        except ValueError:
            pass
    raise ProtocolError(f"{where} must be one of {', '.join(m.value for m in typ)}")


_NAMES = {int: "int", float: "a number", str: "str", bytes: "bytes", bool: "bool",
          dict: "a map", list: "a list", type(None): "None"}


def _describe(typ: Any) -> str:
    if isinstance(typ, tuple):
        if set(typ) == {int, float}:
            return "int or float"
        return " or ".join(_describe(t) for t in typ)
    if isinstance(typ, type) and issubclass(typ, Message):
        return f"a map ({typ.__name__})"
    return _NAMES.get(typ, getattr(typ, "__name__", str(typ)))


# --------------------------------------------------------------------------- messages

@dataclass(frozen=True)
class _Field:
    name: str  # in Python
    wire: str  # on the wire
    type: Any
    required: bool


class Message:
    """Base of typed messages (frozen, keyword-only dataclasses with a wire form)."""

    @classmethod
    def from_wire(cls, data: Any, where: str = "") -> Any:
        """A message from its map (or the message itself); ProtocolError when it is not one."""
        where = where or cls.__name__
        if isinstance(data, cls):
            return data
        if not isinstance(data, dict):
            raise ProtocolError(f"{where} must be {_describe(cls)}")
        values = {}
        for f in _fields(cls):
            if f.wire in data:
                values[f.name] = check(data[f.wire], f.type, f"{where}.{f.wire}")
            elif f.required:
                raise ProtocolError(f"{where}: missing field {f.wire!r}")
        message = cls(**values)
        problem = message._refuse()
        if problem:
            raise ProtocolError(f"{where}: {problem}")
        return message

    def _refuse(self) -> Optional[str]:
        """Why this message cannot be used although every field has its type (or None)."""
        return None

    def to_wire(self) -> dict:
        """The message as plain maps and lists, ready for msgpack."""
        out = {}
        for f in _fields(type(self)):
            value = getattr(self, f.name)
            if value is None and not f.required:
                continue
            out[f.wire] = plain(value)
        return out

    def replace(self, **changes: Any) -> Any:
        """A copy with some fields changed (messages are frozen)."""
        return dataclasses.replace(self, **changes)  # type: ignore[type-var]


def plain(value: Any) -> Any:
    """Messages anywhere inside `value` turned into their wire maps."""
    if isinstance(value, Message):
        return value.to_wire()
    if isinstance(value, list):
        return [plain(v) for v in value]
    if isinstance(value, dict):
        return {k: plain(v) for k, v in value.items()}
    return value


@functools.cache
def _fields(cls: type) -> tuple:
    """A message's fields with their wire names, resolved types and whether required."""
    hints = typing.get_type_hints(cls)
    return tuple(_Field(f.name, f.metadata.get("wire", f.name), hints[f.name],
                        f.default is dataclasses.MISSING
                        and f.default_factory is dataclasses.MISSING)
                 for f in dataclasses.fields(cls))


def _wire_name(name: str) -> Any:
    return field(metadata={"wire": name})


MAX_SHIPPED = 4 << 20  # bytes of files shipped with one job (they travel in its spec)

# Every message below is frozen and keyword-only: built by name, never changed in place.
message = dataclass(frozen=True, kw_only=True)


@message
class Split(Message):
    """A map task's input: bytes [start, end) of a file every node sees at `path`, or, for
    a dataset, of the split file `file` on the disk of `node` (with its crc32), and on the
    disk of every node of `replicas` (which starts with `node`) when it has copies."""
    path: str
    start: int
    end: int
    node: Optional[str] = None
    file: Optional[str] = None
    crc: Optional[int] = None
    replicas: Optional[list[str]] = None

    def holders(self) -> list[str]:
        """Every node whose disk keeps this split's file (none for a path's split)."""
        return list(self.replicas or ([self.node] if self.node else []))

    def _refuse(self) -> Optional[str]:
        return None if 0 <= self.start <= self.end else "a split needs 0 <= start <= end"


@message
class SegmentLocation(Message):
    """Where one segment of a task's output is: written, fsynced and checksummed, in `slot`
    of `node`'s pool of `generation`. A consumer's spec adds which attempt of which task
    wrote it (`stage`, `map_task`, `map_attempt`: the producer, a map or, in a pipeline,
    the reduce of a middle step)."""
    node: str
    slot: int
    offset: int
    length: int
    crc: int
    generation: int
    partition: int
    run: int = 0
    seq: int = 0
    flags: int = 0
    stage: int = 0
    map_task: Optional[int] = None
    map_attempt: Optional[int] = None


@message
class StepSpec(Message):
    """What the master needs to know of one step of a job: which parts it has, and how
    many reduces (None: the job's, the command line's or the master's default)."""
    map: bool = True
    combine: bool = False
    reduce: bool = True
    reducers: Optional[int] = None
    sort_values: bool = False


@message
class ShippedFile(Message):
    """A file shipped with a job (`files` of its class, `--file`): placed, with this name,
    in each task's working directory."""
    name: str
    data: bytes

    def _refuse(self) -> Optional[str]:
        if not self.name or "/" in self.name or self.name in (".", ".."):
            return f"a shipped file needs a plain name, not {self.name[:80]!r}"
        return None


@message
class TaskResult(Message):
    """What a successful attempt reports. A map: its segments. A reduce: where its part was
    written (`path`) and where the commit moves it (`target`); for a cluster output also
    the part's file (relative to its node's disk), size and crc32."""
    counters: dict = field(default_factory=dict)
    segments: list[SegmentLocation] = field(default_factory=list)
    path: Optional[str] = None
    target: Optional[str] = None
    file: Optional[str] = None
    size: Optional[int] = None
    crc: Optional[int] = None


@message
class FinishedTask(Message):
    """A task's success as the master records it durably (state.JobStore.add_result)
    before it counts: enough for a restarted master to take the task as done."""
    stage: int
    index: int
    attempt: str
    number: int
    worker: str
    result: TaskResult


@message
class Progress(Message):
    """A running attempt's report: how far, what the user said last, its counters."""
    progress: float = 0.0
    status: str = ""
    counters: dict = field(default_factory=dict)


@message
class Failure(Message):
    """A failed attempt's report; `info` says which maps' output a fetch failure could not
    read (`map_tasks`)."""
    kind: FailureKind = FailureKind.CRASHED
    error: str = ""
    info: dict = field(default_factory=dict)


@message
class Success(Message):
    """A successful attempt's report (attempt_update, state succeeded)."""
    result: TaskResult


@message
class JobSpec(Message):
    """A submitted job, as the client sends it and the master records it."""
    name: str
    job_file: str
    source: str  # the job file's text
    job_class: str = _wire_name("class")
    args: list[str]
    input_format: str
    splits: list[Split]
    output: str  # an absolute directory, or the name of a cluster output
    output_name: Optional[str] = None  # set (to `output`) for a cluster output
    datasets: list[str] = field(default_factory=list)
    temp_datasets: list[str] = field(default_factory=list)  # put by submit, removed after
    reducers: Optional[int] = None  # None: the master's default
    task_timeout: Optional[float] = None
    max_attempts: Optional[int] = None
    api: str = "blfs"  # the job file's API: blfs (a Job subclass) or mrjob (an MRJob)
    steps: list[StepSpec] = field(default_factory=lambda: [StepSpec()])
    files: list[ShippedFile] = field(default_factory=list)
    # each attempt's limits (None: the workers' configuration)
    task_memory: Optional[int] = None  # bytes
    task_pids: Optional[int] = None
    task_cpu_weight: Optional[int] = None
    submitted_at: float = 0.0  # set by the master: wall clock, orders jobs across restarts
    priority: Optional[Priority] = None  # None: the master's [master] default_priority
    output_replicas: int = 1  # a cluster output's parts, each on this many nodes' disks

    def _refuse(self) -> Optional[str]:
        if not self.splits:
            return "the input is empty"
        if not 1 <= len(self.steps) <= 100:
            return "a job has from 1 to 100 steps"
        if self.api not in ("blfs", "mrjob"):
            return f"no job API {self.api[:20]!r}"
        if sum(len(f.data) for f in self.files) > MAX_SHIPPED:
            return f"shipped files exceed {MAX_SHIPPED >> 20} MiB in all"
        if self.output_name is not None:
            if not is_name(self.output_name) or self.output != self.output_name:
                return "output_name must be a valid name equal to output"
        elif not os.path.isabs(self.output):
            return "the output must be an absolute path or a name"
        if self.output_replicas != 1 and (self.output_name is None
                                          or not 1 <= self.output_replicas <= 64):
            return "output replicas (1 to 64) are for a cluster output NAME"
        for name, value, low, high in (("reducers", self.reducers, 1, 10000),
                                       ("max_attempts", self.max_attempts, 1, 1000)):
            if value is not None and not low <= value <= high:
                return f"{name} must be an integer from {low} to {high}"
        if self.task_timeout is not None and not 0 < self.task_timeout < 1e9:
            return "task_timeout must be a positive number"
        for name, value, low, high in (("task_memory", self.task_memory, 1 << 20, 1 << 50),
                                       ("task_pids", self.task_pids, 1, 1 << 22),
                                       ("task_cpu_weight", self.task_cpu_weight, 1, 10000)):
            if value is not None and not low <= value <= high:
                return f"{name} must be from {low} to {high}"
        return None


@message
class AttemptSpec(Message):
    """One attempt of one task, as the master launches it and the task process runs it."""
    id: str  # JOB/TASK/NUMBER@EPOCH
    job: str
    task: str  # m-00003, r-00001
    kind: TaskKind
    index: int
    attempt: int
    source: str
    job_file: str
    job_class: str = _wire_name("class")
    args: list[str] = field(default_factory=list)
    input_format: str
    reducers: int  # the partitions of this task's output (0: the job's output, parts)
    output: str
    output_name: Optional[str] = None
    api: str = "blfs"
    step: int = 0  # the job's step this task belongs to
    stage: int = 0  # its place among the job's stages (a step's map, then its reduce)
    sort_output: bool = True  # its output segments sorted (they feed a reduce)
    sort_values: bool = False  # ... by key and value
    merge_values: bool = False  # a reduce's input merged by key and value (its step's)
    files: list[str] = field(default_factory=list)  # names of the job's shipped files
    split: Optional[Split] = None  # a first map's input
    segments: Optional[list[SegmentLocation]] = None  # the input of any other task
    partial: bool = False  # a reduce placed early: the rest of its input comes later
    producers: int = 0  # ... of how many producers in all (a reduce)
    task_memory: Optional[int] = None  # limits (None: the worker's configuration)
    task_pids: Optional[int] = None
    task_cpu_weight: Optional[int] = None
    # of the segments it writes (checksums.choose); None: 2, as from masters before it
    segment_format: Optional[int] = None

    def _refuse(self) -> Optional[str]:
        if self.stage == 0 and self.kind == TaskKind.MAP and self.split is None:
            return "a map attempt needs a split"
        if self.kind == TaskKind.REDUCE and self.segments is None:
            return "a reduce attempt needs segments"
        if self.stage > 0 and self.segments is None:
            return "a map attempt of a later step needs segments"
        return None
