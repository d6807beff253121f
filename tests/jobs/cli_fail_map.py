"""tests/test_cli.py: every map attempt raises; self.args[0] makes the message unique."""
from blfsd import Job


class FailingMap(Job):
    def map(self, key, value):
        raise ValueError("boom-" + self.args[0])

    def reduce(self, key, values):
        yield key, sum(values)
