"""stream-unpack (pkg.images.stream_unpack): layers applied by narwhald while they stream in make the same trees
as containerd's Diff.Apply, entry by entry, on layers holding every case containerd's applier handles."""
from __future__ import annotations

import hashlib
import io
import json
import os
import stat
import struct
import tarfile
import threading
import time
from pathlib import Path
from typing import Any

import mkimage
from cri_api.v1 import api_pb2
from lib import images
from lib.daemon import DaemonProcess, containerd_calls
from lib.leaks import leftovers
from lib.registry import Registry
from lib.slowproxy import SlowProxy
from lib.wait import wait_for

MTIME = 1_600_000_000
# A file capability (vfs_cap_data revision 2, effective): cap_net_bind_service permitted.
CAP_NET_BIND_SERVICE = struct.pack("<5I", 0x02000001, 1 << 10, 0, 0, 0)
LONG = "l" * 120 + "/" + "o" * 140  # beyond ustar's 100-byte name: a PAX path


class Layer:
    """A layer tar written entry by entry, in the order given (no implied parents added)."""

    def __init__(self) -> None:
        self.raw = io.BytesIO()
        self.tar = tarfile.open(fileobj=self.raw, mode="w", format=tarfile.PAX_FORMAT)

    def add(self, name: str, kind: bytes = tarfile.REGTYPE, *, mode: int = 0o644, data: bytes = b"",
            uid: int = 0, gid: int = 0, link: str = "", dev: tuple[int, int] = (0, 0),
            pax: dict[str, str] | None = None) -> None:
        info = tarfile.TarInfo(name)
        info.type, info.mode, info.uid, info.gid, info.mtime = kind, mode, uid, gid, MTIME
        info.linkname = link
        info.devmajor, info.devminor = dev
        info.size = len(data) if kind == tarfile.REGTYPE else 0
        info.pax_headers = dict(pax or {})
        self.tar.addfile(info, io.BytesIO(data) if kind == tarfile.REGTYPE else None)

    def blob(self, media_type: str, compress: bool) -> tuple[mkimage.Blob, str]:
        self.tar.close()
        raw = self.raw.getvalue()
        import gzip
        data = gzip.compress(raw, mtime=0) if compress else raw
        return mkimage.Blob(media_type, data), mkimage.sha256(raw)


def base_layer() -> Layer:
    """The first layer (a bind mount: whiteouts remove what they name)."""
    layer = Layer()
    layer.add("etc/", tarfile.DIRTYPE, mode=0o755)
    layer.add("etc/passwd", data=b"root:x:0:0::/:/bin/sh\n", pax={"mtime": "1600000000.123456789",
                                                               "atime": "1700000000.5"})
    layer.add("usr/", tarfile.DIRTYPE, mode=0o755)
    layer.add("usr/bin/", tarfile.DIRTYPE, mode=0o755)
    layer.add("usr/bin/suid", data=b"#!suid\n", mode=0o4755)
    layer.add("usr/bin/sgid", data=b"#!sgid\n", mode=0o2711)
    layer.add("usr/bin/hard", tarfile.LNKTYPE, link="usr/bin/suid", mode=0o4755)
    layer.add("bin", tarfile.SYMTYPE, link="usr/bin", mode=0o777)
    layer.add("abs", tarfile.SYMTYPE, link="/etc/passwd", mode=0o777)
    layer.add("abs-hard", tarfile.LNKTYPE, link="abs", mode=0o600)  # a hard link to a symlink: no chmod through it
    layer.add("tmp/", tarfile.DIRTYPE, mode=0o1777)
    layer.add("data/", tarfile.DIRTYPE, mode=0o700, uid=1000, gid=1001,
              pax={"SCHILY.xattr.user.dir": "kept", "mtime": "1600000001.5"})
    layer.add("data/file", data=b"owned\n", uid=1000, gid=1001, mode=0o640,
              pax={"SCHILY.xattr.user.k": "v", "SCHILY.xattr.security.capability":
                   CAP_NET_BIND_SERVICE.decode("utf-8", "surrogateescape"),
                   "SCHILY.xattr.trusted.refused": "x"})
    layer.add("dev/", tarfile.DIRTYPE, mode=0o755)
    layer.add("dev/null", tarfile.CHRTYPE, mode=0o666, dev=(1, 3))
    layer.add("dev/loop9", tarfile.BLKTYPE, mode=0o660, dev=(7, 9), gid=6)
    layer.add("dev/fifo", tarfile.FIFOTYPE, mode=0o600)
    layer.add(LONG, data=b"long name\n")
    layer.add("gone", data=b"removed by its whiteout\n")
    layer.add(".wh.gone")
    layer.add("opq/", tarfile.DIRTYPE)
    layer.add("opq/kept", data=b"unpacked by this layer: an opaque marker keeps it\n")
    layer.add("opq/.wh..wh..opq")
    layer.add("swap/", tarfile.DIRTYPE)
    layer.add("swap/child", data=b"goes with its dir\n")
    layer.add("swap", data=b"a file replacing a dir of the same layer\n")
    layer.add("implied/deep/file", data=b"parents without entries\n")
    layer.add("../escape", data=b"scoped under the root\n")
    layer.add("/absolute", data=b"scoped under the root\n")
    layer.add("via/", tarfile.DIRTYPE)
    layer.add("via/out", tarfile.SYMTYPE, link="../../../../outside", mode=0o777)
    layer.add("via/out/pwn", data=b"through a symlink: still under the root\n")
    layer.add("big", data=os.urandom(3 << 20), mode=0o600)
    layer.add("late/", tarfile.DIRTYPE, mode=0o750, pax={"mtime": "1500000000"})
    return layer


