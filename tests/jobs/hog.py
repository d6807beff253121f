"""A map that allocates (and touches) far more memory than a task may have: 2 GiB."""
from blfsd import Job


class Hog(Job):
    reducers = 1

    def map(self, key, value):
        block = bytearray(2 << 30)
        for i in range(0, len(block), 4096):
            block[i] = 1
        yield "survived", len(block)
