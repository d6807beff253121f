"""Seeing what a job did, from the command line: what `submit` prints at a job's end, and
`blfs tasks`, `blfs logs` and `blfs timeline`.

On a cluster these ask the master (a job's status, and its attempts' output, which the
master fetches from the workers that ran them). The embedded cluster of `submit --local`
is gone when `submit` returns, so `submit --keep-history DIR` writes the job's final status
and its attempts' output to DIR/JOB.json before it ends; `--history DIR` makes the three
commands read that file instead of asking a master.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
from typing import Any

from . import config as configmod, report, rpc, timeline
from .client import query
from .errors import NotFound, UsageError


def add_parsers(sub: Any) -> None:
    """tasks, logs and timeline."""
    t = sub.add_parser("tasks", help="a job's tasks and attempts")
    lg = sub.add_parser("logs", help="what a job's attempts wrote (stdout, stderr, errors)")
    tl = sub.add_parser("timeline", help="a job's attempts as an SVG picture")
    for c in (t, lg, tl):
        c.add_argument("job", metavar="JOB")
    lg.add_argument("task", nargs="?", metavar="TASK",
                    help="one task (m-00003) or attempt (JOB/m-00003/1@...)")
    tl.add_argument("-o", "--output", required=True, metavar="FILE.svg")
    for c in (t, lg, tl):
        c.add_argument("--history", metavar="DIR",
                       help="read what `submit --keep-history DIR` kept, not the master")
        c.add_argument("--master", metavar="ADDRESS")
        c.add_argument("--key", metavar="FILE")
    t.add_argument("--json", action="store_true", help="machine-readable output")
    lg.add_argument("--json", action="store_true", help="machine-readable output")


def add_submit_options(s: Any) -> None:
    s.add_argument("--json", action="store_true",
                   help="at the end, the job's outcome, counters and phases as JSON on "
                        "stdout")
    s.add_argument("--timeline", metavar="FILE.svg", help="at the end, the job's timeline")
    s.add_argument("--keep-history", metavar="DIR",
                   help="at the end, keep the job's status and its attempts' output in "
                        "DIR/JOB.json (for blfs tasks/logs/timeline --history DIR)")


# ------------------------------------------------------------------ a job's end

async def job_ended(args: argparse.Namespace, peer: rpc.Peer, status: dict) -> None:
    """What `submit` does when its job ended: its counters and phases (stderr), or its
    summary as JSON (stdout), its timeline, its history kept."""
    if args.timeline:
        write_timeline(status, args.timeline)
    if args.keep_history:
        logs = await peer.call("logs", limit=60, job=status["job"])
        keep(args.keep_history, status, logs)
    if args.json:
        print(json.dumps(report.summary(status), indent=2))
    elif not args.quiet:
        lines = report.counters_lines(status.get("counters") or {}) + \
            report.phase_lines(status)
        print("\n".join(lines), file=sys.stderr)


def keep(directory: str, status: dict, logs: dict) -> str:
    """DIR/JOB.json: a finished job's status and its attempts' output."""
    os.makedirs(directory, exist_ok=True)
    path = os.path.join(directory, f"{status['job']}.json")
    tmp = path + ".tmp"
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump({"status": status, "logs": logs}, f)
    os.replace(tmp, path)
    return path


def kept(directory: str, job: str) -> dict:
    """What keep() wrote for a job."""
    if "/" in job or job.startswith("."):
        raise UsageError(f"not a job id: {job}")
    path = os.path.join(directory, f"{job}.json")
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except FileNotFoundError:
        raise NotFound(f"no job {job} kept in {directory}") from None
    except (OSError, ValueError) as exc:
        raise UsageError(f"{path}: {exc}") from None


def write_timeline(status: dict, path: str) -> None:
    svg = timeline.render(report.timeline_record(status))
    with open(path, "w", encoding="utf-8") as f:
        f.write(svg)


# ------------------------------------------------------------------ the commands

def _status(args: argparse.Namespace, cfg: configmod.Config) -> dict:
    if args.history:
        return kept(args.history, args.job)["status"]
    return asyncio.run(query(args, cfg, "status", job=args.job))


def cmd_tasks(args: argparse.Namespace, cfg: configmod.Config) -> int:
    rows = report.task_rows(_status(args, cfg))
    if args.json:
        print(json.dumps(rows, indent=2))
    else:
        print("\n".join(report.task_lines(rows)))
    return 0


def cmd_timeline(args: argparse.Namespace, cfg: configmod.Config) -> int:
    status = _status(args, cfg)
    write_timeline(status, args.output)
    print(f"{args.output}: {len(status.get('attempts') or [])} attempts of job "
          f"{status.get('job')}", file=sys.stderr)
    return 0


def cmd_logs(args: argparse.Namespace, cfg: configmod.Config) -> int:
    if args.history:
        logs = kept(args.history, args.job)["logs"]
        logs["attempts"] = [a for a in logs["attempts"] if args.task is None
                            or args.task in (a.get("task"), a.get("attempt"))]
        if args.task and not logs["attempts"]:
            raise NotFound(f"job {args.job} has no task or attempt {args.task}")
    else:
        logs = asyncio.run(query(args, cfg, "logs", limit=60, job=args.job, task=args.task))
    if args.json:
        print(json.dumps(logs, indent=2))
        return 0
    for a in logs["attempts"]:
        print("\n".join(log_lines(a)))
    if logs.get("more"):
        print(f"({logs['more']} earlier attempts not shown: name a task)")
    return 0


def log_lines(a: dict) -> list[str]:
    """One attempt: a heading, its error (a traceback for user code), its output."""
    why = f", {a['why']}" if a.get("why") else ""
    lines = [f"==> {a.get('attempt')} on {a.get('worker')}: {a.get('state')}{why} <=="]
    if a.get("error"):
        lines += ["-- error:", str(a["error"]).rstrip()]
    if a.get("output"):
        lines += ["-- output:", str(a["output"]).rstrip()]
    elif a.get("unreachable") or a.get("omitted"):
        lines.append(f"-- output not available: {a.get('unreachable') or a.get('omitted')}")
    else:
        lines.append("-- no output")
    return lines


COMMANDS = {"tasks": cmd_tasks, "logs": cmd_logs, "timeline": cmd_timeline}
