"""The `blfs` command: submit jobs, watch them, and run the daemons in the foreground."""
from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import os
import secrets
import signal
import sys
import time
import zlib
from typing import Any, Awaitable, Callable, Iterator, Optional

from . import auth, config as configmod, inputs, jobdef, jobview, rpc, sandbox, storage
from .errors import (AuthError, BlfsError, ConfigError, ConnectionClosed, JobDefinitionError,
                     StorageError, UsageError)
from .catalog import check_name, holders, is_name
from .client import master_address as _master_address, connect as _client, query as _query
from .datafiles import CHUNK
from .inputs import expand_inputs, format_size, line_cuts, make_splits, parse_size
from .ui import command as ui_command

log = logging.getLogger("blfs.cli")


# ------------------------------------------------------------------------------ parsing

def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="blfs", description="MapReduce over shared block devices.")
    p.add_argument("--config", help="configuration file (default /etc/blfs/blfs.toml)")
    sub = p.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    _add_submit(sub)
    _add_queries(sub)
    _add_storage(sub)
    jobview.add_parsers(sub)
    _add_daemons(sub)
    ui_command.add_parser(sub)
    return p


def _add_submit(sub: Any) -> None:
    s = sub.add_parser("submit", help="run a job file",
                       usage="blfs submit JOB.py --input PATH --output DIR [options] "
                             "[-- JOB-ARGS...]")
    s.add_argument("job_file", metavar="JOB.py")
    s.add_argument("--input", action="append", required=True, metavar="PATH|NAME",
                   help="a file or directory; on a cluster also a dataset from blfs put")
    s.add_argument("--output", required=True, metavar="DIR|NAME",
                   help="a directory; on a cluster a plain NAME is kept on the workers' "
                        "disks (blfs cat/get NAME)")
    s.add_argument("--job", metavar="NAME", help="which Job class, if the file has several")
    s.add_argument("--file", action="append", metavar="PATH",
                   help="a file to place in each task's working directory (repeatable; "
                        "4 MiB in all, with the job class's own `files`)")
    s.add_argument("--reducers", type=int, metavar="R")
    s.add_argument("--split-size", default=None, metavar="SIZE",
                   help="bytes per map task (default: enough maps for two waves over the "
                        "cluster's task slots, at most 64M each)")
    s.add_argument("--max-attempts", type=int, default=None, metavar="N")
    s.add_argument("--output-replicas", type=int, default=1, metavar="N",
                   help="keep each part of a cluster output (--output NAME) on N nodes' "
                        "disks (default 1)")
    s.add_argument("--priority", choices=("high", "normal", "low"), default=None,
                   help="the job's share of the task slots against other running jobs "
                        "(high 4 : normal 2 : low 1; default: the master's "
                        "[master] default_priority, normal)")
    s.add_argument("--task-timeout", type=float, default=None, metavar="SECONDS")
    s.add_argument("--task-memory", metavar="SIZE",
                   help="memory each task attempt may use (e.g. 512M; default: the "
                        "workers' [worker] task_memory); past it the attempt fails")
    s.add_argument("--task-pids", type=int, metavar="N",
                   help="processes and threads each attempt may have")
    s.add_argument("--task-cpu-weight", type=int, metavar="W",
                   help="CPU share of each attempt (1-10000, 100 is the default share)")
    s.add_argument("--local", action="store_true", help="run on an embedded cluster here")
    s.add_argument("--workers", type=int, default=0, metavar="N",
                   help="worker processes with --local (default: number of CPUs)")
    s.add_argument("--parallelism", type=int, default=0, metavar="N",
                   help="task attempts at once per local worker (default: CPUs)")
    s.add_argument("--spill-records", type=int, default=0, metavar="N", help=argparse.SUPPRESS)
    s.add_argument("--master", metavar="ADDRESS", help="socket path or host:port")
    s.add_argument("--key", metavar="FILE", help="cluster key for a TCP master")
    s.add_argument("--detach", action="store_true",
                   help="print the job id and return (not with --local: the embedded "
                        "cluster ends with the command)")
    s.add_argument("--quiet", "-q", action="store_true",
                   help="no progress output, no counters at the end")
    jobview.add_submit_options(s)


