"""The master's persistent job records (StateDirectory): nothing accepted is silently lost."""
from __future__ import annotations

import logging
import os

import msgpack

log = logging.getLogger("blfs.state")


def save_msgpack(path: str, record: object) -> None:
    """Replace a record file atomically: a crash leaves the old one or the new one."""
    tmp = path + ".tmp"
    with open(tmp, "wb") as f:
        f.write(msgpack.packb(record, use_bin_type=True))
        f.flush()
        os.fsync(f.fileno())
    os.rename(tmp, path)


class JobStore:
    """One msgpack file per job: its spec when accepted, its final status when ended."""

    def __init__(self, directory: str | None):
        self.dir = os.path.join(directory, "jobs") if directory else None
        if self.dir:
            os.makedirs(self.dir, mode=0o750, exist_ok=True)

    def _path(self, job_id: str) -> str:
        return os.path.join(self.dir, f"{job_id}.msgpack")

    def save(self, job_id: str, record: dict) -> None:
        """Replace a job's record (nothing without a state directory: --local)."""
        if not self.dir:
            return
        save_msgpack(self._path(job_id), record)

    def load_all(self) -> list:
        """Every record, oldest first; unreadable files are logged and skipped."""
        if not self.dir:
            return []
        records = []
        for name in sorted(os.listdir(self.dir)):
            if not name.endswith(".msgpack"):
                continue
            try:
                with open(os.path.join(self.dir, name), "rb") as f:
                    record = msgpack.unpackb(f.read(), raw=False, strict_map_key=False)
                if isinstance(record, dict) and "job" in record:
                    records.append(record)
            except (OSError, ValueError, msgpack.UnpackException) as exc:
                log.warning("skipping unreadable job record %s: %s", name, exc)
        records.sort(key=lambda r: r.get("submitted", 0))
        return records
