"""Content.Write requests encoded by hand around their data, for the bulk channel (client.Client.content_write).

A blob's bytes are most of a pull's traffic.  Built as a ``WriteContentRequest`` they would be copied into
the message and again by its serialisation; here every field but ``data`` is serialised by protobuf (a few
bytes) and the data field's tag and length are prepended by hand, so the message is one ``b"".join`` of
what the registry sent.  Protobuf parsers accept fields in any order, so containerd reads the same request.
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence

from pkg.containerd.api.services.content.v1 import content_pb2

STAT = content_pb2.STAT
WRITE = content_pb2.WRITE
COMMIT = content_pb2.COMMIT
_DATA_TAG = b"\x32"  # field 6 (data), wire type 2 (length-delimited)


def varint(value: int) -> bytes:
    """A protobuf base-128 varint (also pkg.containerd.ttrpc's)."""
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        if value:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def write_request(action: content_pb2.WriteAction, *, parts: Sequence[bytes] = (), ref: str = "", total: int = 0,
                  expected: str = "", offset: int = 0, labels: Mapping[str, str] | None = None) -> bytes:
    """One serialised WriteContentRequest whose data is ``parts`` joined (copied once, here)."""
    head = content_pb2.WriteContentRequest(action=action, ref=ref, total=total, expected=expected, offset=offset,
                                           labels=labels or {}).SerializeToString()
    size = sum(len(p) for p in parts)
    if not size:
        return head
    return b"".join((head, _DATA_TAG, varint(size), *parts))


def decode_response(data: bytes) -> content_pb2.WriteContentResponse:
    return content_pb2.WriteContentResponse.FromString(data)
