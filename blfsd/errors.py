"""The exception hierarchy: users see str(exc), one line; the journal gets the detail."""


class BlfsError(Exception):
    """Base of every error blfs raises on purpose. str() is one line for a person."""

    code = "error"


class ConfigError(BlfsError):
    """The configuration file or the cluster key cannot be used."""
    code = "config"


class UsageError(BlfsError):
    """Bad input from the command line: a missing file, a bad option value."""

    code = "usage"


class JobDefinitionError(BlfsError):
    """The job file cannot be used: no Job class, two Job classes, a syntax error."""

    code = "job"


class ProtocolError(BlfsError):
    """A peer sent something that is not a valid frame or message."""

    code = "bad_request"


class AuthError(BlfsError):
    """A peer could not prove it holds the cluster key, or may not use a socket."""
    code = "auth"


class ConnectionClosed(BlfsError):
    """The other side is gone, or cannot be reached."""
    code = "closed"


class RemoteError(BlfsError):
    """An error reply from the other side of a connection."""

    def __init__(self, code: str, message: str):
        super().__init__(message)
        self.code = code


class StorageError(BlfsError):
    """A disk, a pool or a file of cluster storage failed us."""
    code = "storage"


class PathRefused(StorageError):
    """A path the job named cannot be used with the path user's rights: the job's fault."""

    code = "path"


class DiskFull(StorageError):
    """No room left on a node's disk (a put, a task's output): not the job's fault."""

    code = "disk_full"


class PoolExhausted(StorageError):
    """No free slot in a worker's pool."""
    code = "pool_exhausted"


class FetchError(StorageError):
    """A segment could not be read back intact (checksum, header, I/O)."""

    code = "fetch"

    def __init__(self, message: str, map_task: str = "", node: str = ""):
        super().__init__(message)
        self.map_task = map_task
        self.node = node


class NotFound(BlfsError):
    """No such job, dataset, output, put or file."""
    code = "not_found"


class Conflict(BlfsError):
    """Already there: an output, a dataset, a job writing to the same output."""
    code = "conflict"


class StateError(BlfsError):
    """The master could not record durably what it must not lose (a job, a task's result):
    what depended on it is refused rather than accepted on a promise."""
    code = "state"


class DaemonFailed(BlfsError):
    """A daemon could not go on (a loop it needs died): it exits non-zero, to be restarted."""
    code = "internal"
