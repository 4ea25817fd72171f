"""pkg.images.lookup: which image a typed name means (Docker's and CRI's rules) and the list filter."""
from __future__ import annotations

import pytest

from pkg import errors
from pkg.images import lookup
from pkg.images.model import Descriptor, Image, ImageConfig
from pkg.images.store import Record

A = "sha256:" + "a" * 64
B = "sha256:" + "ab" + "c" * 62
MANIFEST = "sha256:" + "d" * 64


def _rec(name: str, digest: str = MANIFEST) -> Record:
    return Record(name, Descriptor("application/vnd.oci.image.manifest.v1+json", digest, 1))


GROUPS = {
    A: [_rec("docker.io/library/busybox:latest"), _rec("docker.io/library/busybox:1")],
    B: [_rec("registry.local:5000/app:v1", "sha256:" + "e" * 64)],
}


@pytest.mark.parametrize(("ref", "image_id"), [
    ("busybox", A), ("busybox:1", A), ("docker.io/library/busybox:latest", A), (A, A), ("a" * 64, A),
    ("aa", A), ("sha256:abc", B), ("registry.local:5000/app:v1", B),
    (f"busybox@{MANIFEST}", A),  # name@digest of the manifest a name of that repository points at
])
def test_names_resolve_to_their_image(ref: str, image_id: str) -> None:
    assert lookup.find_records(GROUPS, ref) is GROUPS[image_id]


def test_what_names_no_image() -> None:
    with pytest.raises(errors.InvalidArgument, match="ambiguous"):
        lookup.find_records(GROUPS, "a")  # both IDs start with it
    with pytest.raises(errors.InvalidArgument, match="empty"):
        lookup.find_records(GROUPS, "")
    with pytest.raises(errors.NotFound):
        lookup.find_records(GROUPS, "busybox:2")
    with pytest.raises(errors.NotFound):
        lookup.find_records(GROUPS, f"other@{MANIFEST}")  # the digest, but of another repository's name
    with pytest.raises(errors.NotFound):
        lookup.find_records(GROUPS, "f" * 64)
    with pytest.raises(errors.InvalidArgument):
        lookup.find_records(GROUPS, "Not A Reference")


def test_the_list_filter() -> None:
    image = Image(A, ["docker.io/library/busybox:latest"], [f"docker.io/library/busybox@{MANIFEST}"], 1,
                  ImageConfig(), Descriptor("", MANIFEST, 1), [], "")
    assert lookup.matches(image, "busybox") and lookup.matches(image, "busybox:latest")
    assert lookup.matches(image, f"busybox@{MANIFEST}") and lookup.matches(image, "aaaa")
    assert not lookup.matches(image, "busybox:1") and not lookup.matches(image, "other")
    assert not lookup.matches(image, "Not A Reference")
    assert lookup.repo_of("docker.io/library/busybox:latest") == "docker.io/library/busybox"
    assert lookup.repo_of("Not A Reference") == ""
