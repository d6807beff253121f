"""A map that leaves children behind: one that sleeps, one that setsid()s first and
double-forks (so that it is in another session and no longer our child).

Each map yields the pids of what it left, so a test can check they are gone once the
attempt has ended; the map itself returns at once.
"""
import os
import time

from blfsd import Job


def _leave(detach):
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(r)
        if detach:
            os.setsid()
            if os.fork():  # the grandchild is re-parented: out of our session and family
                os._exit(0)
        os.write(w, str(os.getpid()).encode())
        os.close(w)
        time.sleep(600)
        os._exit(0)
    os.close(w)
    left = int(os.read(r, 32))
    os.close(r)
    if detach:
        os.waitpid(pid, 0)  # the intermediate child exits at once
    return left


class Forker(Job):
    reducers = 1

    def map(self, key, value):
        yield "child", _leave(detach=False)
        yield "setsid", _leave(detach=True)

    def reduce(self, key, values):
        for v in values:
            yield key, v
