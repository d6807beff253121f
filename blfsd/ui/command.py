"""`blfs ui [--listen 127.0.0.1:8070]`: the read-only status page and /metrics.

It is a client of the master like `blfs status` (the Unix socket, or TCP with the cluster
key), so whoever runs it needs what `blfs status` needs; the daemons open no port for it.
The server and prometheus_client are imported only when the command runs."""
from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import signal
import sys
from typing import Any

from ..errors import UsageError

DEFAULT_LISTEN = "127.0.0.1:8070"


def add_parser(sub: Any) -> None:
    """The `ui` subcommand, for cli.build_parser."""
    u = sub.add_parser("ui", help="serve a read-only status page and /metrics")
    u.add_argument("--listen", default=DEFAULT_LISTEN, metavar="HOST:PORT",
                   help=f"where the page is served (default {DEFAULT_LISTEN}: this machine "
                        "only)")
    u.add_argument("--master", metavar="ADDRESS", help="socket path or host:port")
    u.add_argument("--key", metavar="FILE", help="cluster key for a TCP master")
    u.add_argument("--verbose", "-v", action="store_true")


def parse_listen(text: str) -> tuple[str, int]:
    """HOST:PORT or [V6]:PORT; port 0 takes a free one."""
    host, sep, port = text.rpartition(":")
    if not sep or not host or not port.isdigit() or int(port) > 65535:
        raise UsageError(f"--listen {text!r}: expected HOST:PORT, e.g. {DEFAULT_LISTEN}")
    return host.strip("[]"), int(port)


def run(args: argparse.Namespace, cfg: Any) -> int:
    """cli's entry for `blfs ui`: serve until SIGINT or SIGTERM."""
    from .. import cli
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.WARNING,
                        format="blfs ui: %(levelname)s %(message)s")
    host, port = parse_listen(args.listen)
    address, key = cli._master_address(args, cfg)  # no key for TCP: fails here, at once
    try:
        asyncio.run(serve(host, port, address, lambda: cli._client(address, key)))
    except KeyboardInterrupt:
        pass
    return 0


async def serve(host: str, port: int, address: str, connect: Any) -> None:
    from .server import UiServer
    from .source import MasterSource
    server = UiServer(MasterSource(connect, address), host, port)
    try:
        await server.start()
    except OSError as exc:
        raise UsageError(f"cannot listen on {host}:{port}: {exc.strerror}") from None
    shown = f"[{host}]" if ":" in host else host
    print(f"blfs ui: http://{shown}:{server.port}/ (master {address})", file=sys.stderr,
          flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    try:
        await stop.wait()
    finally:
        with contextlib.suppress(Exception):
            await server.close()
