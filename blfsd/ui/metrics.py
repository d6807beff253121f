"""/metrics: the cluster in the Prometheus text format, from one Snapshot of the master's
replies, through prometheus_client (a custom Collector on a private registry: none of the
library's process metrics, nothing global)."""
from __future__ import annotations

from typing import Iterator

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

from ..messages import FINISHED, FailureKind, JobState
from .source import Snapshot

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
TASK_STATES = ("succeeded", "running", "pending", "abandoned")


class ClusterCollector:
    """The families of one snapshot (prometheus_client calls collect())."""

    def __init__(self, snap: Snapshot):
        self.snap = snap

    def collect(self) -> Iterator[Metric]:
        yield self._jobs()
        yield self._tasks()
        yield self._failed()
        yield self._peer_bytes()
        yield from self._workers()

    def _jobs(self) -> Metric:
        m = GaugeMetricFamily("blfs_jobs", "Jobs the master knows, by state.", labels=["state"])
        counts = {str(s): 0 for s in JobState}
        for row in self.snap.jobs:
            state = str(row.get("state"))
            counts[state] = counts.get(state, 0) + 1
        for state, n in counts.items():
            m.add_metric([state], n)
        return m

    def _tasks(self) -> Metric:
        """succeeded and running; pending: waiting in an unfinished job; abandoned: never
        done in a job that ended (failed or cancelled)."""
        m = GaugeMetricFamily("blfs_tasks", "Tasks of the jobs the master knows, by kind "
                              "and state.", labels=["kind", "state"])
        counts = {(k, s): 0 for k in ("map", "reduce") for s in TASK_STATES}
        for row in self.snap.jobs:
            ended = row.get("state") in FINISHED
            for kind, key in (("map", "maps"), ("reduce", "reduces")):
                c = row.get(key) or {}
                done, running = int(c.get("done", 0)), int(c.get("running", 0))
                rest = max(0, int(c.get("total", 0)) - done - running)
                counts[(kind, "succeeded")] += done
                counts[(kind, "running")] += running
                counts[(kind, "abandoned" if ended else "pending")] += rest
        for (kind, state), n in counts.items():
            m.add_metric([kind, state], n)
        return m

    def _failed(self) -> Metric:
        m = CounterMetricFamily("blfs_attempts_failed", "Failed task attempts, by failure "
                                "kind (of the last 20 failures each job keeps).",
                                labels=["kind"])
        counts = {str(k): 0 for k in FailureKind if k != FailureKind.KILLED}
        for facts in self.snap.facts.values():
            for kind, n in facts.failed_by_kind.items():
                counts[kind] = counts.get(kind, 0) + n
        for kind, n in counts.items():
            m.add_metric([kind], n)
        return m

    def _peer_bytes(self) -> Metric:
        m = CounterMetricFamily("blfs_shuffle_read_bytes", "Bytes of map output that later "
                                "tasks read from the nodes' pools (counter "
                                "blfs/shuffle_read_bytes of the jobs the master knows).")
        m.add_metric([], sum(f.peer_bytes_read for f in self.snap.facts.values()))
        return m

    def _workers(self) -> Iterator[Metric]:
        specs = (
            ("blfs_worker_up", "1 while the master is connected to the worker.",
             lambda w, i: 1 if w.get("alive") else 0),
            ("blfs_worker_running_attempts", "Attempts running on the worker.",
             lambda w, i: w.get("running")),
            ("blfs_worker_parallelism", "Attempts the worker runs at once at most.",
             lambda w, i: w.get("parallelism")),
            ("blfs_worker_slots", "Slots in the worker's pool.", lambda w, i: i.get("slots")),
            ("blfs_worker_slots_free", "Free slots in the worker's pool.",
             lambda w, i: i.get("free_slots")),
            ("blfs_worker_slot_size_bytes", "Bytes of one slot.", lambda w, i: i.get("slot_size")),
            ("blfs_worker_disk_free_bytes", "Free bytes on the worker's disk.",
             lambda w, i: i.get("disk_free")),
            ("blfs_worker_disk_size_bytes", "Bytes of the worker's disk.",
             lambda w, i: i.get("disk_bytes")),
            ("blfs_worker_heartbeat_rtt_seconds", "Round trip of the master's last heartbeat "
             "ping to the worker.", lambda w, i: i.get("heartbeat_rtt")),
        )
        for name, doc, value in specs:
            m = GaugeMetricFamily(name, doc, labels=["worker"])
            for w in self.snap.workers:
                v = value(w, w.get("info") or {})
                if isinstance(v, (int, float)) and not isinstance(v, bool):
                    m.add_metric([str(w.get("name"))], v)
            yield m


def exposition(snap: Snapshot) -> bytes:
    """The text format of one snapshot."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(ClusterCollector(snap))
    return generate_latest(registry)
