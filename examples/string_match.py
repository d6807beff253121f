"""String match (in the spirit of the Phoenix ``string_match`` benchmark).

The job arguments are the keys to look for. Every whitespace-separated word of the
input that is exactly equal to one of the keys counts as a match.

Output: ``key<TAB>count`` for each key that matched at least once (keys never seen are
absent). The counter ``string_match/words`` counts the words scanned.

Run it::

    blfs submit examples/string_match.py --input words.txt --output out --local -- apple kiwi
"""
from blfsd import Job


class StringMatch(Job):
    def setup(self):
        if not self.args:
            raise ValueError("usage: blfs submit string_match.py ... -- KEY [KEY ...]")
        self.keys = frozenset(self.args)

    def map(self, key, value):
        words = value.split()
        if words:
            self.increment_counter("string_match", "words", len(words))
        for word in words:
            if word in self.keys:
                yield word, 1

    def combine(self, key, values):
        yield key, sum(values)

    def reduce(self, key, values):
        yield key, sum(values)
