"""stream-unpack's extractor (pkg.images.stream_unpack) without containerd: what it reads, hashes and refuses.
The trees it makes are compared with containerd's Diff.Apply in test/integration/test_images_stream_unpack.py."""
from __future__ import annotations

import asyncio
import gzip
import hashlib
import io
import os
import tarfile
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from pkg.images import layer_apply, media
from pkg.images.model import Descriptor
from pkg.images.stream_unpack import LayerStream, StagingArea, tee


def layer_tar(files: dict[str, bytes]) -> bytes:
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size, info.mode, info.mtime = len(data), 0o640, 1_600_000_000
            info.uid, info.gid = os.getuid(), os.getgid()
            tar.addfile(info, io.BytesIO(data))
    return raw.getvalue()


async def extract(tmp_path: Path, blob: bytes, chunk: int = 7000) -> tuple[LayerStream, object]:
    tmp_path.mkdir(exist_ok=True)
    stream = LayerStream(tmp_path / "staging", overlay=False)
    for i in range(0, len(blob), chunk):
        await stream.feed(blob[i:i + chunk])
    stream.finish()
    return stream, await stream.result()


async def test_gzip_members_and_plain_tar_give_the_uncompressed_digest(tmp_path: Path) -> None:
    def blobs() -> tuple[bytes, list[bytes]]:  # ~0.1 s of CPU: in a thread, not on the loop the guard watches
        # inflated 4 MiB at a time
        raw = layer_tar({"a/b": b"x" * 100_000, "c": os.urandom(50_000), "zeros": bytes(9 << 20)})
        # Two gzip members back to back are one stream (Go's gzip reader is multistream, as containerd reads it).
        half = len(raw) // 2
        return raw, [gzip.compress(raw), gzip.compress(raw[:half]) + gzip.compress(raw[half:]), raw]

    raw, made = await asyncio.to_thread(blobs)
    for i, blob in enumerate(made):
        stream, result = await extract(tmp_path / str(i), blob)
        assert result is not None, i
        assert result.diff_id == "sha256:" + hashlib.sha256(raw).hexdigest()  # type: ignore[attr-defined]
        assert (stream.staging / "a" / "b").read_bytes() == b"x" * 100_000
        assert (stream.staging / "a").stat().st_mode & 0o7777 == 0o755  # implied: 0755, as containerd's mkparent
        await stream.discard()
        assert not stream.staging.exists()


async def test_what_it_does_not_reproduce_is_left_to_diff_apply(tmp_path: Path) -> None:
    raw = layer_tar({"f": b"data" * 1000})
    zstd_like = b"\x28\xb5\x2f\xfd" + raw
    cut = gzip.compress(raw)[:-20]
    trailing = gzip.compress(raw) + b"garbage!"
    for i, blob in enumerate((zstd_like, cut, trailing)):
        stream, result = await extract(tmp_path / str(i), blob)
        assert result is None, i
        await stream.discard()
        assert not stream.staging.exists()


async def test_a_stream_resumed_elsewhere_than_the_extractor_is_abandoned(tmp_path: Path) -> None:
    blob = gzip.compress(layer_tar({"f": os.urandom(100_000)}))
    stream = LayerStream(tmp_path / "staging", overlay=False)

    async def source(offset: int) -> tuple[int, AsyncIterator[bytes]]:
        async def chunks() -> AsyncIterator[bytes]:
            yield blob[offset:offset + 1000]
        return offset, chunks()

    teed = tee(source, stream)
    start, chunks = await teed(0)
    assert [c async for c in chunks] == [blob[:1000]] and stream.fed == 1000
    start, chunks = await teed(500)  # containerd holds fewer bytes than the extractor saw: it cannot follow
    assert start == 500 and [c async for c in chunks] == [blob[500:1500]] and stream.fed == 1000
    assert await stream.result() is None
    await stream.discard()


def test_only_tar_and_gzip_layers_stream(tmp_path: Path) -> None:
    area = StagingArea(tmp_path)
    zstd = Descriptor(media_type=media.OCI_LAYER_ZSTD, digest="sha256:" + "0" * 64, size=1)
    assert area.open(zstd, overlay=False) is None


@pytest.mark.parametrize(("name", "clean"), [("", "."), ("a//b/./c/", "a/b/c"), ("../x", "../x"), ("/../x", "/x"),
                                             ("a/../../b", "../b"), ("//a", "/a")])
def test_names_are_cleaned_as_go_cleans_them(name: str, clean: str) -> None:
    assert layer_apply.go_clean(name) == clean


