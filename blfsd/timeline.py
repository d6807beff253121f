"""A job as a picture: one row per task slot of each worker, one bar per attempt.

`render(record)` turns a job's record (its attempts with worker, kind, step, start, end and
outcome, and its phases) into a self-contained SVG. Attempts of one worker are packed into
as many rows as that worker ever ran at once (its task slots, as it used them). Bars are
coloured by kind and step (maps blue, reduces orange, later steps darker); a failed attempt
is red, a lost one grey and crossed, a killed backup faded, and a backup attempt has a
dashed outline. Vertical lines mark where each phase (step and kind) began and ended.

Readable for 10,000 attempts: when a bar would be narrower than a pixel, the row is drawn
as coverage instead, one rectangle per run of busy pixels in the colour of the kind that
held the row longest there; failures are then drawn as ticks above it.
"""
from __future__ import annotations

import heapq
import html
import math
from dataclasses import dataclass
from typing import Iterable, Optional

WIDTH = 1200  # pixels of the time axis
ROW = 14
LABEL = 110
TOP = 56
COLORS = {"map": ("#4c78a8", "#2f5580", "#1d3857"), "reduce": ("#f58518", "#c4620a", "#8a4305")}
FAILED, LOST = "#d62728", "#9a9a9a"
OUTCOMES = ("succeeded", "running", "failed", "lost", "killed", "timeout")


@dataclass(frozen=True)
class Bar:
    """One attempt, as the picture needs it."""

    worker: str
    kind: str  # map or reduce
    step: int
    start: float  # seconds since the job started
    end: float
    outcome: str  # succeeded, running, failed, lost, killed, timeout
    backup: bool = False
    label: str = ""

    @classmethod
    def of(cls, a: dict, origin: float, now: float) -> "Bar":
        start = float(a.get("started") or origin) - origin
        end = float(a.get("finished") or now) - origin
        return cls(str(a.get("worker", "?")), str(a.get("kind", "map")), int(a.get("step", 0)),
                   max(0.0, start), max(start, end), str(a.get("outcome", "succeeded")),
                   bool(a.get("backup")), str(a.get("attempt", "")))


def lanes(bars: Iterable[Bar]) -> dict:
    """{worker: [[bars of lane 0], [bars of lane 1], ...]}: each bar in the first lane of its
    worker that is free when it starts (so a worker gets as many lanes as it used at once)."""
    by_worker: dict = {}
    for bar in sorted(bars, key=lambda b: (b.worker, b.start, b.end)):
        rows, free = by_worker.setdefault(bar.worker, ([], []))
        # free: heap of (end time, lane index) of lanes that hold a bar
        if free and free[0][0] <= bar.start + 1e-9:
            _, lane = heapq.heappop(free)
        else:
            lane = len(rows)
            rows.append([])
        rows[lane].append(bar)
        heapq.heappush(free, (bar.end, lane))
    return {w: rows for w, (rows, _) in sorted(by_worker.items())}


def _color(bar: Bar) -> str:
    if bar.outcome in ("failed", "timeout"):
        return FAILED
    if bar.outcome == "lost":
        return LOST
    shades = COLORS.get(bar.kind, COLORS["map"])
    return shades[min(bar.step, len(shades) - 1)]


def _ticks(span: float) -> list:
    """About ten round tick values from 0 to span seconds."""
    if span <= 0:
        return [0.0]
    raw = span / 10
    mag = 10 ** math.floor(math.log10(raw))
    step = next(m * mag for m in (1, 2, 5, 10) if m * mag >= raw)
    return [i * step for i in range(int(span / step) + 1)]


def render(record: dict, now: Optional[float] = None, width: int = WIDTH) -> str:
    """An SVG of a job record: {"job", "name", "started", "attempts": [...], "phases":
    [{"name", "start", "end"}]}; times are epoch seconds."""
    origin = float(record.get("started") or 0.0)
    attempts = record.get("attempts") or []
    end = max([float(a.get("finished") or 0) for a in attempts] + [float(now or 0),
              float(record.get("finished") or 0)])
    now = now or end or origin
    bars = [Bar.of(a, origin, now) for a in attempts if a.get("started")]
    span = max([b.end for b in bars] + [max(0.0, end - origin), 1e-3])
    scale = width / span
    rows = lanes(bars)
    height = TOP + ROW * max(1, sum(len(r) for r in rows.values())) + 40
    out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{LABEL + width + 20}" '
           f'height="{height}" font-family="sans-serif" font-size="11">',
           f'<title>{html.escape(_title(record, len(bars), span))}</title>',
           f'<text x="4" y="16" font-size="13" font-weight="bold">'
           f'{html.escape(_title(record, len(bars), span))}</text>']
    out += _legend(LABEL, 30)
    y = TOP
    for worker, worker_rows in rows.items():
        for i, lane in enumerate(worker_rows):
            name = f"{worker} #{i + 1}"
            out.append(f'<text x="4" y="{y + ROW - 3}">{html.escape(name)}</text>')
            out += _lane(lane, y, scale)
            y += ROW
    out += _phases(record.get("phases") or [], origin, scale, y)
    out += _axis(span, scale, y)
    out.append("</svg>")
    return "\n".join(out) + "\n"


