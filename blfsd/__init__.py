"""blfs: MapReduce for small Linux clusters, with a shuffle through shared block devices."""
from .job import Context, Job

__all__ = ["Job", "Context"]
__version__ = "0.1.0"
