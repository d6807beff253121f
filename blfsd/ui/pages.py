"""The status page's HTML: the jobs, one job, the workers. Pure functions of the master's
replies. Everything that comes from a job (its name, status text, errors, counter names)
is user input and goes through esc(); only the timeline's SVG, which escapes its own
text (blfsd.timeline), is embedded as it is."""
from __future__ import annotations

import html
from typing import Any, Iterable, Optional
from urllib.parse import quote

from .. import timeline
from ..inputs import format_size
from ..messages import FINISHED

ATTEMPTS_SHOWN = 300  # rows of a job's attempts table (the timeline shows them all)
GROUPS = (("Queued", ("queued",)), ("Running", ("running", "committing")),
          ("Finished", ("succeeded", "failed", "cancelled")))


def esc(value: Any) -> str:
    """Text for HTML, quotes included (it also goes into attributes)."""
    return html.escape("" if value is None else str(value), quote=True)


def document(title: str, main: str, refresh: bool = True) -> str:
    """A whole page; ui.js swaps <main> for a fresh one every few seconds while
    data-refresh is on."""
    return ("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            f"<title>{esc(title)}</title>"
            "<link rel=\"icon\" href=\"/favicon.ico\">"
            "<link rel=\"stylesheet\" href=\"/static/ui.css\">"
            "<script src=\"/static/ui.js\" defer></script></head><body>"
            "<nav><b>blfs</b> <a href=\"/\">jobs</a> <a href=\"/workers\">workers</a> "
            "<a href=\"/metrics\">metrics</a> <span id=\"notice\"></span></nav>"
            f"<main id=\"main\" data-refresh=\"{'on' if refresh else 'off'}\">{main}</main>"
            "</body></html>\n")


def table(headers: Iterable[str], rows: Iterable[Iterable[str]], cls: str = "") -> str:
    """An HTML table; the cells are HTML already (escaped by the caller)."""
    head = "".join(f"<th>{esc(h)}</th>" for h in headers)
    body = "".join("<tr>" + "".join(f"<td>{c}</td>" for c in row) + "</tr>" for row in rows)
    return (f"<table class=\"{esc(cls)}\"><thead><tr>{head}</tr></thead>"
            f"<tbody>{body}</tbody></table>")


def job_link(job_id: str) -> str:
    return f"<a href=\"/job/{esc(quote(job_id, safe=''))}\">{esc(job_id)}</a>"


def progress(value: Any) -> str:
    """A bar and the percentage as text (the text is what the tests and people read)."""
    try:
        v = max(0.0, min(1.0, float(value)))
    except (TypeError, ValueError):
        v = 0.0
    return (f"<progress max=\"1\" value=\"{v:.4f}\"></progress> "
            f"<span class=\"pct\">{v * 100:.1f}%</span>")


def tasks(counts: Optional[dict]) -> str:
    c = counts or {}
    return esc(f"{c.get('done', 0)}/{c.get('total', 0)}") + (
        f" <small>({esc(c['running'])} running)</small>" if c.get("running") else "")


# ------------------------------------------------------------------------------ jobs

def jobs_page(jobs: list) -> str:
    """Every job the master knows, grouped by queued, running and finished."""
    parts = [f"<h1>Jobs <small>{len(jobs)}</small></h1>"]
    for title, states in GROUPS:
        rows = [r for r in jobs if r.get("state") in states]
        if title == "Finished":
            rows.reverse()  # the latest first
        parts.append(f"<section id=\"{title.lower()}\"><h2>{title} <small>{len(rows)}"
                     "</small></h2>")
        parts.append(table(("job", "name", "state", "progress", "maps", "reduces", "error"),
                           [_job_row(r) for r in rows], "jobs") if rows
                     else "<p class=\"none\">none</p>")
        parts.append("</section>")
    return "".join(parts)


def _job_row(r: dict) -> list:
    error = r.get("error") or ""
    first = error.strip().splitlines()[-1] if error.strip() else ""
    return [job_link(str(r.get("job", "?"))), esc(r.get("name")),
            f"<span class=\"state {esc(r.get('state'))}\">{esc(r.get('state'))}</span>",
            progress(r.get("progress")), tasks(r.get("maps")), tasks(r.get("reduces")),
            esc(first[:200])]


# ------------------------------------------------------------------------------ one job

def job_page(status: dict, now: Optional[float] = None) -> str:
    """One job: state, progress, tasks, running and failed attempts, counters, timeline."""
    state = status.get("state")
    parts = [f"<h1>Job {esc(status.get('job'))} <small>{esc(status.get('name'))}</small></h1>",
             f"<p class=\"summary\">state <span id=\"state\" class=\"state {esc(state)}\">"
             f"{esc(state)}</span> &middot; <span id=\"progress\">"
             f"{progress(status.get('progress'))}</span> &middot; maps "
             f"{tasks(status.get('maps'))} &middot; reduces "
             f"{tasks(status.get('reduces'))} &middot; output <code>{esc(status.get('output'))}"
             "</code>" + _took(status) + "</p>"]
    if status.get("error"):
        parts.append(f"<h2>Error</h2><pre class=\"error\">{esc(status['error'])}</pre>")
    parts += [_stages(status), _running(status), _failed(status), _counters(status),
              "<h2>Timeline</h2><div class=\"timeline\">"
              + timeline.render(timeline_record(status), now=now) + "</div>",
              _attempts(status)]
    return "".join(p for p in parts if p)


