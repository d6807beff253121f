"""What a person or a script is shown of a job that ran: its counters grouped as Hadoop
and mrjob print them, the time of each phase, its tasks and attempts, the timeline record.

Pure functions over a job's status (scheduler.job_status: its counters and its attempts,
each with worker, state, why, start, end and records and bytes in and out).
"""
from __future__ import annotations

from typing import Any, Optional

# the engine's own counters (group "blfs"), in the order a job's data goes through them
BLFS_ORDER = ("map_input_records", "map_input_bytes", "map_output_records",
              "map_output_bytes", "map_spills", "spill_ms", "combine_input_records",
              "combine_output_records", "shuffle_read_bytes", "shuffle_read_ms",
              "reduce_segments_read", "reduce_merge_passes", "reduce_merge_bytes",
              "reduce_merge_ms", "reduce_input_records", "reduce_input_groups",
              "reduce_output_records", "output_bytes", "map_ms", "reduce_ms",
              "counters_dropped")
OUTCOME = {"lost": "lost", "timeout": "timeout"}  # a failed attempt's why -> picture


def counters_lines(counters: dict) -> list[str]:
    """`Counters: N`, then each group and its `name=value` lines (blfs's first, in the
    order of the data flow; the job's own groups after, by name)."""
    groups = sorted(counters, key=lambda g: (g != "blfs", g))
    total = sum(len(counters[g]) for g in groups)
    lines = [f"Counters: {total}"]
    for group in groups:
        names = counters[group]
        order = {n: i for i, n in enumerate(BLFS_ORDER)} if group == "blfs" else {}
        lines.append(f"\t{group}")
        for name in sorted(names, key=lambda n: (order.get(n, len(order)), n)):
            lines.append(f"\t\t{name}={names[name]}")
    return lines


def phase_name(step: int, kind: str, steps: int) -> str:
    return f"step {step + 1} {kind}" if steps > 1 else str(kind)


def phases(status: dict) -> list[dict]:
    """Each phase (a step's maps, its reduces) with when it began and ended (its first
    attempt's start, its last attempt's end) and its tasks and attempts."""
    attempts = [a for a in status.get("attempts") or [] if a.get("started")]
    steps = 1 + max([int(a.get("step") or 0) for a in attempts], default=0)
    by: dict = {}
    for a in attempts:
        by.setdefault((a.get("stage", 0), a.get("step", 0), a.get("kind")), []).append(a)
    out = []
    for (_, step, kind), rows in sorted(by.items(), key=lambda kv: kv[0][0]):
        ends = [a["finished"] for a in rows if a.get("finished")]
        out.append({"name": phase_name(step, kind, steps),
                    "start": min(a["started"] for a in rows),
                    "end": max(ends) if ends else None,
                    "tasks": len({a["task"] for a in rows}), "attempts": len(rows)})
    return out


def phase_lines(status: dict) -> list[str]:
    """`Phases:`, then each phase's name, duration, tasks and attempts."""
    lines = ["Phases:"]
    for p in phases(status):
        took = f"{p['end'] - p['start']:.2f} s" if p["end"] else "unfinished"
        lines.append(f"\t{p['name']:<16} {took:>10}  {_many(p['tasks'], 'task')}, "
                     f"{_many(p['attempts'], 'attempt')}")
    return lines


def _many(n: int, what: str) -> str:
    return f"{n} {what}{'s' if n != 1 else ''}"


def summary(status: dict) -> dict:
    """The end of a job for scripts (`submit --json`)."""
    started, finished = status.get("started"), status.get("finished")
    return {"job": status.get("job"), "name": status.get("name"),
            "state": status.get("state"), "error": status.get("error"),
            "output": status.get("output"),
            "seconds": (finished - started) if started and finished else None,
            "counters": status.get("counters") or {},
            "phases": [{**p, "seconds": (p["end"] - p["start"]) if p["end"] else None}
                       for p in phases(status)]}


def outcome(a: dict) -> str:
    """How an attempt ended, as the timeline draws it."""
    state = str(a.get("state", "succeeded"))
    if state == "failed":
        return OUTCOME.get(str(a.get("why", "")), "failed")
    return state


def timeline_record(status: dict) -> dict:
    """A job's status as blfsd.timeline.render takes it."""
    return {"job": status.get("job"), "name": status.get("name"),
            "started": status.get("started"), "finished": status.get("finished"),
            "attempts": [{**a, "outcome": outcome(a)} for a in status.get("attempts") or []],
            "phases": [{"name": p["name"], "start": p["start"], "end": p["end"]}
                       for p in phases(status) if p["end"]]}


def _seconds(x: Optional[float]) -> str:
    return f"{x:.2f}" if x is not None else "-"


def task_rows(status: dict) -> list[dict]:
    """Every attempt of a job as `blfs tasks` lists it; times from the job's start."""
    origin = status.get("started") or 0.0
    rows = []
    for a in status.get("attempts") or []:
        start, end = a.get("started"), a.get("finished")
        io = a.get("io") or [None] * 4
        rows.append({"attempt": a.get("attempt"), "task": a.get("task"),
                     "kind": a.get("kind"), "step": a.get("step", 0),
                     "worker": a.get("worker"), "state": a.get("state"),
                     "backup": bool(a.get("backup")),
                     "start": (start - origin) if start else None,
                     "seconds": (end - start) if start and end else None,
                     "records_in": io[0], "bytes_in": io[1], "records_out": io[2],
                     "bytes_out": io[3], "why": _why(a)})
    return rows


def _why(a: dict) -> str:
    """Why an attempt did not succeed, in a few words (its error's last line)."""
    why = str(a.get("why") or "")
    last = (str(a.get("error") or "").strip().splitlines() or [""])[-1]
    reason = {"lost": "lost worker", "oom": "out of memory", "timeout": "timeout",
              "disk_full": "disk full"}.get(why, why)
    return f"{reason}: {last}" if last and a.get("state") == "failed" else reason


def task_lines(rows: list[dict]) -> list[str]:
    """A table of attempts."""
    head = (f"{'ATTEMPT':<28} {'WORKER':<8} {'STATE':<10} {'START':>7} {'SECS':>7} "
            f"{'REC IN':>9} {'BYTES IN':>11} {'REC OUT':>9} {'BYTES OUT':>11}  WHY")
    lines = [head]
    for r in rows:
        name = str(r["attempt"]).split("/", 1)[-1] + (" (backup)" if r["backup"] else "")
        lines.append(f"{name:<28} {str(r['worker']):<8} {str(r['state']):<10} "
                     f"{_seconds(r['start']):>7} {_seconds(r['seconds']):>7} "
                     f"{_n(r['records_in']):>9} {_n(r['bytes_in']):>11} "
                     f"{_n(r['records_out']):>9} {_n(r['bytes_out']):>11}  {r['why']}")
    return lines


def _n(x: Any) -> str:
    return f"{x:,}" if isinstance(x, int) else "-"
