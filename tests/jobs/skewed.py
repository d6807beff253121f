"""A sort of KEY<TAB>VALUE lines (tests/test_merging.py), whose reduce checks that the
values of a key stream to it: an iterator, never a list (one key may hold half of all
records). The output is the input sorted by key, equal keys in the order they came."""
from blfsd import Job


class Skewed(Job):
    reducers = 2

    def map(self, key, value):
        k, _, v = value.partition("\t")
        yield k, v

    def partition(self, key, n):  # by the first letter, in order: parts read in order
        return min(n - 1, max(0, ord(key[0]) - 97) * n // 26)

    def reduce(self, key, values):
        if isinstance(values, (list, tuple)):
            raise TypeError(f"the values of {key!r} came as a {type(values).__name__}")
        for value in values:
            yield key, value
