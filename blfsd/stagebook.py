"""What the scheduler keeps counted per stage, so that no decision scans every task. No I/O.

Each stage of a job (pipeline.Stage) has a book: its tasks by state (the pending and the
running ones by index), how many succeeded, how many outputs its consumers may read,
its winners' run times (sorted: the straggler threshold is their median), and the slots
its outputs hold on each node (a worker's sync), and when the winner of a task in each
block of BLOCK tasks last changed (the job's counters). The tasks keep it: every change of a
task's state, result, winner or released flag moves the task in its stage's book
(scheduler.Task.__setattr__), so the book cannot fall behind whichever code changed the
task. tests/test_scheduler.py checks it against a count over every task.
"""
from __future__ import annotations

import bisect
from typing import TYPE_CHECKING, Any, NamedTuple, Optional

from .messages import TaskState

BLOCK = 64  # tasks whose winners' counters the job sums together (scheduler.winners_counters)

if TYPE_CHECKING:  # the scheduler's own type; it imports this module
    from .scheduler import Task


class Facts(NamedTuple):
    """What a stage's book counts of one task."""
    state: TaskState
    readable: bool  # succeeded, its output not released: its consumers may read it
    duration: Optional[float]  # its winner's run time, once it succeeded
    hold: Optional[tuple]  # (result, winner) while its output's slots are held
    winner: Any  # its winning attempt, if any


def facts(task: "Task") -> Facts:
    """What the book counts of `task` now."""
    succeeded = task.state == TaskState.SUCCEEDED
    winner = task.winner
    return Facts(task.state, succeeded and not task.released,
                 winner.finished - winner.started if succeeded and winner else None,
                 (task.result, winner) if task.result and winner and not task.released
                 else None, winner)


def _same_hold(a: Optional[tuple], b: Optional[tuple]) -> bool:
    """The same output of the same winner (by identity: results are compared deeply)."""
    return a is b or (a is not None and b is not None and a[0] is b[0] and a[1] is b[1])


class StageBook:
    """One stage's tasks, counted (see the module's docstring)."""

    def __init__(self) -> None:
        self.pending: set[int] = set()
        self.running: set[int] = set()
        self.succeeded = 0
        self.readable = 0
        self.durations: list[float] = []  # sorted
        self.holds: dict[str, dict[int, list]] = {}  # node -> task -> [(slot, attempt id)]
        self._held_on: dict[int, list] = {}  # task -> the nodes it holds slots on
        self.held_count: dict[str, int] = {}  # node -> the slots held there (pools.room)
        self.winner_changes: dict[int, int] = {}  # block of tasks -> changes of a winner
        # every task that became readable, in order (with repeats): what an early reduce
        # has not been told of is after its place in this log (scheduler.more_input)
        self.readable_log: list[int] = []

    def update(self, index: int, old: Optional[Facts], new: Optional[Facts]) -> None:
        """Task `index` went from `old` facts to `new` ones (None: not in the book)."""
        if old is None or new is None or old[:3] != new[:3]:
            if old is not None:
                self._count(index, old, -1)
            if new is not None:
                self._count(index, new, 1)
        if (old and old.winner) is not (new and new.winner):
            block = index // BLOCK
            self.winner_changes[block] = self.winner_changes.get(block, 0) + 1
        old_hold, new_hold = old and old.hold, new and new.hold
        if not _same_hold(old_hold, new_hold):
            if old_hold:
                self._unhold(index)
            if new_hold:
                self._hold(index, *new_hold)

    def _count(self, index: int, f: Facts, sign: int) -> None:
        """Count a task's facts in (sign 1) or out (sign -1)."""
        for state, members in ((TaskState.PENDING, self.pending),
                               (TaskState.RUNNING, self.running)):
            if f.state == state:
                (members.add if sign > 0 else members.discard)(index)
        self.succeeded += sign * (f.state == TaskState.SUCCEEDED)
        self.readable += sign * f.readable
        if sign > 0 and f.readable:
            self.readable_log.append(index)
        if f.duration is not None:
            if sign > 0:
                bisect.insort(self.durations, f.duration)
            else:
                del self.durations[bisect.bisect_left(self.durations, f.duration)]

    def _hold(self, index: int, result: Any, winner: Any) -> None:
        """The slots of a task's output, each once (a map's segments share slots)."""
        by_node: dict[str, dict] = {}
        for loc in result.segments:
            by_node.setdefault(loc.node, {})[(loc.slot, winner.id)] = None
        for node, pairs in by_node.items():
            self.holds.setdefault(node, {})[index] = list(pairs)
            self.held_count[node] = self.held_count.get(node, 0) + len(pairs)
        self._held_on[index] = list(by_node)

    def _unhold(self, index: int) -> None:
        for node in self._held_on.pop(index, ()):
            on_node = self.holds[node]
            self.held_count[node] -= len(on_node.pop(index))
            if not on_node:
                del self.holds[node]
                del self.held_count[node]

    def held_on(self, node: str) -> list:
        """(slot, attempt id) of the outputs this stage holds on `node`, in task order."""
        on_node = self.holds.get(node, {})
        return [pair for index in sorted(on_node) for pair in on_node[index]]

    def median(self) -> Optional[float]:
        """The median of the winners' run times (as statistics.median), None if none."""
        d, n = self.durations, len(self.durations)
        if not n:
            return None
        return d[n // 2] if n % 2 else (d[n // 2 - 1] + d[n // 2]) / 2
