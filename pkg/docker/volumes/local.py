"""The ``local`` volume driver: a directory per volume, optionally a filesystem mounted on it (moby's volume/local).

Layout under the domain root: ``volumes/<name>/_data`` (what containers
mount) and ``volumes/<name>/volume.json`` (labels, options, creation time and
the containers using it), so a restart keeps both.  Everything here does
blocking file I/O: callers run it in a thread.
"""
from __future__ import annotations

import contextlib
import datetime
import json
import os
import re
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pkg import errors, mount
from pkg.docker.volumes.model import LOCAL_DRIVER, Volume

DATA_DIR = "_data"
RECORD = "volume.json"
_NAME = re.compile(r"^[a-zA-Z0-9][a-zA-Z0-9_.-]*\Z")
_VALID_OPTIONS = ("type", "device", "o", "size")
# An option that needs others (moby's mandatoryOpts).
_REQUIRES = {"device": ("type",), "type": ("device",), "o": ("device", "type")}
# mount(8) words of "o" that are mount flags rather than filesystem data.
_FLAGS = {
    "ro": mount.MS_RDONLY, "nosuid": mount.MS_NOSUID, "nodev": mount.MS_NODEV, "noexec": mount.MS_NOEXEC,
    "bind": mount.MS_BIND, "rbind": mount.MS_BIND | mount.MS_REC,
}
_IGNORED = ("rw", "suid", "dev", "exec", "defaults")


@dataclass
class Record:
    """A volume's persisted state: its metadata plus who uses it (container ID -> used anonymously)."""

    volume: Volume
    refs: dict[str, bool] = field(default_factory=dict)


def validate_name(name: str) -> None:
    if len(name) == 1:
        raise errors.InvalidArgument("volume name is too short, names should be at least two alphanumeric characters")
    if not _NAME.match(name):
        raise errors.InvalidArgument(
            f'create {name}: "{name}" includes invalid characters for a local volume name, only '
            '"[a-zA-Z0-9][a-zA-Z0-9_.-]" are allowed. If you intended to pass a host directory, use absolute path')


def validate_options(options: dict[str, str]) -> None:
    for key in options:
        if key not in _VALID_OPTIONS:
            raise errors.InvalidArgument(f'invalid option: "{key}"')
    if options.get("size"):
        raise errors.InvalidArgument("quota size requested but no quota support")
    for key, needed in _REQUIRES.items():
        if key in options:
            for other in needed:
                if other not in options:
                    raise errors.InvalidArgument(f'missing required option: "{other}"')


def needs_mount(volume: Volume) -> bool:
    return bool(volume.options.get("type") or volume.options.get("device"))


class LocalDriver:
    def __init__(self, root: Path) -> None:
        self.root = root  # <domain root>/volumes

    def data_path(self, name: str) -> Path:
        return self.root / name / DATA_DIR

    def create(self, name: str, labels: dict[str, str], options: dict[str, str]) -> Record:
        """Make the volume's dirs and record (the record last, so a crash leaves at worst a bare dir)."""
        data = self.data_path(name)
        data.mkdir(parents=True, exist_ok=True, mode=0o755)
        now = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        record = Record(Volume(name=name, mountpoint=str(data), created_at=now, driver=LOCAL_DRIVER,
                               labels=dict(labels), options=dict(options)))
        self.save(record)
        return record

    def save(self, record: Record) -> None:
        v = record.volume
        body = {"name": v.name, "created_at": v.created_at, "labels": v.labels, "options": v.options,
                "refs": record.refs}
        path = self.root / v.name / RECORD
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(body))
        os.replace(tmp, path)

    def load_all(self) -> dict[str, Record]:
        """Every volume on disk; a dir without a readable record (a create cut short) is adopted as a plain one."""
        self.root.mkdir(parents=True, exist_ok=True, mode=0o700)
        found: dict[str, Record] = {}
        for entry in sorted(self.root.iterdir()):
            if not entry.is_dir() or not _NAME.match(entry.name):
                continue
            found[entry.name] = self._load(entry)
        return found

    def _load(self, path: Path) -> Record:
        name = path.name
        body: dict[str, Any] = {}
        with contextlib.suppress(OSError, ValueError):
            body = json.loads((path / RECORD).read_text())
        created = body.get("created_at") or datetime.datetime.fromtimestamp(
            path.stat().st_ctime, datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        self.data_path(name).mkdir(exist_ok=True, mode=0o755)
        volume = Volume(name=name, mountpoint=str(self.data_path(name)), created_at=str(created),
                        labels={str(k): str(v) for k, v in (body.get("labels") or {}).items()},
                        options={str(k): str(v) for k, v in (body.get("options") or {}).items()})
        refs = {str(k): bool(v) for k, v in (body.get("refs") or {}).items()}
        return Record(volume, refs)

    def remove(self, name: str) -> None:
        """Unmount (if a filesystem is mounted on it) and delete the volume's dir; a missing one is fine."""
        data = self.data_path(name)
        mount.umount(data)
        if mount.is_mounted(data):
            raise errors.Internal(f"remove {name}: {data} is still mounted")
        shutil.rmtree(self.root / name, ignore_errors=True)
        if (self.root / name).exists():
            raise errors.Internal(f"remove {name}: could not delete {self.root / name}")

    def mount(self, volume: Volume) -> None:
        """Mount the volume's filesystem (type/device/o) on its data dir unless already mounted."""
        data = Path(volume.mountpoint)
        if not needs_mount(volume) or mount.is_mounted(data):
            return
        opts = volume.options
        flags, data_opts = 0, []
        for word in (w for w in opts.get("o", "").split(",") if w):
            if word in _FLAGS:
                flags |= _FLAGS[word]
            elif word not in _IGNORED:
                data_opts.append(word)
        fstype = opts.get("type", "")
        if fstype == "none":
            fstype = ""
        try:
            mount.mount(opts.get("device", ""), data, fstype, flags, ",".join(data_opts))
        except errors.Internal as exc:
            raise errors.Internal(f"error while mounting volume '{data}': failed to mount local volume: "
                                  f"{exc.message}") from None

    def unmount(self, volume: Volume) -> None:
        if needs_mount(volume):
            mount.umount(Path(volume.mountpoint))

    def size(self, volume: Volume) -> int:
        """Bytes of the files under the data dir (hard links once); -1 for mounted filesystems."""
        if needs_mount(volume):
            return -1
        total, seen = 0, set()
        for dirpath, _dirs, files in os.walk(volume.mountpoint):
            for name in files:
                try:
                    st = os.lstat(os.path.join(dirpath, name))
                except OSError:
                    continue
                if (st.st_dev, st.st_ino) in seen:
                    continue
                seen.add((st.st_dev, st.st_ino))
                total += st.st_size
        return total
