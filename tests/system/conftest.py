"""Fixtures of the system test: the packages of the working tree and booted clusters.

`cluster` is parametrized by Debian release: every test of test_cluster.py runs on an
all-Debian-12 cluster, then on an all-Debian-13 one (one cluster at a time, module scope).
test_rolling_upgrade.py makes its own mixed cluster with `booted_cluster`."""
from __future__ import annotations

import contextlib
import time
from typing import Iterator

import pytest

from system.cluster import Cluster, build_debs, why_not

#: The suites the clusters of test_cluster.py run, and how the timer names them.
RELEASES = {"bookworm": "Debian 12", "trixie": "Debian 13"}


@pytest.fixture(scope="module")
def system_clock(request):
    """Started first; at the very end (after the last cluster is gone) prints how long the
    whole system test took and each cluster's share, so that it can be quoted. Tests may add
    lines of their own to clock["notes"] (the rolling upgrade's time per node)."""
    clock = {"started": time.monotonic(), "clusters": [], "notes": []}
    yield clock
    if clock["clusters"]:  # not when skipped
        end, started = time.monotonic(), clock["started"]
        lines = [f"system test ({request.module.__name__}): {end - started:.1f} s in all, "
                 f"packages {clock.get('packages', started) - started:.1f} s"]
        for c in clock["clusters"]:
            line = f"  {c['label']}: up {c['up'] - c['start']:.1f} s"
            if "down" in c:
                line += f", scenarios {c['down'] - c['up']:.1f} s"
            if "gone" in c:
                line += f", teardown {c['gone'] - c['down']:.1f} s"
            lines.append(line)
        lines += [f"  {note}" for note in clock["notes"]]
        show(request, *lines)


def show(request, *lines: str) -> None:
    """Print on the terminal even while pytest captures output."""
    capman = request.config.pluginmanager.get_plugin("capturemanager")
    with capman.global_and_fixture_disabled() if capman else contextlib.nullcontext():
        print()
        for line in lines:
            print(line, flush=True)


@pytest.fixture(scope="module")
def debs(system_clock, tmp_path_factory) -> dict:
    """{1: release-1 .deb, 2: release-2 .deb} of the working tree (packaging/build.sh)."""
    why = why_not()
    if why:
        pytest.skip(why)
    built = build_debs(str(tmp_path_factory.mktemp("debs")))
    system_clock["packages"] = time.monotonic()
    return built


@contextlib.contextmanager
def booted_cluster(request, clock: dict, debs: dict, suites, label: str) -> Iterator[Cluster]:
    """A master and workers w1..w3 in booted containers of these suites (see Cluster.up),
    the release-1 package installed, every worker alive; its times go to the clock under
    `label`. Taken down at the end, however the tests ended."""
    timeline: list = []
    start = time.monotonic()

    def say(line: str) -> None:
        timeline.append(f"{time.monotonic() - clock['started']:6.1f} s  {line}")

    c = Cluster.up(debs[1], workers=3, extra_debs=[debs[2]], say=say, suites=suites)
    times = {"label": label, "start": start, "up": time.monotonic()}
    clock["clusters"].append(times)
    if request.config.option.verbose > 0:
        show(request, *(f"cluster up ({label}): {line}" for line in timeline))
    try:
        yield c
    finally:
        times["down"] = time.monotonic()
        try:
            c.down()
        finally:
            times["gone"] = time.monotonic()


@pytest.fixture(scope="module", params=list(RELEASES), ids=list(RELEASES))
def cluster(request, system_clock, debs):
    """A master and workers w1..w3, all of one Debian release (bookworm, then trixie)."""
    suite = request.param
    with booted_cluster(request, system_clock, debs, suite,
                        f"{RELEASES[suite]} ({suite}) cluster") as c:
        yield c