def _add_queries(sub: Any) -> None:
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


def _add_storage(sub: Any) -> None:
    u = sub.add_parser("put", help="store a file in the cluster as a dataset",
                       usage="blfs put FILE NAME [--split-size SIZE] [--replicas N]")
    u.add_argument("file", metavar="FILE")
    u.add_argument("name", metavar="NAME")
    u.add_argument("--split-size", metavar="SIZE",
                   help="bytes per split (default: two waves of maps, at most 64M)")
    u.add_argument("--replicas", type=int, metavar="N",
                   help="keep each split on N different nodes' disks (default: [cluster] "
                        "replicas, 1)")
    c = sub.add_parser("cat", help="write a cluster output's parts, in order, to stdout")
    c.add_argument("name", metavar="OUTPUT")
    g = sub.add_parser("get", help="copy a cluster output to a local directory")
    g.add_argument("name", metavar="OUTPUT")
    g.add_argument("directory", metavar="DIR")
    sub.add_parser("ls", help="list datasets and outputs").add_argument(
        "--json", action="store_true", help="machine-readable output")
    sub.add_parser("rm", help="remove a dataset or an output").add_argument("name",
                                                                           metavar="NAME")
    for name in ("put", "cat", "get", "ls", "rm"):
        sub.choices[name].add_argument("--master", metavar="ADDRESS")
        sub.choices[name].add_argument("--key", metavar="FILE")


def _add_daemons(sub: Any) -> None:
    m = sub.add_parser("master", help="run the master daemon in the foreground")
    m.add_argument("--verbose", "-v", action="store_true")
    w = sub.add_parser("worker", help="run a worker daemon in the foreground")
    w.add_argument("--verbose", "-v", action="store_true")
    # for the workers of `blfs submit --local` (blfsd.local)
    w.add_argument("--name", help=argparse.SUPPRESS)
    w.add_argument("--local-root", help=argparse.SUPPRESS)
    w.add_argument("--slots", type=int, help=argparse.SUPPRESS)
    w.add_argument("--slot-size", type=int, help=argparse.SUPPRESS)
    w.add_argument("--parallelism", type=int, help=argparse.SUPPRESS)
    w.add_argument("--spill-records", type=int, help=argparse.SUPPRESS)


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
    job_args = list(getattr(args, "job_args", []))
    definition = jobdef.describe(path, source, args.job, job_args, args.file or [])
    # on a cluster, a plain name (no '/', not a local file) is cluster storage
    datasets = [i for i in args.input if not args.local and is_name(i) and not os.path.exists(i)]
    files = expand_inputs([i for i in args.input if i not in datasets])
    named_output = not args.local and is_name(args.output)
    output = args.output if named_output else os.path.abspath(args.output)
    if not named_output:
        _check_output_dir(output, args.output)
    if args.split_size is not None:
        parse_size(args.split_size)  # a bad size is a usage error before anything starts
    reducers = args.reducers if args.reducers is not None else definition.reducers
    if reducers is not None and reducers < 1:
        raise UsageError("--reducers must be at least 1")
    if args.max_attempts is not None and args.max_attempts < 1:
        raise UsageError("--max-attempts must be at least 1")
    spec = {
        "name": os.path.splitext(os.path.basename(path))[0], "job_file": os.path.basename(path),
        "source": source, "class": definition.job_class, "args": job_args,
        "api": definition.api, "steps": definition.steps, "files": definition.shipped,
        "input_format": definition.input_format, "inputs": files, "datasets": datasets,
        "output": output, "reducers": reducers, "task_timeout": args.task_timeout,
        "task_memory": parse_size(args.task_memory) if args.task_memory else None,
        "task_pids": args.task_pids, "task_cpu_weight": args.task_cpu_weight,
    }
    if named_output:
        spec["output_name"] = output
    if args.output_replicas != 1:
        if not named_output or args.output_replicas < 1:
            raise UsageError("--output-replicas N (N >= 1) is for a cluster output, "
                             "--output NAME")
        spec["output_replicas"] = args.output_replicas
    return spec


