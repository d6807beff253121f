"""The master daemon, as small services: `daemon` (listeners, ticker, STATUS), `links`
(one connection per worker), `executor` (the scheduler's actions as I/O: launch, commit,
release), `jobs` (submit, status, wait, cancel, job records), `datasets` (put, read, ls,
rm) and `placement` (pure decisions about data)."""
from .daemon import Master, serve

__all__ = ["Master", "serve"]
