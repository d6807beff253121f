#!/usr/bin/env python3
"""The master at cluster scale: drive the pure scheduler through a simulated cluster.

Only the scheduler's public methods are used (blfsd.scheduler: Scheduler, Settings,
worker_up, worker_down, submit, attempt_progress, attempt_succeeded, attempt_failed, tick,
schedule, held_slots, job_status, commit_done) and the actions they return. Time is
virtual: nothing sleeps; every call into the scheduler is timed with this thread's CPU
clock (time.thread_time), so that other processes on a busy machine do not count.

1. The scenario: W workers x P task slots (default 64 x 4) run one job of M maps and R
   reduces (default 10,000 and 64). Maps take about 10 s, reduces about 20 s (log-normal),
   1% of attempts are stragglers (5x slower: speculation gets them), 1% fail (user error)
   and are retried, 0.5% of reduce attempts fail to fetch a map's output (the map is run
   again), one attempt goes silent and is timed out, and two workers go down during the map
   phase and come back a minute later. Every worker's attempts report progress every 0.5 s
   (its "heartbeat" here) and a client's `wait` reads job_status every 0.5 s (without
   attempt rows while the job runs, as master/jobs.py's wait does). Each map
   reports one segment per partition, as a real map does.
   The real master calls schedule() after every event and tick() every 0.2 s; by default
   schedule()/tick() run once per --schedule-every virtual seconds (1.0), and
   --schedule-every 0 replays the master exactly (after every event, tick every 0.2 s:
   about a minute at 10,000 maps).
   Either way every call is timed, and the printed "master at this scale" line estimates
   what the faithful pattern costs from the measured per-call cost.
2. Scaling probes: the CPU time of one decision of each kind as the job grows (M = 1,250 ..
   10,000 maps with R = 8 .. 64 reduces, doubled together), against maps alone, and against
   W = 16 .. 64 workers, each state reached through the public methods; the slope is
   d log(cost) / d log(size): 1 is linear, 2 quadratic. A decision whose cost grows faster
   than the number of tasks of its job is marked SUPER-LINEAR, one that also grows with the
   number of workers x WORKERS; every decision gets a one-line verdict (linear,
   SUPER-LINEAR, x WORKERS, or negligible: under 0.2 ms at every size measured).

    .venv/bin/python tools/bench_scheduler.py              # the scenario and the probes
    .venv/bin/python tools/bench_scheduler.py --quick      # 1,000 maps, 16 workers
    .venv/bin/python tools/bench_scheduler.py --profile    # + cProfile of the scenario
"""
from __future__ import annotations

import argparse
import gc
import heapq
import math
import os
import random
import statistics
import sys
import time
from collections import defaultdict
from typing import Callable, Optional

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from blfsd.messages import FailureKind, JobSpec, TaskResult  # noqa: E402
from blfsd.scheduler import (Commit, JobEnded, Kill, Launch, Scheduler,  # noqa: E402
                             Settings)

clock = time.thread_time  # CPU seconds of this thread: immune to other processes' load
TICK = 0.2  # blfsd/master.py: the master's tick interval
HEARTBEAT = 0.5  # tasks report progress every 0.5 s (blfsd/runtime.py REPORT_EVERY)
JOB = "20261201-000000-bench"


def worker_names(n: int) -> list:
    return [f"w{i:02d}" for i in range(n)]


def job_spec(maps: int, reduces: int, workers: list) -> dict:
    """A job over a dataset: split i lives on worker i mod W (maps prefer their node)."""
    splits = [{"path": f"{workers[i % len(workers)]}:data/in/.split-{i:05d}",
               "file": f"data/in/.split-{i:05d}", "node": workers[i % len(workers)],
               "start": 0, "end": 64 << 20, "crc": 0} for i in range(maps)]
    return JobSpec.from_wire({"splits": splits, "reducers": reduces, "name": "bench",
                              "output": "/out/bench", "submitted_at": 0.0,
                              "input_format": "lines", "job_file": "bench.py", "source": "",
                              "class": "Bench", "args": []})


class Slots:
    """Slot numbers per worker, as a worker's lease table would hand them out."""

    def __init__(self) -> None:
        self.next: dict = defaultdict(int)

    def take(self, worker: str) -> int:
        self.next[worker] += 1
        return self.next[worker]


