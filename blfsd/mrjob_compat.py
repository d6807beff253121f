"""mrjob jobs on blfs: an unmodified `MRJob` file becomes a list of `blfsd.steps.Step`.

Every step runs through mrjob's own task functions (`map_pairs`, `combine_pairs`,
`reduce_pairs`) and protocols (`pick_protocols`), the way mrjob's Spark harness drives
jobs; command substeps (`mapper_cmd`, `*_pre_filter`) run as subprocesses, as mrjob's
local runner runs them. What crosses the shuffle is what Hadoop streaming would see: each
line a task writes, cut at its first tab into the encoded key and the rest, both `bytes`:

    key   = line[:tab]       (the whole line when it holds no tab)
    value = line[tab:]       (starts with the tab; b"" when there is none)

so that the engine's bytewise key order is Hadoop's, `key + value` is the line again, and
the last step's `format_line(key, value)` is exactly the line mrjob writes (its
OUTPUT_PROTOCOL, plus a newline).

The engine's side, in a submitting process:

    if is_mrjob_source(source):
        job = load(source, filename, job_args)       # UsageError/JobDefinitionError: 1 line
        why = refused(job)                           # a line naming what cannot run here
        input_format(job), files(job), steps(job)    # steps(): reducers, sort_values

and in a task process (the working directory holding files(job), see TaskContext):

    job = load(source, filename, job_args)
    step = steps(job, context=lambda: this_task)[n]
    step.map_task(records) / step.combine_task(pairs) / step.reduce_task(pairs)

mrjob is an optional dependency (`pip install mrjob`); it is imported only here, with
shims for the modules newer Pythons removed (`pipes`, `distutils`).
"""
from __future__ import annotations

import ast
import hashlib
import io
import linecache
import os
import re
import selectors
import shlex
import shutil
import subprocess
import sys
import types
import warnings
import weakref
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import total_ordering
from typing import Any, BinaryIO, Callable, Iterable, Iterator, Optional

from .errors import JobDefinitionError, UsageError
from .job import one_job_class
from .steps import Step

# ----------------------------------------------------------------- finding an mrjob job


def _mrjob_names(tree: ast.Module) -> tuple[set, set]:
    """Names a file binds to mrjob.job.MRJob itself, and to the modules that hold it."""
    classes, modules = set(), set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module in ("mrjob.job", "mrjob"):
            for alias in node.names:
                if node.module == "mrjob.job" and alias.name == "MRJob":
                    classes.add(alias.asname or "MRJob")
                elif node.module == "mrjob" and alias.name == "job":
                    modules.add(alias.asname or "job")
        elif isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name == "mrjob.job":
                    modules.add(alias.asname or "mrjob.job")
    return classes, modules


def _dotted(node: ast.AST) -> str:
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute):
        return f"{_dotted(node.value)}.{node.attr}"
    return ""


def is_mrjob_source(source: str) -> bool:
    """Whether a job file defines a subclass of mrjob.job.MRJob (read, never run)."""
    try:
        tree = ast.parse(source)
    except SyntaxError:
        return False
    classes, modules = _mrjob_names(tree)
    bases_ok = set(classes) | {f"{m}.MRJob" for m in modules}
    defs = [n for n in ast.walk(tree) if isinstance(n, ast.ClassDef)]
    grew = True
    while grew:  # subclasses of subclasses defined in the same file
        grew = False
        for d in defs:
            if d.name not in bases_ok and any(_dotted(b) in bases_ok for b in d.bases):
                bases_ok.add(d.name)
                grew = True
    return any(d.name in bases_ok for d in defs)


def _main_runs(source: str) -> set:
    """Class names whose .run() the file calls under `if __name__ == '__main__'`."""
    names = set()
    for node in ast.walk(ast.parse(source)):
        if (isinstance(node, ast.If) and isinstance(node.test, ast.Compare)
                and _dotted(node.test.left) == "__name__"):
            for call in ast.walk(node):
                if (isinstance(call, ast.Call) and isinstance(call.func, ast.Attribute)
                        and call.func.attr == "run"):
                    names.add(_dotted(call.func.value))
    return names


