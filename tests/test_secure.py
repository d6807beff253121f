"""The cryptography of a connection in isolation (blfsd/secure.py): the key schedule against
the published TLS 1.3 vectors, what each proof binds, and record protection under attack."""
from __future__ import annotations

import dataclasses
import hashlib
import os

import pytest

from blfsd import secure
from blfsd.errors import AuthError, ProtocolError

PSK = b"k" * 64


# ------------------------------------------------------------------------------ key schedule

def test_key_schedule_matches_rfc_8448():
    """RFC 8448 section 3 ("Simple 1-RTT Handshake"): with TLS's own label prefix, our
    HKDF-Extract, Derive-Secret and HKDF-Expand-Label give the published secrets."""
    tls = b"tls13 "
    early = secure.hkdf_extract(bytes(32), bytes(32))
    assert early.hex() == "33ad0a1c607ec03b09e6cd9893680ce210adf300aa1f2660e1b22e10f170f92a"
    derived = secure.derive_secret(early, b"derived", hashlib.sha256(b"").digest(), tls)
    assert derived.hex() == "6f2615a108c702c5678f54fc9dbab69716c076189c48250cebeac3576c3611ba"
    ecdhe = bytes.fromhex("8bd4054fb55b9d63fdfbacf9f04b9f0d35e6d63f537563efd46272900f89492d")
    handshake = secure.hkdf_extract(derived, ecdhe)
    assert handshake.hex() == \
        "1dc826e93606aa6fdc0aadc12f741b01046aa6b99f691ed221a9f0ca043fbeac"
    # the server's handshake traffic key and IV (section 3, "derive write traffic keys")
    s_hs = bytes.fromhex("b67b7d690cc16c4e75e54213cb2d37b4e9c912bcded9105d42befd59d391ad38")
    assert secure.expand_label(s_hs, b"key", b"", 16, tls).hex() == \
        "3fce516009c21727d0f2e4e86ee403bc"
    assert secure.expand_label(s_hs, b"iv", b"", 12, tls).hex() == "5d313eb2671276ee13000b30"


def _hellos() -> tuple:
    c, s = secure.Ephemeral(), secure.Ephemeral()
    client = secure.Hello(2, "master", "m", os.urandom(32), c.share)
    server = secure.Hello(2, "worker", "w1", os.urandom(32), s.share)
    return c, s, client, server


def test_both_sides_derive_the_same_session():
    c, s, client, server = _hellos()
    at_client = secure.handshake(PSK, c.shared_secret(server.share), client, server)
    at_server = secure.handshake(PSK, s.shared_secret(client.share), client, server)
    assert at_client.server_proof == at_server.server_proof
    at_client.check_server_proof(at_server.server_proof)
    at_server.check_client_proof(at_client.client_proof())
    sealed = at_client.protection(is_client=True).seal(b"head", b"body")
    assert at_server.protection(is_client=False).open(b"head", sealed) == b"body"


def test_a_client_proof_never_passes_as_a_server_proof():
    """The two directions use different finished keys: reflecting one side's proof to the
    other fails, even over the very same transcript."""
    c, _, client, server = _hellos()
    hs = secure.handshake(PSK, c.shared_secret(server.share), client, server)
    assert hs.client_proof() != hs.server_proof
    with pytest.raises(AuthError):
        hs.check_client_proof(hs.server_proof)
    with pytest.raises(AuthError):
        hs.check_server_proof(hs.client_proof())


@pytest.mark.parametrize("side", ["client", "server"])
@pytest.mark.parametrize("field", ["version", "role", "name", "nonce", "share"])
def test_every_field_of_either_hello_is_bound_by_both_proofs(side, field):
    """Change one field of one hello (another connection, a relayed or rewritten hello) and
    neither proof made for the original is valid any more."""
    c, _, client, server = _hellos()
    dhe = c.shared_secret(server.share)
    original = secure.handshake(PSK, dhe, client, server)
    other = {"version": 3, "role": "client", "name": "x", "nonce": os.urandom(32),
             "share": secure.Ephemeral().share}[field]
    if side == "client":
        client = dataclasses.replace(client, **{field: other})
    else:
        server = dataclasses.replace(server, **{field: other})
    changed = secure.handshake(PSK, dhe, client, server)
    assert changed.server_proof != original.server_proof
    assert changed.client_proof() != original.client_proof()


def test_another_key_or_another_exchange_changes_everything():
    c, _, client, server = _hellos()
    dhe = c.shared_secret(server.share)
    a = secure.handshake(PSK, dhe, client, server)
    assert secure.handshake(b"o" * 64, dhe, client, server).server_proof != a.server_proof
    assert secure.handshake(PSK, os.urandom(32), client, server).server_proof != a.server_proof


def test_hello_from_message_refuses_bad_fields():
    good = {"version": 2, "role": "master", "name": "m", "nonce": b"n" * 32, "share": b"s" * 32}
    assert secure.Hello.from_message(good).name == "m"
    for bad in ({**good, "nonce": b"n" * 31}, {**good, "share": "s" * 32},
                {**good, "version": True}, {**good, "role": ""}, {**good, "name": "n" * 129},
                {k: v for k, v in good.items() if k != "share"}, [], None):
        with pytest.raises(ProtocolError):
            secure.Hello.from_message(bad)


def test_an_invalid_key_share_is_refused():
    with pytest.raises(AuthError):
        secure.Ephemeral().shared_secret(bytes(32))  # the all-zero (low-order) point


# ------------------------------------------------------------------------------ records

def _sides():
    c, s, client, server = _hellos()
    hs = secure.handshake(PSK, c.shared_secret(server.share), client, server)
    return hs.protection(is_client=True), hs.protection(is_client=False)


def test_records_travel_both_ways_in_order():
    cli, srv = _sides()
    for i in range(5):
        body = f"frame {i}".encode() * (i + 1)
        assert srv.open(b"h%d" % i, cli.seal(b"h%d" % i, body)) == body
        assert cli.open(b"r", srv.seal(b"r", body)) == body


@pytest.mark.parametrize("attack", ["flip-body", "flip-tag", "other-header", "replay",
                                    "reorder", "drop", "reflect"])
def test_a_tampered_record_stream_fails(attack):
    cli, srv = _sides()
    frames = [cli.seal(b"hdr", f"frame {i}".encode()) for i in range(3)]
    if attack == "flip-body":
        frames[0] = bytes([frames[0][0] ^ 1]) + frames[0][1:]
    elif attack == "flip-tag":
        frames[0] = frames[0][:-1] + bytes([frames[0][-1] ^ 1])
    if attack == "other-header":
        with pytest.raises(ProtocolError):
            srv.open(b"HDR", frames[0])
        return
    if attack == "reflect":  # a client record sent back to the client
        with pytest.raises(ProtocolError):
            cli.open(b"hdr", frames[0])
        return
    order = {"flip-body": [0], "flip-tag": [0], "replay": [0, 0], "reorder": [1, 0],
             "drop": [1]}[attack]
    with pytest.raises(ProtocolError, match="failed authentication"):
        for i in order:
            srv.open(b"hdr", frames[i])
