"""tests/test_cli.py: writes self.args, as map and as reduce see them, to its output."""
from blfsd import Job


class ShowArgs(Job):
    reducers = 1

    def map(self, key, value):
        if key == 0:  # the first line of the input: once per job with one split
            yield "map", list(self.args)

    def reduce(self, key, values):
        values = list(values)
        yield key, values[0]
        if key == "map":
            yield "reduce", list(self.args)