# ----------------------------------------------------------------- importing mrjob

INSTALL_HINT = (f"this job needs mrjob, which is not installed: "
                f"{sys.executable} -m pip install mrjob==0.7.4")


@total_ordering
class _LooseVersion:
    """What mrjob uses of distutils.version.LooseVersion: parse, compare, print."""

    _parts = re.compile(r"(\d+|[a-z]+|\.)", re.I)

    def __init__(self, vstring: Optional[str] = None):
        if vstring is not None:
            self.parse(vstring)

    def parse(self, vstring: str) -> None:
        self.vstring = vstring
        self.version = [int(p) if p.isdigit() else p
                        for p in self._parts.split(vstring) if p and p != "."]

    def _other(self, other: Any) -> list:
        return (other if isinstance(other, _LooseVersion) else _LooseVersion(other)).version

    def __eq__(self, other: Any) -> bool:
        return self.version == self._other(other)

    def __lt__(self, other: Any) -> bool:
        return self.version < self._other(other)

    def __hash__(self) -> int:
        return hash(tuple(map(str, self.version)))

    def __str__(self) -> str:
        return self.vstring

    def __repr__(self) -> str:
        return f"LooseVersion({self.vstring!r})"


def _find_executable(executable: str, path: Optional[str] = None) -> Optional[str]:
    return shutil.which(executable, path=path)


def _shim(name: str, doc: str, **attrs: Any) -> types.ModuleType:
    module = types.ModuleType(name, doc)
    module.__dict__.update(attrs)
    sys.modules[name] = module
    return module


def _importable(name: str) -> bool:
    with warnings.catch_warnings():  # 'pipes' and 'distutils' warn before they go
        warnings.simplefilter("ignore", DeprecationWarning)
        try:
            __import__(name)
            return True
        except ImportError:
            return False


def install_shims() -> None:
    """Stand-ins for the stdlib modules mrjob 0.7.4 imports and Python 3.12/3.13 removed.

    mrjob uses `pipes.quote` (cmd_line), `distutils.spawn.find_executable` (only where
    shutil.which is missing, so never on Python 3) and `distutils.version.LooseVersion`
    (Hadoop version maps). Installed only when the real module cannot be imported.
    """
    if not _importable("pipes"):
        _shim("pipes", "blfs stand-in for the removed pipes module (for mrjob)",
              quote=shlex.quote)
    if not (_importable("distutils.spawn") and _importable("distutils.version")):
        spawn = _shim("distutils.spawn", "blfs stand-in (for mrjob)",
                      find_executable=_find_executable)
        version = _shim("distutils.version", "blfs stand-in (for mrjob)",
                        LooseVersion=_LooseVersion)
        _shim("distutils", "blfs stand-in for the removed distutils (for mrjob)",
              spawn=spawn, version=version, __path__=[])


def import_mrjob() -> types.ModuleType:
    """mrjob.job, imported (with the shims when needed); one line saying how to install it."""
    install_shims()
    try:
        import mrjob.job
    except ImportError as exc:
        if (exc.name or "").split(".")[0] == "mrjob":
            raise JobDefinitionError(INSTALL_HINT) from None
        raise
    return mrjob.job


# ----------------------------------------------------------------- loading a job file

_loaded_modules: dict = {}


def _exec_module(source: str, filename: str) -> types.ModuleType:
    """Run the job file as a module of its own that inspect (and so mrjob) can find.

    mrjob locates FILES, LIBJARS and the script itself through inspect.getsourcefile of
    the class: that needs the module in sys.modules, and (on a worker, where the file may
    not exist) its text in linecache, which also gives tracebacks their lines.
    """
    digest = hashlib.sha1(f"{filename}\0{source}".encode("utf-8", "surrogatepass"))
    name = f"_blfs_mrjob_{digest.hexdigest()[:16]}"
    try:
        code = compile(source, filename, "exec")
    except SyntaxError as exc:
        raise JobDefinitionError(f"{filename}:{exc.lineno}: syntax error: {exc.msg}") from None
    linecache.cache[filename] = (len(source), None, source.splitlines(True), filename)
    module = types.ModuleType(name)
    module.__file__ = filename
    sys.modules[name] = module
    script_dir = os.path.dirname(filename)
    # as `python job.py` would, so that imports of the job's neighbours work here
    sys.path.insert(0, script_dir)
    try:
        exec(code, module.__dict__)
    finally:
        sys.path.remove(script_dir)
    return module


