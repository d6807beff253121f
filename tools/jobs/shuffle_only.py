"""A shuffle-only job for tools/bench_shuffle.py: the map passes 1 MiB chunks of a binary
file through untouched, the reduce only counts their bytes. Nearly all the time is in
writing segments and reading them back, so the reducers' rate is the shuffle's rate.

Output: one line per chunk, ``offset<TAB>bytes``.
"""
from blfsd import Job


class ShuffleOnly(Job):
    input_format = "bytes"  # key: offset of the chunk; value: the chunk (bytes)
    reducers = 1

    def map(self, key, value):
        yield key, value

    def reduce(self, key, values):
        yield key, sum(len(v) for v in values)
