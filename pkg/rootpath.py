"""A path resolved under a root directory as if the root were "/", following the symlinks met on the way.

One walk for two callers that must agree on it: pkg.images.layer_apply (continuity's ``fs.RootPath``, up to 255
links, while a layer is applied into a staging dir) and pkg.runtime.user's ``secure_join`` (Go's securejoin, 40
links, what ``docker cp``, build's COPY and the image's /etc/passwd reads go through, so that a symlink planted in
a container or an image never leads out of its root).  A leaf utility: it imports nothing of pkg, so every layer
may use it.

The rules: an absolute link target restarts from the root, ``..`` never climbs above the root, a missing
component ends the resolution of the rest lexically (what is created there later lands under the root), and
more than ``limit`` links on one walk is ELOOP.
"""
from __future__ import annotations

import errno
import os
import stat

ELOOP_MESSAGE = "too many levels of symbolic links"


def _parts(path: str) -> list[str]:
    return [p for p in path.split("/") if p not in ("", ".")]


def resolve_in_root(root: str | os.PathLike[str], path: str, *, limit: int,
                    loop_message: str = ELOOP_MESSAGE) -> list[str]:
    """The components of ``path`` under ``root`` once every symlink is resolved; join them to ``root``.

    Raises ``OSError(ELOOP, loop_message, <the link that went over>)`` after ``limit`` links; any other error of
    ``lstat``/``readlink`` but a missing component (a component that is not a directory, no permission)
    propagates as it is.
    """
    pending = _parts(path)
    resolved: list[str] = []
    links = 0
    while pending:
        part = pending.pop(0)
        if part == "..":
            if resolved:
                resolved.pop()
            continue
        candidate = os.path.join(root, *resolved, part)
        try:
            st = os.lstat(candidate)
        except FileNotFoundError:
            resolved.append(part)
            continue
        if stat.S_ISLNK(st.st_mode):
            links += 1
            if links > limit:
                raise OSError(errno.ELOOP, loop_message, candidate)
            target = os.readlink(candidate)
            if target.startswith("/"):
                resolved = []
            pending = _parts(target) + pending
            continue
        resolved.append(part)
    return resolved