def _job_class(module: types.ModuleType, source: str, filename: str,
               name: Optional[str]) -> type:
    base = import_mrjob().MRJob
    found = [v for v in vars(module).values()
             if isinstance(v, type) and issubclass(v, base) and v is not base
             and v.__module__ == module.__name__]
    if name:
        return one_job_class(found, filename, name, "MRJob", "mrjob.job.MRJob")
    # a base class of another is not the job; of several, the one the file's
    # `if __name__ == "__main__"` runs
    leaves = [c for c in found if not any(o is not c and issubclass(o, c) for o in found)]
    if len(leaves) > 1:
        run = _main_runs(source)
        leaves = [c for c in leaves if c.__name__ in run] or leaves
    return one_job_class(leaves, filename, None, "MRJob", "mrjob.job.MRJob")


def _instantiate(cls: type, args: list, filename: str) -> Any:
    try:
        return cls(list(args))
    except ValueError as exc:  # mrjob's argument parser, given a list, raises ValueError
        raise UsageError(f"{filename}: job arguments: {exc}") from None


def load(source: str, filename: str, args: list, name: Optional[str] = None) -> Any:
    """The file's MRJob subclass, instantiated with the job arguments (what follows `--`).

    The arguments are parsed by mrjob's own option machinery: passthrough options, file
    options, --jobconf, --files, --cmdenv, --sort-values... Positional arguments (mrjob's
    input paths) are ignored: blfs's --input says what to read.
    """
    filename = os.path.abspath(filename)
    import_mrjob()  # before the file's own `import mrjob`: the hint, and the shims
    module = _loaded_modules.get((filename, source))
    if module is None:
        module = _exec_module(source, filename)
        _loaded_modules[(filename, source)] = module
    cls = _job_class(module, source, filename, name)
    return _instantiate(cls, args, filename)


# ----------------------------------------------------------------- what the job asks for

_HASH_PARTITIONERS = {"org.apache.hadoop.mapred.lib.HashPartitioner",
                      "org.apache.hadoop.mapreduce.lib.partition.HashPartitioner"}
# jobconf that changes Hadoop's sort through Java classes or key fields we do not emulate
_SORT_JOBCONF = {"mapreduce.job.output.key.comparator.class",
                 "mapreduce.partition.keycomparator.options",
                 "mapreduce.job.output.group.comparator.class"}


@dataclass
class _Plan:
    """What a loaded job asks of its runner, computed once (mrjob's job-to-runner kwargs)."""
    job: Any
    kwargs: dict
    steps: list
    names: dict = field(default_factory=dict)  # name in the working dir -> local path
    extra_args: list = field(default_factory=list)  # job args every task gets


_plans: "weakref.WeakKeyDictionary" = weakref.WeakKeyDictionary()


def _plan(job: Any) -> _Plan:
    plan = _plans.get(job)
    if plan is None:
        plan = _make_plan(job)
        _plans[job] = plan
    return plan


def _make_plan(job: Any) -> _Plan:
    # _runner_kwargs() is how an MRJob hands itself to any mrjob runner: steps, jobconf,
    # files, file and passthrough arguments, sort_values, Hadoop formats, switches.
    kwargs = job._runner_kwargs()
    plan = _Plan(job=job, kwargs=kwargs, steps=kwargs["steps"])
    if _refusal(plan) is None:
        plan.names, plan.extra_args = _working_dir(job, kwargs)
    return plan


