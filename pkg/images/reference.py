"""Image references, normalised as Docker does (distribution/reference).

``busybox`` → ``docker.io/library/busybox:latest``; ``host:5000/app@sha256:…``
keeps its digest.  Anything that does not follow the grammar is an
InvalidArgument naming the reference, so both front ends report it the same way.
"""
from __future__ import annotations

import re
from dataclasses import dataclass

from pkg.errors import InvalidArgument

DEFAULT_DOMAIN = "docker.io"
LEGACY_DOMAIN = "index.docker.io"
OFFICIAL_PREFIX = "library/"
DEFAULT_TAG = "latest"
NAME_MAX = 255

_COMPONENT = r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*"
_PATH = re.compile(rf"^{_COMPONENT}(?:/{_COMPONENT})*\Z")
_DOMAIN_LABEL = r"(?:[a-zA-Z0-9]|[a-zA-Z0-9][a-zA-Z0-9-]*[a-zA-Z0-9])"
_DOMAIN = re.compile(rf"^(?:{_DOMAIN_LABEL}(?:\.{_DOMAIN_LABEL})*|\[[0-9a-fA-F:.]+\])(?::[0-9]+)?\Z")
_TAG = re.compile(r"^[\w][\w.-]{0,127}\Z", re.ASCII)
_DIGEST = re.compile(r"^[A-Za-z][A-Za-z0-9]*(?:[-_+.][A-Za-z][A-Za-z0-9]*)*:[0-9a-fA-F]{32,}\Z")
_SHA256 = re.compile(r"^sha256:[0-9a-f]{64}\Z")
_HEX64 = re.compile(r"^[0-9a-f]{64}\Z")


@dataclass(frozen=True)
class Reference:
    """A normalised reference: ``domain/path[:tag][@digest]``."""

    domain: str
    path: str
    tag: str = ""
    digest: str = ""

    @property
    def name(self) -> str:
        """``docker.io/library/busybox`` — the repository, without tag or digest."""
        return f"{self.domain}/{self.path}"

    @property
    def object(self) -> str:
        """What to ask the registry for: the digest when there is one, else the tag."""
        return self.digest or self.tag

    def __str__(self) -> str:
        out = self.name
        if self.tag:
            out += f":{self.tag}"
        if self.digest:
            out += f"@{self.digest}"
        return out

    def with_tag(self, tag: str) -> Reference:
        return Reference(self.domain, self.path, tag, "")

    def with_digest(self, digest: str) -> Reference:
        return Reference(self.domain, self.path, "", digest)

    def familiar(self) -> str:
        """Docker's short form: ``busybox:latest`` for ``docker.io/library/busybox:latest``."""
        name = self.name
        if self.domain == DEFAULT_DOMAIN:
            name = self.path.removeprefix(OFFICIAL_PREFIX) if self.path.count("/") == 1 else self.path
        out = name
        if self.tag:
            out += f":{self.tag}"
        if self.digest:
            out += f"@{self.digest}"
        return out


def is_digest(value: str) -> bool:
    return bool(_SHA256.match(value))


def looks_like_id(value: str) -> bool:
    """A full image ID, with or without the ``sha256:`` prefix."""
    return bool(_SHA256.match(value) or _HEX64.match(value))


def parse(ref: str, *, default_tag: bool = True) -> Reference:
    """Parse and normalise ``ref``; add ``:latest`` when it has neither tag nor digest."""
    if not ref or ref != ref.strip():
        raise InvalidArgument(f"invalid reference format: {ref!r}")
    if _HEX64.match(ref):
        raise InvalidArgument(f"invalid repository name ({ref}), cannot specify 64-byte hexadecimal strings")
    rest, _, digest = ref.partition("@")
    if digest:
        if not _DIGEST.match(digest):
            raise InvalidArgument(f"invalid reference format: {ref!r}: bad digest {digest!r}")
        if digest.startswith("sha256:") and not _SHA256.match(digest):
            raise InvalidArgument(f"invalid reference format: {ref!r}: sha256 digest must be 64 lowercase hex digits")
    tag = ""
    last = rest.rsplit("/", 1)[-1]
    if ":" in last:
        rest, _, tag = rest.rpartition(":")
        if not _TAG.match(tag):
            raise InvalidArgument(f"invalid reference format: {ref!r}: bad tag {tag!r}")
    domain, path = _split_domain(rest, ref)
    if not _PATH.match(path):
        if path.lower() != path and _PATH.match(path.lower()):
            raise InvalidArgument(f"invalid reference format: repository name must be lowercase: {ref!r}")
        raise InvalidArgument(f"invalid reference format: {ref!r}")
    if len(domain) + 1 + len(path) > NAME_MAX:
        raise InvalidArgument(f"invalid reference format: repository name longer than {NAME_MAX} characters")
    if default_tag and not tag and not digest:
        tag = DEFAULT_TAG
    return Reference(domain, path, tag, digest)


def _split_domain(name: str, ref: str) -> tuple[str, str]:
    first, sep, remainder = name.partition("/")
    if sep and ("." in first or ":" in first or first == "localhost" or first.lower() != first):
        if not _DOMAIN.match(first):
            raise InvalidArgument(f"invalid reference format: {ref!r}: bad registry host {first!r}")
        domain, path = first, remainder
    else:
        domain, path = DEFAULT_DOMAIN, name
    if domain == LEGACY_DOMAIN:
        domain = DEFAULT_DOMAIN
    if domain == DEFAULT_DOMAIN and "/" not in path:
        path = OFFICIAL_PREFIX + path
    return domain, path


def normalize(ref: str) -> str:
    """The canonical string form (``busybox`` → ``docker.io/library/busybox:latest``)."""
    return str(parse(ref))

