"""Distributed grep: the input lines that match a Python regular expression.

The pattern is the first job argument and is applied with ``re.search`` to each line
(without its newline). Output: one line per distinct matching line, ``line<TAB>count``,
where count is how many times that exact line occurs in the input. Lines that do not
match are dropped. The counter ``grep/matches`` counts matching lines (``blfs status``).

Run it::

    blfs submit examples/grep.py --input access.log --output out --local -- ' 50[0-9] '
"""
import re

from blfsd import Job


class Grep(Job):
    def setup(self):
        if not self.args:
            raise ValueError("usage: blfs submit grep.py ... -- PATTERN")
        self.pattern = re.compile(self.args[0])

    def map(self, key, value):
        if self.pattern.search(value):
            self.increment_counter("grep", "matches")
            yield value, 1

    def combine(self, key, values):
        yield key, sum(values)

    def reduce(self, key, values):
        yield key, sum(values)
