"""A small OCI distribution (v2) client on aiohttp: manifests, blobs, uploads.

Hosts: for each registry host the configured mirrors are tried in order, then
the upstream (like containerd's ``hosts.toml``).  HTTPS by default; plain
HTTP for loopback hosts; hosts listed as insecure get HTTPS without
certificate verification, then plain HTTP.  Registry errors become
``pkg.errors`` kinds carrying the registry's own message.
"""
from __future__ import annotations

import contextlib
import ipaddress
import json
import logging
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from typing import Any
from urllib.parse import urljoin

import aiohttp

from pkg import errors
from pkg.config import RegistryConfig
from pkg.images.auth import Authorizer
from pkg.images.bounded import IDENTITY, read_body, read_head
from pkg.images.media import ACCEPT, MAX_MANIFEST, media_type_of, sha256
from pkg.images.model import Descriptor, RegistryAuth
from pkg.images.reference import DEFAULT_DOMAIN, Reference

log = logging.getLogger(__name__)

DOCKER_HUB = "registry-1.docker.io"
CONNECT_TIMEOUT = 10.0
READ_TIMEOUT = 60.0  # a blob stream may stall this long between reads
API_TIMEOUT = 30.0  # a whole manifest / HEAD / upload-session request
READ_CHUNK = 1 << 20
MAX_TAG_PAGES = 100


@dataclass(frozen=True)
class Endpoint:
    """One place to talk to for a registry host: ``base`` is ``scheme://host[:port][/prefix]``."""

    base: str
    host: str
    verify_tls: bool = True
    mirror: bool = False

    def url(self, path: str) -> str:
        return f"{self.base}/v2/{path}"


def is_loopback(host: str) -> bool:
    name = host.rsplit(":", 1)[0] if not host.endswith("]") else host
    name = name.strip("[]")
    if name == "localhost":
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False


def endpoints(domain: str, cfg: RegistryConfig) -> list[Endpoint]:
    """Mirrors first (in order), then the upstream with the right scheme."""
    out: list[Endpoint] = []
    for url in cfg.mirrors.get(domain, []):
        base = url.rstrip("/")
        if base.endswith("/v2"):
            base = base[:-3]
        host = base.split("://", 1)[1].split("/", 1)[0]
        insecure = host in cfg.insecure
        out.append(Endpoint(base, host, verify_tls=not insecure, mirror=True))
    upstream = DOCKER_HUB if domain == DEFAULT_DOMAIN else domain
    if domain in cfg.insecure:
        out.append(Endpoint(f"https://{upstream}", upstream, verify_tls=False))
        out.append(Endpoint(f"http://{upstream}", upstream))
    elif is_loopback(domain):
        out.append(Endpoint(f"http://{upstream}", upstream))
    else:
        out.append(Endpoint(f"https://{upstream}", upstream))
    return out


def may_carry_credentials(ep: Endpoint) -> bool:
    """Credentials are for the registry they were given for (containerd's rule): never sent to a mirror,
    nor in clear text (plain HTTP) to anything but a loopback host."""
    return not ep.mirror and (ep.base.startswith("https://") or is_loopback(ep.host))


def registry_error(status: int, body: bytes, what: str) -> errors.NarwhalError:
    """Map an HTTP failure to a pkg error, keeping the registry's message (distribution error JSON)."""
    message = ""
    try:
        doc = json.loads(body)
        errs = doc.get("errors") if isinstance(doc, dict) else None
        if isinstance(errs, list) and errs:
            message = "; ".join(
                f"{e.get('code', '').lower().replace('_', ' ')}: {e.get('message', '')}".strip(": ")
                for e in errs if isinstance(e, dict))
    except (ValueError, UnicodeDecodeError):
        pass
    if not message:
        message = body[:300].decode(errors="replace").strip() or f"HTTP {status}"
    text = f"{what}: {message}"
    if status == 404:
        return errors.NotFound(text)
    if status == 401:
        return errors.Unauthenticated(text)
    if status == 403:
        return errors.PermissionDenied(text)
    if status == 429:
        return errors.ResourceExhausted(text)
    if status in (400, 405, 411, 413, 416):
        return errors.InvalidArgument(text)
    return errors.Unavailable(text)


