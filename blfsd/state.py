"""The master's persistent job records (StateDirectory): nothing accepted is silently lost.

Each job has `jobs/JOB.msgpack`, its spec from the moment it is accepted and its final
status once it has ended, and while it runs `jobs/JOB.results`, one msgpack record per
finished task appended and fsynced before that task's success counts, so that a master
restarted in the middle of a job resumes it with the finished tasks' outputs instead of
running them again.
"""
from __future__ import annotations

import contextlib
import logging
import os
import time
from dataclasses import dataclass, field
from typing import Optional

import msgpack

from .errors import StateError

log = logging.getLogger("blfs.state")

RECORD_ERRORS = (OSError, ValueError, TypeError, OverflowError, RecursionError)


def save_msgpack(path: str, record: object) -> None:
    """Replace a record file atomically: a crash leaves the old one or the new one, and a
    record that cannot be encoded leaves no file behind."""
    data = msgpack.packb(record, use_bin_type=True)  # before any file exists
    tmp = path + ".tmp"
    try:
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.rename(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


@dataclass
class JobRecord:
    """What a previous master left of a job: its record and its finished tasks."""
    record: dict
    results: list = field(default_factory=list)


class JobStore:
    """One msgpack file per job (and its results while it runs) under STATE/jobs."""

    def __init__(self, directory: str | None):
        self.dir = os.path.join(directory, "jobs") if directory else None
        if self.dir:
            os.makedirs(self.dir, mode=0o750, exist_ok=True)

    def _path(self, job_id: str, suffix: str = ".msgpack") -> str:
        return os.path.join(self.dir, f"{job_id}{suffix}")

    def save(self, job_id: str, record: dict) -> None:
        """Replace a job's record (nothing without a state directory: --local). Raises
        StateError when it cannot be written."""
        if not self.dir:
            return
        try:
            save_msgpack(self._path(job_id), record)
        except RECORD_ERRORS as exc:
            raise StateError(f"cannot record job {job_id} in {self.dir}: "
                             f"{_reason(exc)}") from exc

    def add_result(self, job_id: str, result: dict) -> None:
        """Append one finished task's result, durably. Raises StateError."""
        if not self.dir:
            return
        try:
            data = msgpack.packb(result, use_bin_type=True)
            fd = os.open(self._path(job_id, ".results"),
                         os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o640)
            try:
                if os.write(fd, data) != len(data):
                    raise OSError("short write")
                os.fsync(fd)
            finally:
                os.close(fd)
        except RECORD_ERRORS as exc:
            raise StateError(f"cannot record a result of job {job_id} in {self.dir}: "
                             f"{_reason(exc)}") from exc

    def drop_results(self, job_id: str) -> None:
        """The job ended (its final status is recorded): its results are not needed."""
        if self.dir:
            with contextlib.suppress(OSError):
                os.unlink(self._path(job_id, ".results"))

    def load_all(self) -> list[JobRecord]:
        """Every record, oldest first; unreadable files are logged and skipped, and a
        results file cut short by a crash gives the results before the cut."""
        if not self.dir:
            return []
        found = []
        for name in sorted(os.listdir(self.dir)):
            if name.endswith(".tmp"):  # a save that a crash cut short
                with contextlib.suppress(OSError):
                    os.unlink(os.path.join(self.dir, name))
                continue
            if not name.endswith(".msgpack"):
                continue
            try:
                with open(os.path.join(self.dir, name), "rb") as f:
                    record = msgpack.unpackb(f.read(), raw=False, strict_map_key=False)
            except (OSError, ValueError, msgpack.UnpackException) as exc:
                log.warning("skipping unreadable job record %s: %s", name, exc)
                continue
            if isinstance(record, dict) and isinstance(record.get("job"), str):
                found.append(JobRecord(record, self._results(record["job"])))
        found.sort(key=lambda r: r.record.get("submitted") or 0)
        return found

    def final_status(self, job_id: str) -> Optional[dict]:
        """The status a job ended with, from its record; None if there is none."""
        if not self.dir:
            return None
        try:
            with open(self._path(job_id), "rb") as f:
                record = msgpack.unpackb(f.read(), raw=False, strict_map_key=False)
        except (OSError, ValueError, msgpack.UnpackException):
            return None
        status = record.get("status") if isinstance(record, dict) else None
        return status if isinstance(status, dict) else None

    def _results(self, job_id: str) -> list:
        try:
            with open(self._path(job_id, ".results"), "rb") as f:
                data = f.read()
        except FileNotFoundError:
            return []
        except OSError as exc:
            log.warning("cannot read the results of job %s: %s", job_id, exc)
            return []
        results = []
        unpacker = msgpack.Unpacker(raw=False, strict_map_key=False)
        unpacker.feed(data)
        try:
            for item in unpacker:
                results.append(item)
        except (ValueError, msgpack.UnpackException):
            log.warning("results of job %s end in a damaged record; %d kept", job_id,
                        len(results))
        return results

    def prune(self, older_than: float, now: float | None = None) -> list:
        """Remove the records of jobs that ended more than `older_than` seconds ago."""
        if not self.dir or older_than <= 0:
            return []
        now = time.time() if now is None else now
        gone = []
        for name in os.listdir(self.dir):
            path = os.path.join(self.dir, name)
            if not name.endswith(".msgpack") or os.path.exists(path[:-8] + ".results"):
                continue
            with contextlib.suppress(OSError):
                if (now - os.stat(path).st_mtime > older_than
                        and self.final_status(name[:-8]) is not None):
                    os.unlink(path)
                    gone.append(name[:-8])
        return gone


def _reason(exc: BaseException) -> str:
    if isinstance(exc, OSError):
        return exc.strerror or str(exc)
    if isinstance(exc, RecursionError):
        return "nested too deeply"
    return str(exc)
