"""Configuration: /etc/blfs/blfs.toml, with defaults for every setting."""
from __future__ import annotations

import os
import socket
import tomllib
from dataclasses import dataclass, field
from typing import Optional

from . import admission
from .errors import ConfigError
from .inputs import parse_size
from .messages import Priority

DEFAULT_PATH = "/etc/blfs/blfs.toml"
MASTER_PORT = 7070
WORKER_PORT = 7071


@dataclass
class Node:
    """A worker of [nodes.NAME]: where the master dials it, and its disk."""
    name: str
    address: str  # where the master reaches the worker, host:port
    disk: str = ""  # iscsi://... or block:/dev/... (blfs-iscsi)
    export_device: str = ""  # the local disk `blfs-iscsi export` serves as this node's LUN


@dataclass
class Config:
    """Every setting, with its default; `load` fills it from the file."""
    cluster_key: str = "/etc/blfs/cluster.key"
    group: str = "blfs"
    master_address: str = f"127.0.0.1:{MASTER_PORT}"
    # what strangers may cost a daemon before they prove they hold the key (admission.py)
    handshake_timeout: float = admission.HANDSHAKE_DEADLINE
    max_handshakes: int = admission.MAX_HANDSHAKES
    max_handshakes_per_source: int = admission.MAX_HANDSHAKES_PER_SOURCE
    refusal_log_burst: int = admission.REFUSAL_LOG_BURST  # lines per 10 s, then a summary
    # what clients' requests (read, not yet answered) may hold of a daemon's memory at once
    request_memory: int = 256 << 20
    replicas: int = 1  # copies of each split a `blfs put` keeps, on different nodes' disks
    # master
    master_socket: str = "/run/blfs/master.sock"
    master_listen: str = f"0.0.0.0:{MASTER_PORT}"
    state_dir: str = "/var/lib/blfs/master"
    heartbeat_interval: float = 1.0
    heartbeat_timeout: float = 5.0
    max_attempts: int = 4
    task_timeout: float = 600.0
    speculation: bool = True
    # reduces start once this share of the maps finished (Hadoop's slow start), reading
    # and merging finished maps' output while the others run; 1.0: after the last map
    slow_start: float = 0.8
    default_reducers: int = 0  # 0: one per worker
    default_priority: Priority = Priority.NORMAL  # of a job submitted without --priority
    history_days: float = 30.0  # finished jobs' records are pruned after this; 0: never
    nodes: list = field(default_factory=list)
    accept_announced: bool = False  # a worker not in [nodes.*] that announces itself is dialled
    # worker
    worker_name: str = field(default_factory=lambda: socket.gethostname().split(".")[0])
    worker_listen: str = f"0.0.0.0:{WORKER_PORT}"
    announce: bool = False  # tell the master at master_address where to dial us
    disks_root: str = "/var/lib/blfs/disks"
    work_dir: str = "/var/lib/blfs/worker"  # task attempts' scratch directories
    parallelism: int = 0  # 0: number of CPUs
    # task containment (worker/containment.py): whom tasks run as, whose rights paths
    # named by jobs are used with ("": the task user), and each attempt's limits
    task_user: str = "blfs-task"
    path_user: str = ""
    task_cgroups: bool = True
    task_memory: int = 2 << 30
    task_pids: int = 1024
    task_cpu_weight: int = 100
    spill_records: int = 1_000_000
    spill_bytes: int = 32 << 20
    segment_max: int = 4 << 20
    merge_factor: int = 16  # runs a reduce merges at once; more are merged in passes
    slot_size: int = 64 << 20
    slot_count: int = 64
    prepare_pool: bool = False  # blfs-iscsi prepares pools in a cluster; --local does it here
    allow_buffered_reads: bool = False  # only true for --local, where one kernel has one cache
    durable_pool: bool = True
    fill_pool: bool = True  # False only for --local: sparse slots on a single kernel
    # blfs-iscsi: its [iscsi] table as written (blfsd.iscsi checks its keys), and the file
    path: str = DEFAULT_PATH
    iscsi: dict = field(default_factory=dict)

    def cpu_parallelism(self) -> int:
        """Attempts a worker runs at once: [worker] parallelism, else its CPUs."""
        return self.parallelism or len(os.sched_getaffinity(0))

    def gate(self) -> admission.Gate:
        """The admission gate of a daemon's listeners, as configured."""
        return admission.Gate(self.max_handshakes, self.max_handshakes_per_source,
                              self.handshake_timeout,
                              admission.RefusalLog(burst=self.refusal_log_burst))

    def node(self, name: str) -> Optional[Node]:
        return next((n for n in self.nodes if n.name == name), None)