def upper_layer() -> Layer:
    """A later layer (an overlay: whiteouts become 0:0 character devices, opaque markers an xattr)."""
    layer = Layer()
    layer.add("etc/.wh.passwd", uid=0, gid=0)
    layer.add("opq/.wh..wh..opq")
    layer.add("opq/new", data=b"new in an opaque dir\n")
    layer.add("data/sub/new", data=b"parents copied up from the layer below\n")
    layer.add("usr/lib/.wh..wh..opq")  # an implied dir with only a marker, new: 0755 root
    layer.add("dev/.wh..wh..opq")  # an implied dir with only a marker, copied up: keeps the lower's mtime too
    layer.add("tmp", data=b"a file over a dir of the layer below\n")
    layer.add("usr/bin/again", data=b"linked twice\n", mode=0o755)
    layer.add("usr/bin/again2", tarfile.LNKTYPE, link="usr/bin/again")
    layer.add("late/", tarfile.DIRTYPE, mode=0o700, uid=5, gid=5)
    return layer


def top_layer() -> Layer:
    layer = Layer()
    layer.add(".wh..wh..opq")  # the root of the snapshot made opaque
    layer.add("only", data=b"all that is left\n")
    return layer


def build(kind: str) -> mkimage.Image:
    docker = kind.startswith("v2s2")
    compress = kind.endswith("gzip")
    if docker:
        media_type = mkimage.DOCKER_LAYER_GZIP if compress else mkimage.DOCKER_LAYER
    else:
        media_type = mkimage.OCI_LAYER_GZIP if compress else mkimage.OCI_LAYER
    layers, diff_ids = [], []
    for layer in (base_layer(), upper_layer(), top_layer()):
        layer.add(f"kind-{kind}", data=kind.encode())  # no blob shared between kinds: each one is streamed
        blob, diff_id = layer.blob(media_type, compress)
        layers.append(blob)
        diff_ids.append(diff_id)
    config = {"architecture": "amd64", "os": "linux", "config": {"Labels": {"kind": kind}},
              "rootfs": {"type": "layers", "diff_ids": diff_ids}}
    config_blob = mkimage.Blob(mkimage.DOCKER_CONFIG if docker else mkimage.OCI_CONFIG, json.dumps(config).encode())
    manifest = {"schemaVersion": 2, "mediaType": mkimage.DOCKER_MANIFEST if docker else mkimage.OCI_MANIFEST,
                "config": config_blob.descriptor(), "layers": [b.descriptor() for b in layers]}
    manifest_blob = mkimage.Blob(manifest["mediaType"], json.dumps(manifest).encode())
    return mkimage.Image(config_blob, layers, manifest_blob, diff_ids)


