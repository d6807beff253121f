"""Byte histogram (in the spirit of the Phoenix ``histogram`` benchmark).

Counts how often each byte value 0..255 occurs in binary input. The input is read as
raw chunks (``input_format = "bytes"``: key = byte offset, value = a ``bytes`` chunk;
chunks never overlap and cover every byte once), so no line structure is assumed.

Output: ``byte<TAB>count`` for each byte value that occurs at least once (the key is
an int, so the parts are sorted numerically). The combiner folds each map's counts.

Run it::

    blfs submit examples/histogram.py --input image.bmp --output out --local
"""
from collections import Counter

from blfsd import Job


class Histogram(Job):
    input_format = "bytes"

    def map(self, key, value):
        yield from Counter(value).items()   # iterating bytes gives ints 0..255

    def combine(self, key, values):
        yield key, sum(values)

    def reduce(self, key, values):
        yield key, sum(values)
