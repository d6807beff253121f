"""tests/test_cli.py: maps and two of three reduce partitions succeed; partition 1 raises.

The reduces that succeed have written their parts by the time partition 1 gives up (it
waits first), so a job that left partial output behind would show it.
"""
import time

from blfsd import Job


class FailingReduce(Job):
    reducers = 3

    def map(self, key, value):
        for word in value.split():
            yield word, 1

    def reduce(self, key, values):
        if self.context.partition == 1:
            time.sleep(0.5)
            raise ValueError("boom-" + self.args[0])
        yield key, sum(values)
