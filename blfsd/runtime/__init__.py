"""What runs inside a task process: the user's map, combine and reduce around our data path.

A task process is forked by the worker for one attempt and runs as a user that may open
nothing on the disks. It talks to its worker over a socketpair (taskchannel.TaskEnd):
every file it reads or writes comes from the worker as a descriptor (worker_files); it
reports progress (reporter), and finally success (with its segment locations, or its part
file) or failure (with a kind and, for the user's own errors, the traceback).

- attempt: one attempt start to end: map or reduce, its output, how it failed
- code: what the task runs of its job (native or mrjob), the step it feeds
- reading: its input: a split, a producer's segments, a partition's merged runs
- spill: output for the next stage: combined, partitioned, sorted, spilled as segments
- parts: output for the job: a part file
"""
from .attempt import TaskEnv, run_attempt
from .spill import MapOutput, Shape

__all__ = ["TaskEnv", "run_attempt", "MapOutput", "Shape"]
