"""Each map attempt appends a line to a file: the lab's job-count test counts them."""
import os

from blfsd import Job


class JobCount(Job):
    def setup(self):
        if self.context.task.startswith("m-"):
            fd = os.open(os.path.join(self.args[0], "map-runs"),
                         os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
            os.write(fd, f"{self.context.task} {self.context.attempt}\n".encode())
            os.close(fd)

    def map(self, key, value):
        for word in value.split():
            yield word, 1

    def reduce(self, key, values):
        yield key, sum(values)
