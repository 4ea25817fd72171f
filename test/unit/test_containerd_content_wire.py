"""Content.Write requests encoded around their data parse as the WriteContentRequest containerd expects."""
from __future__ import annotations

import pytest

from pkg.containerd import content_wire
from pkg.containerd.api.services.content.v1 import content_pb2


@pytest.mark.parametrize("sizes", [[], [1], [127], [128], [5, 300, 16383, 16384], [4 << 20]])
def test_write_request_round_trips(sizes: list[int]) -> None:
    parts = [bytes([i % 251]) * n for i, n in enumerate(sizes)]
    raw = content_wire.write_request(content_wire.COMMIT, parts=parts, ref="narwhal-pull-sha256:ab", total=1 << 40,
                                     expected="sha256:ab", offset=(1 << 33) + 7, labels={"k": "v", "x": ""})
    req = content_pb2.WriteContentRequest.FromString(raw)
    assert req.data == b"".join(parts)
    assert (req.action, req.ref, req.total, req.expected, req.offset) == (
        content_pb2.COMMIT, "narwhal-pull-sha256:ab", 1 << 40, "sha256:ab", (1 << 33) + 7)
    assert dict(req.labels) == {"k": "v", "x": ""}
    # Byte for byte what protobuf itself would send (fields in the same order: data is field 6, labels 7, but a
    # parser takes any order, so only the parse is the contract; the size must match exactly).
    assert len(raw) == content_pb2.WriteContentRequest(
        action=content_pb2.COMMIT, ref=req.ref, total=req.total, expected=req.expected, offset=req.offset,
        data=req.data, labels=req.labels).ByteSize()


def test_a_stat_carries_no_data_field() -> None:
    raw = content_wire.write_request(content_wire.STAT, ref="r", total=3, expected="sha256:x")
    assert raw == content_pb2.WriteContentRequest(action=content_pb2.STAT, ref="r", total=3,
                                                  expected="sha256:x").SerializeToString()
