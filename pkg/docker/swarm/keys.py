"""Secrets at rest and autolock: the swarm's data-encryption key (DEK) and the unlock key that wraps it.

Swarmkit encrypts its Raft log with a DEK kept in each manager's TLS key file, itself encrypted with
the unlock key (``SWMKEY-1-…``) when the swarm is autolocked; a restarted manager then stays locked
until ``docker swarm unlock`` gives the key.  Narwhal's store is etcd, which has no encryption of
its own, so what must not be readable from etcd's data dir is encrypted here:

- every secret's data is sealed with the DEK (AES-256-GCM, ``nwenc1:<base64 nonce+ciphertext>``)
  before it is written, and opened only by the agent that writes it into a task's tmpfs;
- the DEK lives in the cluster record (key ``DEK``, never shown by the API) as ``{"Plain": …}``
  without autolock, or ``{"Wrapped": …}`` sealed with the unlock key with autolock — so a node
  that restarts finds a wrapped DEK and is locked until it is given the key;
- the unlock key itself is kept only in the memory of an unlocked manager (``/swarm/unlockkey``),
  never written anywhere.

AES-GCM comes from the ``cryptography`` package (the standard library has no authenticated cipher).
"""
from __future__ import annotations

import base64
import binascii
import os
import secrets
from typing import Any

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from pkg import errors

Obj = dict[str, Any]

KEY_PREFIX = "SWMKEY-1-"
SEALED_PREFIX = "nwenc1:"
_DEK_AAD = b"narwhal swarm DEK"
_DATA_AAD = b"narwhal swarm secret"


class WrongKey(errors.Unauthenticated):
    """moby's invalidUnlockKey (401)."""

    def __init__(self) -> None:
        super().__init__("swarm could not be unlocked: invalid key provided")


def new_dek() -> bytes:
    return secrets.token_bytes(32)


def new_unlock_key() -> str:
    """swarmkit's human-readable form: SWMKEY-1-<32 random bytes, base64 without padding>."""
    return KEY_PREFIX + base64.b64encode(secrets.token_bytes(32)).decode().rstrip("=")


def parse_unlock_key(key: str) -> bytes:
    """swarmkit's ParseHumanReadableKey (a bad one is moby's 400 "invalid key string")."""
    if not key.startswith(KEY_PREFIX):
        raise errors.InvalidArgument("invalid key string")
    body = key[len(KEY_PREFIX):]
    try:
        raw = base64.b64decode(body + "=" * (-len(body) % 4), validate=True)
    except (binascii.Error, ValueError):
        raise errors.InvalidArgument("invalid key string") from None
    if len(raw) != 32:
        raise WrongKey()
    return raw


def _seal(key: bytes, data: bytes, aad: bytes) -> str:
    nonce = os.urandom(12)
    return base64.b64encode(nonce + AESGCM(key).encrypt(nonce, data, aad)).decode()


def _open(key: bytes, text: str, aad: bytes) -> bytes:
    blob = base64.b64decode(text)
    return AESGCM(key).decrypt(blob[:12], blob[12:], aad)


def dek_record(dek: bytes, unlock_key: str) -> Obj:
    """What the cluster record keeps of the DEK: wrapped by the unlock key, or plain without autolock."""
    if unlock_key:
        return {"Wrapped": _seal(parse_unlock_key(unlock_key), dek, _DEK_AAD)}
    return {"Plain": base64.b64encode(dek).decode()}


def is_locked(record: Obj | None) -> bool:
    return bool(record and record.get("Wrapped"))


def open_dek(record: Obj, unlock_key: str = "") -> bytes:
    """The DEK from the cluster record; a wrapped one needs the right unlock key (WrongKey otherwise)."""
    if record.get("Plain"):
        return base64.b64decode(record["Plain"])
    raw = parse_unlock_key(unlock_key)
    try:
        return _open(raw, str(record["Wrapped"]), _DEK_AAD)
    except (InvalidTag, ValueError, binascii.Error):
        raise WrongKey() from None


def seal_data(dek: bytes, data_b64: str) -> str:
    """A secret's base64 Data as stored: sealed with the DEK."""
    return SEALED_PREFIX + _seal(dek, base64.b64decode(data_b64), _DATA_AAD)


def open_data(dek: bytes | None, stored: str) -> bytes:
    """A stored Data field's bytes: sealed (secrets) or plain base64 (configs, older records)."""
    if not stored.startswith(SEALED_PREFIX):
        return base64.b64decode(stored)
    if dek is None:
        raise errors.FailedPrecondition("the swarm's data-encryption key is not available on this node")
    try:
        return _open(dek, stored[len(SEALED_PREFIX):], _DATA_AAD)
    except (InvalidTag, ValueError, binascii.Error):
        raise errors.Internal("a secret's data cannot be decrypted with this swarm's key") from None
