"""The client's side of a connection to the master: where it is (its Unix socket, or
host:port with the cluster key), connecting, and one request."""
from __future__ import annotations

import argparse
import asyncio
import getpass
import os
from typing import Any, Optional

from . import auth, config as configmod, rpc
from .config import MASTER_PORT
from .errors import ConnectionClosed


def master_address(args: argparse.Namespace,
                   cfg: configmod.Config) -> tuple[str, Optional[bytes]]:
    """Where the master is: --master, else its Unix socket when it is here, else
    [cluster] master_address over TCP; and the cluster key for TCP."""
    address = args.master or (cfg.master_socket if os.path.exists(cfg.master_socket)
                              else cfg.master_address)
    key = None
    if "/" not in address:
        if not args.master and not os.path.exists(args.key or cfg.cluster_key):
            raise ConnectionClosed(f"no master here: {cfg.master_socket} does not exist and "
                                   "there is no cluster key for TCP (is blfs-master.socket "
                                   "running? or use --local, or --master ADDRESS)")
        key = auth.load_key(args.key or cfg.cluster_key)
    return address, key


async def connect(address: str, key: Optional[bytes], role: str = "client",
                  name: Optional[str] = None) -> rpc.Peer:
    """A connection to the master (a client's, unless a worker announces itself), its
    replies read in the background."""
    peer, _ = await rpc.connect(address, key, role, name or f"{getpass.getuser()}@{os.getpid()}",
                                expect_role="master", default_port=MASTER_PORT)
    peer.reader_task = asyncio.ensure_future(peer.serve())  # replies arrive through it
    return peer


async def query(args: argparse.Namespace, cfg: configmod.Config, op: str,
                limit: float = 30, **fields: Any) -> Any:
    """One request on a connection of its own, answered within `limit` seconds."""
    peer = await connect(*master_address(args, cfg))
    try:
        return await peer.call(op, limit=limit, **fields)
    finally:
        await peer.close()