def _working_dir(job: Any, kwargs: dict) -> tuple[dict, list]:
    """The task working directory's files by name, and the task arguments that use them.

    Filled in the order mrjob's runners fill theirs (script, file arguments, uploaded
    files), with mrjob's own WorkingDirManager, so that names (and their `-1` suffixes on
    clashes) are the ones the job would see under mrjob.
    """
    from mrjob.conf import combine_path_lists
    from mrjob.setup import WorkingDirManager, parse_legacy_hash_path

    wd = WorkingDirManager()
    script = job.mr_job_script()
    if script:
        wd.add("file", script)
    for arg in kwargs["extra_args"]:
        if isinstance(arg, dict):
            wd.add(**arg)
    for hash_path in combine_path_lists(kwargs.get("upload_files") or []):
        wd.add(**parse_legacy_hash_path("file", hash_path, must_name="upload_files"))
    names = {name: os.path.abspath(path) for name, path in wd.name_to_path("file").items()}
    extra = [wd.name(**a) if isinstance(a, dict) else a for a in kwargs["extra_args"]]
    return names, extra


def _step_classes(job: Any) -> list:
    from mrjob.step import MRStep
    return [type(s).__name__ for s in job.steps() if not isinstance(s, MRStep)]


def refused(job: Any) -> Optional[str]:
    """One line naming what this job uses that cannot run here, or None."""
    return _refusal(_plan(job))


def _refusal(plan: _Plan) -> Optional[str]:
    kwargs = plan.kwargs
    if not kwargs["steps"]:
        return f"{type(plan.job).__name__} has no steps (no mapper, combiner or reducer)"
    others = _step_classes(plan.job)
    if others:
        return f"{others[0]} steps need Hadoop or Spark, which blfs does not run"
    checks = [
        ("hadoop_input_format", "HADOOP_INPUT_FORMAT (a Hadoop InputFormat class)"),
        ("hadoop_output_format", "HADOOP_OUTPUT_FORMAT (a Hadoop OutputFormat class)"),
        ("libjars", "LIBJARS (Java libraries for Hadoop)"),
        ("upload_archives", "ARCHIVES/--archives (archives unpacked in the working dir)"),
        ("upload_dirs", "DIRS/--dirs (directories in the working dir)"),
        ("setup", "--setup (commands run before each task)"),
        ("py_files", "--py-files"),
    ]
    for key, feature in checks:
        if kwargs.get(key):
            return f"{feature} is not supported by blfs"
    partitioner = kwargs.get("partitioner")
    if partitioner and partitioner not in _HASH_PARTITIONERS:
        return f"PARTITIONER {partitioner} (a Java class) is not supported by blfs"
    return _refused_steps(kwargs)


def _refused_steps(kwargs: dict) -> Optional[str]:
    for n, desc in enumerate(kwargs["steps"]):
        if desc.get("input_manifest") and n > 0:
            return f"mapper_raw in step {n + 1}: only the first step may read whole files"
        if desc.get("input_manifest") and "pre_filter" in desc.get("mapper", {}):
            return "mapper_pre_filter with mapper_raw is not supported by blfs"
        for key in _step_jobconf(kwargs, desc):
            if _SORT_JOBCONF.intersection(_jobconf_names(key)):
                return f"jobconf {key} (a custom Hadoop sort) is not supported by blfs"
    return None


def _jobconf_names(key: str) -> list:
    """A jobconf name and its names in the other Hadoop versions."""
    from mrjob.compat import translate_jobconf_for_all_versions
    return translate_jobconf_for_all_versions(key)


def _step_jobconf(kwargs: dict, desc: dict) -> dict:
    from mrjob.conf import combine_jobconfs
    return combine_jobconfs(kwargs.get("jobconf"), desc.get("jobconf"))


def files(job: Any) -> dict:
    """{name in each task's working directory: local path}: the job file itself (mrjob's
    working directory always holds it), FILES, --files and the values of add_file_arg
    options. The engine places each file under its name before a task starts."""
    return dict(_plan(job).names)


def input_format(job: Any) -> str:
    """"files" when the first step reads whole files (mapper_raw), else "lines"."""
    first = _plan(job).steps[0] if _plan(job).steps else {}
    return "files" if first.get("input_manifest") else "lines"


# ----------------------------------------------------------------- what a task knows