def layer_dirs(daemon: DaemonProcess, top_chain: str) -> list[Path]:
    """Every layer's snapshot dir, bottom first (the overlay lowerdirs of a view on the top layer; the view goes
    with ctr's lease)."""
    out = images.ctr(daemon, "snapshots", "--snapshotter", "overlayfs", "view", "--mounts",
                     f"cmp-{top_chain[7:19]}", top_chain)
    [mount] = json.loads(out)
    [lower] = [o for o in mount["Options"] if o.startswith("lowerdir=")]
    return [Path(p) for p in reversed(lower.removeprefix("lowerdir=").split(":"))]


def tree(root: Path, since_ns: int) -> dict[str, dict[str, Any]]:
    """Every entry under ``root``: what containerd's applier decides.  Metadata first (reading a file moves its
    atime), then contents.  A directory's mtime made during the test ("now": entries were created in it after
    its attributes were set, on both sides; a whiteout's device) is compared as "recent"."""
    entries: dict[str, dict[str, Any]] = {}
    inodes: dict[int, list[str]] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in [*dirnames, *filenames]:
            path = os.path.join(dirpath, name)
            st = os.lstat(path)
            rel = os.path.relpath(path, root)
            recent = st.st_mtime_ns >= since_ns  # made now, as containerd leaves it (a whiteout device, ...)
            entries[rel] = {
                "mode": oct(st.st_mode), "uid": st.st_uid, "gid": st.st_gid, "nlink": st.st_nlink,
                "size": st.st_size if not stat.S_ISDIR(st.st_mode) else None,
                "rdev": st.st_rdev if stat.S_ISCHR(st.st_mode) or stat.S_ISBLK(st.st_mode) else None,
                "mtime": "recent" if recent else st.st_mtime_ns,
                # containerd's commit walks the tree for its usage: a directory's atime is that walk's (relatime)
                "atime": "recent" if st.st_atime_ns >= since_ns else st.st_atime_ns,
                "xattrs": {k: os.getxattr(path, k, follow_symlinks=False)
                           for k in sorted(os.listxattr(path, follow_symlinks=False))},
            }
            inodes.setdefault(st.st_ino, []).append(rel)
    for rel, entry in entries.items():
        path = root / rel
        mode = int(entry["mode"], 8)
        if stat.S_ISLNK(mode):
            entry["target"] = os.readlink(path)
        elif stat.S_ISREG(mode):
            entry["sha256"] = hashlib.sha256(path.read_bytes()).hexdigest()
    for group in inodes.values():
        for rel in group:
            entries[rel]["links"] = sorted(group)
    opaque = os.getxattr(root, "trusted.overlay.opaque") if "trusted.overlay.opaque" in os.listxattr(root) else None
    entries["."] = {"opaque": opaque}
    return entries




KINDS = ("oci-gzip", "v2s2-gzip", "v2s2-tar")


