"""The cryptography of a TCP connection: key exchange, proofs, and record protection.

No I/O here (auth.py runs the handshake over a stream); every function is pure so that it
can be tested, and so that a test can play a hostile peer by hand.

The pattern is TLS 1.3's pre-shared key with ephemeral Diffie-Hellman mode, "psk_dhe_ke"
(RFC 8446 sections 4.2.9, 4.4.4, 5.2-5.3 and 7.1), reduced to what blfs needs:

- the pre-shared key is the cluster key; each side sends a fresh 32-byte nonce and an
  ephemeral X25519 share (RFC 7748), so a recorded session cannot be decrypted later even
  by someone who steals the key (forward secrecy);
- the key schedule is TLS 1.3's (HKDF-Extract and HKDF-Expand-Label over SHA-256, RFC 5869)
  with our own label prefix "blfs1 " instead of "tls13 ", so no key of ours can ever be
  confused with a TLS key;
- the transcript hash covers both hellos: protocol version, role, name, nonce and share of
  each side. The server proves first with HMAC(server finished key, transcript), then the
  client with HMAC(client finished key, transcript + server proof). The finished keys come
  from the per-direction handshake secrets, so a client proof can never pass as a server
  proof, and a proof made for one connection (other nonces, shares, names or roles) is
  useless on any other: the relay and replay attacks of the old challenge-response fail;
- records are protected with AES-256-GCM, one key and IV per direction derived from the
  application traffic secrets; the nonce of each record is the IV xor its sequence number,
  and the 4-byte length header is the associated data. A dropped, reordered, replayed or
  altered frame fails to authenticate, and the connection ends.
"""
from __future__ import annotations

import hashlib
import hmac
import struct
from dataclasses import dataclass
from typing import Any

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDFExpand
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from .errors import AuthError, ProtocolError

HASH_LEN = 32
NONCE_BYTES = 32
SHARE_BYTES = 32
TAG_BYTES = 16  # what AES-GCM adds to every record
_LABEL_PREFIX = b"blfs1 "
_ZEROS = bytes(HASH_LEN)
_EMPTY_HASH = hashlib.sha256(b"").digest()


# ------------------------------------------------------------------------- key schedule

def hkdf_extract(salt: bytes, ikm: bytes) -> bytes:
    """HKDF-Extract (RFC 5869 section 2.2): HMAC-SHA256 keyed with the salt."""
    return hmac.new(salt, ikm, hashlib.sha256).digest()


def expand_label(secret: bytes, label: bytes, context: bytes, length: int,
                 prefix: bytes = _LABEL_PREFIX) -> bytes:
    """HKDF-Expand-Label (RFC 8446 section 7.1), with our label prefix "blfs1 " (a test
    passes TLS's own "tls13 " to check this against the RFC 8448 vectors)."""
    full = prefix + label
    info = struct.pack(">HB", length, len(full)) + full + struct.pack(">B", len(context)) \
        + context
    return HKDFExpand(hashes.SHA256(), length, info).derive(secret)


def derive_secret(secret: bytes, label: bytes, transcript_hash: bytes,
                  prefix: bytes = _LABEL_PREFIX) -> bytes:
    """Derive-Secret (RFC 8446 section 7.1), given the transcript's hash."""
    return expand_label(secret, label, transcript_hash, HASH_LEN, prefix)


@dataclass(frozen=True)
class Hello:
    """What each side states first: the fields that the transcript, and so every proof,
    binds. The client's says who dials; the server's says who answers."""

    version: int
    role: str
    name: str
    nonce: bytes
    share: bytes

    def fields(self) -> dict:
        return {"version": self.version, "role": self.role, "name": self.name,
                "nonce": self.nonce, "share": self.share}

    def encoded(self) -> bytes:
        """An unambiguous encoding for the transcript: each field length-prefixed."""
        parts = [str(self.version).encode(), self.role.encode(), self.name.encode(),
                 self.nonce, self.share]
        return b"".join(struct.pack(">I", len(p)) + p for p in parts)

    @classmethod
    def from_message(cls, msg: Any) -> "Hello":
        """A hello from the wire, checked; ProtocolError when it is not one."""
        if not isinstance(msg, dict):
            raise ProtocolError("a hello must be a map")
        version, role, name = msg.get("version"), msg.get("role"), msg.get("name")
        nonce, share = msg.get("nonce"), msg.get("share")
        if not (isinstance(version, int) and not isinstance(version, bool)
                and isinstance(role, str) and isinstance(name, str)
                and 0 < len(role) <= 32 and 0 < len(name) <= 128):
            raise ProtocolError("a hello needs an integer version, a role and a name")
        if not (isinstance(nonce, bytes) and len(nonce) == NONCE_BYTES
                and isinstance(share, bytes) and len(share) == SHARE_BYTES):
            raise ProtocolError(f"a hello needs a {NONCE_BYTES}-byte nonce and a "
                                f"{SHARE_BYTES}-byte key share")
        return cls(version, role, name, nonce, share)