def _check_output_dir(output: str, shown: str) -> None:
    if os.path.exists(os.path.join(output, "_SUCCESS")):
        raise UsageError(f"output {shown} already holds a finished job (_SUCCESS); "
                         "choose another directory or remove it")
    if os.path.exists(output) and not os.path.isdir(output):
        raise UsageError(f"output {shown} exists and is not a directory")
    _check_output_parent(output, shown)


def _check_output_parent(output: str, shown: str) -> None:
    """The output directory must be creatable: its nearest existing ancestor a writable dir."""
    ancestor = output
    while not os.path.exists(ancestor):
        ancestor = os.path.dirname(ancestor)
    if not os.path.isdir(ancestor):
        raise UsageError(f"output {shown}: {ancestor} is not a directory")
    if not os.access(ancestor, os.W_OK | os.X_OK):
        raise UsageError(f"output {shown}: {ancestor} is not writable")


def add_splits(spec: dict, split_size: Optional[str], capacity: int,
               stored: Optional[list] = None) -> dict:
    """Cut the local input files into splits, after the splits of datasets (`stored`)."""
    files = spec.pop("inputs")
    size = inputs.split_size(files, split_size, capacity)
    spec["splits"] = list(stored or []) + make_splits(files, size, spec["input_format"])
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


FOLLOW_AGAIN = 120.0  # seconds `submit` keeps trying to reach a master that went away


async def _follow(peer: rpc.Peer, job_id: str, progress: Progress,
                  reconnect: Optional[Callable[[], Awaitable[rpc.Peer]]] = None) -> dict:
    """Wait for the job to end, showing its progress. When the master goes away (a
    restart) and we know how to reach it again, follow the job there."""
    version = -1
    replacements: list = []
    try:
        while True:
            try:
                status = await peer.call("wait", limit=90, job=job_id, version=version,
                                         timeout=30)
            except (ConnectionClosed, asyncio.TimeoutError) as exc:
                if reconnect is None:
                    raise
                peer = await _reach_again(reconnect, job_id, exc)
                replacements.append(peer)
                version = -1
                continue
            progress.show(status)
            version = status["version"]
            if status["state"] in ("succeeded", "failed", "cancelled"):
                progress.end()
                return status
    finally:
        for extra in replacements:
            await extra.close()


async def _reach_again(reconnect: Callable[[], Awaitable[rpc.Peer]], job_id: str,
                       why: BaseException, patience: float = FOLLOW_AGAIN) -> rpc.Peer:
    """A new connection to the master, retried with back-off for `patience` seconds."""
    print(f"\nblfs: lost the master ({why or 'no answer'}); following job {job_id} when it "
          "is back", file=sys.stderr)
    deadline = time.monotonic() + patience
    delay = 0.2
    while True:
        try:
            peer = await reconnect()
        # AuthError too: a master that is starting may hang up in the middle of the
        # handshake (and a key that was good a moment ago is still good)
        except (ConnectionClosed, AuthError, OSError, asyncio.TimeoutError) as exc:
            if time.monotonic() + delay > deadline:
                raise ConnectionClosed(f"the master did not come back within {patience:.0f} s"
                                       f" ({exc}); job {job_id} may still be running: "
                                       f"blfs status {job_id}") from None
            await asyncio.sleep(delay)
            delay = min(5.0, delay * 2)
            continue
        print(f"blfs: the master is back; following job {job_id}", file=sys.stderr)
        return peer


def _report_end(status: dict, spec: dict) -> int:
    output = spec["output"]
    took = (status.get("finished") or 0) - (status.get("started") or 0)
    if status["state"] == "succeeded" and spec.get("output_name"):
        print(f"job {status['job']} succeeded in {took:.2f} s: output {output} "
              f"(blfs cat {output}, blfs get {output} DIR)", file=sys.stderr)
        return 0
    if status["state"] == "succeeded" and os.path.exists(os.path.join(output, "_SUCCESS")):
        print(f"job {status['job']} succeeded in {took:.2f} s: {output}", file=sys.stderr)
        return 0
    if status["state"] == "succeeded":
        print(f"blfs: job {status['job']} finished but {output}/_SUCCESS is missing",
              file=sys.stderr)
        return 1
    print(f"blfs: job {status['job']} {status['state']}: {status.get('error') or ''}".rstrip(),
          file=sys.stderr)
    return 1