def test_streamed_layers_match_diff_apply_entry_by_entry(daemon_factory: Any, registry: Registry) -> None:
    """Each kind pulled by a narwhald with stream-unpack and one without: the same trees, layer by layer."""
    since = time.time_ns()
    built = {kind: build(kind) for kind in KINDS}
    for kind, image in built.items():
        images.push_built(registry.host, "stream/cases", kind, image)
    streamed = daemon_factory(extra_args=["--stream-unpack", "true"])
    applied = daemon_factory(extra_args=["--stream-unpack", "false"])
    for kind, image in built.items():
        ref = f"{registry.host}/stream/cases:{kind}"
        trees = []
        for daemon in (streamed, applied):
            daemon.images().PullImage(api_pb2.PullImageRequest(image=api_pb2.ImageSpec(image=ref)), timeout=120)
            dirs = layer_dirs(daemon, images.chain_ids(image.diff_ids)[-1])
            assert len(dirs) == 3
            trees.append([tree(d, since) for d in dirs])
        for i, (ours, theirs) in enumerate(zip(*trees, strict=True)):
            assert ours.keys() == theirs.keys(), f"{kind}, layer {i}"
            for rel in ours:
                assert ours[rel] == theirs[rel], f"{kind}, layer {i}: {rel}"
        # The cases are in the trees (a comparison of two empty trees proves nothing).
        base, upper, top = trees[1]
        assert "gone" not in base and "swap/child" not in base and base["swap"]["sha256"]
        assert base["opq/kept"] and base["usr/bin/hard"]["links"] == ["usr/bin/hard", "usr/bin/suid"]
        assert int(base["usr/bin/suid"]["mode"], 8) & 0o7777 == 0o4755 and base["escape"] and base["absolute"]
        assert base["data/file"]["xattrs"]["user.k"] == b"v" and "outside/pwn" in base
        assert base["data/file"]["xattrs"]["security.capability"] == CAP_NET_BIND_SERVICE
        assert base["abs-hard"]["links"] == ["abs", "abs-hard"] and base["abs-hard"]["target"] == "/etc/passwd"
        assert upper["etc/passwd"]["rdev"] == 0 and stat.S_ISCHR(int(upper["etc/passwd"]["mode"], 8))
        assert upper["opq"]["xattrs"]["trusted.overlay.opaque"] == b"y"
        assert upper["dev"]["mtime"] == base["dev"]["mtime"] != "recent" and upper["dev"]["mode"] == base["dev"]["mode"]
        assert upper["data"]["uid"] == 1000 and upper["data"]["xattrs"] == {"user.dir": b"kept"}
        assert top["."] == {"opaque": b"y"}
    # The streamed daemon applied every layer itself; the other had containerd do it.
    assert containerd_calls(streamed).get("Diff/Apply", 0) == 0
    assert containerd_calls(applied).get("Diff/Apply", 0) == 3 * len(KINDS)
    for daemon in (streamed, applied):
        assert not list((daemon.root / "containerd" / "narwhal-unpack").glob("*/*"))
        assert leftovers(daemon) == {}


def test_cancel_and_kill9_mid_stream_unpack(daemon_factory: Any, registry: Registry) -> None:
    """A cancelled pull removes its staging dirs.  narwhald killed while layers are being extracted into
    staging dirs: they stay on disk until the next narwhald starts, which removes them before any pull; the
    retry then applies every layer (streamed or, for a layer whose blob resumes mid-way, through Diff.Apply),
    and nothing is left."""
    built = mkimage.build("pause", filler_layers=2, filler_mb=8)
    images.push_built(registry.host, "stream/slow", "latest", built)
    daemon = daemon_factory(extra_args=["--stream-unpack", "true"])
    staging = daemon.root / "containerd" / "narwhal-unpack" / "narwhal"
    proxy = SlowProxy(("127.0.0.1", registry.port), bytes_per_second=2 << 20).start()
    try:
        # A pull its client gives up on removes its staging dirs (the partial blob stays for a retry).
        other = mkimage.build("pause", filler_layers=1, filler_mb=6)  # no blob shared with the image below
        images.push_built(registry.host, "stream/cancelled", "latest", other)
        cancelled = daemon.images().PullImage.future(api_pb2.PullImageRequest(
            image=api_pb2.ImageSpec(image=f"{proxy.host}/stream/cancelled")), timeout=120)
        wait_for(lambda: any(staging.glob("*/filler/*.bin")), 60, "the filler layer being extracted")
        cancelled.cancel()
        wait_for(lambda: not list(staging.iterdir()), 30, "the cancelled pull's staging dirs removed")

        ref = f"{proxy.host}/stream/slow"
        failed: list[BaseException] = []

        def background() -> None:
            try:
                daemon.images().PullImage(api_pb2.PullImageRequest(image=api_pb2.ImageSpec(image=ref)), timeout=120)
            except BaseException as exc:  # the kill cuts it
                failed.append(exc)

        thread = threading.Thread(target=background, daemon=True)
        thread.start()
        wait_for(lambda: any(staging.glob("*/filler/*.bin")), 60, "a filler layer being extracted")
        daemon.kill9()
        thread.join(30)
        assert failed and list(staging.iterdir()), "the killed pull's staging dirs should still be there"

        daemon.start()
        assert not list(staging.iterdir())
        proxy.bytes_per_second = 64 << 20
        daemon.images().PullImage(api_pb2.PullImageRequest(image=api_pb2.ImageSpec(image=ref)), timeout=120)
        assert set(images.chain_ids(built.diff_ids)) <= images.snapshots(daemon)
        assert not list(staging.iterdir())
        assert images.leases(daemon) == set()
        assert leftovers(daemon) == {}
    finally:
        proxy.stop()
