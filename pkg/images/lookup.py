"""Which image a name an operator typed means, and whether an image matches a listing's reference filter.

Separate from pkg.images.service because it is pure naming: Docker's and CRI's rules for short and full
references, full and short IDs and ``name@digest`` over the store's records grouped by image, with no
containerd call of its own, so the rules are read (and unit-tested) in one place.
"""
from __future__ import annotations

from collections.abc import Mapping

from pkg import errors
from pkg.images import reference
from pkg.images.model import Image
from pkg.images.store import Record


def find_records(groups: Mapping[str, list[Record]], ref_or_id: str) -> list[Record]:
    """Every record of the image ``ref_or_id`` names among ``groups`` (image ID -> records); NotFound when none."""
    if not ref_or_id:
        raise errors.InvalidArgument("image reference is empty")
    if reference.looks_like_id(ref_or_id):
        image_id = ref_or_id if ref_or_id.startswith("sha256:") else f"sha256:{ref_or_id}"
        if image_id in groups:
            return groups[image_id]
        raise errors.NotFound(f"image {ref_or_id} not found")
    parsed: reference.Reference | None
    try:
        parsed = reference.parse(ref_or_id)
    except errors.InvalidArgument:
        parsed = None
    if parsed is not None:
        wanted = str(parsed)
        for records in groups.values():
            if any(r.name == wanted for r in records):
                return records
        if parsed.digest:
            # name@digest where the digest is the manifest/index of a record of that repository
            for records in groups.values():
                for r in records:
                    if r.target.digest == parsed.digest and repo_of(r.name) == parsed.name:
                        return records
    prefix = ref_or_id.removeprefix("sha256:")
    if prefix and all(c in "0123456789abcdef" for c in prefix):
        matches = [records for image_id, records in groups.items()
                   if image_id.removeprefix("sha256:").startswith(prefix)]
        if len(matches) == 1:
            return matches[0]
        if len(matches) > 1:
            raise errors.InvalidArgument(f"image ID prefix {ref_or_id!r} is ambiguous")
    if parsed is None:
        reference.parse(ref_or_id)  # raises the InvalidArgument with the parser's message
    raise errors.NotFound(f"image {ref_or_id} not found")


def repo_of(name: str) -> str:
    """The repository of a record's name ("" when the name does not parse as a reference)."""
    try:
        return reference.parse(name, default_tag=False).name
    except errors.InvalidArgument:
        return ""


def matches(image: Image, ref_filter: str) -> bool:
    """CRI ListImages / Docker reference filter: a repository (any tag), a full reference, or an ID prefix."""
    prefix = ref_filter.removeprefix("sha256:")
    if prefix and all(c in "0123456789abcdef" for c in prefix) and image.id.removeprefix("sha256:").startswith(prefix):
        return True
    try:
        ref = reference.parse(ref_filter, default_tag=False)
    except errors.InvalidArgument:
        return False
    if ref.digest:
        return f"{ref.name}@{ref.digest}" in image.repo_digests
    if ref.tag:
        return str(ref) in image.repo_tags
    return any(repo_of(t) == ref.name for t in [*image.repo_tags, *image.repo_digests])
