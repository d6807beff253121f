"""Word count whose first map task, in setup, does what args[0] says (issue 12):
`counters` makes 2 million distinct counters, `status` sets a 10 MiB status line,
`output` writes 10 MiB to stdout and 10 MiB to stderr."""
import sys

from blfsd import Job

MIB = 1 << 20


class Noisy(Job):
    def setup(self):
        if self.context.task != "m-00000":
            return
        what = self.args[0]
        if what == "counters":
            for i in range(2_000_000):
                self.increment_counter("many", f"counter-{i}")
        elif what == "status":
            self.set_status("s" * (10 * MIB))
        elif what == "output":
            for _ in range(10):
                sys.stdout.write("o" * MIB + "\n")
                sys.stderr.write("e" * MIB + "\n")
            sys.stdout.flush()

    def map(self, key, line):
        for word in line.split():
            yield word, 1

    def reduce(self, key, counts):
        yield key, sum(counts)