class Terminated(BlfsError):
    """The command got SIGTERM or SIGHUP (a closed terminal): cleaned up, as on Ctrl-C."""

    def __init__(self, signum: int):
        super().__init__(f"{signal.Signals(signum).name[3:].lower()}: stopped, and cleaned up")
        self.signum = signum


@contextlib.contextmanager
def _stopping_on_signals() -> Iterator[None]:
    """Within an asyncio task: SIGTERM and SIGHUP cancel it, as Ctrl-C does, so that every
    `finally` and `async with` below it runs (the embedded cluster removes its directory
    and the job its OUTPUT/_temporary); then Terminated is raised."""
    loop = asyncio.get_running_loop()
    task = asyncio.current_task()
    got: list = []

    def stop(signum: int) -> None:
        if not got:  # a second signal must not cut the clean-up short
            task.cancel()
        got.append(signum)

    for signum in (signal.SIGTERM, signal.SIGHUP):
        loop.add_signal_handler(signum, stop, signum)
    try:
        yield
    except asyncio.CancelledError:
        if got:
            raise Terminated(got[0]) from None
        raise
    finally:
        for signum in (signal.SIGTERM, signal.SIGHUP):
            loop.remove_signal_handler(signum)


async def submit_local(args: argparse.Namespace, spec: dict, cfg: configmod.Config) -> int:
    with _stopping_on_signals():
        return await _submit_local(args, spec, cfg)


async def _submit_local(args: argparse.Namespace, spec: dict, cfg: configmod.Config) -> int:
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
                            spill_records=args.spill_records or None,
                            slow_start=cfg.slow_start) as cluster:
        peer = await _client(cluster.socket_path, None)
        try:
            return await _submit_and_follow(args, peer, spec)
        finally:
            await peer.close()


async def submit_remote(args: argparse.Namespace, spec: dict, cfg: configmod.Config) -> int:
    peer = await _client(*_master_address(args, cfg))
    temp: list = []
    try:
        capacity = await _capacity(peer)
        stored = []
        for name in spec["datasets"]:
            stored += _dataset_splits(await peer.call("dataset", limit=30, name=name))
        if spec["inputs"] and spec.get("output_name"):
            # a job kept in cluster storage reads cluster storage: put local files first
            name = f"{spec['output']}.input-{secrets.token_hex(3)}"
            whole = spec["input_format"] == "files"
            entry = await put_files(peer, spec.pop("inputs"), name, args.split_size, capacity,
                                    whole, cfg.replicas)
            temp.append(name)
            spec["inputs"], spec["temp_datasets"] = [], [name]
            stored += _dataset_splits(entry)
        add_splits(spec, args.split_size, capacity, stored)
        code = await _submit_and_follow(args, peer, spec,
                                        lambda: _client(*_master_address(args, cfg)))
        temp.clear()  # the master removes them when the job ends
        return code
    finally:
        for name in temp:  # the submission failed: nobody else will
            try:
                await peer.call("remove", limit=30, name=name)
            except (BlfsError, asyncio.TimeoutError):
                pass
        await peer.close()


async def _capacity(peer: rpc.Peer) -> int:
    """Task attempts the live workers run at once."""
    workers = await peer.call("workers", limit=30)
    return sum(w["parallelism"] for w in workers if w["alive"]) or 1


def _dataset_splits(entry: dict) -> list:
    """A dataset's split files as job splits, each to be read where it lives."""
    return [{"path": f"{s['node']}:{s['file']}", "file": s["file"], "node": s["node"],
             "start": 0, "end": s["size"], "crc": s["crc"],
             **({"replicas": s["replicas"]} if len(s.get("replicas") or []) > 1 else {})}
            for s in entry["splits"]]


