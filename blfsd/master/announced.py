"""Workers that announce themselves to a running master ([master] accept_announced).

A worker that is not in [nodes.*] may connect with the cluster key, as role "worker"
under its node name, and say where to dial it (worker/announce.py). If the configuration
allows it, the master dials it from then on as it dials a configured worker; a reload
keeps announced workers that the file does not name. A name the file gives another
address is refused: the configuration wins.
"""
from __future__ import annotations

import logging

from .. import catalog, rpc
from ..config import WORKER_PORT, Config, Node
from ..errors import AuthError, Conflict, ProtocolError
from ..transport import format_address, parse_address
from .links import WorkerLinks

log = logging.getLogger("blfs.master")

MAX_NODES = 64  # a cluster's size (README): more announced names than that are refused


class Announced:
    """The announce op, and the workers it added (forgotten when the master restarts: an
    announcing worker says it again whenever no master session is open)."""

    def __init__(self, config: Config, links: WorkerLinks):
        self.config = config
        self.links = links
        self.nodes: dict[str, Node] = {}
        self.handlers = {"announce": self.announce}

    def announce(self, peer: rpc.Peer, address: str) -> dict:
        """A worker says where to dial it: {"known": True} when that is where we dial it
        already; else it is dialled from now on."""
        if peer.role != "worker" or peer.stream.is_unix:
            raise AuthError("announce is for a worker that holds the cluster key (TCP)")
        if not self.config.accept_announced:
            raise AuthError("this master dials only the workers of its configuration "
                            "([master] accept_announced is false)")
        name = catalog.check_node(peer.name)
        if not catalog.is_name(name):
            raise ProtocolError(f"{name[:100]!r} is not a valid node name")
        address = _dialable(address)
        known = self.links.nodes.get(name)
        if known is not None and known.address == address:
            return {"known": True}
        if known is not None and name not in self.nodes:
            raise Conflict(f"worker {name} is configured at {known.address}")
        if known is None and len(self.links.nodes) >= MAX_NODES:
            raise Conflict(f"the cluster has {MAX_NODES} nodes already: {name} is refused")
        node = self.nodes[name] = Node(name=name, address=address)
        self.links.add(node)
        log.info("worker %s announced itself at %s: dialling it", name, address,
                 extra={"BLFS_NODE": name})
        return {"known": False}

    def with_configured(self, nodes: list) -> list:
        """[nodes.*] as re-read, and the announced workers that it does not name."""
        named = {n.name for n in nodes}
        for name in [n for n in self.nodes if n in named]:
            del self.nodes[name]  # the configuration names it now: the file's entry wins
        return nodes + list(self.nodes.values())


def _dialable(address: str) -> str:
    """host:port that the master can dial, or ProtocolError."""
    try:
        host, port = parse_address(address, WORKER_PORT)
    except ValueError:
        raise ProtocolError("announce: the address must be host:port") from None
    if not host or host in ("0.0.0.0", "::") or not 0 < port < 65536 or "/" in host:
        raise ProtocolError(f"announce: {address[:100]!r} cannot be dialled")
    return format_address(host, port)