def _ignore(*args: Any) -> None:
    pass


@dataclass
class TaskContext:
    """What the engine tells a task about itself. steps(job, context) calls context() once
    per task function call, when the iterator it returned is first advanced (a combine run
    on each spill of a map asks again, and gets fresh combiner_init/final, as in Hadoop).

    - job_id, attempt: for mapreduce.job.id / mapreduce.task.attempt.id.
    - task: the task's number: the map's split index, the reduce's partition
      (mapreduce.task.partition).
    - input_path, input_start, input_length: the map's input split (the original file,
      e.g. the .gz, before any decompression): mapreduce.map.input.file (as file://...),
      .start and .length, and the file a mapper_raw step reads.
    - output_dir: mapreduce.task.output.dir, if the engine has one to tell.
    - increment_counter(group, name, amount) and set_status(text): where mrjob's
      increment_counter and set_status go (blfs's Job.increment_counter / set_status).

    The task runs in the current working directory, which must hold files(job).
    """
    job_id: str = "blfs"
    task: int = 0
    attempt: int = 0
    input_path: Optional[str] = None
    input_start: int = 0
    input_length: Optional[int] = None
    output_dir: Optional[str] = None
    input_local: Optional[str] = None  # where the task opens its input (mapper_raw), if
    # not at input_path: e.g. /proc/self/fd/N of a descriptor the engine opened for it
    increment_counter: Callable[[str, str, int], None] = _ignore
    set_status: Callable[[str], None] = _ignore


class _Reporter(io.RawIOBase):
    """A task's stderr: `reporter:counter:` and `reporter:status:` lines (how mrjob, and
    any streaming command, talks to Hadoop) go to the context's hooks; the rest to ours."""

    def __init__(self, ctx: TaskContext):
        super().__init__()
        self.ctx = ctx
        self.carry = b""

    def writable(self) -> bool:
        return True

    def write(self, data: Any) -> int:
        data = bytes(data)
        *lines, self.carry = (self.carry + data).split(b"\n")
        for line in lines:
            self._line(line)
        return len(data)

    def finish(self) -> None:
        """The end of the task: a last line without its newline counts too."""
        if self.carry:
            self._line(self.carry)
            self.carry = b""

    def _line(self, line: bytes) -> None:
        from mrjob.parse import parse_mr_job_stderr
        parsed = parse_mr_job_stderr([line])
        for group, counters in parsed["counters"].items():
            for name, amount in counters.items():
                self.ctx.increment_counter(group, name, amount)
        for status in parsed["statuses"]:
            self.ctx.set_status(status)
        if parsed["other"]:
            out = getattr(sys.stderr, "buffer", None)
            if out is None:
                sys.stderr.write(line.decode("utf-8", "backslashreplace") + "\n")
            else:
                out.write(line + b"\n")
                out.flush()


# ----------------------------------------------------------------- lines and pairs


def _split(line: bytes) -> tuple:
    """A line as the shuffle carries it: (encoded key, the rest from the tab on)."""
    tab = line.find(b"\t")
    return (line, b"") if tab < 0 else (line[:tab], line[tab:])


def _pairs_of(lines: Iterable[bytes]) -> Iterator[tuple]:
    """What a task wrote, as shuffle pairs: one per line, as Hadoop would read it back."""
    for line in lines:
        if b"\n" in line:  # a protocol that wrote a newline wrote two lines
            yield from map(_split, line.split(b"\n"))
        else:
            yield _split(line)


def format_line(key: bytes, value: bytes) -> bytes:
    """The output line for a final pair: exactly what mrjob writes."""
    return key + value + b"\n"


def _input_line(value: Any) -> bytes:
    """A line of the first step's input as bytes.

    Bytes are taken as they are (what mrjob reads). blfs's lines format gives text
    (bad bytes replaced, CR removed); re-encoding it is exact for UTF-8 input without CRs,
    and for text decoded with surrogateescape."""
    if isinstance(value, str):
        return value.encode("utf-8", "surrogateescape")
    return value


def _first_lines(records: Iterable[tuple]) -> Iterator[bytes]:
    return (_input_line(value) for _, value in records)