def map_result(worker: str, reduces: int, slots: Slots, index: int) -> dict:
    """One segment per partition, packed into one slot, as a small map writes them."""
    slot = slots.take(worker)
    segments = []
    offset = 0
    for p in range(reduces):
        length = 128 + 4096 * (1 + (index + p) % 8)
        segments.append({"node": worker, "slot": slot, "offset": offset, "length": length,
                         "crc": (index * 131 + p) & 0xFFFFFFFF, "generation": 1,
                         "partition": p, "run": 0, "seq": 0, "flags": 0})
        offset += (length + 4095) // 4096 * 4096
    return TaskResult.from_wire({
        "segments": segments,
        "counters": {"blfs": {"map_input_records": 600_000, "map_output_records": 600_000,
                              "map_spills": 1}}})


def reduce_result(spec: dict) -> TaskResult:
    i = spec["index"]
    return TaskResult.from_wire({
        "path": f"/out/bench/_temporary/{spec['job']}/{spec['task']}.{spec['attempt']}/"
                f"part-{i:05d}", "target": f"/out/bench/part-{i:05d}",
        "counters": {"blfs": {"reduce_input_groups": 1000, "reduce_output_records": 1000}}})


def _w(launch) -> dict:
    """A Launch's attempt as the map the simulation reads (its wire form)."""
    return launch.attempt.to_wire()


# ------------------------------------------------------------------------------ timing

class Timings:
    """Every timed call by kind: durations in seconds, with a little context."""

    def __init__(self) -> None:
        self.calls: dict = defaultdict(list)  # kind -> [seconds]
        self.context: dict = defaultdict(list)  # kind -> [(seconds, pending tasks)]

    def time(self, kind: str, fn: Callable, *args, context: Optional[int] = None):
        t0 = clock()
        out = fn(*args)
        dt = clock() - t0
        self.calls[kind].append(dt)
        if context is not None:
            self.context[kind].append((dt, context))
        return out

    def total(self) -> float:
        return sum(sum(v) for v in self.calls.values())


def pct(values: list, q: float) -> float:
    if not values:
        return 0.0
    s = sorted(values)
    return s[min(len(s) - 1, int(q * (len(s) - 1) + 0.5))]


# ---------------------------------------------------------------------------- scenario

