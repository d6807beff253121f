"""asyncio helpers shared by the daemons."""
from __future__ import annotations

import asyncio
from typing import Any, Awaitable


class TaskSet:
    """Background tasks held until they end (asyncio keeps only weak references to tasks,
    so a task nobody holds can be collected in the middle of its work)."""

    def __init__(self) -> None:
        self.tasks: set[asyncio.Task] = set()

    def spawn(self, coro: Awaitable[Any]) -> asyncio.Task:
        task = asyncio.ensure_future(coro)
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)
        return task

    def __iter__(self):
        return iter(list(self.tasks))

    def __len__(self) -> int:
        return len(self.tasks)
