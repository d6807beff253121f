"""A job whose status text is HTML and script (tests/test_ui.py): it must be shown as
text. Its first map says so, then waits (up to args[0] seconds) to be cancelled."""
import time

from blfsd import Job

HOSTILE = ('<script>document.title="pwned";window.blfsPwned=1</script>'
           '<img src=x onerror="window.blfsPwned=2">')


class UiHostile(Job):
    def setup(self):
        if self.context.task == "m-00000":
            self.set_status(HOSTILE)
            deadline = time.monotonic() + float(self.args[0])
            while time.monotonic() < deadline:
                time.sleep(0.2)
                self.set_status(HOSTILE)  # proves the task alive, keeps the text shown

    def map(self, key, value):
        for word in value.split():
            yield word, 1

    def reduce(self, key, values):
        yield key, sum(values)
