"""Word count whose map tasks first sleep args[0] seconds: long enough to act mid-job."""
import time

from blfsd import Job


class SlowWordCount(Job):
    def setup(self):
        if self.context.task.startswith("m-"):
            time.sleep(float(self.args[0]))

    def map(self, key, value):
        for word in value.split():
            yield word, 1

    def combine(self, key, values):
        yield key, sum(values)

    def reduce(self, key, values):
        yield key, sum(values)