async def _submit_and_follow(args: argparse.Namespace, peer: rpc.Peer, spec: dict,
                             reconnect: Optional[Callable[[], Awaitable[rpc.Peer]]] = None
                             ) -> int:
    if args.max_attempts:
        spec["max_attempts"] = args.max_attempts
    if getattr(args, "priority", None):
        spec["priority"] = args.priority
    reply = await peer.call("submit", spec=spec)
    job_id = reply["job"]
    if args.detach:
        print(job_id)
        return 0
    status = await _follow(peer, job_id, Progress(args.quiet or args.json), reconnect)
    if peer.closed.is_set() and reconnect is not None:  # followed across a restart
        peer = await reconnect()
        try:
            await jobview.job_ended(args, peer, status)
        finally:
            await peer.close()
    else:
        await jobview.job_ended(args, peer, status)
    return _report_end(status, spec)


# ------------------------------------------------------------------------------ clients

# ------------------------------------------------------------------------------ storage

PUT_WINDOW = 4  # splits in flight at once: the workers write in parallel


async def put_files(peer: rpc.Peer, files: list, name: str, split_size: Optional[str],
                    capacity: int, whole: bool = False, replicas: int = 1) -> dict:
    """Store local files as a dataset: cut on line boundaries (or one split per file),
    sent through the master to the workers it picks (each split to `replicas` of them);
    abandoned cleanly on any error."""
    size = inputs.split_size(files, split_size, capacity)
    pieces = [(f, a, b) for f in files
              for a, b in ([(0, os.path.getsize(f))] if whole else line_cuts(f, size))]
    if not pieces:
        raise UsageError("the input is empty")
    begin = await peer.call("put_begin", limit=30, name=name, splits=len(pieces),
                            size=sum(b - a for _, a, b in pieces), replicas=replicas)
    token = begin["put"]
    window = asyncio.Semaphore(PUT_WINDOW)

    async def send(index: int, path: str, start: int, end: int) -> None:
        async with window:
            await _send_piece(peer, token, index, path, start, end)

    tasks = [asyncio.ensure_future(send(i, *piece)) for i, piece in enumerate(pieces)]
    try:
        await asyncio.gather(*tasks)
        return await peer.call("put_end", limit=60, put=token)
    except BaseException:
        for task in tasks:  # nothing may still be on its way when the put is abandoned
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        with contextlib.suppress(BlfsError, OSError, asyncio.TimeoutError):
            await peer.call("put_abort", limit=30, put=token)
        raise


async def _send_piece(peer: rpc.Peer, token: str, index: int, path: str, start: int,
                      end: int) -> None:
    with open(path, "rb") as f:
        offset = start
        while True:
            data = os.pread(f.fileno(), min(CHUNK, end - offset), offset)
            last = offset + len(data) >= end or not data
            await peer.call("put_data", limit=120, put=token, index=index,
                            offset=offset - start, data=data, last=last)
            offset += len(data)
            if last:
                return


async def put(args: argparse.Namespace, cfg: configmod.Config) -> int:
    check_name(args.name)
    files = expand_inputs([args.file])
    if args.split_size is not None:
        parse_size(args.split_size)
    replicas = cfg.replicas if args.replicas is None else args.replicas
    if replicas < 1:
        raise UsageError(f"--replicas must be at least 1, not {replicas}")
    peer = await _client(*_master_address(args, cfg))
    try:
        entry = await put_files(peer, files, args.name, args.split_size,
                                await _capacity(peer), replicas=replicas)
    finally:
        await peer.close()
    nodes = sorted({n for s in entry["splits"] for n in holders(s)})
    copies = f", {replicas} replicas" if replicas > 1 else ""
    print(f"put {args.name}: {len(entry['splits'])} splits, "
          f"{sum(s['size'] for s in entry['splits'])} bytes{copies} on {', '.join(nodes)}")
    return 0


