"""Two steps (tests/test_merging.py): a sort of KEY<TAB>VALUE lines whose reduces merge
their many runs, then maps that wait for the file args[0] before they pass the reduces'
output through: long enough to look at the workers' slots between the two steps. With
args[1] == "fail", each reduce's first attempt fails at its end, after its merge passes."""
import os
import time

from blfsd import Job, Step


class MergeThenWait(Job):
    def steps(self):
        return [Step(map=self.parse, reduce=self.each, reducers=2,
                     partition=self.by_letter),
                Step(map=self.passed)]

    def setup(self):
        if self.context.step == 1:
            deadline = time.monotonic() + 120
            while not os.path.exists(self.args[0]) and time.monotonic() < deadline:
                time.sleep(0.05)

    def parse(self, key, line):
        k, _, v = line.partition("\t")
        yield k, v

    def by_letter(self, key, n):
        return min(n - 1, max(0, ord(key[0]) - 97) * n // 26)

    def each(self, key, values):
        for value in values:
            yield key, value

    def finish(self):
        if self.context.step == 0 and self.context.kind == "reduce" and \
                self.args[1:] == ["fail"] and self.context.attempt == 0:
            raise RuntimeError("the first attempt of a reduce fails after its merge")
        return ()

    def passed(self, key, value):
        yield key, value
