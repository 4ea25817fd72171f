"""Import of image archives: OCI image layouts and docker-archive (``docker save``) tarballs.

Import reads an OCI layout (directory or tar) and, failing that, a classic docker-archive, for which a Docker
schema 2 manifest is synthesised.  Blobs are streamed into the content store and unpacked like a pull, under a
lease.  The export side (``docker save``) is pkg.images.archive_export.
"""
from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import logging
import os
import tarfile
import tempfile
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import IO, Any, Protocol

from pkg import errors
from pkg.containerd.client import Client
from pkg.containerd.leases import lease
from pkg.images import media, reference
from pkg.images.archive_export import blob_path, write_stream
from pkg.images.commit import commit_image
from pkg.images.content import WRITE_CHUNK, ContentStore, file_source
from pkg.images.model import Descriptor
from pkg.images.store import ImageStore
from pkg.images.unpack import Unpacker, chain_ids

log = logging.getLogger(__name__)

MAX_JSON = 16 << 20


# ---- readers: a directory or a tarball, by relative path ----
class _Reader(Protocol):
    def exists(self, path: str) -> bool: ...
    def open(self, path: str) -> IO[bytes]: ...
    def close(self) -> None: ...


def _clean(path: str) -> str:
    parts = PurePosixPath(path.lstrip("/")).parts
    if ".." in parts:
        raise errors.InvalidArgument(f"archive path {path!r} escapes the archive")
    return "/".join(p for p in parts if p != ".")


class _DirReader:
    def __init__(self, root: Path) -> None:
        self._root = root

    def exists(self, path: str) -> bool:
        return (self._root / _clean(path)).is_file()

    def open(self, path: str) -> IO[bytes]:
        try:
            return open(self._root / _clean(path), "rb")  # noqa: SIM115 - closed by the caller
        except OSError as exc:
            raise errors.InvalidArgument(f"archive: {path}: {exc.strerror}") from None

    def close(self) -> None:
        pass


class _TarReader:
    def __init__(self, path: Path) -> None:
        try:
            self._tar = tarfile.open(path, "r:*")  # noqa: SIM115 - closed in close()
            self._members = {_clean(m.name): m for m in self._tar.getmembers() if m.isfile()}
        except (tarfile.TarError, OSError, EOFError) as exc:
            reason = str(exc).strip().splitlines()[-1].strip(" -") if str(exc).strip() else type(exc).__name__
            raise errors.InvalidArgument(f"archive is not a readable (compressed) tarball: {reason}") from None

    def exists(self, path: str) -> bool:
        return _clean(path) in self._members

    def open(self, path: str) -> IO[bytes]:
        member = self._members.get(_clean(path))
        fobj = self._tar.extractfile(member) if member is not None else None
        if fobj is None:
            raise errors.InvalidArgument(f"archive: {path} is missing")
        return fobj

    def close(self) -> None:
        self._tar.close()


def _open_reader(source: Path) -> _Reader:
    if source.is_dir():
        return _DirReader(source)
    if source.is_file():
        return _TarReader(source)
    raise errors.NotFound(f"archive {source} does not exist")


def _read_json(reader: _Reader, path: str) -> Any:
    with reader.open(path) as fobj:
        data = fobj.read(MAX_JSON + 1)
    if len(data) > MAX_JSON:
        raise errors.InvalidArgument(f"archive: {path} is too large")
    try:
        return json.loads(data)
    except ValueError as exc:
        raise errors.InvalidArgument(f"archive: {path}: not valid JSON: {exc}") from None


def _read_all(reader: _Reader, path: str) -> bytes:
    with reader.open(path) as fobj:
        data = fobj.read(MAX_JSON + 1)
    if len(data) > MAX_JSON:
        raise errors.InvalidArgument(f"archive: {path} is too large")
    return data


def _hash_file(reader: _Reader, path: str) -> tuple[str, int, bool]:
    """(digest, size, gzip?) of a member, read once."""
    h = hashlib.sha256()
    size = 0
    with reader.open(path) as fobj:
        head = b""
        while chunk := fobj.read(WRITE_CHUNK):
            if not head:
                head = chunk[:2]
            h.update(chunk)
            size += len(chunk)
    return f"sha256:{h.hexdigest()}", size, head == b"\x1f\x8b"


@dataclass(frozen=True)
class _Planned:
    """One image found in an archive: what to write and which names to give it."""

    target: Descriptor
    target_body: bytes
    manifest_desc: Descriptor
    manifest_body: bytes
    manifest: media.Manifest
    paths: dict[str, str]  # digest -> member path
    names: list[str]


