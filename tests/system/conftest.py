"""Fixtures of the system test: the packages of the working tree and a booted cluster."""
from __future__ import annotations

import contextlib
import time

import pytest

from system.cluster import Cluster, build_debs, why_not


@pytest.fixture(scope="module")
def system_clock(request):
    """Started first; at the very end (after the cluster is gone) prints how long the
    whole system test took, so that it can be quoted."""
    clock = {"started": time.monotonic()}
    yield clock
    if "up" in clock:  # not when skipped
        end = time.monotonic()
        show(request, f"system test ({request.module.__name__}): {end - clock['started']:.1f} s"
                      f" in all: packages and cluster up {clock['up'] - clock['started']:.1f} s,"
                      f" scenarios {clock['down'] - clock['up']:.1f} s, teardown "
                      f"{end - clock['down']:.1f} s")


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
    return build_debs(str(tmp_path_factory.mktemp("debs")))


@pytest.fixture(scope="module")
def cluster(request, system_clock, debs):
    """A master and workers w1..w3 in booted containers, the release-1 package installed,
    every worker alive. Taken down at the end of the module, however its tests ended."""
    timeline: list = []

    def say(line: str) -> None:
        timeline.append(f"{time.monotonic() - system_clock['started']:6.1f} s  {line}")

    c = Cluster.up(debs[1], workers=3, extra_debs=[debs[2]], say=say)
    system_clock["up"] = time.monotonic()
    if request.config.option.verbose > 0:
        show(request, *(f"cluster up: {line}" for line in timeline))
    try:
        yield c
    finally:
        system_clock["down"] = time.monotonic()
        c.down()