_KEYS = {
    ("cluster", "key_file"): ("cluster_key", str),
    ("cluster", "group"): ("group", str),
    ("cluster", "master"): ("master_address", str),
    ("cluster", "handshake_timeout"): ("handshake_timeout", float),
    ("cluster", "max_handshakes"): ("max_handshakes", int),
    ("cluster", "max_handshakes_per_source"): ("max_handshakes_per_source", int),
    ("cluster", "refusal_log_burst"): ("refusal_log_burst", int),
    ("cluster", "request_memory"): ("request_memory", "size"),
    ("cluster", "replicas"): ("replicas", int),
    ("master", "socket"): ("master_socket", str),
    ("master", "listen"): ("master_listen", str),
    ("master", "state_dir"): ("state_dir", str),
    ("master", "heartbeat_interval"): ("heartbeat_interval", float),
    ("master", "heartbeat_timeout"): ("heartbeat_timeout", float),
    ("master", "max_attempts"): ("max_attempts", int),
    ("master", "task_timeout"): ("task_timeout", float),
    ("master", "speculation"): ("speculation", bool),
    ("master", "slow_start"): ("slow_start", float),
    ("master", "reducers"): ("default_reducers", int),
    ("master", "default_priority"): ("default_priority", Priority),
    ("master", "history_days"): ("history_days", float),
    ("master", "accept_announced"): ("accept_announced", bool),
    ("worker", "name"): ("worker_name", str),
    ("worker", "listen"): ("worker_listen", str),
    ("worker", "announce"): ("announce", bool),
    ("worker", "disks_root"): ("disks_root", str),
    ("worker", "work_dir"): ("work_dir", str),
    ("worker", "task_user"): ("task_user", str),
    ("worker", "path_user"): ("path_user", str),
    ("worker", "task_cgroups"): ("task_cgroups", bool),
    ("worker", "task_memory"): ("task_memory", "size"),
    ("worker", "task_pids"): ("task_pids", int),
    ("worker", "task_cpu_weight"): ("task_cpu_weight", int),
    ("worker", "parallelism"): ("parallelism", int),
    ("worker", "spill_records"): ("spill_records", int),
    ("worker", "spill_bytes"): ("spill_bytes", "size"),
    ("worker", "segment_max"): ("segment_max", "size"),
    ("worker", "merge_factor"): ("merge_factor", int),
    ("pool", "slot_size"): ("slot_size", "size"),
    ("pool", "slots"): ("slot_count", int),
}


def load(path: Optional[str] = None) -> Config:
    """Read a TOML file; a missing default file means all defaults, a missing named one fails.

    The file is BLFS_CONFIG when no path is given, else /etc/blfs/blfs.toml. This is the
    only reader of the configuration file: blfs-iscsi takes its [iscsi] table from here.
    """
    target = path or os.environ.get("BLFS_CONFIG") or DEFAULT_PATH
    cfg = Config(path=target)
    data = _read(target, named=bool(path))
    for (section, key), (attr, kind) in _KEYS.items():
        if key in data.get(section, {}):
            setattr(cfg, attr, _value(data[section][key], kind, f"{target}: [{section}] {key}"))
    for name, node in sorted(data.get("nodes", {}).items()):
        if "address" not in node:
            raise ConfigError(f"{target}: [nodes.{name}] needs an address")
        cfg.nodes.append(Node(name, str(node["address"]), str(node.get("disk", "")),
                              str(node.get("export_device", ""))))
    cfg.iscsi = dict(data.get("iscsi", {}))
    return cfg


def _read(target: str, named: bool) -> dict:
    """The TOML file as a dict ({} for a missing default file)."""
    try:
        with open(target, "rb") as f:
            return tomllib.load(f)
    except FileNotFoundError:
        if named:
            raise ConfigError(f"config file {target} does not exist") from None
        return {}
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise ConfigError(f"cannot read config {target}: {exc}") from None


def _value(value: object, kind: object, where: str) -> object:
    """A setting's value as its kind wants it ("size": 64M and such)."""
    try:
        return parse_size(value) if kind == "size" else kind(value)  # type: ignore[operator]
    except (TypeError, ValueError):
        raise ConfigError(f"{where} has a bad value {value!r}") from None