class Importer:
    def __init__(self, client: Client, content: ContentStore, store: ImageStore, unpacker: Unpacker) -> None:
        self._client = client
        self._content = content
        self._store = store
        self._unpacker = unpacker

    async def import_archive(self, source: Path, name: str | None = None, pinned: bool = False) -> list[str]:
        """Import every image in ``source``; returns their IDs.  ``name`` names an image the archive leaves
        unnamed (a repository for a bare tag annotation, or a full reference)."""
        return [image_id for image_id, _ in await self.import_named(source, name, pinned)]

    async def import_named(self, source: Path, name: str | None = None,
                           pinned: bool = False) -> list[tuple[str, list[str]]]:
        """Like import_archive, with the names each image got from the archive (docker load reports them)."""
        reader = await asyncio.to_thread(_open_reader, source)
        try:
            if await asyncio.to_thread(reader.exists, "index.json"):
                planned = await asyncio.to_thread(self._plan_oci, reader, name)
            elif await asyncio.to_thread(reader.exists, "manifest.json"):
                planned = await asyncio.to_thread(self._plan_docker, reader, name)
            else:
                raise errors.InvalidArgument("archive is neither an OCI layout (index.json) "
                                             "nor a docker-archive (manifest.json)")
            if not planned:
                raise errors.InvalidArgument("archive contains no images")
            out = []
            async with lease(self._client, "import") as lease_id:
                for plan in planned:
                    out.append((await self._import_one(reader, plan, lease_id, pinned), list(plan.names)))
            return out
        finally:
            reader.close()

    # ---- planning (in a thread: tar access is blocking) ----
    def _plan_oci(self, reader: _Reader, name: str | None) -> list[_Planned]:
        index = _read_json(reader, "index.json")
        if not isinstance(index, dict) or not isinstance(index.get("manifests"), list):
            raise errors.InvalidArgument("archive: index.json has no manifests")
        docker_tags = self._docker_tags(reader)
        out: list[_Planned] = []
        by_target: dict[str, _Planned] = {}
        for raw in index["manifests"]:
            target = media.descriptor(raw, "index.json entry")
            names = self._oci_names(target, name)
            if target.digest in by_target:  # one image listed once per tag
                by_target[target.digest].names.extend(n for n in names if n not in by_target[target.digest].names)
                continue
            body = _read_all(reader, blob_path(target.digest))
            if media.sha256(body) != target.digest:
                raise errors.InvalidArgument(f"archive: blob {target.digest} does not match its digest")
            kind = media.media_type_of(body, target.media_type)
            target = Descriptor(kind, target.digest, len(body), target.annotations)
            manifest_desc, manifest_body = target, body
            if kind in media.INDEXES:
                manifest_desc = media.select_platform(media.parse_index(body))
                manifest_body = _read_all(reader, blob_path(manifest_desc.digest))
                if media.sha256(manifest_body) != manifest_desc.digest:
                    raise errors.InvalidArgument(f"archive: blob {manifest_desc.digest} does not match its digest")
            manifest = media.parse_manifest(manifest_body, manifest_desc.media_type)
            if not names:  # no annotations: the RepoTags of a docker save manifest.json, if any
                names = [str(reference.parse(t)) for t in docker_tags.get(manifest.config.digest, [])]
            paths = {d.digest: blob_path(d.digest) for d in (manifest.config, *manifest.layers)}
            plan = _Planned(target, body, manifest_desc, manifest_body, manifest, paths, list(names))
            by_target[target.digest] = plan
            out.append(plan)
        if name and len(out) == 1 and not out[0].names:
            out[0].names.append(str(reference.parse(name)))
        return out

    @staticmethod
    def _docker_tags(reader: _Reader) -> dict[str, list[str]]:
        """config digest -> RepoTags, from a manifest.json next to index.json (docker save since v25)."""
        if not reader.exists("manifest.json"):
            return {}
        out: dict[str, list[str]] = {}
        doc = _read_json(reader, "manifest.json")
        for entry in doc if isinstance(doc, list) else []:
            config = str(entry.get("Config", "")) if isinstance(entry, dict) else ""
            digest = "sha256:" + PurePosixPath(config).name.removesuffix(".json")
            out[digest] = [str(t) for t in entry.get("RepoTags") or []]
        return out

    @staticmethod
    def _oci_names(target: Descriptor, name: str | None) -> list[str]:
        full = target.annotations.get(media.ANNOTATION_IMAGE_NAME, "")
        ref_name = target.annotations.get(media.ANNOTATION_REF_NAME, "")
        if full:
            return [str(reference.parse(full))]
        if ref_name and ("/" in ref_name or ":" in ref_name):
            return [str(reference.parse(ref_name))]
        if ref_name and name:
            return [str(reference.parse(f"{reference.parse(name, default_tag=False).name}:{ref_name}"))]
        return []

    def _plan_docker(self, reader: _Reader, name: str | None) -> list[_Planned]:
        doc = _read_json(reader, "manifest.json")
        if not isinstance(doc, list):
            raise errors.InvalidArgument("archive: manifest.json is not a list")
        out = []
        for entry in doc:
            if not isinstance(entry, dict) or not isinstance(entry.get("Config"), str) \
                    or not isinstance(entry.get("Layers"), list):
                raise errors.InvalidArgument("archive: manifest.json entry without Config or Layers")
            config_body = _read_all(reader, entry["Config"])
            config = Descriptor(media.DOCKER_CONFIG, media.sha256(config_body), len(config_body))
            paths = {config.digest: entry["Config"]}
            layers = []
            for path in entry["Layers"]:
                digest, size, gz = _hash_file(reader, str(path))
                layers.append(Descriptor(media.DOCKER_LAYER_GZIP if gz else media.DOCKER_LAYER, digest, size))
                paths[digest] = str(path)
            body = json.dumps({
                "schemaVersion": 2, "mediaType": media.DOCKER_MANIFEST,
                "config": media.descriptor_json(config),
                "layers": [media.descriptor_json(layer) for layer in layers],
            }, indent=3).encode()
            desc = Descriptor(media.DOCKER_MANIFEST, media.sha256(body), len(body))
            names = [str(reference.parse(t)) for t in entry.get("RepoTags") or []]
            out.append(_Planned(desc, body, desc, body, media.parse_manifest(body), paths, names))
        if name and len(out) == 1 and not out[0].names:
            out[0].names.append(str(reference.parse(name)))
        return out

    # ---- writing ----
    async def _import_one(self, reader: _Reader, plan: _Planned, lease_id: str, pinned: bool) -> str:
        manifest = plan.manifest
        await self._write_blob(reader, plan.paths[manifest.config.digest], manifest.config, {}, lease_id)
        config = media.parse_config(await self._content.read(manifest.config.digest, media.MAX_MANIFEST))
        if len(config.diff_ids) != len(manifest.layers):
            raise errors.InvalidArgument(f"archive: image {manifest.config.digest} has {len(manifest.layers)} "
                                         f"layers but {len(config.diff_ids)} diff IDs")
        chains = chain_ids(config.diff_ids)
        for i, layer in enumerate(manifest.layers):
            await self._write_blob(reader, plan.paths[layer.digest], layer,
                                   {media.LABEL_UNCOMPRESSED: config.diff_ids[i]}, lease_id)
            await self._unpacker.apply_layer(layer, config.diff_ids[i], chains[i - 1] if i else "", chains[i],
                                             lease_id)
        names = plan.names or [manifest.config.digest]  # unnamed: a record named by its ID keeps it
        await commit_image(self._content, self._store, self._unpacker.snapshotter, target=plan.target,
                           target_body=plan.target_body, manifest_desc=plan.manifest_desc,
                           manifest_body=plan.manifest_body, manifest=manifest,
                           top_chain=chains[-1] if chains else "", names=names, lease_id=lease_id,
                           pinned=pinned)
        return manifest.config.digest

    async def _write_blob(self, reader: _Reader, path: str, desc: Descriptor, labels: dict[str, str],
                          lease_id: str) -> None:
        info = await self._content.info(desc.digest)
        if info is not None:
            missing = {k: v for k, v in labels.items() if info.labels.get(k) != v}
            if missing:
                await self._content.update_labels(desc.digest, missing)
            await self._content.add_to_lease(desc.digest, lease_id)
            return
        fobj = await asyncio.to_thread(reader.open, path)
        try:
            await self._content.write(f"narwhal-import-{desc.digest}", desc.digest, desc.size, file_source(fobj),
                                      labels=labels, lease=lease_id)
        finally:
            fobj.close()