class Scenario:
    """One job through a simulated cluster, in virtual time."""

    def __init__(self, workers: int = 64, parallelism: int = 4, maps: int = 10_000,
                 reduces: int = 64, seed: int = 1, schedule_every: float = 1.0,
                 map_seconds: float = 10.0, reduce_seconds: float = 20.0,
                 fail_rate: float = 0.01, straggler_rate: float = 0.01,
                 fetch_fail_rate: float = 0.005, worker_failures: int = 2,
                 task_timeout: float = 60.0):
        self.rng = random.Random(f"blfs-bench-scheduler-{seed}")
        self.names = worker_names(workers)
        self.parallelism = parallelism
        self.maps, self.reduces = maps, reduces
        self.schedule_every = schedule_every
        self.map_seconds, self.reduce_seconds = map_seconds, reduce_seconds
        self.fail_rate, self.straggler_rate = fail_rate, straggler_rate
        self.fetch_fail_rate = fetch_fail_rate
        self.worker_failures = worker_failures
        self.sched = Scheduler(Settings(max_attempts=4, task_timeout=task_timeout),
                               epoch="sim")
        self.t = Timings()
        self.slots = Slots()
        self.events: list = []  # (time, seq, kind, data)
        self.seq = 0
        self.running: dict = {}  # attempt id -> (worker, spec, silent)
        self.by_worker: dict = defaultdict(set)
        self.alive: set = set()
        self.now = 0.0
        self.ended: Optional[JobEnded] = None
        self.pending_hint = maps + reduces  # tasks not done, from the last job_status
        self.stats: dict = defaultdict(int)
        self.silenced = False
        self.last_tick = 0.0  # seconds the last tick() took
        self.estimate = 0.0  # what the master's own pattern would have spent in schedule()

    # -- events ----------------------------------------------------------------------
    def at(self, when: float, kind: str, data=None) -> None:
        self.seq += 1
        heapq.heappush(self.events, (when, self.seq, kind, data))

    def duration(self, kind: str) -> float:
        base = self.map_seconds if kind == "map" else self.reduce_seconds
        d = base * math.exp(self.rng.gauss(0, 0.25))
        if self.rng.random() < self.straggler_rate:
            d *= 5
            self.stats["stragglers"] += 1
        return d

    def execute(self, actions: list) -> None:
        for a in actions:
            if isinstance(a, Launch):
                spec = _w(a)
                self.stats[f"{spec['kind']} attempts"] += 1
                silent = False
                if not self.silenced and spec["kind"] == "map" and self.stats["map attempts"] > 50:
                    silent = self.silenced = True  # goes quiet: the tick must time it out
                self.running[spec["id"]] = (a.worker, spec, silent)
                self.by_worker[a.worker].add(spec["id"])
                if spec["attempt"] and spec["kind"] == "map":
                    self.stats["map re-runs and backups"] += 1
                if not silent:
                    self.at(self.now + self.duration(spec["kind"]), "finish", spec["id"])
            elif isinstance(a, Kill):
                self.forget(a.attempt)
                self.stats["kills"] += 1
            elif isinstance(a, Commit):
                self.at(self.now + 0.5, "commit", a.job)
            elif isinstance(a, JobEnded):
                self.ended = a

    def forget(self, attempt_id: str) -> None:
        info = self.running.pop(attempt_id, None)
        if info:
            self.by_worker[info[0]].discard(attempt_id)

    def after_event(self, actions: list) -> None:
        if self.schedule_every == 0:  # the master: schedule() after every event
            actions = actions + self.t.time("schedule (after an event)", self.sched.schedule,
                                            self.now)
        else:  # the master would have called schedule() here: about what the last tick cost
            self.estimate += self.last_tick
        self.execute(actions)

    def finish(self, attempt_id: str) -> None:
        info = self.running.get(attempt_id)
        if info is None:
            return  # killed or lost meanwhile
        worker, spec, _ = info
        self.forget(attempt_id)
        r = self.rng.random()
        if spec["kind"] == "map":
            if r < self.fail_rate:
                self.stats["map attempts failed"] += 1
                actions = self.t.time("attempt_failed", self.sched.attempt_failed, attempt_id,
                                      FailureKind.USER, "Traceback: ValueError: bad record",
                                      self.now)
            else:
                result = map_result(worker, self.reduces, self.slots, spec["index"])
                actions = self.t.time("attempt_succeeded (map)", self.sched.attempt_succeeded,
                                      attempt_id, result, self.now)
        else:
            self.stats["reduce attempts finished"] += 1
            if r < self.fetch_fail_rate or self.stats["reduce attempts finished"] == 5:
                self.stats["reduce fetch failures"] += 1
                bad = self.rng.randrange(self.maps)
                actions = self.t.time("attempt_failed (fetch)", self.sched.attempt_failed,
                                      attempt_id, FailureKind.FETCH, "checksum mismatch", self.now,
                                      {"map_task": bad, "map_tasks": [bad]})
            elif r < self.fetch_fail_rate + self.fail_rate:
                self.stats["reduce attempts failed"] += 1
                actions = self.t.time("attempt_failed", self.sched.attempt_failed, attempt_id,
                                      FailureKind.USER, "Traceback: KeyError", self.now)
            else:
                actions = self.t.time("attempt_succeeded (reduce)",
                                      self.sched.attempt_succeeded, attempt_id,
                                      reduce_result(spec), self.now)
        self.after_event(actions)

    def heartbeat(self, worker: str) -> None:
        """A worker relays the progress reports of its attempts (each every 0.5 s)."""
        if worker not in self.alive:
            return
        t0 = clock()
        n = 0
        for attempt_id in list(self.by_worker[worker]):
            _, spec, silent = self.running[attempt_id]
            if silent:
                continue
            n += 1
            self.sched.attempt_progress(attempt_id, self.now, 0.5, "",
                                        {"blfs": {"map_input_records": 1000 * n}})
        self.t.calls["heartbeat (one worker's progress reports)"].append(
            clock() - t0)
        self.stats["progress reports"] += n
        self.at(self.now + HEARTBEAT, "heartbeat", worker)

    def client_wait(self) -> None:
        status = self.t.time("job_status (a client's wait)", self.sched.job_status, JOB, False)
        self.pending_hint = (status["maps"]["total"] - status["maps"]["done"]
                             + status["reduces"]["total"] - status["reduces"]["done"])
        if self.ended is None:
            self.at(self.now + HEARTBEAT, "wait")

    def tick(self) -> None:
        actions = self.t.time("tick (timeouts + schedule)", self.sched.tick, self.now)
        self.last_tick = self.t.calls["tick (timeouts + schedule)"][-1]
        self.estimate += self.last_tick * max(1.0, self.schedule_every / TICK)
        self.execute(actions)
        if self.ended is None:
            self.at(self.now + (TICK if self.schedule_every == 0 else self.schedule_every),
                    "tick")

    def worker_down(self, worker: str) -> None:
        if worker not in self.alive:
            return
        self.alive.discard(worker)
        lost = len(self.by_worker[worker])
        self.stats["attempts lost with workers"] += lost
        actions = self.t.time("worker_down", self.sched.worker_down, worker, self.now)
        for attempt_id in list(self.by_worker[worker]):
            self.forget(attempt_id)
        self.after_event(actions)
        self.at(self.now + 60.0, "worker_up", worker)

    def worker_up(self, worker: str) -> None:
        actions = self.t.time("worker_up", self.sched.worker_up, worker, self.parallelism)
        self.t.time("held_slots (worker sync)", self.sched.held_slots, worker)
        self.alive.add(worker)
        self.at(self.now + HEARTBEAT, "heartbeat", worker)
        self.after_event(actions)

    # -- the run ---------------------------------------------------------------------
    def run(self, limit: float = 1e6) -> None:
        for name in self.names:
            self.execute(self.t.time("worker_up", self.sched.worker_up, name,
                                     self.parallelism))
            self.alive.add(name)
            self.at(self.rng.random() * HEARTBEAT, "heartbeat", name)
        spec = job_spec(self.maps, self.reduces, self.names)
        self.t.time("submit", self.sched.submit, JOB, spec, 0.0)
        self.at(0.0, "tick")
        self.at(0.0, "wait")
        waves = self.maps * self.map_seconds / (len(self.names) * self.parallelism)
        for k in range(self.worker_failures):
            self.at(waves * (k + 1) / (self.worker_failures + 1), "worker_down",
                    self.names[(7 * k + 3) % len(self.names)])
        while self.events and self.ended is None:
            self.now, _, kind, data = heapq.heappop(self.events)
            if self.now > limit:
                break
            if kind == "finish":
                self.finish(data)
            elif kind == "heartbeat":
                self.heartbeat(data)
            elif kind == "wait":
                self.client_wait()
            elif kind == "tick":
                self.tick()
            elif kind == "worker_down":
                self.worker_down(data)
            elif kind == "worker_up":
                self.worker_up(data)
            elif kind == "commit":
                self.execute(self.t.time("commit_done", self.sched.commit_done, data,
                                         self.now))
        self.t.time("job_status (a client's wait)", self.sched.job_status, JOB)