def _took(status: dict) -> str:
    start, end = status.get("started"), status.get("finished")
    if start and end:
        return f" &middot; took {float(end) - float(start):.2f} s"
    return ""


def _stages(status: dict) -> str:
    rows = [[esc(s.get("step")), esc(s.get("kind")), tasks(s)] for s in status.get("stages") or []]
    return "<h2>Stages</h2>" + table(("step", "kind", "tasks done"), rows) if rows else ""


def _running(status: dict) -> str:
    rows = [[esc(a.get("attempt")), esc(a.get("worker")), progress(a.get("progress")),
             "backup" if a.get("backup") else "", f"<span class=\"text\">{esc(a.get('status'))}"
             "</span>"] for a in status.get("running") or []]
    return ("<h2>Running attempts</h2>" + table(("attempt", "worker", "progress", "", "status"),
                                                rows, "running")) if rows else ""


def _failed(status: dict) -> str:
    rows = []
    for f in status.get("failed_attempts") or []:
        lines = str(f.get("error") or "").strip().splitlines()
        rows.append([esc(f.get("attempt")), esc(f.get("worker")), esc(f.get("kind")),
                     f"<pre>{esc(chr(10).join(lines[-6:]))}</pre>"])
    return ("<h2>Failed attempts</h2>" + table(("attempt", "worker", "kind", "error (end)"),
                                               rows, "failed")) if rows else ""


def _counters(status: dict) -> str:
    rows = [[esc(group), esc(name), esc(n)]
            for group, names in sorted((status.get("counters") or {}).items())
            for name, n in sorted(names.items())]
    return ("<h2>Counters</h2>" + table(("group", "counter", "value"), rows, "counters")) \
        if rows else ""


def _attempts(status: dict) -> str:
    attempts = status.get("attempts") or []
    rows = [[esc(a.get("task")), esc(a.get("kind")), esc(a.get("step")), esc(a.get("worker")),
             esc(a.get("state")) + (" (backup)" if a.get("backup") else ""), _length(a)]
            for a in attempts[:ATTEMPTS_SHOWN]]
    more = (f"<p>and {len(attempts) - ATTEMPTS_SHOWN} more (see the timeline)</p>"
            if len(attempts) > ATTEMPTS_SHOWN else "")
    return ("<h2>Attempts</h2>" + table(("task", "kind", "step", "worker", "state", "seconds"),
                                        rows, "attempts") + more) if rows else ""


def _length(a: dict) -> str:
    if a.get("started") and a.get("finished"):
        return f"{float(a['finished']) - float(a['started']):.2f}"
    return ""


def timeline_record(status: dict) -> dict:
    """The status as blfsd.timeline draws it: each attempt's outcome is its state, or for
    a failure the kind the master recorded (lost and timeout are drawn apart)."""
    kinds = {f.get("attempt"): str(f.get("kind")) for f in status.get("failed_attempts") or []}
    attempts = []
    for a in status.get("attempts") or []:
        outcome = str(a.get("state", "succeeded"))
        if outcome == "failed" and kinds.get(a.get("attempt")) in ("lost", "timeout"):
            outcome = kinds[a.get("attempt")]
        attempts.append(dict(a, outcome=outcome))
    return dict(status, attempts=attempts)


def finished(status: dict) -> bool:
    return status.get("state") in FINISHED


# ------------------------------------------------------------------------------ workers

def workers_page(workers: list) -> str:
    """Each worker: up or down, load, its pool of slots, its disk, the heartbeat."""
    rows = []
    for w in workers:
        info = w.get("info") or {}
        rtt = info.get("heartbeat_rtt")
        rows.append([esc(w.get("name")), "up" if w.get("alive") else "<b>down</b>",
                     esc(f"{w.get('running', 0)}/{w.get('parallelism', '?')}"),
                     esc(f"{info.get('free_slots', '?')}/{info.get('slots', '?')} x "
                         f"{format_size(info.get('slot_size'))}"),
                     esc(f"{format_size(info.get('disk_free'))} of "
                         f"{format_size(info.get('disk_bytes'))}"),
                     f"<code>{esc(info.get('device') or info.get('disk'))}</code>",
                     esc(f"{float(rtt) * 1000:.2f} ms") if isinstance(rtt, (int, float)) else ""])
    return (f"<h1>Workers <small>{len(workers)}</small></h1>"
            + table(("worker", "state", "load", "pool free", "disk free", "disk", "heartbeat"),
                    rows, "workers"))
