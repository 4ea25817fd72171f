"""pkg image models -> CRI protobufs, and CRI AuthConfig -> RegistryAuth."""
from __future__ import annotations

import base64
import binascii

from cri_api.v1 import api_pb2

from pkg import errors
from pkg.images.disk_usage import FsUsage
from pkg.images.model import Image, RegistryAuth


def image(img: Image) -> api_pb2.Image:
    msg = api_pb2.Image(
        id=img.id,
        repo_tags=img.repo_tags,
        repo_digests=img.repo_digests,
        size=img.size,
        spec=api_pb2.ImageSpec(image=img.id),
        pinned=img.pinned,
    )
    # The image's USER: a numeric uid goes to uid, a name to username (the group part is not CRI's business).
    user = img.config.user.split(":", 1)[0]
    if (user.isascii() and user.isdigit()):
        msg.uid.value = int(user)
    elif user:
        msg.username = user
    return msg


def auth(cfg: api_pb2.AuthConfig) -> RegistryAuth | None:
    username, password = cfg.username, cfg.password
    if cfg.auth and not username:
        try:
            decoded = base64.b64decode(cfg.auth, validate=True).decode()
        except (binascii.Error, ValueError):  # ValueError: non-ASCII input (UnicodeDecodeError is one too)
            raise errors.InvalidArgument("auth: not base64 of 'username:password'") from None
        username, sep, password = decoded.partition(":")
        if not sep:
            raise errors.InvalidArgument("auth: expected base64 of 'username:password'")
    result = RegistryAuth(username=username, password=password, identity_token=cfg.identity_token,
                          registry_token=cfg.registry_token, server_address=cfg.server_address)
    return None if result.empty else result


def filesystem(usage: FsUsage) -> api_pb2.FilesystemUsage:
    return api_pb2.FilesystemUsage(
        timestamp=usage.timestamp_ns,
        fs_id=api_pb2.FilesystemIdentifier(mountpoint=usage.mountpoint),
        used_bytes=api_pb2.UInt64Value(value=usage.used_bytes),
        inodes_used=api_pb2.UInt64Value(value=usage.inodes_used),
    )