# ------------------------------------------------------------------------------ probes

def _cluster(workers: int, parallelism: int, maps: int, reduces: int) -> tuple:
    s = Scheduler(Settings(task_timeout=1e9), epoch="probe")
    names = worker_names(workers)
    for n in names:
        s.worker_up(n, parallelism)
    s.submit(JOB, job_spec(maps, reduces, names), 0.0)
    return s, names


def _run_maps(s: Scheduler, reduces: int, now: float = 1.0) -> tuple:
    """Run the map phase in waves of 10 virtual seconds (schedule() once per wave) until
    nothing is pending and the last wave still runs: the tail of the map phase, where
    speculation looks. Returns (the running map launches, the time of the last wave)."""
    slots = Slots()
    running = [a for a in s.schedule(now) if isinstance(a, Launch)]
    while True:
        status = s.job_status(JOB)
        if status["maps"]["done"] + status["maps"]["running"] == status["maps"]["total"]:
            return running, now
        now += 10.0
        for a in running:
            s.attempt_succeeded(_w(a)["id"],
                                map_result(a.worker, reduces, slots, _w(a)["index"]), now)
        running = [a for a in s.schedule(now) if isinstance(a, Launch)]


def _spare_slot(s: Scheduler, now: float) -> None:
    """A worker that holds no split brings one free slot: the placer looks for a map to
    run where its split lies, finds none, then starts one there. It goes down again
    (the map is lost with it, pending again) for the next round."""
    s.worker_up("spare", 1)
    launches = [a for a in s.schedule(now) if isinstance(a, Launch)]
    assert len(launches) == 1 and launches[0].worker == "spare"
    s.worker_down("spare", now)


