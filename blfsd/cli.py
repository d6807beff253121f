"""The `blfs` command: submit jobs, watch them, and run the daemons in the foreground."""
from __future__ import annotations

import argparse
import asyncio
import getpass
import json
import logging
import os
import sys
from typing import Any, Optional

from . import auth, config as configmod, rpc
from .errors import BlfsError, ConfigError, ConnectionClosed, JobDefinitionError, UsageError
from .inputs import expand_inputs, make_splits, parse_size
from .job import job_attributes, load_job_class

log = logging.getLogger("blfs.cli")


# ------------------------------------------------------------------------------ parsing

def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="blfs", description="MapReduce over shared block devices.")
    p.add_argument("--config", help="configuration file (default /etc/blfs/blfs.toml)")
    sub = p.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True

    s = sub.add_parser("submit", help="run a job file",
                       usage="blfs submit JOB.py --input PATH --output DIR [options] "
                             "[-- JOB-ARGS...]")
    s.add_argument("job_file", metavar="JOB.py")
    s.add_argument("--input", action="append", required=True, metavar="PATH")
    s.add_argument("--output", required=True, metavar="DIR")
    s.add_argument("--job", metavar="NAME", help="which Job class, if the file has several")
    s.add_argument("--reducers", type=int, metavar="R")
    s.add_argument("--split-size", default=None, metavar="SIZE",
                   help="bytes per map task (default: enough maps for two waves over the "
                        "cluster's task slots, at most 64M each)")
    s.add_argument("--max-attempts", type=int, default=None, metavar="N")
    s.add_argument("--task-timeout", type=float, default=None, metavar="SECONDS")
    s.add_argument("--local", action="store_true", help="run on an embedded cluster here")
    s.add_argument("--workers", type=int, default=0, metavar="N",
                   help="worker processes with --local (default: number of CPUs)")
    s.add_argument("--parallelism", type=int, default=0, metavar="N",
                   help="task attempts at once per local worker (default: CPUs)")
    s.add_argument("--spill-records", type=int, default=0, metavar="N", help=argparse.SUPPRESS)
    s.add_argument("--master", metavar="ADDRESS", help="socket path or host:port")
    s.add_argument("--key", metavar="FILE", help="cluster key for a TCP master")
    s.add_argument("--detach", action="store_true", help="print the job id and return")
    s.add_argument("--quiet", "-q", action="store_true", help="no progress output")

    for name, helptext in (("status", "a job's state (or the cluster's)"),
                           ("jobs", "list jobs"), ("workers", "list workers"),
                           ("cancel", "cancel a job")):
        c = sub.add_parser(name, help=helptext)
        if name == "status":
            c.add_argument("job", nargs="?")
        if name == "cancel":
            c.add_argument("job")
        c.add_argument("--master", metavar="ADDRESS")
        c.add_argument("--key", metavar="FILE")
        c.add_argument("--json", action="store_true", help="machine-readable output")

    m = sub.add_parser("master", help="run the master daemon in the foreground")
    m.add_argument("--verbose", "-v", action="store_true")
    w = sub.add_parser("worker", help="run a worker daemon in the foreground")
    w.add_argument("--verbose", "-v", action="store_true")
    w.add_argument("--name", help=argparse.SUPPRESS)
    w.add_argument("--local-root", help=argparse.SUPPRESS)
    w.add_argument("--slots", type=int, help=argparse.SUPPRESS)
    w.add_argument("--slot-size", type=int, help=argparse.SUPPRESS)
    w.add_argument("--parallelism", type=int, help=argparse.SUPPRESS)
    w.add_argument("--spill-records", type=int, help=argparse.SUPPRESS)
    return p


# ------------------------------------------------------------------------------ submit

