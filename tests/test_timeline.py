"""The job timeline picture (blfsd/timeline.py): lanes, colours, marks, crowded jobs."""
from __future__ import annotations

import random
import xml.etree.ElementTree as ET

from blfsd import timeline

NS = "{http://www.w3.org/2000/svg}"
T0 = 1_000_000.0


def _attempt(i, worker, start, length, kind="map", outcome="succeeded", backup=False, step=0):
    return {"attempt": f"j/{kind[0]}-{i:05d}/0", "worker": worker, "kind": kind, "step": step,
            "started": T0 + start, "finished": T0 + start + length, "outcome": outcome,
            "backup": backup}


def test_lanes_hold_no_overlapping_bars_and_no_more_than_needed():
    rng = random.Random(5)
    bars = []
    for i in range(300):
        start = rng.uniform(0, 50)
        bars.append(timeline.Bar(f"w{i % 3}", "map", 0, start, start + rng.uniform(0.1, 5),
                                 "succeeded"))
    for worker, rows in timeline.lanes(bars).items():
        mine = [b for b in bars if b.worker == worker]
        for lane in rows:
            for a, b in zip(lane, lane[1:]):
                assert a.end <= b.start + 1e-9, (a, b)
        # as many lanes as the most attempts running at once on that worker
        events = sorted([(b.start, 1) for b in mine] + [(b.end, -1) for b in mine])
        most = running = 0
        for _, delta in events:
            running += delta
            most = max(most, running)
        assert len(rows) == most
        assert sum(len(lane) for lane in rows) == len(mine)


def test_a_small_job_has_one_bar_per_attempt_marked_by_outcome():
    attempts = [_attempt(0, "w0", 0, 2), _attempt(1, "w0", 0.5, 1, outcome="failed"),
                _attempt(2, "w1", 0, 3, outcome="lost"),
                _attempt(3, "w1", 3, 1, backup=True, outcome="killed"),
                _attempt(0, "w0", 3, 2, kind="reduce"), _attempt(0, "w1", 5, 1, step=1)]
    svg = timeline.render({"job": "j", "name": "wc", "started": T0, "attempts": attempts,
                           "phases": [{"name": "map", "start": T0, "end": T0 + 3},
                                      {"name": "reduce", "start": T0 + 3, "end": T0 + 5}]})
    root = ET.fromstring(svg)
    bars = [r for r in root.iter(NS + "rect") if r.find(NS + "title") is not None]
    assert len(bars) == len(attempts)
    fills = [r.get("fill") for r in bars]
    assert fills.count(timeline.FAILED) == 1 and fills.count(timeline.LOST) == 1
    assert timeline.COLORS["reduce"][0] in fills and timeline.COLORS["map"][1] in fills
    assert sum(1 for r in bars if r.get("stroke-dasharray")) == 1  # the backup
    assert sum(1 for r in bars if r.get("fill-opacity")) == 1  # the killed backup
    labels = [t.text for t in root.iter(NS + "text")]
    assert "w0 #1" in labels and "w0 #2" in labels and "w1 #1" in labels
    assert "w0 #3" not in labels
    assert any(label and label.endswith(" s") for label in labels)  # the time axis
    assert "map" in labels and "reduce" in labels  # the phases


def test_ten_thousand_attempts_stay_readable():
    rng = random.Random(1)
    attempts = []
    for worker in range(2):
        t = 0.0
        for i in range(5000):
            length = rng.uniform(0.001, 0.02)
            attempts.append(_attempt(i, f"w{worker}", t, length,
                                     outcome="failed" if i % 1000 == 0 else "succeeded"))
            t += length
    svg = timeline.render({"job": "j", "started": T0, "attempts": attempts})
    root = ET.fromstring(svg)
    rects = list(root.iter(NS + "rect"))
    assert len(rects) < 2 * timeline.WIDTH, "sub-pixel bars must be aggregated"
    ticks = [line for line in root.iter(NS + "line") if line.get("stroke") == timeline.FAILED]
    assert len(ticks) == 10  # every failure still shows
    assert len(svg) < 1_000_000
