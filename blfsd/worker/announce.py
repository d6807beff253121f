"""A worker that tells a master it exists ([worker] announce): for a node that joins a
running cluster without an edit of the master's [nodes.*] and a reload.

The worker dials the master ([cluster] master) with the cluster key, as role "worker"
under its own name, and says where the master can dial it back: its listening address or,
when it listens on every interface, the address of its interface on the route to the
master (asked of the kernel's routing table over netlink, with pyroute2). The master takes
it only if its configuration allows ([master] accept_announced); then it dials the worker
as it dials a configured one. The worker announces again whenever it has no master
session (a master that restarted forgets announced workers).
"""
from __future__ import annotations

import asyncio
import ipaddress
import logging
import socket
from typing import Optional

from .. import client
from ..config import MASTER_PORT, Config
from ..errors import BlfsError
from ..transport import format_address, parse_address

log = logging.getLogger("blfs.worker")

ANNOUNCE_EVERY = 5.0  # seconds between announcements while no master has dialled us


def route_source(host: str) -> Optional[str]:
    """The address of our interface on the route to `host` (RTA_PREFSRC of the kernel's
    answer to `ip route get`), or None when the kernel has no route or names no source."""
    from pyroute2 import IPRoute  # Debian's python3-pyroute2; only announcing needs it
    try:
        ip = socket.getaddrinfo(host, None, type=socket.SOCK_STREAM)[0][4][0]
        with IPRoute() as ipr:
            for route in ipr.route("get", dst=ip):
                source = route.get_attr("RTA_PREFSRC")
                if source:
                    return str(source)
    except (OSError, socket.gaierror):
        return None
    return None


def advertised_address(listening: str, master: str) -> str:
    """Where the master should dial us: our listening address, unless it is a wildcard;
    then our address on the route to the master, with our port."""
    host, port = parse_address(listening, 0)
    if host and not _is_wildcard(host):
        return format_address(host, port)
    master_host, _ = parse_address(master, MASTER_PORT)
    source = route_source(master_host)
    if source is None:
        raise BlfsError(f"no route to the master at {master}: cannot tell it our address")
    return format_address(source, port)


def _is_wildcard(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_unspecified
    except ValueError:  # a host name: where we listen, so where to dial us
        return False


async def announce_once(config: Config, key: Optional[bytes], name: str,
                        listening: str) -> dict:
    """Tell the master at [cluster] master where to dial us; its answer."""
    address = advertised_address(listening, config.master_address)
    peer = await client.connect(config.master_address, key, role="worker", name=name)
    try:
        reply = await peer.call("announce", limit=10, address=address)
    finally:
        await peer.close()
    return dict(reply, address=address)


async def keep_announcing(config: Config, key: Optional[bytes], name: str,
                          listening: str, has_master, stopping: asyncio.Event) -> None:
    """Announce while no master session exists; each change of outcome logged once."""
    said = ""
    while not stopping.is_set():
        if not has_master():
            try:
                reply = await announce_once(config, key, name, listening)
                line = (f"announced to the master at {config.master_address} as "
                        f"{reply['address']}" + (" (it knew us)" if reply.get("known") else ""))
                level = logging.INFO
            except (BlfsError, OSError, asyncio.TimeoutError) as exc:
                line = f"cannot announce to the master at {config.master_address}: {exc}"
                level = logging.WARNING
            if line != said:
                log.log(level, "%s", line, extra={"BLFS_NODE": name})
                said = line
        try:
            await asyncio.wait_for(stopping.wait(), ANNOUNCE_EVERY)
        except asyncio.TimeoutError:
            pass