def _shuffled_lines(pairs: Iterable[tuple]) -> Iterator[bytes]:
    return (key + value for key, value in pairs)


def _stripped(lines: Iterable[bytes]) -> Iterator[bytes]:
    """Lines as an mrjob Python task reads them: without trailing CRs and LFs (commands,
    as under Hadoop, see them as they are)."""
    return (line.rstrip(b"\r\n") for line in lines)


# ----------------------------------------------------------------- commands


class CommandFailed(RuntimeError):
    """A mapper/combiner/reducer command or pre-filter exited with a non-zero status."""


_CHUNK = 1 << 16


def _chunks(lines: Iterable[bytes]) -> Iterator[bytes]:
    """Lines, newline-terminated, in writes of about 64 KiB."""
    buf, size = [], 0
    for line in lines:
        buf.append(line)
        size += len(line) + 1
        if size >= _CHUNK:
            buf.append(b"")
            yield b"\n".join(buf)
            buf, size = [], 0
    if buf:
        buf.append(b"")
        yield b"\n".join(buf)


def _piped(argv: list, lines: Iterable[bytes], reporter: _Reporter) -> Iterator[bytes]:
    """The output lines of a command fed with lines, streamed both ways in this thread.

    One thread, one selector: the engine's record iterator is only ever advanced here, and
    neither pipe can fill up while we wait on the other. Non-zero exit: CommandFailed.
    """
    proc = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE)
    try:
        yield from _exchange(proc, _chunks(lines), reporter)
        status = proc.wait()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        for pipe in (proc.stdin, proc.stdout, proc.stderr):
            if not pipe.closed:
                pipe.close()
    if status != 0:
        raise CommandFailed(f"command {shlex.join(argv)} exited with status {status}")


def _exchange(proc: subprocess.Popen, chunks: Iterator[bytes],
              reporter: _Reporter) -> Iterator[bytes]:
    sel = selectors.DefaultSelector()
    os.set_blocking(proc.stdin.fileno(), False)
    sel.register(proc.stdin, selectors.EVENT_WRITE)
    sel.register(proc.stdout, selectors.EVENT_READ)
    sel.register(proc.stderr, selectors.EVENT_READ)
    pending, carry = b"", b""
    while sel.get_map():
        for key, _ in sel.select():
            pipe = key.fileobj
            if pipe is proc.stdin:
                pending = _feed(sel, proc.stdin, pending, chunks)
                continue
            data = os.read(pipe.fileno(), _CHUNK)
            if not data:
                sel.unregister(pipe)
            elif pipe is proc.stderr:
                reporter.write(data)
            else:
                *lines, carry = (carry + data).split(b"\n")
                yield from lines
    sel.close()
    if carry:
        yield carry


def _feed(sel: selectors.BaseSelector, pipe: BinaryIO, pending: bytes,
          chunks: Iterator[bytes]) -> bytes:
    """Write what the command's stdin takes now; close it after the last chunk."""
    if not pending:
        pending = next(chunks, b"")
        if not pending:
            sel.unregister(pipe)
            pipe.close()
            return b""
    try:
        written = os.write(pipe.fileno(), pending)
    except BlockingIOError:
        return pending
    except BrokenPipeError:  # the command stopped reading: the rest of the input is not its
        sel.unregister(pipe)
        pipe.close()
        return b""
    return pending[written:]


# ----------------------------------------------------------------- tasks


@contextmanager
def _environment(env: dict) -> Iterator[None]:
    """os.environ with env's differences applied, and put back after (tasks may nest:
    a combine inside a map, in an engine that runs both in one process)."""
    changed = {k: v for k, v in env.items() if os.environ.get(k) != v}
    removed = [k for k in os.environ if k not in env]
    saved = {k: os.environ.get(k) for k in [*changed, *removed]}
    os.environ.update(changed)
    for k in removed:
        del os.environ[k]
    # the working directory first on sys.path, as mrjob's tasks have it (shipped modules)
    cwd = os.getcwd()
    sys.path.insert(0, cwd)
    try:
        yield
    finally:
        sys.path.remove(cwd)
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