def transcript_hash(*parts: bytes) -> bytes:
    h = hashlib.sha256(b"blfs1 handshake")
    for part in parts:
        h.update(struct.pack(">I", len(part)))
        h.update(part)
    return h.digest()


class Ephemeral:
    """One side's X25519 key pair for one connection (never reused)."""

    def __init__(self) -> None:
        self._private = X25519PrivateKey.generate()
        self.share = self._private.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)

    def shared_secret(self, peer_share: bytes) -> bytes:
        try:
            return self._private.exchange(X25519PublicKey.from_public_bytes(peer_share))
        except ValueError:  # a low-order point gives all zeros: refused by the library
            raise AuthError("the peer's key share is invalid") from None


@dataclass(frozen=True)
class Handshake:
    """Everything both sides derive once both hellos are known."""

    server_proof: bytes
    client_finished_key: bytes
    master_secret: bytes
    transcript: bytes  # hash of both hellos

    def client_transcript(self) -> bytes:
        """The hash the client's proof covers: both hellos and the server's proof."""
        return transcript_hash(self.transcript, self.server_proof)

    def client_proof(self) -> bytes:
        return hmac.new(self.client_finished_key, self.client_transcript(),
                        hashlib.sha256).digest()

    def check_server_proof(self, proof: Any) -> None:
        if not isinstance(proof, bytes) or not hmac.compare_digest(proof, self.server_proof):
            raise AuthError("could not prove that it holds our cluster key")

    def check_client_proof(self, proof: Any) -> None:
        if not isinstance(proof, bytes) or not hmac.compare_digest(proof, self.client_proof()):
            raise AuthError("wrong cluster key")

    def protection(self, is_client: bool) -> "Protection":
        """Record protection for after the handshake, seen from one side."""
        th = self.client_transcript()
        c_ap = derive_secret(self.master_secret, b"c ap traffic", th)
        s_ap = derive_secret(self.master_secret, b"s ap traffic", th)
        return Protection(send=c_ap, receive=s_ap) if is_client \
            else Protection(send=s_ap, receive=c_ap)


def handshake(psk: bytes, dhe: bytes, client: Hello, server: Hello) -> Handshake:
    """The TLS 1.3 key schedule from the cluster key, the X25519 secret and both hellos."""
    th = transcript_hash(client.encoded(), server.encoded())
    early = hkdf_extract(_ZEROS, psk)
    hs_secret = hkdf_extract(derive_secret(early, b"derived", _EMPTY_HASH), dhe)
    s_hs = derive_secret(hs_secret, b"s hs traffic", th)
    c_hs = derive_secret(hs_secret, b"c hs traffic", th)
    server_key = expand_label(s_hs, b"finished", b"", HASH_LEN)
    client_key = expand_label(c_hs, b"finished", b"", HASH_LEN)
    master = hkdf_extract(derive_secret(hs_secret, b"derived", _EMPTY_HASH), _ZEROS)
    proof = hmac.new(server_key, th, hashlib.sha256).digest()
    return Handshake(proof, client_key, master, th)


# ---------------------------------------------------------------------- record protection

class _Direction:
    """One direction's AEAD key, IV and sequence number (RFC 8446 section 5.3)."""

    def __init__(self, secret: bytes):
        self.aead = AESGCM(expand_label(secret, b"key", b"", 32))
        self.iv = int.from_bytes(expand_label(secret, b"iv", b"", 12), "big")
        self.seq = 0

    def nonce(self) -> bytes:
        nonce = (self.iv ^ self.seq).to_bytes(12, "big")
        self.seq += 1
        return nonce


class Protection:
    """Seals outgoing and opens incoming frame bodies, each in strict sequence."""

    def __init__(self, send: bytes, receive: bytes):
        self._send = _Direction(send)
        self._receive = _Direction(receive)

    def seal(self, header: bytes, body: bytes) -> bytes:
        """The ciphertext of the next outgoing body; `header` is its length prefix."""
        return self._send.aead.encrypt(self._send.nonce(), body, header)

    def open(self, header: bytes, sealed: bytes) -> bytes:
        """The next incoming body; ProtocolError when it was altered, dropped, reordered
        or replayed (any of them breaks the authentication of this record)."""
        try:
            return self._receive.aead.decrypt(self._receive.nonce(), sealed, header)
        except InvalidTag:
            raise ProtocolError("a frame failed authentication (altered, dropped, "
                                "reordered or replayed)") from None
