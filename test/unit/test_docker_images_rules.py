"""Docker image endpoints without a daemon: X-Registry-Auth, filters, references, and moby's rmi rules."""
from __future__ import annotations

import base64
import json
from dataclasses import dataclass, field
from typing import Any, cast

import pytest

from dockerapi import versions
from dockerapi.handlers import images_json as j
from dockerapi.handlers.auth import auth_from_json, registry_auth
from dockerapi.handlers.images_registry import pull_reference
from pkg import errors
from pkg.images import reference
from pkg.images.delete import ImageUser, delete_image
from pkg.images.detail import HistoryEntry, ImageDetail
from pkg.images.login import registry_host
from pkg.images.model import Descriptor, Image, ImageConfig
from pkg.images.service import ImageService
from pkg.images.store import Record

ID_A = "sha256:" + "a" * 64
ID_B = "sha256:" + "b" * 64
MANIFEST = "sha256:" + "c" * 64


class _Req:
    """Just enough of an aiohttp request for registry_auth."""

    def __init__(self, header: str) -> None:
        self.headers = {"X-Registry-Auth": header} if header else {}


def _encode(doc: dict[str, Any], pad: bool) -> str:
    text = base64.urlsafe_b64encode(json.dumps(doc).encode()).decode()
    return text if pad else text.rstrip("=")


@pytest.mark.parametrize("pad", [True, False])
def test_x_registry_auth_decodes_base64url_json(pad: bool) -> None:
    header = _encode({"username": "bob", "password": "pa?s>>", "serveraddress": "127.0.0.1:5000"}, pad)
    auth = registry_auth(cast(Any, _Req(header)))
    assert auth is not None
    assert (auth.username, auth.password, auth.server_address) == ("bob", "pa?s>>", "127.0.0.1:5000")


def test_x_registry_auth_empty_or_broken_means_none() -> None:
    assert registry_auth(cast(Any, _Req(""))) is None
    assert registry_auth(cast(Any, _Req("e30="))) is None  # {} as the CLI sends for anonymous pulls
    assert registry_auth(cast(Any, _Req("%%%not base64"))) is None


def test_auth_json_keys_are_case_insensitive_and_auth_field_decodes() -> None:
    auth = auth_from_json({"Username": "u", "Password": "p", "IdentityToken": "tok"})
    assert (auth.username, auth.password, auth.identity_token) == ("u", "p", "tok")
    auth = auth_from_json({"auth": base64.b64encode(b"alice:s:cret").decode()})
    assert (auth.username, auth.password) == ("alice", "s:cret")
    for broken in ("!!!", base64.b64encode(b"nocolon").decode()):
        with pytest.raises(errors.InvalidArgument):
            auth_from_json({"auth": broken})


@pytest.mark.parametrize(("address", "host"), [
    ("", "docker.io"), ("https://index.docker.io/v1/", "docker.io"), ("127.0.0.1:5000", "127.0.0.1:5000"),
    ("http://LocalHost:5000/v2/", "localhost:5000"),
])
def test_registry_host(address: str, host: str) -> None:
    assert registry_host(address) == host


def test_pull_reference_joins_tag_or_digest() -> None:
    assert str(pull_reference("busybox", "1.36")) == "docker.io/library/busybox:1.36"
    assert str(pull_reference("busybox", "")) == "docker.io/library/busybox:latest"
    assert str(pull_reference("busybox", MANIFEST)) == f"docker.io/library/busybox@{MANIFEST}"
    assert str(pull_reference("busybox:musl", "latest")) == "docker.io/library/busybox:musl"
    with pytest.raises(errors.InvalidArgument):
        pull_reference("Not/Valid", "")


def _image(image_id: str, names: list[str], labels: dict[str, str] | None = None, created: str = "") -> Image:
    tags = [n for n in names if "@" not in n]
    digests = [n for n in names if "@" in n]
    return Image(id=image_id, repo_tags=tags, repo_digests=digests, size=1, config=ImageConfig(labels=labels or {}),
                 target=Descriptor("m", MANIFEST, 1), diff_ids=[], chain_id="", created=created)


@pytest.mark.parametrize(("pattern", "hit"), [
    ("busybox", True), ("busybox:latest", True), ("busy*", True), ("busybox:1*", False),
    ("*", True), ("me/*", False), ("127.0.0.1:5000/me/*", True), ("bb", False),
])
def test_reference_filter_globs_familiar_names(pattern: str, hit: bool) -> None:
    img = _image(ID_A, ["docker.io/library/busybox:latest", "127.0.0.1:5000/me/bb:1"])
    assert j.reference_matches(img, [pattern]) is hit


