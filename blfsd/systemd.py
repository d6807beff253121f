"""systemd integration: sockets passed by socket activation, sd_notify, the journal.

Outside systemd every function here quietly does nothing, so tests and --local run the
same daemon code.
"""
from __future__ import annotations

import logging
import os
import socket
import sys
from typing import Optional

SD_LISTEN_FDS_START = 3

try:  # Debian: python3-sdnotify
    import sdnotify
except ImportError:  # pragma: no cover - optional outside the packages
    sdnotify = None


def listen_fds(unset: bool = True) -> list:
    """Sockets systemd handed us, if LISTEN_PID names this process (else none)."""
    pid = os.environ.get("LISTEN_PID")
    fds = os.environ.get("LISTEN_FDS")
    names = os.environ.get("LISTEN_FDNAMES", "")
    if unset:
        for var in ("LISTEN_PID", "LISTEN_FDS", "LISTEN_FDNAMES"):
            os.environ.pop(var, None)
    if not pid or not fds or not pid.isdigit() or int(pid) != os.getpid():
        return []
    count = int(fds) if fds.isdigit() else 0
    result = []
    name_list = names.split(":") if names else []
    for i in range(count):
        fd = SD_LISTEN_FDS_START + i
        os.set_inheritable(fd, False)
        sock = socket.socket(fileno=fd)
        name = name_list[i] if i < len(name_list) else ""
        result.append((name, sock))
    return result


class Notifier:
    """sd_notify when NOTIFY_SOCKET is set; otherwise nothing."""

    def __init__(self) -> None:
        self.enabled = bool(os.environ.get("NOTIFY_SOCKET"))
        self._n = sdnotify.SystemdNotifier() if (self.enabled and sdnotify) else None
        self._last_status = ""

    def notify(self, *lines: str) -> None:
        """Send sd_notify lines (READY=1, STATUS=..., WATCHDOG=1)."""
        if not self.enabled:
            return
        text = "\n".join(lines)
        if self._n is not None:
            self._n.notify(text)
        else:  # pragma: no cover
            _raw_notify(text)

    def status(self, text: str) -> None:
        """STATUS=text, sent only when it changed."""
        if text != self._last_status:
            self._last_status = text
            self.notify(f"STATUS={text}")

    @staticmethod
    def watchdog_interval() -> Optional[float]:
        """Half the watchdog period, if systemd asked for pings (and asked us)."""
        usec = os.environ.get("WATCHDOG_USEC")
        pid = os.environ.get("WATCHDOG_PID")
        if not usec or not usec.isdigit() or (pid and pid != str(os.getpid())):
            return None
        return int(usec) / 1e6 / 2


def _raw_notify(text: str) -> None:
    addr = os.environ["NOTIFY_SOCKET"]
    if addr.startswith("@"):
        addr = "\0" + addr[1:]
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as s:
        s.connect(addr)
        s.sendall(text.encode())


class _FieldFormatter(logging.Formatter):
    """stderr lines with the structured fields appended, e.g. 'job=... task=...'."""

    FIELDS = ("BLFS_JOB", "BLFS_TASK", "BLFS_ATTEMPT", "BLFS_NODE")

    def format(self, record: logging.LogRecord) -> str:
        text = super().format(record)
        extra = " ".join(f"{f[5:].lower()}={getattr(record, f)}" for f in self.FIELDS
                         if getattr(record, f, None) not in (None, ""))
        return f"{text} [{extra}]" if extra else text


def setup_logging(name: str, level: int = logging.INFO, stream=None) -> None:
    """The journal under systemd (JOURNAL_STREAM set), plain stderr otherwise; never both."""
    root = logging.getLogger()
    for h in list(root.handlers):
        root.removeHandler(h)
    root.setLevel(level)
    handler: logging.Handler
    if os.environ.get("JOURNAL_STREAM") and stream is None:
        try:
            from systemd.journal import JournalHandler
            handler = JournalHandler(SYSLOG_IDENTIFIER=name)
        except ImportError:
            handler = logging.StreamHandler(sys.stderr)
            handler.setFormatter(_FieldFormatter("%(levelname)s %(name)s: %(message)s"))
    else:
        handler = logging.StreamHandler(stream or sys.stderr)
        handler.setFormatter(_FieldFormatter(
            f"%(asctime)s {name}[%(process)d] %(levelname)s %(message)s"))
    root.addHandler(handler)