def prepare_submit(args: argparse.Namespace) -> dict:
    """Everything about a submission that can be checked here, before any daemon runs."""
    path = args.job_file
    try:
        with open(path, encoding="utf-8") as f:
            source = f.read()
    except OSError as exc:
        raise UsageError(f"cannot read job file {path}: {exc.strerror}") from None
    except UnicodeDecodeError:
        raise UsageError(f"job file {path} is not UTF-8 text") from None
    try:
        cls = load_job_class(source, os.path.basename(path), args.job)
    except JobDefinitionError:
        raise
    except KeyboardInterrupt:
        raise
    except BaseException as exc:  # SystemExit too: a job file must not end `blfs` silently
        raise JobDefinitionError(f"{path} fails to load: {exc.__class__.__name__}: {exc}") \
            from None
    attrs = job_attributes(cls, path)
    files = expand_inputs(args.input)
    output = os.path.abspath(args.output)
    if os.path.exists(os.path.join(output, "_SUCCESS")):
        raise UsageError(f"output {args.output} already holds a finished job (_SUCCESS); "
                         "choose another directory or remove it")
    if os.path.exists(output) and not os.path.isdir(output):
        raise UsageError(f"output {args.output} exists and is not a directory")
    _check_output_parent(output, args.output)
    if args.split_size is not None:
        parse_size(args.split_size)  # a bad size is a usage error before anything starts
    if not any(os.path.getsize(f) for f in files) and attrs["input_format"] != "files":
        raise UsageError("the input is empty")
    reducers = args.reducers if args.reducers is not None else attrs["reducers"]
    if reducers is not None and reducers < 1:
        raise UsageError("--reducers must be at least 1")
    if args.max_attempts is not None and args.max_attempts < 1:
        raise UsageError("--max-attempts must be at least 1")
    job_args = list(getattr(args, "job_args", []))
    return {
        "name": os.path.splitext(os.path.basename(path))[0], "job_file": os.path.basename(path),
        "source": source, "class": attrs["class"], "args": job_args,
        "input_format": attrs["input_format"], "files": files, "output": output,
        "reducers": reducers, "task_timeout": args.task_timeout,
    }


def _check_output_parent(output: str, shown: str) -> None:
    """The output directory must be creatable: its nearest existing ancestor a writable dir."""
    ancestor = output
    while not os.path.exists(ancestor):
        ancestor = os.path.dirname(ancestor)
    if not os.path.isdir(ancestor):
        raise UsageError(f"output {shown}: {ancestor} is not a directory")
    if not os.access(ancestor, os.W_OK | os.X_OK):
        raise UsageError(f"output {shown}: {ancestor} is not writable")


MAX_SPLIT = 64 << 20


