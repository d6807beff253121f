"""A map that takes longer than --task-timeout but keeps saying what it does."""
import time

from blfsd import Job


class ChattySlow(Job):
    def setup(self):
        if self.context.task == "m-00000":
            for i in range(5):
                time.sleep(0.8)
                self.set_status(f"step {i}")  # a status update proves the task is alive

    def map(self, key, value):
        for word in value.split():
            yield word, 1

    def reduce(self, key, values):
        yield key, sum(values)