class _StepRunner:
    """The task functions of one step of a loaded job."""

    def __init__(self, plan: _Plan, number: int, context: Callable[[], TaskContext]):
        self.plan = plan
        self.number = number
        self.desc = plan.steps[number]
        self.context = context

    # --- what the engine calls

    def map_task(self, records: Iterable[tuple]) -> Iterator[tuple]:
        if self.desc.get("input_manifest"):
            return self._run("mapper", self._raw_map, records)
        lines = _first_lines(records) if self.number == 0 else _shuffled_lines(records)
        return self._run("mapper", self._substep, lines)

    def identity_map(self, records: Iterable[tuple]) -> Iterator[tuple]:
        """A first step without a mapper: Hadoop streaming's `cat` over the input lines."""
        return _pairs_of(_first_lines(records))

    def combine_task(self, pairs: Iterable[tuple]) -> Iterator[tuple]:
        return self._run("combiner", self._substep, _shuffled_lines(pairs))

    def reduce_task(self, pairs: Iterable[tuple]) -> Iterator[tuple]:
        return self._run("reducer", self._substep, _shuffled_lines(pairs))

    # --- inside

    def _run(self, mrc: str, body: Callable, inputs: Iterable) -> Iterator[tuple]:
        ctx = self.context()
        reporter = _Reporter(ctx)
        with _environment(self._env(mrc, ctx)):
            yield from _pairs_of(body(mrc, ctx, reporter, inputs))
        reporter.finish()

    def _substep(self, mrc: str, ctx: TaskContext, reporter: _Reporter,
                 lines: Iterable[bytes]) -> Iterator[bytes]:
        substep = self.desc[mrc]
        if substep["type"] == "command":
            command = substep["command"]
            argv = shlex.split(command) if isinstance(command, str) else list(command)
            return _piped(argv, lines, reporter)
        if "pre_filter" in substep:
            lines = _piped(self._sh() + ["-c", substep["pre_filter"]], lines, reporter)
        return self._script(mrc, reporter, lines)

    def _script(self, mrc: str, reporter: _Reporter, lines: Iterable[bytes],
                extra: tuple = ()) -> Iterator[bytes]:
        """Lines through mrjob's own task function, read and written by its protocols."""
        job = self._task_job(mrc, reporter, extra)
        read, write = job.pick_protocols(self.number, mrc)
        task = {"mapper": job.map_pairs, "combiner": job.combine_pairs,
                "reducer": job.reduce_pairs}[mrc]
        for key, value in task(map(read, _stripped(lines)), self.number):
            yield write(key, value)

    def _raw_map(self, mrc: str, ctx: TaskContext, reporter: _Reporter,
                 records: Iterable[tuple]) -> Iterator[bytes]:
        """mapper_raw: the job reads its input file itself (path and URI, as mrjob gives
        them); the path is the context's, else each record's key ("files" format)."""
        if ctx.input_path:
            # the task may not be allowed to open the input's path: a path to the
            # descriptor its engine opened for it, if there is one (the URI stays the file's)
            local = ctx.input_local or os.path.abspath(ctx.input_path)
            yield from self._script(mrc, reporter, (), (local, os.path.abspath(ctx.input_path)))
            return
        for path in (os.path.abspath(key) for key, _ in records):
            yield from self._script(mrc, reporter, (), (path, path))

    def _task_job(self, mrc: str, reporter: _Reporter, extra: tuple) -> Any:
        """A fresh instance for this task, with the arguments mrjob's runners give one."""
        args = [f"--step-num={self.number}", f"--{mrc}", *self.plan.extra_args, *extra]
        cls = type(self.plan.job)
        job = _instantiate(cls, args, cls.__name__)
        job.sandbox(stderr=reporter)  # mrjob's counters and status lines
        return job

    def _sh(self) -> list:
        from mrjob.conf import combine_cmds
        return combine_cmds(self.plan.kwargs.get("sh_bin")) or ["/bin/sh", "-ex"]

    def _env(self, mrc: str, ctx: TaskContext) -> dict:
        """The environment mrjob's local runners give a task: the jobconf (user's and
        simulated, under every Hadoop name) as variables, then --cmdenv."""
        from mrjob.conf import combine_jobconfs, combine_local_envs
        user = combine_jobconfs(self._sort_values_jobconf(),
                                _step_jobconf(self.plan.kwargs, self.desc))
        return combine_local_envs(os.environ, _as_env(user),
                                  _as_env(self._simulated(mrc, ctx)),
                                  self.plan.kwargs.get("cmdenv"))

    def _sort_values_jobconf(self) -> dict:
        from mrjob.runner import _SORT_VALUES_JOBCONF
        return dict(_SORT_VALUES_JOBCONF) if self.plan.kwargs.get("sort_values") else {}

    def _simulated(self, mrc: str, ctx: TaskContext) -> dict:
        task = f"{ctx.job_id}_{mrc}_{self.number:04d}{ctx.task}"
        cwd = os.getcwd()
        names = sorted(self.plan.names.items())
        conf = {
            "mapreduce.job.id": ctx.job_id,
            "mapreduce.task.id": f"task_{task}",
            "mapreduce.task.attempt.id": f"attempt_{task}_{ctx.attempt}",
            "mapreduce.task.ismap": str(mrc == "mapper").lower(),
            "mapreduce.task.partition": str(ctx.task),
            "mapreduce.job.local.dir": cwd,
            "mapreduce.job.cache.files": ",".join(f"{p}#{n}" for n, p in names),
            "mapreduce.job.cache.local.files": ",".join(os.path.join(cwd, n)
                                                        for n, _ in names),
        }
        if ctx.output_dir:
            conf["mapreduce.task.output.dir"] = ctx.output_dir
        if ctx.input_path and mrc != "reducer":
            path = os.path.abspath(ctx.input_path)
            length = ctx.input_length
            if length is None:
                length = os.path.getsize(path) if os.path.exists(path) else 0
            conf.update({"mapreduce.map.input.file": "file://" + path,
                         "mapreduce.map.input.start": str(ctx.input_start),
                         "mapreduce.map.input.length": str(length)})
        return conf

    def reducers(self) -> Optional[int]:
        """mapreduce.job.reduces (or an older name of it) from the jobconf, if set."""
        from mrjob.compat import jobconf_from_dict
        value = jobconf_from_dict(_step_jobconf(self.plan.kwargs, self.desc),
                                  "mapreduce.job.reduces")
        if value is None:
            return None
        try:
            n = int(value)
        except (TypeError, ValueError):
            raise JobDefinitionError(f"jobconf mapreduce.job.reduces must be a number, "
                                     f"not {value!r}") from None
        return n if n > 0 else None


