"""Docker JSON for images (summary, inspect, history) and the shared bits of the image handlers:
names in Docker's familiar form, the ``reference`` filter, "No such image" errors."""
from __future__ import annotations

from typing import Any

from aiohttp import web

from dockerapi import pathmatch, times, versions
from dockerapi.backends import ImageDetail
from pkg import errors
from pkg.images import reference
from pkg.images.model import Image


def familiar(name: str) -> str:
    """``docker.io/library/busybox:latest`` -> ``busybox:latest`` (unparsable names are left alone)."""
    try:
        return reference.parse(name, default_tag=False).familiar()
    except errors.InvalidArgument:
        return name


def tags(img: Image) -> list[str]:
    return [familiar(t) for t in img.repo_tags]


def digests(img: Image) -> list[str]:
    return [familiar(d) for d in img.repo_digests]


def no_such_image(ref: str) -> errors.NotFound:
    """moby's ErrImageDoesNotExist: the reference in familiar form with its tag (``nosuch:latest``)."""
    try:
        shown = reference.parse(ref).familiar()
    except errors.InvalidArgument:
        shown = ref
    return errors.NotFound(f"No such image: {shown}")


def descriptor(img: Image) -> dict[str, Any]:
    return {"mediaType": img.target.media_type, "digest": img.target.digest, "size": img.target.size}


def summary(request: web.Request, img: Image, size: int, patterns: list[str] | None = None) -> dict[str, Any]:
    """One entry of GET /images/json (moby image.Summary); with ``reference`` filter ``patterns`` only the
    names that match are listed, as moby does."""
    repo_tags, repo_digests = tags(img), digests(img)
    if patterns:
        wanted = {familiar(n) for n in matching_names(img, patterns)}
        repo_tags = [t for t in repo_tags if t in wanted]
        repo_digests = [d for d in repo_digests if d in wanted]
    if not versions.at_least(request, "1.44") and not repo_tags and not repo_digests:
        repo_tags, repo_digests = ["<none>:<none>"], ["<none>@<none>"]
    out: dict[str, Any] = {
        "Id": img.id,
        "ParentId": "",
        "RepoTags": repo_tags,
        "RepoDigests": repo_digests,
        "Created": times.unix(img.created),
        "Size": size,
        "SharedSize": -1,
        "Labels": dict(img.config.labels),
        "Containers": -1,
    }
    if not versions.at_least(request, "1.44"):
        out["VirtualSize"] = size
    if versions.at_least(request, "1.48"):
        out["Descriptor"] = descriptor(img)
    return out


_CONTAINER_CONFIG_DEFAULTS: dict[str, Any] = {
    "Hostname": "", "Domainname": "", "User": "", "AttachStdin": False, "AttachStdout": False,
    "AttachStderr": False, "Tty": False, "OpenStdin": False, "StdinOnce": False, "Env": None, "Cmd": None,
    "Image": "", "Volumes": None, "WorkingDir": "", "Entrypoint": None, "OnBuild": None, "Labels": None,
}


def inspect(request: web.Request, detail: ImageDetail) -> dict[str, Any]:
    """GET /images/{name}/json (moby image.InspectResponse)."""
    img = detail.image
    config = dict(detail.container_config)
    if not versions.at_least(request, "1.50"):  # before 1.50 Config was a full container config
        config = {**_CONTAINER_CONFIG_DEFAULTS, **config}
    out: dict[str, Any] = {
        "Id": img.id,
        "RepoTags": tags(img),
        "RepoDigests": digests(img),
        "Parent": detail.parent,
        "Comment": detail.comment,
        "Created": img.created or times.ZERO_TIME,
        "DockerVersion": detail.docker_version,
        "Author": detail.author,
        "Config": config,
        "Architecture": img.architecture,
        "Os": img.os,
        "Size": detail.unpacked_size,
        "GraphDriver": {"Name": img.snapshotter, "Data": None},
        "RootFS": {"Type": "layers", "Layers": list(img.diff_ids)},
        "Metadata": {"LastTagTime": times.ZERO_TIME},
    }
    if detail.variant:
        out["Variant"] = detail.variant
    if detail.os_version:
        out["OsVersion"] = detail.os_version
    if not versions.at_least(request, "1.44"):
        out["VirtualSize"] = detail.unpacked_size
    if not versions.at_least(request, "1.45"):
        out["Container"] = ""
        out["ContainerConfig"] = dict(_CONTAINER_CONFIG_DEFAULTS)
    if versions.at_least(request, "1.48"):
        out["Descriptor"] = descriptor(img)
    return out


def history(detail: ImageDetail, parents: list[ImageDetail] | None = None) -> list[dict[str, Any]]:
    """GET /images/{name}/history: newest step first.  The newest step carries the image's ID and tags;
    with the local ``parents`` (a commit's parent chain, nearest first) their newest steps carry theirs,
    as moby walks the parent chain; every other step is "<missing>"."""
    out: list[dict[str, Any]] = []
    for entry in reversed(detail.history):
        out.append({"Id": "<missing>", "Created": times.unix(entry.created), "CreatedBy": entry.created_by,
                    "Tags": None, "Size": entry.size, "Comment": entry.comment})
    for owner in [detail, *(parents or [])]:
        index = len(detail.history) - len(owner.history)
        if 0 <= index < len(out):
            out[index]["Id"] = owner.image.id
            out[index]["Tags"] = tags(owner.image) or None
    return out


# ---- the reference filter ----
def _checked(pattern: str) -> str:
    try:
        pathmatch.match(pattern, "")
    except pathmatch.BadPattern:
        raise errors.InvalidArgument(f"invalid reference filter {pattern!r}: syntax error in pattern") from None
    return pattern


def matching_names(img: Image, patterns: list[str]) -> list[str]:
    """moby's reference filter: the image's names whose familiar form (or familiar repository) a glob matches."""
    globs = [_checked(p) for p in patterns]
    out = []
    for name in [*img.repo_tags, *img.repo_digests]:
        try:
            ref = reference.parse(name, default_tag=False)
        except errors.InvalidArgument:
            continue
        repo = reference.Reference(ref.domain, ref.path).familiar()
        if any(pathmatch.match(g, ref.familiar()) or pathmatch.match(g, repo) for g in globs):
            out.append(name)
    return out


def reference_matches(img: Image, patterns: list[str]) -> bool:
    return bool(matching_names(img, patterns))
