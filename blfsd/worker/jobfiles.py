"""Files shipped with a job (`files` of its class, `--file`, an mrjob job's FILES): asked
of the master once per job by the first attempt of it here, kept until the job is
released, and placed in each attempt's working directory with the job file itself."""
from __future__ import annotations

import os
from typing import Awaitable, Callable, Optional

from ..messages import AttemptSpec, ShippedFile
from ..sandbox import Identity


class JobFiles:
    """The shipped files of the jobs that run here."""

    def __init__(self, ask: Callable[[str], Awaitable[list]]):
        self.ask = ask  # job id -> [ShippedFile], from the master
        self.cache: dict[str, list] = {}

    async def of(self, spec: AttemptSpec) -> list:
        if not spec.files:
            return []
        if spec.job not in self.cache:
            self.cache[spec.job] = await self.ask(spec.job)
        return self.cache[spec.job]

    def forget(self, job: str) -> None:
        self.cache.pop(job, None)


def place(directory: str, spec: AttemptSpec, shipped: list,
          owner: Optional[Identity]) -> None:
    """The job file and the shipped files in an attempt's working directory, the task
    user's (it may read them, and replace them for itself)."""
    files = [ShippedFile(name=spec.job_file, data=spec.source.encode())] + list(shipped)
    for f in files:
        path = os.path.join(directory, os.path.basename(f.name))
        with open(path, "wb") as out:
            out.write(f.data)
        if owner is not None:
            os.chown(path, owner.uid, owner.gid)