def _best(fn: Callable, repeat: int = 3) -> float:
    """The best of `repeat` timings, with the garbage collector held off (the probes
    measure the algorithm; the scenario runs with it, as the master does)."""
    best = math.inf
    gc.collect()
    gc.disable()
    try:
        for _ in range(repeat):
            t0 = clock()
            fn()
            best = min(best, clock() - t0)
    finally:
        gc.enable()
    return best


def probe(workers: int, parallelism: int, maps: int, reduces: int) -> dict:
    """Seconds for one decision of each kind, at one size."""
    out = {}
    s, names = _cluster(workers, parallelism, maps, reduces)
    s.schedule(0.5)  # fill every slot
    out["schedule, map phase, all slots busy"] = _best(lambda: s.schedule(0.6))
    out["tick, map phase, all slots busy"] = _best(lambda: s.tick(0.7))
    out["schedule, one slot free where no split lies"] = _best(lambda: _spare_slot(s, 0.8))
    # the tail of the map phase: nothing pending, the last wave running; 1 s after its start,
    # so speculation checks every task but launches no backup
    s, names = _cluster(workers, parallelism, maps, reduces)
    running, now = _run_maps(s, reduces)
    out["schedule, map tail (speculation check)"] = _best(lambda: s.schedule(now + 1.0))
    out["job_status, map tail"] = _best(lambda: s.job_status(JOB))
    out["job_status without attempt rows (a wait)"] = _best(lambda: s.job_status(JOB, False))
    out["attempt_progress"] = _best(lambda: s.attempt_progress(running[0].attempt.id,
                                                               now + 1.0, 0.5))
    slots = Slots()
    last = running[-1]
    for a in running[:-1]:
        s.attempt_succeeded(_w(a)["id"], map_result(a.worker, reduces, slots,
                                                        _w(a)["index"]), now + 2.0)
    s.schedule(now + 2.0)  # nothing pending: no launch
    result = map_result(last.worker, reduces, slots, _w(last)["index"])
    gc.collect()
    gc.disable()
    try:
        t0 = clock()
        s.attempt_succeeded(_w(last)["id"], result, now + 3.0)
        out["attempt_succeeded (the last map)"] = clock() - t0
        # the schedule() after the last map launches every reduce
        t0 = clock()
        launches = [a for a in s.schedule(now + 3.0) if isinstance(a, Launch)]
        dt = clock() - t0
    finally:
        gc.enable()
    n_red = sum(1 for a in launches if _w(a)["kind"] == "reduce")
    out["launch of one reduce (schedule / reduces)"] = dt / max(1, n_red)
    out["held_slots (one worker's sync)"] = _best(lambda: s.held_slots(names[0]))
    return out


def slope(sizes: list, costs: list) -> float:
    """d log(cost) / d log(size), least squares."""
    pts = [(math.log(n), math.log(c)) for n, c in zip(sizes, costs) if c > 0]
    if len(pts) < 2:
        return float("nan")
    mx = statistics.fmean(x for x, _ in pts)
    my = statistics.fmean(y for _, y in pts)
    den = sum((x - mx) ** 2 for x, _ in pts)
    return sum((x - mx) * (y - my) for x, y in pts) / den if den else float("nan")


