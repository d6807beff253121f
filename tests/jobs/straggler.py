"""Word count with one failure and one straggler (issue 14's note: `blfs tasks` of a job
with a failed and a backup attempt): the first attempt of map m-00001 sleeps args[0]
seconds (default 6) in setup, long enough for speculation to start a backup of it on
another worker, and the first attempt of reduce r-00000 fails."""
import time

from blfsd import Job


class Straggler(Job):
    def setup(self):
        ctx = self.context
        if ctx.attempt == 0 and ctx.task == "m-00001":
            time.sleep(float(self.args[0]) if self.args else 6.0)
        if ctx.attempt == 0 and ctx.task == "r-00000":
            raise RuntimeError("the first attempt of r-00000 fails on purpose")

    def map(self, key, line):
        for word in line.split():
            yield word, 1

    def combine(self, key, counts):
        yield key, sum(counts)

    def reduce(self, key, counts):
        yield key, sum(counts)
