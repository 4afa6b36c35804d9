"""Encryption at rest with AES-256-GCM (`cryptography`).

A master key (OURS_MASTER_KEY) wraps data keys; data keys encrypt rows. Associated data binds
a ciphertext to its row (e.g. conversation id + message id), so a ciphertext copied to another
row fails to decrypt. Wire format of a sealed value: 1 version byte, 12-byte nonce, ciphertext.
"""

from __future__ import annotations

import os

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

VERSION = 1


class DecryptError(Exception):
    """The ciphertext, its key or its associated data do not match."""


def seal(key: bytes, plaintext: bytes, aad: bytes) -> bytes:
    nonce = os.urandom(12)
    return bytes([VERSION]) + nonce + AESGCM(key).encrypt(nonce, plaintext, aad)


def unseal(key: bytes, sealed: bytes, aad: bytes) -> bytes:
    if len(sealed) < 29 or sealed[0] != VERSION:
        raise DecryptError("unknown ciphertext format")
    try:
        return AESGCM(key).decrypt(sealed[1:13], sealed[13:], aad)
    except InvalidTag:
        raise DecryptError("ciphertext does not match its key or row") from None


def new_data_key() -> bytes:
    return AESGCM.generate_key(bit_length=256)


class Keyring:
    """The master key(s): wrap and unwrap data keys. `previous` keys still unwrap during a
    rotation; `ours keys rotate` re-wraps everything with the current key."""

    def __init__(self, master_hex: str, previous_hex: list[str] | None = None) -> None:
        self.current = bytes.fromhex(master_hex)
        self.previous = [bytes.fromhex(h) for h in previous_hex or []]
        if len(self.current) != 32:
            raise ValueError("master key must be 32 bytes")

    @property
    def key_id(self) -> str:
        import hashlib

        return hashlib.sha256(self.current).hexdigest()[:16]

    def wrap(self, data_key: bytes, aad: bytes) -> bytes:
        return seal(self.current, data_key, b"dk:" + aad)

    def unwrap(self, wrapped: bytes, aad: bytes) -> bytes:
        for key in (self.current, *self.previous):
            try:
                return unseal(key, wrapped, b"dk:" + aad)
            except DecryptError:
                continue
        raise DecryptError("no master key unwraps this data key")

    def seal_secret(self, plaintext: str, aad: str) -> bytes:
        """Encrypt a small secret (a stream key, a token) directly with the master key."""
        return seal(self.current, plaintext.encode(), b"secret:" + aad.encode())

    def open_secret(self, sealed: bytes, aad: str) -> str:
        for key in (self.current, *self.previous):
            try:
                return unseal(key, sealed, b"secret:" + aad.encode()).decode()
            except DecryptError:
                continue
        raise DecryptError("no master key opens this secret")