def add_splits(spec: dict, split_size: Optional[str], capacity: int) -> dict:
    """Cut the input into splits. Without --split-size, aim at two waves of maps over the
    cluster's task slots (so a slow map does not leave the others idle), at most 64M each."""
    files = spec.pop("files")
    total = sum(os.path.getsize(f) for f in files)
    if split_size is not None:
        size = parse_size(split_size)
    else:
        size = min(MAX_SPLIT, max(1 << 20, -(-total // max(1, 2 * capacity))))
    spec["splits"] = make_splits(files, size, spec["input_format"])
    if not spec["splits"]:
        raise UsageError("the input is empty")
    return spec


class Progress:
    """A bar on a terminal, plain lines otherwise; failed attempts are mentioned as they come."""

    def __init__(self, quiet: bool, stream=sys.stderr):
        self.quiet = quiet
        self.stream = stream
        self.tty = stream.isatty()
        self.last_line = ""
        self.seen_failures: set = set()

    def show(self, status: dict) -> None:
        if self.quiet:
            return
        for f in status.get("failed_attempts", []):
            if f["attempt"] not in self.seen_failures:
                self.seen_failures.add(f["attempt"])
                first = (f["error"].strip().splitlines() or ["?"])[-1]
                self._line(f"attempt {f['attempt']} on {f['worker']} failed ({f['kind']}): "
                           f"{first}")
        m, r = status["maps"], status["reduces"]
        text = f"map {m['done']}/{m['total']}  reduce {r['done']}/{r['total']}"
        if self.tty:
            width = 30
            filled = int(width * status["progress"])
            bar = "#" * filled + "-" * (width - filled)
            self.stream.write(f"\r[{bar}] {status['progress'] * 100:5.1f}%  {text}  "
                              f"{status['state']:<10}")
            self.stream.flush()
        elif text != self.last_line:
            self.stream.write(f"{status['job']}: {text}\n")
            self.stream.flush()
        self.last_line = text

    def _line(self, text: str) -> None:
        if self.tty:
            self.stream.write("\r\x1b[K")
        self.stream.write(text + "\n")

    def end(self) -> None:
        if self.tty and not self.quiet:
            self.stream.write("\n")
            self.stream.flush()


async def _follow(peer: rpc.Peer, job_id: str, progress: Progress) -> dict:
    version = -1
    while True:
        status = await peer.call("wait", limit=90, job=job_id, version=version, timeout=30)
        progress.show(status)
        version = status["version"]
        if status["state"] in ("succeeded", "failed", "cancelled"):
            progress.end()
            return status


def _report_end(status: dict, output: str) -> int:
    if status["state"] == "succeeded" and os.path.exists(os.path.join(output, "_SUCCESS")):
        took = status["finished"] - status["started"]
        print(f"job {status['job']} succeeded in {took:.2f} s: {output}", file=sys.stderr)
        return 0
    if status["state"] == "succeeded":
        print(f"blfs: job {status['job']} finished but {output}/_SUCCESS is missing",
              file=sys.stderr)
        return 1
    print(f"blfs: job {status['job']} {status['state']}: {status.get('error') or ''}".rstrip(),
          file=sys.stderr)
    return 1


async def submit_local(args: argparse.Namespace, spec: dict) -> int:
    from .local import LocalCluster
    cpus = len(os.sched_getaffinity(0))
    workers = args.workers or cpus
    # the local workers share this machine's CPUs
    parallelism = args.parallelism or max(1, cpus // workers)
    add_splits(spec, args.split_size, workers * parallelism)
    input_bytes = sum(s["end"] - s["start"] for s in spec["splits"])
    async with LocalCluster(workers, input_bytes, len(spec["splits"]),
                            parallelism=parallelism,
                            task_timeout=args.task_timeout, max_attempts=args.max_attempts,
                            spill_records=args.spill_records or None) as cluster:
        peer = await _client(cluster.socket_path, None)
        try:
            return await _submit_and_follow(args, peer, spec)
        finally:
            await peer.close()


async def submit_remote(args: argparse.Namespace, spec: dict, cfg: configmod.Config) -> int:
    peer = await _client(*_master_address(args, cfg))
    try:
        workers = await peer.call("workers", limit=30)
        add_splits(spec, args.split_size,
                   sum(w["parallelism"] for w in workers if w["alive"]) or 1)
        return await _submit_and_follow(args, peer, spec)
    finally:
        await peer.close()


async def _submit_and_follow(args: argparse.Namespace, peer: rpc.Peer, spec: dict) -> int:
    if args.max_attempts:
        spec["max_attempts"] = args.max_attempts
    reply = await peer.call("submit", spec=spec)
    job_id = reply["job"]
    if args.detach:
        print(job_id)
        return 0
    status = await _follow(peer, job_id, Progress(args.quiet))
    return _report_end(status, spec["output"])


# ------------------------------------------------------------------------------ clients

def _master_address(args: argparse.Namespace, cfg: configmod.Config) -> tuple[str, Optional[bytes]]:
    address = args.master or (cfg.master_socket if os.path.exists(cfg.master_socket)
                              else cfg.master_address)
    key = None
    if "/" not in address:
        if not args.master and not os.path.exists(args.key or cfg.cluster_key):
            raise ConnectionClosed(f"no master here: {cfg.master_socket} does not exist and "
                                   "there is no cluster key for TCP (is blfs-master.socket "
                                   "running? or use --local, or --master ADDRESS)")
        key = auth.load_key(args.key or cfg.cluster_key)
    return address, key


async def _client(address: str, key: Optional[bytes]) -> rpc.Peer:
    peer, _ = await rpc.connect(address, key, "client", f"{getpass.getuser()}@{os.getpid()}")
    peer.reader_task = asyncio.ensure_future(peer.serve())  # replies arrive through it
    return peer


async def _query(args: argparse.Namespace, cfg: configmod.Config, op: str, **fields: Any) -> Any:
    peer = await _client(*_master_address(args, cfg))
    try:
        return await peer.call(op, limit=30, **fields)
    finally:
        await peer.close()


def _print_status(status: dict) -> None:
    m, r = status["maps"], status["reduces"]
    print(f"job {status['job']} ({status.get('name', '')}): {status['state']}")
    print(f"  maps    {m['done']}/{m['total']} done, {m.get('running', 0)} running")
    print(f"  reduces {r['done']}/{r['total']} done, {r.get('running', 0)} running")
    print(f"  output  {status.get('output')}")
    for a in status.get("running", []):
        extra = f"  {a['status']}" if a.get("status") else ""
        print(f"  running {a['attempt']} on {a['worker']} {a['progress'] * 100:.0f}%{extra}")
    for f in status.get("failed_attempts", []):
        last = (f["error"].strip().splitlines() or ["?"])[-1]
        print(f"  failed  {f['attempt']} on {f['worker']} ({f['kind']}): {last}")
    for group, names in sorted((status.get("counters") or {}).items()):
        for name, n in sorted(names.items()):
            print(f"  counter {group}/{name} = {n}")
    if status.get("error"):
        print(f"  error   {status['error']}")


def _print_jobs(rows: list) -> None:
    print(f"{'JOB':<22} {'NAME':<16} {'STATE':<11} {'MAPS':>9} {'REDUCES':>9}")
    for r in rows:
        print(f"{r['job']:<22} {r.get('name', ''):<16.16} {r['state']:<11} "
              f"{r['maps']['done']:>4}/{r['maps']['total']:<4} "
              f"{r['reduces']['done']:>4}/{r['reduces']['total']:<4}")


def _print_workers(rows: list) -> None:
    print(f"{'WORKER':<16} {'STATE':<6} {'RUNNING':>7} {'SLOTS FREE':>10}  DISK")
    for w in rows:
        info = w.get("info") or {}
        print(f"{w['name']:<16} {'up' if w['alive'] else 'down':<6} "
              f"{w['running']:>3}/{w['parallelism']:<3} "
              f"{info.get('free_slots', '?'):>5}/{info.get('slots', '?'):<4}  "
              f"{info.get('disk', '')}")


# ------------------------------------------------------------------------------ daemons

def _daemon_config(args: argparse.Namespace) -> configmod.Config:
    cfg = configmod.load(args.config)
    if getattr(args, "local_root", None):  # a worker of `blfs submit --local`
        root = args.local_root
        cfg.cluster_key = os.path.join(root, "cluster.key")
        cfg.disks_root = os.path.join(root, "disks")
        cfg.work_dir = os.path.join(root, "work")
        cfg.worker_listen = "127.0.0.1:0"
        cfg.prepare_pool = True
        cfg.durable_pool = False
        cfg.fill_pool = False
        cfg.allow_buffered_reads = True
    for attr, value in (("worker_name", getattr(args, "name", None)),
                        ("slot_count", getattr(args, "slots", None)),
                        ("slot_size", getattr(args, "slot_size", None)),
                        ("parallelism", getattr(args, "parallelism", None)),
                        ("spill_records", getattr(args, "spill_records", None))):
        if value:
            setattr(cfg, attr, value)
    return cfg


def run_daemon(args: argparse.Namespace) -> int:
    from . import master, worker
    from .systemd import setup_logging
    setup_logging(f"blfs-{args.command}", logging.DEBUG if args.verbose else logging.INFO)
    cfg = _daemon_config(args)
    key = auth.load_key(cfg.cluster_key)
    serve = master.serve if args.command == "master" else worker.serve
    asyncio.run(serve(cfg, key))
    return 0


# ------------------------------------------------------------------------------ main

def main(argv: Optional[list] = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    job_args: list = []
    if "--" in argv:  # everything after -- belongs to the job (self.args)
        cut = argv.index("--")
        argv, job_args = argv[:cut], argv[cut + 1:]
    args = build_parser().parse_args(argv)
    args.job_args = job_args
    try:
        return dispatch(args)
    except KeyboardInterrupt:
        print("blfs: interrupted", file=sys.stderr)
        return 130
    except BlfsError as exc:
        print(f"blfs: {exc}", file=sys.stderr)
        return 2 if isinstance(exc, (UsageError, JobDefinitionError, ConfigError)) else 1


def dispatch(args: argparse.Namespace) -> int:
    if args.command in ("master", "worker"):
        return run_daemon(args)
    cfg = configmod.load(args.config)
    if args.command == "submit":
        spec = prepare_submit(args)
        if args.local:
            return asyncio.run(submit_local(args, spec))
        return asyncio.run(submit_remote(args, spec, cfg))
    if args.command == "status":
        result = asyncio.run(_query(args, cfg, "status", job=args.job))
        if args.json:
            print(json.dumps(result, indent=2))
        elif args.job:
            _print_status(result)
        else:
            print(result["status"])
            _print_workers(result["workers"])
            _print_jobs(result["jobs"])
        return 0
    if args.command in ("jobs", "workers"):
        rows = asyncio.run(_query(args, cfg, args.command))
        if args.json:
            print(json.dumps(rows, indent=2))
        else:
            (_print_jobs if args.command == "jobs" else _print_workers)(rows)
        return 0
    if args.command == "cancel":
        status = asyncio.run(_query(args, cfg, "cancel", job=args.job))
        print(f"job {status['job']}: {status['state']}")
        return 0
    raise UsageError(f"unknown command {args.command}")
