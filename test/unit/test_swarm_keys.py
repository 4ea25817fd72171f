"""Secrets at rest and autolock (pkg/docker/swarm/keys.py): sealing, wrapping, key parsing."""
from __future__ import annotations

import base64
import re

import pytest

from pkg import errors
from pkg.docker.swarm import keys


def test_unlock_key_shape_and_parsing() -> None:
    key = keys.new_unlock_key()
    assert re.fullmatch(r"SWMKEY-1-[A-Za-z0-9+/]{43}", key)
    assert len(keys.parse_unlock_key(key)) == 32
    for bad in ("", "SWMKEY-2-abc", "SWMKEY-1-!!!!"):
        with pytest.raises(errors.InvalidArgument, match="invalid key string"):
            keys.parse_unlock_key(bad)


def test_dek_wrapped_only_with_autolock_and_only_the_right_key_opens_it() -> None:
    dek = keys.new_dek()
    plain = keys.dek_record(dek, "")
    assert not keys.is_locked(plain) and keys.open_dek(plain) == dek
    key = keys.new_unlock_key()
    wrapped = keys.dek_record(dek, key)
    assert keys.is_locked(wrapped) and base64.b64encode(dek).decode() not in str(wrapped)
    assert keys.open_dek(wrapped, key) == dek
    with pytest.raises(keys.WrongKey, match="swarm could not be unlocked: invalid key provided"):
        keys.open_dek(wrapped, keys.new_unlock_key())
    with pytest.raises(errors.InvalidArgument):
        keys.open_dek(wrapped, "")


def test_secret_data_sealed_configs_plain() -> None:
    dek = keys.new_dek()
    data = base64.b64encode(b"top secret").decode()
    sealed = keys.seal_data(dek, data)
    assert sealed.startswith("nwenc1:") and "top secret" not in sealed and data not in sealed
    assert keys.open_data(dek, sealed) == b"top secret"
    assert keys.open_data(None, data) == b"top secret"  # a config (or a record from before sealing)
    with pytest.raises(errors.Internal):
        keys.open_data(keys.new_dek(), sealed)
    with pytest.raises(errors.FailedPrecondition):
        keys.open_data(None, sealed)
