"""Identity sort (key TAB value lines) whose maps numbered args[0] and up first sleep
args[1] seconds: the job's last maps run long after the others finished."""
import time

from blfsd import Job


class SlowTail(Job):
    def setup(self):
        task = self.context.task
        if task.startswith("m-") and int(task[2:]) >= int(self.args[0]):
            time.sleep(float(self.args[1]))

    def map(self, key, value):
        k, _, v = value.partition("\t")
        yield k, v

    def reduce(self, key, values):
        for v in values:
            yield key, v
