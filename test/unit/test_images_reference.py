"""Reference normalisation as Docker does it, and the InvalidArgument cases."""
import pytest

from pkg.errors import InvalidArgument
from pkg.images import reference

DIGEST = "sha256:" + "ab" * 32


@pytest.mark.parametrize(
    ("given", "normalised"),
    [
        ("busybox", "docker.io/library/busybox:latest"),
        ("busybox:1.36", "docker.io/library/busybox:1.36"),
        ("library/busybox", "docker.io/library/busybox:latest"),
        ("docker.io/busybox", "docker.io/library/busybox:latest"),
        ("index.docker.io/library/busybox:x", "docker.io/library/busybox:x"),
        ("user/app", "docker.io/user/app:latest"),
        ("registry.k8s.io/pause:3.9", "registry.k8s.io/pause:3.9"),
        ("127.0.0.1:5000/library/busybox", "127.0.0.1:5000/library/busybox:latest"),
        ("localhost/app", "localhost/app:latest"),
        ("localhost:5000/a/b/c:v1", "localhost:5000/a/b/c:v1"),
        (f"busybox@{DIGEST}", f"docker.io/library/busybox@{DIGEST}"),
        (f"busybox:1@{DIGEST}", f"docker.io/library/busybox:1@{DIGEST}"),
        (f"[::1]:5000/app@{DIGEST}", f"[::1]:5000/app@{DIGEST}"),
        ("quay.io/a_b__c-d---e.f/x", "quay.io/a_b__c-d---e.f/x:latest"),
    ],
)
def test_normalise(given: str, normalised: str) -> None:
    assert reference.normalize(given) == normalised


@pytest.mark.parametrize(
    "bad",
    ["", " busybox", "BusyBox", "busybox:", "busybox:-x", "busybox@sha256:abc", f"busybox@md5:{'a' * 10}",
     "a" * 64, "host:5000/", "/busybox", "busybox//x", "-host.io/app", "busybox:" + "t" * 129,
     "x/" * 200 + "y", "busy box", "registry.io/UPPER"],
)
def test_invalid(bad: str) -> None:
    with pytest.raises(InvalidArgument):
        reference.parse(bad)


def test_parts_and_familiar() -> None:
    ref = reference.parse("busybox")
    assert (ref.domain, ref.path, ref.tag, ref.digest) == ("docker.io", "library/busybox", "latest", "")
    assert ref.name == "docker.io/library/busybox"
    assert ref.familiar() == "busybox:latest"
    assert reference.parse("user/app:1").familiar() == "user/app:1"
    assert reference.parse("quay.io/a/b").familiar() == "quay.io/a/b:latest"
    pinned = reference.parse(f"quay.io/a/b:1@{DIGEST}")
    assert pinned.object == DIGEST
    assert str(pinned.with_digest(DIGEST)) == f"quay.io/a/b@{DIGEST}"


def test_no_default_tag_for_filters() -> None:
    assert reference.parse("busybox", default_tag=False).tag == ""


def test_ids() -> None:
    assert reference.looks_like_id("a" * 64)
    assert reference.looks_like_id("sha256:" + "a" * 64)
    assert not reference.looks_like_id("abc")