def verdicts(slopes: dict) -> list:
    """One line per decision: linear, or SUPER-LINEAR when it grows faster than the
    number of tasks of its job (slope against the job growing as a whole), and x WORKERS
    when it also grows with the number of workers; negligible when it costs under 0.2 ms
    at every size measured. Then one line for all."""
    lines, bad = [], 0
    for kind, by in slopes.items():
        t, w = by.get("tasks", (0.0, 0.0)), by.get("workers", (0.0, 0.0))
        if max(t[1], w[1]) < 2e-4:
            lines.append(f"   negligible   {kind}: at most {fmt_t(max(t[1], w[1]))} "
                         f"(slope {t[0]:.2f} against the job's tasks)")
            continue
        if t[0] > 1.3:
            lines.append(f"   SUPER-LINEAR {kind}: slope {t[0]:.2f} against the job's tasks"
                         + (" (quadratic)" if t[0] > 1.7 else ""))
        if w[0] > 0.5:
            lines.append(f"   x WORKERS    {kind}: slope {w[0]:.2f} against the number of "
                         f"workers, on top of slope {t[0]:.2f} against the job's tasks")
        if t[0] <= 1.3 and w[0] <= 0.5:
            lines.append(f"   linear       {kind}: slope {t[0]:.2f} against the job's tasks, "
                         f"{w[0]:.2f} against workers")
        bad += t[0] > 1.3 or w[0] > 0.5
    return lines + ([f"   {bad} decision{'s' if bad != 1 else ''} grow{'' if bad != 1 else 's'} "
                     "faster than the number of tasks of its job"] if bad else
                    ["   no decision grows faster than the number of tasks of its job"])


def fmt_t(seconds: float) -> str:
    if seconds >= 1:
        return f"{seconds:.2f} s"
    if seconds >= 1e-3:
        return f"{seconds * 1e3:.1f} ms"
    return f"{seconds * 1e6:.0f} µs"


# ------------------------------------------------------------------------------- report

def report_scenario(sc: Scenario, wall: float) -> list:
    lines = []
    t = sc.t
    st = sc.stats
    lines.append(f"   job {sc.ended.state if sc.ended else 'did not end'} after "
                 f"{sc.now:,.0f} virtual s; {st['map attempts']:,} map and "
                 f"{st['reduce attempts']:,} reduce attempts ({st['map attempts failed']} maps "
                 f"failed, {st['attempts lost with workers']} lost with "
                 f"{sc.worker_failures} workers, {st['stragglers']} stragglers, "
                 f"{st['reduce fetch failures']} fetch failures, {st['kills']} kills, "
                 f"{st['progress reports']:,} progress reports)")
    lines.append(f"   scheduler time {t.total():.1f} s of {wall:.1f} s wall "
                 f"(schedule() {'after every event, tick every 0.2 s' if sc.schedule_every == 0 else f'once per {sc.schedule_every:g} virtual s'})")
    lines.append(f"   {'call':<44} {'calls':>8} {'mean':>9} {'p50':>9} {'p99':>9} "
                 f"{'max':>9} {'total':>9}")
    for kind in sorted(t.calls, key=lambda k: -sum(t.calls[k])):
        v = t.calls[kind]
        lines.append(f"   {kind:<44} {len(v):>8,} {fmt_t(statistics.fmean(v)):>9} "
                     f"{fmt_t(pct(v, 0.5)):>9} {fmt_t(pct(v, 0.99)):>9} {fmt_t(max(v)):>9} "
                     f"{fmt_t(sum(v)):>9}")
    return lines


def master_estimate(sc: Scenario) -> list:
    """What the master's own pattern (schedule() after every event, tick() every 0.2 s)
    costs at this scale: measured when replayed exactly, else estimated from the ticks."""
    ticks = sc.t.calls.get("tick (timeouts + schedule)", [])
    if not ticks:
        return []
    first = max(ticks[:5])
    events = sc.stats["map attempts"] + sc.stats["reduce attempts"]
    if sc.schedule_every == 0:
        total = sum(sc.t.calls.get("schedule (after an event)", [])) + sum(ticks)
        how = "measured"
    else:
        total = sc.estimate
        how = "estimated: each skipped call costed as the nearest tick"
    status = sc.t.calls.get("job_status (a client's wait)", [])
    reports = sc.stats["progress reports"] / max(1.0, sc.now)
    follow = []
    if status:
        per = statistics.fmean(status)
        follow = [f"   a following client (`blfs submit` waits on the job's version, which every "
                  f"progress report changes): {reports:,.0f} reports/s here, job_status "
                  f"{fmt_t(per)} each: up to {reports * per:,.1f} CPU-seconds per second if it "
                  f"asked after each one (the simulation asks every {HEARTBEAT} s)"]
    return [f"   master at this scale: one tick() at the start of the job costs {fmt_t(first)}: "
            f"ticking every {TICK} s is then {first / TICK:.0%} of a CPU on its own",
            f"   the master's pattern (schedule() after each of the job's ~{events:,} events, "
            f"tick() every {TICK} s) spends {total:,.0f} s of CPU in the scheduler for a job "
            f"of {sc.now:,.0f} s ({how})"] + follow


