"""Word count whose tasks exit at random one time in three, or stall (the lab's crash test).

Decisions are drawn from a random source seeded per attempt, so a retry decides anew.
args: [crash probability, stall probability]
"""
import os
import random
import time

from blfsd import Job


class Crashy(Job):
    def setup(self):
        rng = random.Random(f"{self.context.job_id}/{self.context.task}/{self.context.attempt}"
                            f"/{os.getpid()}")
        crash, stall = float(self.args[0]), float(self.args[1])
        r = rng.random()
        if r < crash:
            os._exit(1)
        if r < crash + stall:
            time.sleep(3600)  # silent: only the task timeout can end this attempt
        self.rng = rng

    def map(self, key, value):
        for word in value.split():
            yield word, 1

    def combine(self, key, values):
        yield key, sum(values)

    def reduce(self, key, values):
        yield key, sum(values)
