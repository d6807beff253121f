"""tests/test_cli.py: two Job classes in one file; `--job NAME` must pick one."""
from blfsd import Job


class Shout(Job):
    def map(self, key, value):
        for word in value.split():
            yield word.upper() + "!", 1

    def reduce(self, key, values):
        yield key, sum(values)


class Whisper(Job):
    def map(self, key, value):
        for word in value.split():
            yield "whisper:" + word.lower(), 1

    def reduce(self, key, values):
        yield key, sum(values)