def _as_env(jobconf: dict) -> dict:
    """Jobconf as Hadoop streaming's environment: each name (and its other Hadoop names)
    with dots as underscores."""
    return {name.replace(".", "_"): str(value)
            for key, value in (jobconf or {}).items() for name in _jobconf_names(key)}


def steps(job: Any, context: Callable[[], TaskContext] = TaskContext) -> list:
    """The job's MRSteps as blfs steps (task-level functions; see the module's docstring).

    context() is called at the start of each task function call and says which task this
    is. Raises JobDefinitionError with refused(job) when the job cannot run here.
    """
    plan = _plan(job)
    why = _refusal(plan)
    if why:
        raise JobDefinitionError(why)
    sort_values = bool(plan.kwargs.get("sort_values"))
    return [_step(_StepRunner(plan, n, context), sort_values) for n in range(len(plan.steps))]


def _step(runner: _StepRunner, sort_values: bool) -> Step:
    desc = runner.desc
    map_task = None
    if "mapper" in desc:
        map_task = runner.map_task
    elif runner.number == 0:
        map_task = runner.identity_map
    return Step(
        map_task=map_task,
        combine_task=runner.combine_task if "combiner" in desc else None,
        reduce_task=runner.reduce_task if "reducer" in desc else None,
        reducers=runner.reducers(),
        sort_values=sort_values,
        format_line=format_line,
    )
