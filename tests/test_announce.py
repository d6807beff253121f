"""A worker that announces itself (blfsd/worker/announce.py) and the master's side of it
(blfsd/master/announced.py), without daemons: the address a worker advertises, from the
kernel's real routing table (pyroute2 over netlink), and what the master accepts."""
from __future__ import annotations

from types import SimpleNamespace

import pytest

from blfsd.config import Config, Node
from blfsd.errors import AuthError, BlfsError, Conflict, ProtocolError
from blfsd.master.announced import Announced
from blfsd.worker import announce


def test_the_route_to_loopback_leaves_from_loopback():
    assert announce.route_source("127.0.0.1") == "127.0.0.1"
    assert announce.route_source("localhost") in ("127.0.0.1", "::1")


def test_a_wildcard_listener_advertises_its_address_on_the_route_to_the_master():
    assert announce.advertised_address("0.0.0.0:7071", "127.0.0.1:7070") == "127.0.0.1:7071"
    assert announce.advertised_address(":7071", "127.0.0.1") == "127.0.0.1:7071"
    # a specific listening address is where to dial us, whatever the route
    assert announce.advertised_address("10.1.2.3:7071", "127.0.0.1") == "10.1.2.3:7071"
    assert announce.advertised_address("node7:7071", "127.0.0.1") == "node7:7071"


def test_no_route_to_the_master_is_said_in_one_line():
    with pytest.raises(BlfsError, match="no route to the master at no-such-host.invalid"):
        announce.advertised_address("0.0.0.0:7071", "no-such-host.invalid:7070")


class Links:
    """What Announced needs of WorkerLinks: the nodes dialled, and add()."""

    def __init__(self, nodes: list):
        self.nodes = {n.name: n for n in nodes}
        self.added: list = []

    def add(self, node: Node) -> None:
        self.nodes[node.name] = node
        self.added.append(node)


def peer(name: str, role: str = "worker", unix: bool = False) -> SimpleNamespace:
    return SimpleNamespace(name=name, role=role, stream=SimpleNamespace(is_unix=unix))


W0 = Node(name="w0", address="10.0.0.1:7071")


def service(accept: bool = True) -> tuple[Announced, Links]:
    links = Links([W0])
    return Announced(Config(accept_announced=accept), links), links


def test_an_announced_worker_is_dialled_and_kept_across_reloads():
    svc, links = service()
    assert svc.announce(peer("w5"), "10.0.0.5:7071") == {"known": False}
    assert links.added == [Node(name="w5", address="10.0.0.5:7071")]
    assert svc.announce(peer("w5"), "10.0.0.5:7071") == {"known": True}
    assert len(links.added) == 1
    # it moved: dialled at its new address
    assert svc.announce(peer("w5"), "10.0.0.6:7071") == {"known": False}
    assert links.nodes["w5"].address == "10.0.0.6:7071"
    assert [n.name for n in svc.with_configured([W0])] == ["w0", "w5"]
    # once the file names it, the file's entry is the one
    w5 = Node(name="w5", address="10.0.0.9:7071")
    assert svc.with_configured([W0, w5]) == [W0, w5] and svc.nodes == {}


def test_a_master_that_does_not_accept_announcements_refuses_them():
    svc, links = service(accept=False)
    with pytest.raises(AuthError, match="accept_announced is false"):
        svc.announce(peer("w5"), "10.0.0.5:7071")
    assert links.added == []


@pytest.mark.parametrize("who,why", [
    (peer("w5", role="client"), AuthError), (peer("w5", unix=True), AuthError),
    (peer("w0"), Conflict), (peer("../x"), ProtocolError), (peer("a b"), ProtocolError)])
def test_what_the_master_refuses(who, why):
    svc, links = service()
    with pytest.raises(why):
        svc.announce(who, "10.0.0.5:7071")
    assert links.added == [] and links.nodes == {"w0": W0}


def test_announcements_stop_at_the_clusters_largest_size():
    svc, links = service()
    for i in range(1, 64):
        svc.announce(peer(f"n{i}"), f"10.0.1.{i}:7071")
    assert len(links.nodes) == 64
    with pytest.raises(Conflict, match="64 nodes already"):
        svc.announce(peer("n64"), "10.0.1.64:7071")
    assert svc.announce(peer("n5"), "10.0.1.5:7071") == {"known": True}


@pytest.mark.parametrize("address", ["0.0.0.0:7071", "[::]:7071", "10.0.0.5:0",
                                     "10.0.0.5:99999", "10.0.0.5:x", "/run/x.sock"])
def test_an_address_that_cannot_be_dialled_is_refused(address):
    svc, links = service()
    with pytest.raises(ProtocolError):
        svc.announce(peer("w5"), address)
    assert links.added == []
