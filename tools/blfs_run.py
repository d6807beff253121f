#!/usr/bin/env python3
"""`blfs` as the benchmark runs it: the real command line, plus the job's final status.

    python tools/blfs_run.py --status-file STATUS.json submit JOB.py ... --local

runs exactly what `blfs submit ...` runs (blfsd.cli.main, in this process), and writes the
status the master last reported for the job (what `blfs status JOB --json` shows: counters,
attempts, times) to STATUS.json before the command ends. With `--local` the embedded
cluster, and with it every record of the job, is gone once submit returns, so this is the
only way to see the job's counters afterwards. It hooks `blfsd.cli._report_end`; if a
later version of the engine has no such function, the command still runs and no status
file is written (the benchmark then reports the counters as n/a).
"""
from __future__ import annotations

import json
import sys


def main(argv: list) -> int:
    status_file = None
    if argv[:1] == ["--status-file"]:
        status_file, argv = argv[1], argv[2:]
    from blfsd import cli

    original = getattr(cli, "_report_end", None)
    if status_file and callable(original):
        def report_end(status, spec, *rest, **kw):
            try:
                with open(status_file, "w") as f:
                    json.dump(status, f, default=str)
            except (OSError, TypeError, ValueError) as exc:
                print(f"blfs_run: cannot write {status_file}: {exc}", file=sys.stderr)
            return original(status, spec, *rest, **kw)

        cli._report_end = report_end
    return cli.main(argv)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
