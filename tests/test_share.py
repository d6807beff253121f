"""Fair share between running jobs, end to end (issue 15, point 1): on a master and two
workers of real daemons, a short job submitted after a long one finishes first, and the
long one still finishes exactly."""
from __future__ import annotations

import json
import os
import re
import time

import pytest

from cluster_helpers import LoopCluster
from conftest import JOBS, make_corpus, read_counts, word_counts
from loopdev import root


@root
@pytest.mark.root
def test_a_short_job_submitted_after_a_long_one_finishes_first(tmp_path):
    with LoopCluster(tmp_path, workers=2, slots=16, parallelism=1) as cluster:
        long_in = make_corpus(tmp_path / "long.txt", 6000, seed=3)
        short_in = make_corpus(tmp_path / "short.txt", 50, seed=4)
        detached = cluster.blfs("submit", os.path.join(JOBS, "slow_wordcount.py"), "--input",
                                long_in, "--output", str(tmp_path / "long"), "--split-size",
                                "16K", "--reducers", "1", "--detach", "--", "2.0")
        long_job = detached.stdout.strip()
        deadline = time.monotonic() + 30
        while cluster.status(long_job)["maps"]["running"] < 2:  # both slots are its own
            assert time.monotonic() < deadline, cluster.status(long_job)
            time.sleep(0.1)
        short = cluster.blfs("submit", os.path.join(JOBS, "slow_wordcount.py"), "--input",
                             short_in, "--output", str(tmp_path / "short"), "--reducers", "1",
                             "--", "0", timeout=120)
        short_job = re.search(r"job (\S+) succeeded", short.stderr).group(1)
        now = cluster.status(long_job)
        # first come, first served, the short job would have waited for the long job's
        # last map to start: most of its maps done by then
        assert now["state"] == "running" and now["maps"]["done"] < now["maps"]["total"] / 2, now
        deadline = time.monotonic() + 120
        while cluster.status(long_job)["state"] != "succeeded":
            assert time.monotonic() < deadline, cluster.status(long_job)
            time.sleep(0.3)
        first, second = cluster.status(short_job), cluster.status(long_job)
        assert first["finished"] < second["finished"]
        assert second["maps"]["total"] >= 8  # it had maps pending when the short job came
        assert read_counts(str(tmp_path / "short")) == word_counts(short_in)
        assert read_counts(str(tmp_path / "long")) == word_counts(long_in)
        jobs = json.loads(cluster.blfs("jobs", "--json").stdout)
        assert {j["job"] for j in jobs} >= {long_job, short_job}
        # first come, first served, the short job could not have started before the long
        # job's last map did: that is its wait without shares
        first_run = min(a["started"] for a in first["attempts"])
        last_map = max(a["started"] for a in second["attempts"] if "/m-" in a["attempt"])
        print(f"short job: waited {first_run - first['submitted']:.2f} s for its first "
              f"attempt, done {first['finished'] - first['submitted']:.2f} s after submit; "
              f"first come first served it would have waited at least "
              f"{last_map - first['submitted']:.2f} s; the long job took "
              f"{second['finished'] - second['submitted']:.2f} s")
