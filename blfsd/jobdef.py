"""What a job file defines, as `blfs submit` tells the master: its API, class, input
format, steps, and the files shipped with it. Read once in the submitting process; every
task process reads the job file again for itself (runtime/code.py).

A job file is a `blfsd.Job` subclass (native) or an `mrjob.job.MRJob` subclass, run
unmodified through mrjob_compat.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Optional

from .errors import JobDefinitionError, UsageError
from .job import Context, job_attributes, load_job_class, native_steps, step_specs
from .messages import MAX_SHIPPED, ShippedFile


@dataclass
class JobDefinition:
    api: str  # blfs or mrjob
    job_class: str
    input_format: str
    reducers: Optional[int]
    steps: list  # messages.StepSpec
    shipped: list = field(default_factory=list)  # messages.ShippedFile


def describe(path: str, source: str, name: Optional[str], args: list,
             extra_files: list) -> JobDefinition:
    """The job file's definition; one-line errors for what is wrong with it."""
    from . import mrjob_compat
    filename = os.path.basename(path)
    if mrjob_compat.is_mrjob_source(source):
        return _mrjob(path, source, filename, name, args, extra_files)
    cls = _load_native(path, source, filename, name)
    attrs = job_attributes(cls, path)
    steps = native_steps(cls(args, Context()), filename)
    declared = [_resolve(path, f) for f in getattr(cls, "files", ()) or ()]
    return JobDefinition("blfs", attrs["class"], attrs["input_format"], attrs["reducers"],
                         step_specs(steps), _ship(declared + list(extra_files)))


def _load_native(path: str, source: str, filename: str, name: Optional[str]) -> type:
    try:
        return load_job_class(source, filename, name)
    except JobDefinitionError:
        raise
    except KeyboardInterrupt:
        raise
    except BaseException as exc:  # SystemExit too: a job file must not end `blfs` silently
        raise JobDefinitionError(f"{path} fails to load: {exc.__class__.__name__}: {exc}") \
            from None


def _mrjob(path: str, source: str, filename: str, name: Optional[str], args: list,
           extra_files: list) -> JobDefinition:
    from . import mrjob_compat
    # loaded under its full path here, so that mrjob finds FILES beside the job file
    job = mrjob_compat.load(source, os.path.abspath(path), args, name)
    why = mrjob_compat.refused(job)
    if why:
        raise JobDefinitionError(f"{path}: {why}")
    steps = mrjob_compat.steps(job)
    named = {n: _resolve(path, p) for n, p in mrjob_compat.files(job).items() if n != filename}
    return JobDefinition("mrjob", type(job).__name__, mrjob_compat.input_format(job), None,
                         step_specs(steps), _ship(list(named.values()) + list(extra_files),
                                                  named))


def _resolve(job_path: str, path: str) -> str:
    """A path a job class names in its files: relative to the job file's directory (as
    mrjob takes its FILES)."""
    return path if os.path.isabs(path) else os.path.join(os.path.dirname(
        os.path.abspath(job_path)), path)


def _ship(paths: list, names: Optional[dict] = None) -> list:
    """The files to ship, read, under their names in a task's directory; at most
    MAX_SHIPPED bytes in all."""
    by_path = {p: n for n, p in (names or {}).items()}
    shipped, total = [], 0
    for path in paths:
        try:
            with open(path, "rb") as f:
                data = f.read(MAX_SHIPPED + 1)
        except OSError as exc:
            raise UsageError(f"cannot read the file to ship {path}: {exc.strerror}") from None
        total += len(data)
        if total > MAX_SHIPPED:
            raise UsageError(f"the files shipped with the job are over {MAX_SHIPPED >> 20} "
                             "MiB in all; put larger data in a dataset (blfs put) or on a "
                             "file system every node sees")
        shipped.append(ShippedFile(name=by_path.get(path, os.path.basename(path)),
                                   data=data))
    names_seen = [f.name for f in shipped]
    if len(set(names_seen)) != len(names_seen):
        raise UsageError(f"two shipped files have the same name: {', '.join(names_seen)}")
    return shipped