def test_paths_resolve_under_the_root_through_symlinks(tmp_path: Path) -> None:
    root = tmp_path / "root"
    (root / "d").mkdir(parents=True)
    (root / "up").symlink_to("../../../..")
    (root / "abs").symlink_to("/d")
    assert layer_apply.root_path(str(root), "up/etc") == str(root / "etc")
    assert layer_apply.root_path(str(root), "abs/x") == str(root / "d" / "x")
    assert layer_apply.root_path(str(root), "../../y") == str(root / "y")


def test_nothing_is_written_outside_the_root(tmp_path: Path) -> None:
    """Names with "..", absolute names, symlinks to "/" or out of the root, hard links out of it and a hard link to
    such a symlink: everything lands under the root (containerd scopes these rather than refusing them), and a
    host file named through a link is neither written nor chmod-ed."""
    outside = tmp_path / "outside"
    outside.write_bytes(b"host")
    outside.chmod(0o644)
    root = tmp_path / "root"
    root.mkdir()
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w", format=tarfile.PAX_FORMAT) as tar:
        def add(name: str, kind: bytes, link: str = "", data: bytes = b"", mode: int = 0o600) -> None:
            info = tarfile.TarInfo(name)
            info.type, info.linkname, info.size, info.mode = kind, link, len(data), mode
            info.uid, info.gid = os.getuid(), os.getgid()
            tar.addfile(info, io.BytesIO(data) if data else None)
        add("up", tarfile.SYMTYPE, link="../" * 20 + str(outside.parent).lstrip("/"))
        add("up/outside", tarfile.REGTYPE, data=b"pwned")
        add("slash", tarfile.SYMTYPE, link="/")
        add(f"slash{outside}", tarfile.REGTYPE, data=b"pwned")
        add(f"../../..{outside}", tarfile.REGTYPE, data=b"pwned")
        add("abs", tarfile.SYMTYPE, link=str(outside))
        add("abs-hard", tarfile.LNKTYPE, link="abs", mode=0o600)
    layer_apply.LayerApplier(str(root), overlay=False).apply(io.BytesIO(raw.getvalue()))
    assert outside.read_bytes() == b"host" and outside.stat().st_mode & 0o777 == 0o644
    inside = root / str(outside).lstrip("/")
    assert inside.read_bytes() == b"pwned"
    assert (root / "up").readlink() == Path("../" * 20 + str(outside.parent).lstrip("/"))
    assert os.lstat(root / "abs-hard").st_ino == os.lstat(root / "abs").st_ino
    hard_out = io.BytesIO()
    with tarfile.open(fileobj=hard_out, mode="w", format=tarfile.PAX_FORMAT) as tar:
        info = tarfile.TarInfo("hl")
        info.type, info.linkname = tarfile.LNKTYPE, "../" * 20 + str(outside).lstrip("/")
        tar.addfile(info)
    with pytest.raises(FileNotFoundError):  # resolved under the root, where it is not: Diff.Apply fails it too
        layer_apply.LayerApplier(str(tmp_path / "root2"), overlay=False).apply(io.BytesIO(hard_out.getvalue()))


def test_archives_go_s_reader_refuses_are_refused(tmp_path: Path) -> None:
    """tarfile takes a corrupt header after the first member, or a zero block followed by data, for the end of
    the archive; Go's archive/tar (containerd's Diff.Apply) fails them, so the applier must not succeed."""
    good = layer_tar({"a": b"1" * 600, "b": b"2"})
    corrupt = bytearray(good)
    header_end = 512 + 1024  # a's header and its 600 bytes in blocks: where b's header starts
    corrupt[header_end + 148] ^= 0xFF  # b's header checksum
    zero_then_data = good[:header_end] + bytes(512) + b"x" * 512
    cut_marker = good[:header_end] + bytes(512) + bytes(100)
    for i, data in enumerate((bytes(corrupt), zero_then_data, cut_marker)):
        root = tmp_path / str(i)
        root.mkdir()
        with pytest.raises(ValueError):
            layer_apply.LayerApplier(str(root), overlay=False).apply(io.BytesIO(data))
    # A single zero block, or two, then the end: both fine, as in Go.
    for i, data in enumerate((good[:header_end] + bytes(512), good[:header_end] + bytes(1024) + b"trailing")):
        root = tmp_path / f"ok{i}"
        root.mkdir()
        layer_apply.LayerApplier(str(root), overlay=False).apply(io.BytesIO(data))
        assert (root / "a").read_bytes() == b"1" * 600
