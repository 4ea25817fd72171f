"""The user a container runs as, resolved against the image's /etc/passwd and /etc/group.

Rules are containerd's CRI ones (``oci.WithUser`` and ``WithAdditionalGIDs``):
a numeric user needs no passwd entry (its group then defaults to the entry's
or 0), a user or group *name* must exist in the image, and with the Merge
policy the groups that list the user as a member become supplementary groups.
The files are read from an image rootfs that is not ours to trust: symlinks
are resolved inside the rootfs, never out of it, and sizes are bounded.
"""
from __future__ import annotations

import os
import stat
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from pkg.errors import InvalidArgument
from pkg.rootpath import resolve_in_root

_MAX_SYMLINKS = 40
_MAX_FILE_BYTES = 16 << 20
_MAX_ID = 2**32 - 2  # (uid_t)-1 is "no change"


@dataclass(frozen=True)
class UserIds:
    uid: int
    gid: int
    additional_gids: tuple[int, ...] = ()


@dataclass(frozen=True)
class ImageFiles:
    """An image's /etc/passwd and /etc/group as read earlier from a view of it (None: not in the image).

    Resolving users needs nothing else of the rootfs, and a chain ID's files never change: a container of an
    image seen before resolves its user without mounting its snapshot (pkg.runtime.image_files)."""

    passwd: str | None = None
    group: str | None = None

    def read(self, path: str) -> str | None:
        return self.passwd if path == "/etc/passwd" else self.group if path == "/etc/group" else None


@dataclass(frozen=True)
class PasswdEntry:
    name: str
    uid: int
    gid: int
    home: str = ""


@dataclass(frozen=True)
class GroupEntry:
    name: str
    gid: int
    members: tuple[str, ...] = ()


def user_string(*, username: str = "", uid: int | None = None, gid: int | None = None, image_user: str = "") -> str:
    """The ``user[:group]`` a container runs as: the CRI overrides, else the image's USER.

    As containerd's ``generateUserString``: the username wins over the uid, and a
    group without a user is an error (the CRI says the runtime MUST error).
    """
    user = username or ("" if uid is None else str(uid))
    if not user:
        if gid is not None:
            raise InvalidArgument(f"run_as_group {gid} is set without run_as_user or run_as_username")
        return image_user
    return f"{user}:{gid}" if gid is not None else user


def secure_join(root: Path, unsafe: str) -> Path:
    """``root/unsafe`` with every symlink resolved as if ``root`` were ``/`` (like Go's securejoin, 40 links)."""
    return root.joinpath(*resolve_in_root(root, unsafe, limit=_MAX_SYMLINKS))


def read_rootfs_file(root: Path | ImageFiles, path: str) -> str | None:
    """A small text file of the image, or None if it does not exist (or is not a regular file)."""
    if isinstance(root, ImageFiles):
        return root.read(path)
    try:
        full = secure_join(root, path)
        fd = os.open(full, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK)
    except (FileNotFoundError, NotADirectoryError):
        return None
    except OSError as err:
        raise InvalidArgument(f"cannot read {path} in the image: {err.strerror}") from None
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            return None
        chunks, size = [], 0
        while size <= _MAX_FILE_BYTES:
            chunk = os.read(fd, _MAX_FILE_BYTES + 1 - size)
            if not chunk:
                break
            chunks.append(chunk)
            size += len(chunk)
        data = b"".join(chunks)
    finally:
        os.close(fd)
    if len(data) > _MAX_FILE_BYTES:
        raise InvalidArgument(f"{path} in the image is larger than {_MAX_FILE_BYTES} bytes")
    return data.decode("utf-8", "replace")


def parse_passwd(text: str) -> list[PasswdEntry]:
    entries = []
    for line in text.splitlines():
        fields = line.strip().split(":")
        if len(fields) < 4 or not fields[0] or fields[0].startswith(("#", "+", "-")):
            continue
        try:
            entries.append(PasswdEntry(fields[0], int(fields[2]), int(fields[3]), fields[5] if len(fields) > 5 else ""))
        except ValueError:
            continue
    return entries


def parse_group(text: str) -> list[GroupEntry]:
    entries = []
    for line in text.splitlines():
        fields = line.strip().split(":")
        if len(fields) < 3 or not fields[0] or fields[0].startswith(("#", "+", "-")):
            continue
        try:
            gid = int(fields[2])
        except ValueError:
            continue
        members = tuple(m.strip() for m in fields[3].split(",") if m.strip()) if len(fields) > 3 else ()
        entries.append(GroupEntry(fields[0], gid, members))
    return entries


def _parse_id(value: str, what: str) -> int | None:
    """A numeric id, None for a name; out-of-range numbers are InvalidArgument."""
    if not (value.lstrip("-").isascii() and value.lstrip("-").isdigit()):
        return None
    number = int(value)
    if not 0 <= number <= _MAX_ID:
        raise InvalidArgument(f"{what} {value} is out of range")
    return number


def resolve_user(
    rootfs: Path | ImageFiles | None,
    user: str,
    *,
    supplemental_groups: Iterable[int] = (),
    merge_image_groups: bool = True,
) -> UserIds:
    """Resolve ``user[:group]`` (names or numbers) in the image at ``rootfs``.

    ``rootfs`` None means no files to read (as an image without /etc/passwd):
    numeric users still work, names do not; ``ImageFiles``: the image's files, read before.
    ``merge_image_groups`` is CRI's SupplementalGroupsPolicy Merge (the default); Strict passes False.
    """
    extra = []
    for g in supplemental_groups:
        if not 0 <= g <= _MAX_ID:
            raise InvalidArgument(f"supplemental group {g} is out of range")
        extra.append(g)
    user_part, _, group_part = (user or "").partition(":")
    passwd_text = read_rootfs_file(rootfs, "/etc/passwd") if rootfs is not None else None
    passwd = parse_passwd(passwd_text or "")
    uid = _parse_id(user_part, "uid") if user_part else 0
    entry: PasswdEntry | None
    if uid is None:
        entry = next((e for e in passwd if e.name == user_part), None)
        if entry is None:
            raise InvalidArgument(f"user {user_part!r} not found in the image's /etc/passwd")
        uid = entry.uid
    else:
        entry = next((e for e in passwd if e.uid == uid), None)
    group_text: str | None = None
    if group_part:
        gid = _parse_id(group_part, "gid")
        if gid is None:
            group_text = read_rootfs_file(rootfs, "/etc/group") if rootfs is not None else None
            group = next((g for g in parse_group(group_text or "") if g.name == group_part), None)
            if group is None:
                raise InvalidArgument(f"group {group_part!r} not found in the image's /etc/group")
            gid = group.gid
    else:
        gid = entry.gid if entry is not None else 0
    gids = set(extra)
    if merge_image_groups and entry is not None:
        if group_text is None and rootfs is not None:
            group_text = read_rootfs_file(rootfs, "/etc/group")
        # Only supplementary groups: the user's own-named group is its primary, as containerd.
        gids.update(g.gid for g in parse_group(group_text or "") if entry.name in g.members and g.name != entry.name)
    # The primary gid is always a supplementary group as well (containerd's ensureAdditionalGids, the fix for
    # CVE-2023-25173): dropping it from the list must not be a way to escape it.
    gids.add(gid)
    return UserIds(uid, gid, tuple(sorted(gids)))
