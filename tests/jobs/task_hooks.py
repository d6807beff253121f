"""finish(), the split's path in the context, files shipped with the job (the class's
`files` and --file), and sort_values in a single step.

Each map counts its records and yields (path, count) from finish(); every map and reduce
reads the shipped files from its working directory; the reduce checks its values arrive
sorted and yields how many there were."""
import os

from blfsd import Job


class Hooks(Job):
    files = ("hooks_data.txt",)  # beside this file
    sort_values = True
    reducers = 1

    def setup(self):
        self.records = 0
        with open("hooks_data.txt") as f:
            self.word = f.read().strip()
        if self.args:
            with open(self.args[0]) as f:  # shipped with --file
                self.word += "+" + f.read().strip()

    def map(self, key, line):
        self.records += 1
        yield line.split()[0], int(line.split()[1])

    def finish(self):
        if self.context.kind == "map":
            yield f"path {os.path.basename(self.context.input_path)}", self.records
        else:
            yield "word", self.word

    def reduce(self, key, values):
        values = list(values)
        if not key.startswith("path"):
            assert values == sorted(values), values
        yield key, values if not key.startswith("path") else sum(values)