def main(argv: list | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter,
                                 epilog=__doc__.split("\n\n", 1)[1])
    ap.add_argument("--workers", type=int, default=64)
    ap.add_argument("--parallelism", type=int, default=4, help="task slots per worker")
    ap.add_argument("--maps", type=int, default=10_000)
    ap.add_argument("--reduces", type=int, default=64)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--schedule-every", type=float, default=1.0, metavar="SECONDS",
                    help="virtual seconds between schedule() calls; 0 = like the master "
                         "(after every event, tick every 0.2 s): slower")
    ap.add_argument("--quick", action="store_true", help="1,000 maps, 16 workers, small probes")
    ap.add_argument("--no-scenario", action="store_true")
    ap.add_argument("--no-probes", action="store_true")
    ap.add_argument("--profile", action="store_true", help="cProfile the scenario, print the top")
    args = ap.parse_args(argv)
    if args.quick:
        args.maps, args.workers = min(args.maps, 1000), min(args.workers, 16)
    out: list = []

    def say(line: str = "") -> None:
        print(line, flush=True)
        out.append(line)

    say("== the master at cluster scale (blfsd.scheduler in a simulated cluster; "
        "virtual time, every scheduler call timed)")
    if not args.no_scenario:
        sc = Scenario(args.workers, args.parallelism, args.maps, args.reduces, args.seed,
                      args.schedule_every)
        say(f"   scenario: {args.workers} workers x {args.parallelism} slots, one job of "
            f"{args.maps:,} maps and {args.reduces} reduces, heartbeats, failures, "
            f"stragglers, 2 workers lost")
        t0 = time.perf_counter()
        if args.profile:
            import cProfile
            import pstats
            prof = cProfile.Profile()
            prof.runcall(sc.run)
        else:
            sc.run()
        wall = time.perf_counter() - t0
        for line in report_scenario(sc, wall) + master_estimate(sc):
            say(line)
        if args.profile:
            stats = pstats.Stats(prof)
            stats.sort_stats("tottime").print_stats(18)
            stats.sort_stats("cumulative").print_stats(25)
    if not args.no_probes:
        m_sizes = [250, 500, 1000] if args.quick else [1250, 2500, 5000, 10_000]
        w_sizes = [4, 8, 16] if args.quick else [16, 32, 64]
        top = m_sizes[-1]
        # the job grows as a whole: maps and reduces doubled together, ending at M x R
        tasks = [(m, max(2, args.reduces * m // top)) for m in m_sizes]
        say(f"   scaling: CPU time of one decision of each kind (best of 3) as the job grows "
            f"(maps and reduces together, W={args.workers}), against maps alone "
            f"(R={args.reduces}) and against workers (M={top:,}, R={args.reduces}); slope = "
            f"d log(cost) / d log(size): 1 = linear, 2 = quadratic")
        series = [
            ("tasks (M/R)", tasks, lambda mr: probe(args.workers, args.parallelism, *mr)),
            ("maps", m_sizes, lambda n: probe(args.workers, args.parallelism, n, args.reduces)),
            ("workers", w_sizes, lambda n: probe(n, args.parallelism, top, args.reduces)),
        ]
        slopes: dict = defaultdict(dict)
        for what, sizes, make in series:
            rows = {}
            for n in sizes:
                gc.collect()
                rows[n] = make(n)
            xs = [(n[0] + n[1]) if isinstance(n, tuple) else n for n in sizes]
            heads = [f"{n[0]:,}/{n[1]}" if isinstance(n, tuple) else f"{n:,}" for n in sizes]
            say(f"   {'against ' + what:<44}" + "".join(f"{h:>11}" for h in heads)
                + "     slope")
            for kind in rows[sizes[0]]:
                costs = [rows[n][kind] for n in sizes]
                slopes[kind][what.split()[0]] = (slope(xs, costs), costs[-1])
                say(f"   {kind:<44}" + "".join(f"{fmt_t(c):>11}" for c in costs)
                    + f"{slopes[kind][what.split()[0]][0]:>10.2f}")
        for line in verdicts(slopes):
            say(line)
    return 0


if __name__ == "__main__":
    sys.exit(main())
