"""tests/test_cli.py: a plain word count, the smallest job that succeeds."""
from blfsd import Job


class CliWordCount(Job):
    def map(self, key, value):
        for word in value.split():
            yield word, 1

    def combine(self, key, values):
        yield key, sum(values)

    def reduce(self, key, values):
        yield key, sum(values)