def test_no_such_image() -> None:
    assert j.no_such_image("nosuch").message == "No such image: nosuch:latest"
    assert j.no_such_image("abc123").message == "No such image: abc123:latest"


# ---- rmi rules against a fake image service (records by name, as containerd keeps them) ----
@dataclass
class FakeImages:
    records: dict[str, str] = field(default_factory=dict)  # name -> image ID
    deleted_ids: list[str] = field(default_factory=list)

    @property
    def store(self) -> FakeImages:
        return self

    async def records_of(self, ref: str) -> list[Record]:
        prefix = ref.removeprefix("sha256:")
        ids = {i for i in self.records.values() if i.removeprefix("sha256:").startswith(prefix)}
        if len(ids) != 1:
            try:
                wanted = str(reference.parse(ref))
            except errors.InvalidArgument:
                raise errors.NotFound(ref) from None
            ids = {self.records[wanted]} if wanted in self.records else set()
        if not ids:
            raise errors.NotFound(ref)
        image_id = ids.pop()
        return [Record(n, Descriptor("m", MANIFEST, 1)) for n, i in self.records.items() if i == image_id]

    async def build(self, records: list[Record]) -> Image:
        return _image(self.records[records[0].name], [r.name for r in records])

    async def keep_by_id(self, img: Image) -> None:
        self.records[img.id] = img.id

    async def delete_names(self, names: list[str], *, collect: bool) -> None:
        for name in names:
            image_id = self.records.pop(name)
            if collect and image_id not in self.records.values():
                self.deleted_ids.append(image_id)


BUSYBOX = "docker.io/library/busybox:latest"
BUSYBOX_DIGEST = f"docker.io/library/busybox@{MANIFEST}"
OTHER = "127.0.0.1:5000/me/bb:1"


async def _rmi(fake: FakeImages, ref: str, users: list[ImageUser] | None = None, force: bool = False) -> list[str]:
    items = await delete_image(cast(ImageService, fake), ref, users or [], force=force)
    return [f"Untagged: {i.untagged}" if i.untagged else f"Deleted: {i.deleted}" for i in items]


async def test_rmi_last_tag_takes_digest_names_and_the_image() -> None:
    fake = FakeImages({BUSYBOX: ID_A, BUSYBOX_DIGEST: ID_A})
    assert await _rmi(fake, "busybox") == ["Untagged: busybox:latest", f"Untagged: busybox@{MANIFEST}",
                                          f"Deleted: {ID_A}"]
    assert fake.records == {} and fake.deleted_ids == [ID_A]


async def test_rmi_of_one_of_two_tags_only_untags() -> None:
    fake = FakeImages({BUSYBOX: ID_A, BUSYBOX_DIGEST: ID_A, OTHER: ID_A})
    assert await _rmi(fake, OTHER) == ["Untagged: 127.0.0.1:5000/me/bb:1"]
    assert set(fake.records) == {BUSYBOX, BUSYBOX_DIGEST} and not fake.deleted_ids


async def test_rmi_by_id_with_names_in_two_repositories_must_be_forced() -> None:
    fake = FakeImages({BUSYBOX: ID_A, OTHER: ID_A})
    with pytest.raises(errors.Conflict, match=r"unable to delete aaaaaaaaaaaa \(must be forced\) - image is "
                                              r"referenced in multiple repositories"):
        await _rmi(fake, "aaaa")
    out = await _rmi(fake, "aaaa", force=True)
    assert out[-1] == f"Deleted: {ID_A}" and fake.records == {}


