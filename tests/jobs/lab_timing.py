"""Map and reduce tasks that record when and where they ran (the lab's mtiming/rtiming)."""
import os
import time

from blfsd import Job


class Timing(Job):
    def _record(self, phase):
        start = time.time()
        time.sleep(1.0)
        path = os.path.join(self.args[0], f"{self.context.task}.{self.context.attempt}")
        with open(path, "w") as f:
            f.write(f"{phase} {self.context.worker} {start} {time.time()}\n")

    def map(self, key, value):
        yield value, 1

    def setup(self):
        phase = "map" if self.context.task.startswith("m-") else "reduce"
        if phase == self.args[1]:
            self._record(phase)

    def reduce(self, key, values):
        yield key, sum(values)
