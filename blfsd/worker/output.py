"""What a task process writes to its stdout and stderr: read from a pipe as it comes,
kept bounded (the first and the last bytes, and how much was left out between them),
never copied into the worker's own log; kept per attempt in the worker's work_dir."""
from __future__ import annotations

import asyncio
import logging
import os
import re
import shutil
import time
from typing import Optional

HEAD = 16 << 10
TAIL = 48 << 10
_ID_PART = re.compile(r"[A-Za-z0-9][A-Za-z0-9@._-]{0,99}")  # of JOB/TASK/N@EPOCH

log = logging.getLogger("blfs.worker")


class OutputTail:
    """The output of one task process: its beginning and its end, at most HEAD + TAIL
    bytes, however much it writes."""

    def __init__(self, fd: int):
        self.fd = fd
        self.head = bytearray()
        self.tail = bytearray()
        self.total = 0
        self._done = asyncio.Event()
        os.set_blocking(fd, False)
        asyncio.get_running_loop().add_reader(fd, self._read)

    def _read(self) -> None:
        try:
            data = os.read(self.fd, 65536)
        except BlockingIOError:
            return
        except OSError:
            data = b""
        if not data:
            self._close()
            return
        self.total += len(data)
        room = HEAD - len(self.head)
        if room > 0:
            self.head += data[:room]
            data = data[room:]
        self.tail += data
        if len(self.tail) > TAIL:
            del self.tail[:len(self.tail) - TAIL]

    def _close(self) -> None:
        if self._done.is_set():
            return
        asyncio.get_running_loop().remove_reader(self.fd)
        os.close(self.fd)
        self._done.set()

    async def closed(self, timeout: float) -> None:
        """Wait until every writer is gone (the task and what it left); then stop anyway."""
        try:
            await asyncio.wait_for(self._done.wait(), timeout)
        except asyncio.TimeoutError:
            self._close()

    @property
    def omitted(self) -> int:
        return self.total - len(self.head) - len(self.tail)

    def text(self) -> str:
        """All that was kept, with a line saying how much was left out in the middle."""
        middle = f"\n[... {self.omitted} bytes of output left out ...]\n" \
            if self.omitted > 0 else ""
        return (bytes(self.head).decode(errors="replace") + middle
                + bytes(self.tail).decode(errors="replace"))

    def last_lines(self, n: int) -> str:
        lines = [line for line in self.text().strip().splitlines() if line.strip()]
        return " | ".join(lines[-n:])[-500:]


class AttemptLogs:
    """Each attempt's output, as kept (OutputTail.text), in WORK_DIR/logs/JOB/TASK.N@E.log:
    readable by the operator (and `blfs logs`) after the attempt and its job are gone,
    as long as the master keeps the job's record: `[master] history_days`."""

    def __init__(self, work_dir: str, keep_days: float = 30.0):
        self.dir = os.path.join(work_dir, "logs")
        self.keep_days = keep_days  # 0: for ever, as the master's records

    def path(self, attempt_id: str) -> str:
        """Where an attempt's output goes (JOB/TASK/N@EPOCH -> JOB/TASK.N@EPOCH.log);
        ValueError for anything that is not an attempt id (it names a file)."""
        parts = attempt_id.split("/")
        if len(parts) != 3 or not all(_ID_PART.fullmatch(p) for p in parts):
            raise ValueError(f"not an attempt id: {attempt_id[:100]!r}")
        job, task, number = parts
        return os.path.join(self.dir, job, f"{task}.{number}.log")

    def read(self, attempt_id: str) -> Optional[str]:
        """What an attempt wrote, as kept (None if it wrote nothing, or it is gone)."""
        try:
            with open(self.path(attempt_id), encoding="utf-8", errors="replace") as f:
                return f.read(HEAD + TAIL + 1024)  # what save() wrote, with its marker
        except FileNotFoundError:
            return None

    def save(self, attempt_id: str, output: OutputTail) -> None:
        if output.total == 0:
            return
        path = self.path(attempt_id)
        try:
            os.makedirs(os.path.dirname(path), mode=0o750, exist_ok=True)
            with open(path, "w", encoding="utf-8") as f:
                f.write(output.text())
        except OSError as exc:  # a full work disk must not fail the attempt's report
            log.warning("could not keep the output of %s: %s", attempt_id, exc)

    def prune(self, now: Optional[float] = None) -> list:
        """Remove the output of jobs last written to more than keep_days ago (when the
        master prunes their records too); returns their ids."""
        if self.keep_days <= 0:
            return []
        limit = (time.time() if now is None else now) - self.keep_days * 86400
        try:
            old = [e for e in os.scandir(self.dir) if e.stat().st_mtime < limit]
        except OSError:
            return []
        for entry in old:
            shutil.rmtree(entry.path, ignore_errors=True)
        return sorted(e.name for e in old)