class RegistrySession:
    """One operation's connection pool and credentials for one registry host."""

    # Class-level so tests can shorten them.
    connect_timeout = CONNECT_TIMEOUT
    read_timeout = READ_TIMEOUT
    api_timeout = API_TIMEOUT

    def __init__(self, ref: Reference, cfg: RegistryConfig, auth: RegistryAuth | None = None,
                 push: bool = False, read_timeout: float | None = None) -> None:
        """``read_timeout``: how long a response may go without a byte (a pull's progress deadline)."""
        if read_timeout is not None:
            self.read_timeout = read_timeout
        self.ref = ref
        self.repo = ref.path
        self.endpoints = endpoints(ref.domain, cfg)
        self.scope = f"repository:{ref.path}:pull" + (",push" if push else "")
        self._authorizer = Authorizer(auth)
        self._anonymous = Authorizer(None)  # for endpoints the credentials were not given for
        self._session: aiohttp.ClientSession | None = None
        self._insecure_session: aiohttp.ClientSession | None = None

    async def __aenter__(self) -> RegistrySession:
        timeout = aiohttp.ClientTimeout(total=None, connect=self.connect_timeout,
                                        sock_connect=self.connect_timeout, sock_read=self.read_timeout)
        # No transparent decompression: a registry's gzip bomb would otherwise inflate inside aiohttp.
        # read_bufsize: aiohttp stops reading the socket once twice this much is buffered (64 KiB by default):
        # a blob then arrives in many small reads, each a pause, a resume and a chunk through the write loop.
        self._session = aiohttp.ClientSession(timeout=timeout, trust_env=False, auto_decompress=False,
                                              headers=IDENTITY, read_bufsize=READ_CHUNK)
        self._insecure_session = aiohttp.ClientSession(
            timeout=timeout, trust_env=False, connector=aiohttp.TCPConnector(ssl=False), auto_decompress=False,
            headers=IDENTITY, read_bufsize=READ_CHUNK)
        return self

    async def __aexit__(self, *exc: object) -> None:
        for session in (self._session, self._insecure_session):
            if session is not None:
                await session.close()

    def _client(self, ep: Endpoint) -> aiohttp.ClientSession:
        session = self._session if ep.verify_tls else self._insecure_session
        assert session is not None, "use RegistrySession as an async context manager"
        return session

    async def request(self, ep: Endpoint, method: str, url: str, *, headers: dict[str, str] | None = None,
                      data: Any = None, allow_redirects: bool = True, stream: bool = False) -> aiohttp.ClientResponse:
        """Send one request, answering at most one auth challenge.  The caller releases the response.

        Unless ``stream`` (blob bodies: bounded per read instead), the whole exchange is bounded by
        ``api_timeout``, so a registry that accepts connections and never answers fails in bounded time.
        """
        # (Passing timeout=None would mean "no timeout at all" to aiohttp: leave the session default instead.)
        extra: dict[str, Any] = {} if stream else {"timeout": aiohttp.ClientTimeout(
            total=self.api_timeout, connect=self.connect_timeout, sock_read=self.read_timeout)}
        session = self._client(ep)
        hdrs = dict(headers or {})
        authorizer = self._authorizer if may_carry_credentials(ep) else self._anonymous
        auth = authorizer.header_for(ep.host, self.scope)
        if auth:
            hdrs["Authorization"] = auth
        try:
            resp = await session.request(method, url, headers=hdrs, data=data, allow_redirects=allow_redirects,
                                         **extra)
            if resp.status == 401 and "WWW-Authenticate" in resp.headers:
                await read_head(resp)  # keeps (the head of) the error message, if we cannot do better
                answer = await authorizer.answer(session, ep.host, resp.headers["WWW-Authenticate"], self.scope)
                if answer is not None and answer != auth and _replayable(data):
                    hdrs["Authorization"] = answer
                    resp = await session.request(method, url, headers=hdrs, data=data,
                                                 allow_redirects=allow_redirects, **extra)
        except (aiohttp.ClientConnectionError, aiohttp.ClientPayloadError, TimeoutError) as exc:
            raise errors.Unavailable(f"registry {ep.base}: {_describe(exc)}") from None
        except aiohttp.ClientError as exc:
            raise errors.Unavailable(f"registry {ep.base}: {_describe(exc)}") from None
        return resp

    # ---- manifests ----
    async def resolve(self, reference: str | None = None) -> tuple[Endpoint, Descriptor, bytes]:
        """Fetch the manifest (or index) a tag or digest names, trying each endpoint in order."""
        obj = reference or self.ref.object
        last: errors.NarwhalError | None = None
        for ep in self.endpoints:
            try:
                return ep, *await self.fetch_manifest(ep, obj)
            except (errors.NotFound, errors.Unavailable, errors.Unauthenticated, errors.PermissionDenied) as exc:
                log.debug("resolve %s at %s: %s", self.ref, ep.base, exc)
                # Prefer the upstream's answer; a mirror's failure only matters if it is the only one.
                if last is None or not ep.mirror:
                    last = exc
        assert last is not None
        raise last

    async def fetch_manifest(self, ep: Endpoint, obj: str) -> tuple[Descriptor, bytes]:
        url = ep.url(f"{self.repo}/manifests/{obj}")
        resp = await self.request(ep, "GET", url, headers={"Accept": ACCEPT})
        async with resp:
            with network_errors(ep, f"manifest {obj}"):
                if resp.status != 200:
                    raise registry_error(resp.status, await read_head(resp), f"{self.ref.name}:{obj}")
                body = await read_head(resp, MAX_MANIFEST + 1)
            declared = resp.headers.get("Content-Type", "").split(";")[0].strip()
        if len(body) > MAX_MANIFEST:
            raise errors.InvalidArgument(f"manifest {self.ref.name}:{obj} is larger than {MAX_MANIFEST} bytes")
        digest = sha256(body)
        if obj.startswith("sha256:") and digest != obj:
            raise errors.InvalidArgument(f"manifest {self.ref.name}@{obj}: registry served content with digest "
                                         f"{digest}")
        return Descriptor(media_type_of(body, declared), digest, len(body)), body

    async def list_tags(self) -> list[str]:
        """The repository's tags (``/tags/list``, following ``Link`` pages), from the first endpoint that
        answers: docker pull of a bare name pulls them all."""
        last: errors.NarwhalError | None = None
        for ep in self.endpoints:
            try:
                return await self._tags_at(ep)
            except (errors.NotFound, errors.Unavailable, errors.Unauthenticated, errors.PermissionDenied) as exc:
                log.debug("list tags of %s at %s: %s", self.ref.name, ep.base, exc)
                if last is None or not ep.mirror:
                    last = exc
        assert last is not None
        raise last

    async def _tags_at(self, ep: Endpoint) -> list[str]:
        tags: list[str] = []
        url: str | None = ep.url(f"{self.repo}/tags/list")
        for _ in range(MAX_TAG_PAGES):
            if url is None:
                return tags
            resp = await self.request(ep, "GET", url)
            async with resp:
                with network_errors(ep, "tags"):
                    if resp.status != 200:
                        raise registry_error(resp.status, await read_head(resp), f"{self.ref.name}: tags")
                    body = await read_body(resp, MAX_MANIFEST, f"tags of {self.ref.name}")
                link = resp.headers.get("Link", "")
            try:
                doc = json.loads(body)
            except ValueError:
                raise errors.Unavailable(f"registry {ep.base}: tags of {self.ref.name}: not JSON") from None
            page = doc.get("tags") if isinstance(doc, dict) else None
            tags += [str(t) for t in page or [] if isinstance(t, str)]
            url = None
            if 'rel="next"' in link and link.startswith("<"):
                url = urljoin(ep.base + "/", link[1:link.index(">")])
        return tags

    # ---- blobs ----
    async def open_blob(self, ep: Endpoint, digest: str, offset: int = 0) -> tuple[int, AsyncIterator[bytes]]:
        """Open a blob, from ``offset`` if the registry honours Range; returns (start, chunks)."""
        headers = {"Range": f"bytes={offset}-"} if offset else {}
        resp = await self.request(ep, "GET", ep.url(f"{self.repo}/blobs/{digest}"), headers=headers, stream=True)
        if resp.status == 416 and offset:
            resp.release()
            return await self.open_blob(ep, digest, 0)
        if resp.status not in (200, 206):
            with network_errors(ep, f"blob {digest}"):
                body = await read_head(resp)
            resp.release()
            raise registry_error(resp.status, body, f"blob {digest}")
        start = offset if resp.status == 206 else 0

        async def chunks() -> AsyncIterator[bytes]:
            try:
                async for chunk in resp.content.iter_chunked(READ_CHUNK):
                    yield chunk
            except (aiohttp.ClientError, TimeoutError) as exc:
                raise errors.Unavailable(f"registry {ep.base}: blob {digest}: {_describe(exc)}") from None
            finally:
                resp.release()

        return start, chunks()

    async def blob_exists(self, ep: Endpoint, digest: str) -> bool:
        resp = await self.request(ep, "HEAD", ep.url(f"{self.repo}/blobs/{digest}"))
        async with resp:
            if resp.status == 200:
                return True
            if resp.status == 404:
                return False
            raise registry_error(resp.status, b"", f"blob {digest}")

    async def upload_blob(self, ep: Endpoint, digest: str, size: int, data: AsyncIterator[bytes] | bytes) -> None:
        """Monolithic upload: POST to open a session, then PUT the content with ``?digest=``."""
        resp = await self.request(ep, "POST", ep.url(f"{self.repo}/blobs/uploads/"), allow_redirects=False,
                                  headers={"Content-Length": "0"})
        async with resp:
            if resp.status != 202 or "Location" not in resp.headers:
                with network_errors(ep, f"upload {digest}"):
                    raise registry_error(resp.status, await read_head(resp), f"start upload of {digest}")
            location = urljoin(ep.base + "/", resp.headers["Location"])
        sep = "&" if "?" in location else "?"
        url = f"{location}{sep}digest={digest}"
        headers = {"Content-Type": "application/octet-stream", "Content-Length": str(size)}
        resp = await self.request(ep, "PUT", url, headers=headers, data=data, stream=True)
        async with resp:
            if resp.status not in (201, 204):
                with network_errors(ep, f"upload {digest}"):
                    raise registry_error(resp.status, await read_head(resp), f"upload {digest}")

    async def put_manifest(self, ep: Endpoint, reference: str, media_type: str, body: bytes) -> None:
        resp = await self.request(ep, "PUT", ep.url(f"{self.repo}/manifests/{reference}"), data=body,
                                  headers={"Content-Type": media_type})
        async with resp:
            if resp.status not in (200, 201):
                with network_errors(ep, f"manifest {reference}"):
                    raise registry_error(resp.status, await read_head(resp),
                                         f"put manifest {self.ref.name}:{reference}")


def _replayable(data: Any) -> bool:
    """A body we can send a second time (an async stream is consumed by the first attempt)."""
    return data is None or isinstance(data, bytes | bytearray | str)


@contextlib.contextmanager
def network_errors(ep: Endpoint, what: str) -> Iterator[None]:
    """Connection-level failures while reading a response become Unavailable."""
    try:
        yield
    except (aiohttp.ClientError, TimeoutError) as exc:
        raise errors.Unavailable(f"registry {ep.base}: {what}: {_describe(exc)}") from None


def _describe(exc: BaseException) -> str:
    if isinstance(exc, TimeoutError):
        return "timed out"
    text = str(exc)
    return text or type(exc).__name__