async def read_output(args: argparse.Namespace, cfg: configmod.Config,
                      write: Callable[[int, dict, bytes], None]) -> dict:
    """Every part of a cluster output, chunk by chunk, checked against its crc32."""
    peer = await _client(*_master_address(args, cfg))
    try:
        entry = await peer.call("output", limit=30, name=args.name)
        for index, part in enumerate(entry["parts"]):
            offset, crc = 0, 0
            while offset < part["size"]:
                reply = await peer.call("read", limit=120, name=args.name, part=index,
                                        offset=offset, length=CHUNK)
                data = reply["data"]
                if not data:
                    raise StorageError(f"part {index} of {args.name} ends early")
                crc = zlib.crc32(data, crc)
                write(index, part, data)
                offset += len(data)
            if part.get("crc") is not None and crc != part["crc"]:
                raise StorageError(f"part {index} of {args.name} fails its checksum")
            write(index, part, b"")  # the part is complete
        return entry
    finally:
        await peer.close()


def cat(args: argparse.Namespace, cfg: configmod.Config) -> int:
    out = sys.stdout.buffer

    def write(index: int, part: dict, data: bytes) -> None:
        out.write(data)

    try:
        asyncio.run(read_output(args, cfg, write))
    finally:
        with contextlib.suppress(BrokenPipeError):
            out.flush()
    return 0


def get(args: argparse.Namespace, cfg: configmod.Config) -> int:
    """The output in a local directory, in exactly the --local layout, _SUCCESS last."""
    target = os.path.abspath(args.directory)
    _check_output_dir(target, args.directory)
    os.makedirs(target, exist_ok=True)
    files: dict = {}

    def write(index: int, part: dict, data: bytes) -> None:
        if index not in files:
            files[index] = open(os.path.join(target, f"part-{part['partition']:05d}"), "wb")
        f = files[index]
        if data:
            f.write(data)
        else:
            f.flush()
            os.fsync(f.fileno())
            f.close()

    try:
        asyncio.run(read_output(args, cfg, write))
    finally:
        for f in files.values():
            f.close()
    storage.write_success(target)
    print(f"{args.name}: {len(files)} parts in {target}", file=sys.stderr)
    return 0


def _print_listing(rows: list) -> None:
    print(f"{'KIND':<8} {'NAME':<30} {'FILES':>5} {'SIZE':>10} {'REPLICAS':>8}  NODES")
    for r in rows:
        print(f"{r['kind']:<8} {r['name']:<30.30} {r['files']:>5} "
              f"{format_size(r['bytes']):>10} {r.get('replicas', 1):>8}  "
              f"{', '.join(r['nodes'])}")


def _print_status(status: dict) -> None:
    m, r = status["maps"], status["reduces"]
    print(f"job {status['job']} ({status.get('name', '')}): {status['state']}")
    if status.get("waiting"):
        print(f"  waiting for {status['waiting']}")
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
    print(f"{'JOB':<22} {'NAME':<16} {'STATE':<11} {'PRIO':<6} {'MAPS':>9} {'REDUCES':>9}")
    for r in rows:
        print(f"{r['job']:<22} {r.get('name', ''):<16.16} {r['state']:<11} "
              f"{r.get('priority') or 'normal':<6} "
              f"{r['maps']['done']:>4}/{r['maps']['total']:<4} "
              f"{r['reduces']['done']:>4}/{r['reduces']['total']:<4}")


