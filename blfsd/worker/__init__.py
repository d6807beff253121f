"""The worker daemon, as small services: `daemon` (listener, STATUS, the master's session),
`attempts` (task processes: launch, supervise, the task's requests, reports), `process`
(fork, kill and reap one task process), `files` (output commits, cluster storage),
`views` (peers' disks made current before reading) and `disk` (this node's pool)."""
from .daemon import Worker, serve

__all__ = ["Worker", "serve"]
