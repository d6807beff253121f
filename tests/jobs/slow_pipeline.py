"""pipe3.py (word count, re-key by first letter, sum by letter) whose step-1 maps first
sleep args[0] seconds: long enough to act in the middle of the second step."""
import time

from blfsd import Job, Step


class SlowPipeline(Job):
    def steps(self):
        return [Step(map=self.words, combine=self.total, reduce=self.total, reducers=6),
                Step(map=self.by_letter),
                Step(reduce=self.total, reducers=2)]

    def setup(self):
        if self.context.step == 1:
            time.sleep(float(self.args[0]))

    def words(self, key, line):
        for word in line.split():
            yield word, 1

    def total(self, key, counts):
        yield key, sum(counts)

    def by_letter(self, word, count):
        yield word[0], count