def _title(record: dict, n: int, span: float) -> str:
    return (f"job {record.get('job', '?')} ({record.get('name', '')}): {n} attempts, "
            f"{span:.2f} s")


def _legend(x: int, y: int) -> list:
    items = [("map", COLORS["map"][0]), ("reduce", COLORS["reduce"][0]),
             ("later steps darker", COLORS["map"][2]), ("failed", FAILED), ("lost", LOST)]
    out = []
    for name, color in items:
        out.append(f'<rect x="{x}" y="{y - 9}" width="10" height="10" fill="{color}"/>')
        out.append(f'<text x="{x + 14}" y="{y}">{name}</text>')
        x += 24 + 7 * len(name)
    out.append(f'<rect x="{x}" y="{y - 9}" width="10" height="10" fill="none" '
               f'stroke="#000" stroke-dasharray="2,1"/><text x="{x + 14}" y="{y}">backup</text>')
    return out


def _lane(lane: list, y: int, scale: float) -> list:
    if sum(1 for b in lane if (b.end - b.start) * scale < 1.0) * 2 > len(lane):
        return _coverage(lane, y, scale)  # mostly sub-pixel bars: draw what is covered
    out = []
    for b in lane:
        x = LABEL + b.start * scale
        w = max(1.0, (b.end - b.start) * scale)
        style = ' stroke="#000" stroke-dasharray="2,1"' if b.backup else ""
        opacity = ' fill-opacity="0.35"' if b.outcome == "killed" else ""
        out.append(f'<rect x="{x:.1f}" y="{y + 1}" width="{w:.1f}" height="{ROW - 2}" '
                   f'fill="{_color(b)}"{style}{opacity}>'
                   f'<title>{html.escape(b.label)} {b.outcome} {b.end - b.start:.2f} s'
                   f'</title></rect>')
        if b.outcome == "lost":
            out.append(f'<line x1="{x:.1f}" y1="{y + 1}" x2="{x + w:.1f}" y2="{y + ROW - 1}" '
                       f'stroke="#333"/>')
    return out


def _coverage(lane: list, y: int, scale: float) -> list:
    """A crowded lane: per pixel column, the colour that holds it longest; runs of busy
    columns become one rectangle each, failures a tick each."""
    columns: dict = {}
    for b in lane:
        first, last = int(b.start * scale), int(b.end * scale)
        for px in range(first, last + 1):
            left, right = max(b.start, px / scale), min(b.end, (px + 1) / scale)
            held = columns.setdefault(px, {})
            held[_color(b)] = held.get(_color(b), 0.0) + max(right - left, 1e-9)
    out, run = [], None
    for px in sorted(columns) + [None]:
        color = max(columns[px].items(), key=lambda kv: kv[1])[0] if px is not None else None
        if run and (px is None or px != run[1] + 1 or color != run[2]):
            out.append(f'<rect x="{LABEL + run[0]}" y="{y + 1}" width="{run[1] - run[0] + 1}" '
                       f'height="{ROW - 2}" fill="{run[2]}"/>')
            run = None
        if px is not None:
            run = [run[0], px, color] if run else [px, px, color]
    for b in lane:
        if b.outcome in ("failed", "timeout", "lost"):
            x = LABEL + b.end * scale
            out.append(f'<line x1="{x:.1f}" y1="{y}" x2="{x:.1f}" y2="{y + 4}" '
                       f'stroke="{_color(b)}" stroke-width="2"/>')
    return out


def _phases(phases: list, origin: float, scale: float, bottom: int) -> list:
    out = []
    for i, p in enumerate(phases):
        for edge, dash in (("start", "4,3"), ("end", "1,3")):
            if not p.get(edge):
                continue
            x = LABEL + (float(p[edge]) - origin) * scale
            out.append(f'<line x1="{x:.1f}" y1="{TOP - 4}" x2="{x:.1f}" y2="{bottom}" '
                       f'stroke="#555" stroke-dasharray="{dash}"/>')
        if p.get("start"):
            x = LABEL + (float(p["start"]) - origin) * scale
            out.append(f'<text x="{x + 2:.1f}" y="{TOP - 6 + 10 * (i % 2)}" fill="#555">'
                       f'{html.escape(str(p.get("name", "")))}</text>')
    return out


def _axis(span: float, scale: float, y: int) -> list:
    out = [f'<line x1="{LABEL}" y1="{y + 2}" x2="{LABEL + span * scale:.1f}" y2="{y + 2}" '
           f'stroke="#000"/>']
    for t in _ticks(span):
        x = LABEL + t * scale
        out.append(f'<line x1="{x:.1f}" y1="{y + 2}" x2="{x:.1f}" y2="{y + 6}" stroke="#000"/>')
        out.append(f'<text x="{x:.1f}" y="{y + 18}" text-anchor="middle">{t:g} s</text>')
    return out
