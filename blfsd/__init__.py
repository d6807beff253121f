"""blfs: MapReduce for small Linux clusters, with a shuffle through shared block devices."""
from .job import Context, Job
from .steps import Step

__all__ = ["Job", "Context", "Step"]
__version__ = "0.1.0"
