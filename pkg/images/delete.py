"""Docker's image removal rules (moby daemon/images/image_delete.go), name by name.

A name given: that name goes (and, when it was the repository's last tag, the
digest names of the same repository too); the image itself only goes once no
name is left.  An ID given: the image goes with all its names, but only when
they are within one repository with at most one tag, or with ``force``.
Containers using the image: a running one blocks removal even when forced, a
stopped one unless forced; untagging the last name of an image a container
uses needs ``force`` too, so no container is left on an unnamed image by accident.
"""
from __future__ import annotations

from dataclasses import dataclass

from pkg import errors
from pkg.images import reference
from pkg.images.service import ImageService
from pkg.images.store import Record


@dataclass(frozen=True)
class ImageUser:
    """A container and the image (ID) it was created from."""

    container_id: str
    image_id: str
    running: bool


@dataclass(frozen=True)
class DeleteItem:
    """One line of the result: a name that went (``untagged``, familiar form) or an image ID (``deleted``)."""

    untagged: str = ""
    deleted: str = ""


def short(value: str) -> str:
    return value.removeprefix("sha256:")[:12]


def _parsed(name: str) -> reference.Reference | None:
    """The record's reference; None for a record named by the bare image ID (keeps an unnamed image)."""
    if reference.looks_like_id(name):
        return None
    try:
        return reference.parse(name, default_tag=False)
    except errors.InvalidArgument:
        return None


def _refs(records: list[Record]) -> list[tuple[Record, reference.Reference]]:
    out = []
    for rec in records:
        ref = _parsed(rec.name)
        if ref is not None:
            out.append((rec, ref))
    return out


def _single_reference(refs: list[reference.Reference]) -> bool:
    """All names in one repository with at most one tag (moby isSingleReference); False when there are none."""
    if not refs:
        return False
    tags = [r for r in refs if not r.digest]
    return len(tags) <= 1 and len({r.name for r in refs}) == 1


def is_id_prefix(image_id: str, ref: str) -> bool:
    return image_id.startswith(ref) or image_id.removeprefix("sha256:").startswith(ref)


class _Conflict(errors.Conflict):
    def __init__(self, image_id: str, hard: bool, message: str, used: bool) -> None:
        forced = "cannot be forced" if hard else "must be forced"
        super().__init__(f"conflict: unable to delete {short(image_id)} ({forced}) - {message}")
        self.used = used


def _conflict(image_id: str, users: list[ImageUser], *, soft: bool, references: bool) -> _Conflict | None:
    for user in users:
        if user.image_id == image_id and user.running:
            return _Conflict(image_id, True, f"image is being used by running container {short(user.container_id)}",
                             True)
    if soft and references:
        return _Conflict(image_id, False, "image is referenced in multiple repositories", False)
    if soft:
        for user in users:
            if user.image_id == image_id and not user.running:
                return _Conflict(image_id, False,
                                 f"image is being used by stopped container {short(user.container_id)}", True)
    return None


async def delete_image(images: ImageService, ref: str, users: list[ImageUser], *, force: bool = False,
                       prune: bool = True) -> list[DeleteItem]:
    """Remove ``ref`` as ``docker rmi`` does; NotFound when it names no image.

    Every check runs before the first record goes, and the image's last record is deleted with
    containerd's GC, so its content and snapshots are freed by the time this returns.
    """
    del prune  # images have no parent chain here: there is nothing further to prune
    records = await images.records_of(ref)
    image = await images.store.build(records)
    image_id = image.id
    refs = _refs(records)
    all_names = [rec.name for rec in records]

    if not is_id_prefix(image_id, ref):
        mine = [u for u in users if u.image_id == image_id]
        if not force and _single_reference([r for _, r in refs]) and mine:
            raise errors.Conflict(
                f'conflict: unable to remove repository reference "{ref}" (must force) - container '
                f"{short(mine[0].container_id)} is using its referenced image {short(image_id)}")
        wanted = _wanted(records, ref)
        gone = _parsed(wanted.name)
        assert gone is not None
        drop = [(wanted, gone)]
        remaining = [(rec, r) for rec, r in refs if rec.name != wanted.name]
        if not gone.digest and not any(not r.digest and r.name == gone.name for _, r in remaining):
            # The repository's last tag goes: its digest names go with it.
            drop += [(rec, r) for rec, r in remaining if r.digest and r.name == gone.name]
            remaining = [(rec, r) for rec, r in remaining if not (r.digest and r.name == gone.name)]
        items = [DeleteItem(untagged=r.familiar()) for _, r in drop]
        if remaining:
            await images.delete_names([rec.name for rec, _ in drop], collect=False)
            return items
        conflict = _conflict(image_id, users, soft=not force, references=False)
        if conflict is not None:
            if not conflict.used:
                raise conflict
            # The names go; a container still uses the image, which stays (unnamed, kept by its ID).
            await images.keep_by_id(image)
            await images.delete_names([rec.name for rec, _ in drop], collect=False)
            return items
        await images.delete_names(all_names, collect=True)
        return [*items, DeleteItem(deleted=image_id)]

    single = _single_reference([r for _, r in refs])
    conflict = _conflict(image_id, users, soft=not force, references=bool(refs) and not single)
    if conflict is not None:
        raise conflict
    await images.delete_names(all_names, collect=True)
    return [*(DeleteItem(untagged=r.familiar()) for _, r in refs), DeleteItem(deleted=image_id)]


def _wanted(records: list[Record], ref: str) -> Record:
    """The record ``ref`` names among the image's records."""
    parsed = reference.parse(ref)
    for rec in records:
        if rec.name == str(parsed):
            return rec
    if parsed.digest:
        for rec in records:
            if rec.target.digest == parsed.digest and _parsed(rec.name) is not None:
                return rec
    raise errors.NotFound(f"No such image: {parsed.familiar()}")
