"""HostConfig.GroupAdd as gids: numbers as given, names looked up in the image's /etc/group (moby looks them
up in the container's at start; the image's is what a container has at create)."""
from __future__ import annotations

import asyncio

from pkg import errors
from pkg.containerd.client import Client
from pkg.docker.views.rootfs_access import image_view
from pkg.images.model import Image
from pkg.runtime.user import parse_group, read_rootfs_file


async def group_ids(client: Client, image: Image, groups: tuple[str, ...]) -> list[int]:
    """The gids of ``groups``; the image's files are read only when a name is among them."""
    if all((g.isascii() and g.isdigit()) for g in groups):
        return [int(g) for g in groups]
    async with image_view(client, image) as root:
        text = await asyncio.to_thread(read_rootfs_file, root, "/etc/group") if root is not None else None
    by_name = {entry.name: entry.gid for entry in parse_group(text or "")}
    out = []
    for group in groups:
        if (group.isascii() and group.isdigit()):
            out.append(int(group))
        elif group in by_name:
            out.append(by_name[group])
        else:
            raise errors.InvalidArgument(f"Unable to find group {group}: no matching entries in group file")
    return out
