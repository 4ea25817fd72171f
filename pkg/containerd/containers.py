"""containerd container records: the persisted truth for sandboxes and containers.

Narwhal stores each object's immutable metadata as a JSON extension on a
containerd container (``narwhal.io/metadata``) and labels it with its kind, so
recovery after a restart needs nothing but containerd.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from google.protobuf import any_pb2, field_mask_pb2

from pkg import errors
from pkg.containerd.api.runtime.v2.runc.options import oci_pb2
from pkg.containerd.api.services.containers.v1 import containers_pb2 as pb
from pkg.containerd.client import Client
from pkg.containerd.errors import translate

SPEC_TYPE_URL = "types.containerd.io/opencontainers/runtime-spec/1/Spec"
METADATA_EXTENSION = "narwhal.io/metadata"
METADATA_TYPE_URL = "narwhal.io/metadata/v1"
KIND_LABEL = "io.narwhal.kind"
RUNC_V2 = "io.containerd.runc.v2"


@dataclass(frozen=True)
class Record:
    id: str
    labels: dict[str, str]
    image: str
    snapshot_key: str
    spec: dict[str, Any]
    metadata: dict[str, Any]
    snapshotter: str = ""
    runtime: str = ""  # the shim, e.g. io.containerd.runc.v2
    runtime_options: dict[str, Any] = field(default_factory=dict)  # runc's options, as containerd prints them


def _any_json(type_url: str, value: Any) -> any_pb2.Any:
    return any_pb2.Any(type_url=type_url, value=json.dumps(value, separators=(",", ":")).encode())


def runc_options(root: str, binary: str = "") -> any_pb2.Any:
    """runc v2 shim options: this instance's runc state dir, and the runtime binary ("" = runc)."""
    options = oci_pb2.Options(root=root, binary_name=binary)
    return any_pb2.Any(type_url="containerd.runc.v1.Options", value=options.SerializeToString())


def _record(c: pb.Container) -> Record:
    meta: dict[str, Any] = {}
    ext = c.extensions.get(METADATA_EXTENSION)
    if ext is not None and ext.value:
        meta = json.loads(ext.value)
    spec = json.loads(c.spec.value) if c.spec.value else {}
    options: dict[str, Any] = {}
    if c.runtime.options.type_url == "containerd.runc.v1.Options":
        runc = oci_pb2.Options.FromString(c.runtime.options.value)
        options = {k: v for k, v in (("binary_name", runc.binary_name), ("root", runc.root)) if v}
    return Record(c.id, dict(c.labels), c.image, c.snapshot_key, spec, meta, snapshotter=c.snapshotter,
                  runtime=c.runtime.name, runtime_options=options)


async def create(
    client: Client,
    id_: str,
    *,
    spec: dict[str, Any],
    metadata: dict[str, Any],
    labels: dict[str, str],
    runc_root: str,
    runc_binary: str = "",
    image: str = "",
    snapshot_key: str = "",
    snapshotter: str = "overlayfs",
) -> None:
    container = pb.Container(
        id=id_,
        labels=labels,
        image=image,
        runtime=pb.Container.Runtime(name=RUNC_V2, options=runc_options(runc_root, runc_binary)),
        spec=_any_json(SPEC_TYPE_URL, spec),
        snapshotter=snapshotter if snapshot_key else "",
        snapshot_key=snapshot_key,
    )
    container.extensions[METADATA_EXTENSION].CopyFrom(_any_json(METADATA_TYPE_URL, metadata))
    with translate(f"create containerd container {id_}"):
        await client.containers.Create(pb.CreateContainerRequest(container=container), timeout=30)


async def update_spec(client: Client, id_: str, spec: dict[str, Any]) -> None:
    container = pb.Container(id=id_, spec=_any_json(SPEC_TYPE_URL, spec))
    with translate(f"update containerd container {id_}"):
        await client.containers.Update(
            pb.UpdateContainerRequest(container=container, update_mask=field_mask_pb2.FieldMask(paths=["spec"])),
            timeout=30,
        )


async def get(client: Client, id_: str) -> Record:
    with translate(f"containerd container {id_}"):
        resp = await client.containers.Get(pb.GetContainerRequest(id=id_), timeout=30)
    return _record(resp.container)


async def list_kind(client: Client, kind: str) -> list[Record]:
    with translate("list containerd containers"):
        resp = await client.containers.List(
            pb.ListContainersRequest(filters=[f'labels."{KIND_LABEL}"=={kind}']), timeout=60
        )
    return [_record(c) for c in resp.containers]


async def delete(client: Client, id_: str) -> None:
    """Idempotent: a missing record is success."""
    try:
        with translate(f"delete containerd container {id_}"):
            await client.containers.Delete(pb.DeleteContainerRequest(id=id_), timeout=30)
    except errors.NotFound:
        pass


async def spec_bytes(client: Client, id_: str, *, what: str) -> bytes:
    """The container's OCI spec as stored (JSON bytes; the caller decides what an invalid one means)."""
    with translate(what):
        resp = await client.containers.Get(pb.GetContainerRequest(id=id_))
    return bytes(resp.container.spec.value)
