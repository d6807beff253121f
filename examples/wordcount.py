"""Word count: how many times each whitespace-separated word occurs in the input.

Output: one line per distinct word, ``word<TAB>count``. The combiner sums the ones
a map task produced before they are written to the shuffle, so a map's output holds
each word at most once per spill.

Run it::

    blfs submit examples/wordcount.py --input book.txt --output out --local --workers 4
    cat out/part-*
"""
from blfsd import Job


class WordCount(Job):
    def map(self, key, value):
        # key: byte offset of the line; value: the line without its newline
        for word in value.split():
            yield word, 1

    def combine(self, key, values):
        yield key, sum(values)

    def reduce(self, key, values):
        yield key, sum(values)