def _print_workers(rows: list) -> None:
    """Each node's load, pool and disk."""
    print(f"{'WORKER':<12} {'STATE':<8} {'LOAD':>7} {'POOL FREE':>15} {'DISK FREE':>17}  DISK")
    for w in rows:
        info = w.get("info") or {}
        pool = f"{info.get('free_slots', '?')}/{info.get('slots', '?')}x" \
               f"{format_size(info.get('slot_size'))}"
        disk = f"{format_size(info.get('disk_free'))}/{format_size(info.get('disk_bytes'))}"
        state = "draining" if w.get("draining") else "up" if w["alive"] else "down"
        print(f"{w['name']:<12.12} {state:<8} "
              f"{w['running']:>3}/{w['parallelism']:<3} {pool:>15} {disk:>17}  "
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
        # paths the job names are the user's own: used with the rights of who ran blfs
        cfg.path_user = sandbox.Identity.current().name
    for attr, value in (("worker_name", getattr(args, "name", None)),
                        ("slot_count", getattr(args, "slots", None)),
                        ("slot_size", getattr(args, "slot_size", None)),
                        ("parallelism", getattr(args, "parallelism", None)),
                        ("spill_records", getattr(args, "spill_records", None))):
        if value:
            setattr(cfg, attr, value)
    return cfg


def run_daemon(args: argparse.Namespace) -> int:
    from .systemd import setup_logging
    setup_logging(f"blfs-{args.command}", logging.DEBUG if args.verbose else logging.INFO)
    cfg = _daemon_config(args)
    key = auth.load_key(cfg.cluster_key)
    serve = _daemon_serve(args.command)
    asyncio.run(serve(cfg, key))
    return 0


def _daemon_serve(command: str) -> Callable[..., Awaitable[None]]:
    """The daemon's serve(), importing only its own package: a worker (one per node, and
    one per --local worker at every `blfs submit --local`) never loads the master's
    scheduler, nor the master a worker's."""
    if command == "master":
        from .master import serve as serve_master
        return serve_master
    from .worker import serve as serve_worker
    return serve_worker


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
    except Terminated as exc:
        with contextlib.suppress(OSError):  # the terminal may be gone (SIGHUP)
            print(f"blfs: {exc}", file=sys.stderr)
        return 128 + exc.signum
    except BlfsError as exc:
        print(f"blfs: {exc}", file=sys.stderr)
        return 2 if isinstance(exc, (UsageError, JobDefinitionError, ConfigError)) else 1


def dispatch(args: argparse.Namespace) -> int:
    if args.command in ("master", "worker"):
        return run_daemon(args)
    return COMMANDS[args.command](args, configmod.load(args.config))


def cmd_submit(args: argparse.Namespace, cfg: configmod.Config) -> int:
    if args.local and args.detach:
        raise UsageError("--detach cannot be used with --local: the embedded cluster "
                         "ends with the command (run a cluster, or leave out --detach)")
    spec = prepare_submit(args)
    if args.local:
        return asyncio.run(submit_local(args, spec, cfg))
    return asyncio.run(submit_remote(args, spec, cfg))


def cmd_status(args: argparse.Namespace, cfg: configmod.Config) -> int:
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


def cmd_list(args: argparse.Namespace, cfg: configmod.Config) -> int:
    """`blfs jobs`, `blfs workers` and `blfs ls`."""
    rows = asyncio.run(_query(args, cfg, args.command))
    if args.json:
        print(json.dumps(rows, indent=2))
    else:
        {"jobs": _print_jobs, "workers": _print_workers,
         "ls": _print_listing}[args.command](rows)
    return 0


def cmd_cancel(args: argparse.Namespace, cfg: configmod.Config) -> int:
    status = asyncio.run(_query(args, cfg, "cancel", job=args.job))
    print(f"job {status['job']}: {status['state']}")
    return 0


def cmd_put(args: argparse.Namespace, cfg: configmod.Config) -> int:
    return asyncio.run(put(args, cfg))


def cmd_rm(args: argparse.Namespace, cfg: configmod.Config) -> int:
    done = asyncio.run(_query(args, cfg, "remove", name=args.name))
    kind = "dataset" if done["kind"] == "data" else "output"
    print(f"removed {kind} {done['name']}" + (f" (its files stay on "
          f"{', '.join(done['left_on'])}, not connected)" if done["left_on"] else ""))
    return 0


COMMANDS: dict[str, Callable[[argparse.Namespace, configmod.Config], int]] = {
    "submit": cmd_submit, "status": cmd_status, "jobs": cmd_list, "workers": cmd_list,
    "cancel": cmd_cancel, "put": cmd_put, "cat": cat, "get": get, "ls": cmd_list,
    "rm": cmd_rm, **jobview.COMMANDS, "ui": ui_command.run}
