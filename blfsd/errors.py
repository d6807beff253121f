"""The exception hierarchy: users see str(exc), one line; the journal gets the detail."""


class BlfsError(Exception):
    """Base of every error blfs raises on purpose. str() is one line for a person."""

    code = "error"


class ConfigError(BlfsError):
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
    code = "auth"


class ConnectionClosed(BlfsError):
    code = "closed"


class RemoteError(BlfsError):
    """An error reply from the other side of a connection."""

    def __init__(self, code: str, message: str):
        super().__init__(message)
        self.code = code


class StorageError(BlfsError):
    code = "storage"


class PoolExhausted(StorageError):
    code = "pool_exhausted"


class FetchError(StorageError):
    """A segment could not be read back intact (checksum, header, I/O)."""

    code = "fetch"

    def __init__(self, message: str, map_task: str = "", node: str = ""):
        super().__init__(message)
        self.map_task = map_task
        self.node = node


class NotFound(BlfsError):
    code = "not_found"


class Conflict(BlfsError):
    code = "conflict"
