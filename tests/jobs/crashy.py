"""Word count whose first attempts crash now and then: attempt 0 of a task exits with
status 3 when the job's seed (args[0]) and the task's name say so, about one in five;
every map task first sleeps args[1] seconds (room to act in the middle of a job)."""
import os
import random
import time

from blfsd import Job


class Crashy(Job):
    def setup(self):
        if self.context.attempt == 0 and \
                random.Random(f"{self.args[0]}/{self.context.task}").random() < 0.2:
            os._exit(3)
        if self.context.kind == "map":
            time.sleep(float(self.args[1]))

    def map(self, key, line):
        for word in line.split():
            yield word, 1

    def combine(self, key, counts):
        yield key, sum(counts)

    def reduce(self, key, counts):
        yield key, sum(counts)