def archive_names(source: Path) -> list[str]:
    """Blocking: the names an archive would give its images (index.json annotations, manifest.json
    RepoTags), read without touching the blobs; so a load can keep the images those names leave."""
    reader = _open_reader(source)
    try:
        names: list[str] = []
        if reader.exists("index.json"):
            index = _read_json(reader, "index.json")
            for raw in index.get("manifests") or [] if isinstance(index, dict) else []:
                if isinstance(raw, dict):
                    names += Importer._oci_names(media.descriptor(raw, "index.json entry"), None)
            for tags in Importer._docker_tags(reader).values():
                names += [str(reference.parse(t)) for t in tags]
        elif reader.exists("manifest.json"):
            doc = _read_json(reader, "manifest.json")
            for entry in doc if isinstance(doc, list) else []:
                if isinstance(entry, dict):
                    names += [str(reference.parse(str(t))) for t in entry.get("RepoTags") or []]
        return list(dict.fromkeys(names))
    finally:
        reader.close()


@contextlib.asynccontextmanager
async def spooled(chunks: AsyncIterator[bytes], spool: Path, prefix: str) -> AsyncIterator[Path]:
    """An uploaded archive (docker load, docker import) on disk in ``spool`` (tar members are read by offset
    and archives may be large), removed afterwards."""
    await asyncio.to_thread(spool.mkdir, parents=True, exist_ok=True)
    fd, name = await asyncio.to_thread(tempfile.mkstemp, prefix=prefix, suffix=".tar", dir=spool)
    os.close(fd)
    path = Path(name)
    try:
        await write_stream(chunks, path)
        yield path
    finally:
        await asyncio.to_thread(path.unlink, missing_ok=True)
        await asyncio.to_thread(path.with_suffix(".plain").unlink, missing_ok=True)