async def test_rmi_conflicts_with_containers() -> None:
    fake = FakeImages({BUSYBOX: ID_A})
    running = [ImageUser("f" * 64, ID_A, running=True)]
    stopped = [ImageUser("e" * 64, ID_A, running=False)]
    with pytest.raises(errors.Conflict, match=r"^conflict: unable to delete aaaaaaaaaaaa \(cannot be forced\) - "
                                              r"image is being used by running container ffffffffffff$"):
        await _rmi(fake, ID_A, running, force=True)
    with pytest.raises(errors.Conflict, match=r"^conflict: unable to delete aaaaaaaaaaaa \(must be forced\) - "
                                              r"image is being used by stopped container eeeeeeeeeeee$"):
        await _rmi(fake, ID_A, stopped)
    with pytest.raises(errors.Conflict, match='unable to remove repository reference "busybox" \\(must force\\)'):
        await _rmi(fake, "busybox", stopped)
    assert fake.records == {BUSYBOX: ID_A}
    # forced, the stopped container's image goes (moby: only a running container blocks a forced removal)
    assert await _rmi(fake, "busybox", stopped, force=True) == ["Untagged: busybox:latest", f"Deleted: {ID_A}"]
    # other images are not held by the container
    fake.records[OTHER] = ID_B
    assert (await _rmi(fake, OTHER, stopped))[-1] == f"Deleted: {ID_B}"


async def test_rmi_of_the_last_name_of_a_running_containers_image_keeps_the_image() -> None:
    fake = FakeImages({BUSYBOX: ID_A})
    running = [ImageUser("f" * 64, ID_A, running=True)]
    assert await _rmi(fake, "busybox", running, force=True) == ["Untagged: busybox:latest"]
    assert fake.records == {ID_A: ID_A} and fake.deleted_ids == []
    # by ID later, once the container is gone
    assert await _rmi(fake, "aaaaaaaa") == [f"Deleted: {ID_A}"]
    assert fake.records == {} and fake.deleted_ids == [ID_A]


async def test_rmi_unknown_is_not_found() -> None:
    with pytest.raises(errors.NotFound):
        await _rmi(FakeImages(), "nosuch")


# ---- JSON shapes per API version ----
def _req(version: str) -> Any:
    """What versions.at_least reads of a request: its API version."""
    return {versions.REQUEST_KEY: version}


def test_summary_shapes_by_version() -> None:
    dangling = _image(ID_A, [], labels={"k": "v"}, created="2024-05-01T10:00:00Z")
    old = j.summary(_req("1.43"), dangling, 42)
    assert old["RepoTags"] == ["<none>:<none>"] and old["RepoDigests"] == ["<none>@<none>"]
    assert old["VirtualSize"] == 42 and "Descriptor" not in old
    new = j.summary(_req("1.53"), dangling, 42)
    assert new["RepoTags"] == [] and "VirtualSize" not in new
    assert new["Descriptor"] == {"mediaType": "m", "digest": MANIFEST, "size": 1}
    assert (new["Created"], new["Size"], new["Labels"], new["SharedSize"]) == (1714557600, 42, {"k": "v"}, -1)
    named = _image(ID_A, [BUSYBOX, OTHER, BUSYBOX_DIGEST])
    assert j.summary(_req("1.53"), named, 1)["RepoTags"] == ["busybox:latest", "127.0.0.1:5000/me/bb:1"]
    assert j.summary(_req("1.53"), named, 1, ["busy*"])["RepoTags"] == ["busybox:latest"]


def test_inspect_and_history_shapes() -> None:
    img = _image(ID_A, [BUSYBOX, BUSYBOX_DIGEST], created="2024-05-01T10:00:00Z")
    detail = ImageDetail(
        image=img, author="me", comment="c", docker_version="", variant="", os_version="",
        container_config={"Cmd": ["sh"]}, manifest=Descriptor("m", MANIFEST, 1), layers=[], unpacked_size=7,
        history=[HistoryEntry("2024-05-01T10:00:00Z", "base", "", False, 5),
                 HistoryEntry("2024-05-02T10:00:00Z", "ENV x", "", True, 0)])
    new = j.inspect(_req("1.53"), detail)
    assert new["Config"] == {"Cmd": ["sh"]} and new["Size"] == 7 and "ContainerConfig" not in new
    assert new["RepoTags"] == ["busybox:latest"] and new["RepoDigests"] == [f"busybox@{MANIFEST}"]
    old = j.inspect(_req("1.43"), detail)
    assert old["Config"]["Hostname"] == "" and old["Config"]["Cmd"] == ["sh"] and old["VirtualSize"] == 7
    assert "Descriptor" not in old and old["ContainerConfig"]["Image"] == ""
    history = j.history(detail)
    assert [(h["Id"], h["CreatedBy"], h["Size"], h["Tags"]) for h in history] == [
        (ID_A, "ENV x", 0, ["busybox:latest"]), ("<missing>", "base", 5, None)]
