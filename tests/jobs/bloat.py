"""Map output far larger than its input (each line repeated 64 times, no combiner): enough to
fill a small pool."""
from blfsd import Job


class Bloat(Job):
    def map(self, key, value):
        yield value * 64, key

    def reduce(self, key, values):
        yield key, sum(1 for _ in values)
