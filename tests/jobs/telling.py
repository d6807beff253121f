"""Word count that tells what it does (issue 14): every map prints a line to stdout and one
to stderr naming its task and attempt, counts its lines in a counter of its own, and the
first attempt of map m-00000 fails on purpose after it has printed."""
import sys

from blfsd import Job


class Telling(Job):
    def setup(self):
        ctx = self.context
        if ctx.kind == "map":
            print(f"hello from {ctx.task} attempt {ctx.attempt}")
            print(f"a warning from {ctx.task} attempt {ctx.attempt}", file=sys.stderr)
            if ctx.task == "m-00000" and ctx.attempt == 0:
                raise ValueError("the first attempt of m-00000 fails on purpose")

    def map(self, key, line):
        self.increment_counter("telling", "lines")
        for word in line.split():
            yield word, 1

    def combine(self, key, counts):
        yield key, sum(counts)

    def reduce(self, key, counts):
        yield key, sum(counts)
