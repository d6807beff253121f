"""tests/test_cli.py: imports Job but defines no subclass of it."""
from blfsd import Job  # noqa: F401


class NotAJob:
    def map(self, key, value):
        yield key, value
