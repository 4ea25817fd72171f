"""Hypothesis strategies for CRI requests, built from the protobuf descriptors, and a runner that sends them
to every RPC of RuntimeService and ImageService (issue 15).

Requests are hostile on purpose: random and special strings (paths that climb, newlines, NUL, 5000
characters), integers at and past their limits, unknown enum values, fields left unset, nested messages
a few levels deep.  Pass criteria: no UNKNOWN or INTERNAL status (an unexpected exception in narwhald),
no hang past the call deadline, and narwhald alive.
"""
from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import grpc
from cri_api.v1 import api_pb2, api_pb2_grpc
from google.protobuf.descriptor import Descriptor, FieldDescriptor
from google.protobuf.message import Message
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

# Server-streaming RPCs never end by themselves: fuzzed separately (open, cancel).
STREAMING = {"GetContainerEvents"}
BAD_CODES = {grpc.StatusCode.UNKNOWN, grpc.StatusCode.INTERNAL}
_SPECIAL_STRINGS = ["", "..", "../../../../etc/passwd", "/etc/shadow", "a\n", "a\x00b", "x" * 5000, "-rf",
                    "busybox", "docker.io/library/busybox:latest", "sha256:" + "0" * 64, "localhost/x",
                    "runtime/default", "unconfined", "%s%n", "\u202e", "€"]
_TEXT = st.text(alphabet=st.characters(blacklist_categories=("Cs",)), max_size=40)


def _int_strategy(bits: int, signed: bool) -> st.SearchStrategy[int]:
    lo, hi = (-(1 << (bits - 1)), (1 << (bits - 1)) - 1) if signed else (0, (1 << bits) - 1)
    edges = [lo, hi, 0, 1, -1 if signed else 2, hi // 2]
    return st.one_of(st.sampled_from(edges), st.integers(lo, hi))


_SCALARS: dict[int, st.SearchStrategy[Any]] = {
    FieldDescriptor.TYPE_INT32: _int_strategy(32, True), FieldDescriptor.TYPE_SINT32: _int_strategy(32, True),
    FieldDescriptor.TYPE_SFIXED32: _int_strategy(32, True), FieldDescriptor.TYPE_INT64: _int_strategy(64, True),
    FieldDescriptor.TYPE_SINT64: _int_strategy(64, True), FieldDescriptor.TYPE_SFIXED64: _int_strategy(64, True),
    FieldDescriptor.TYPE_UINT32: _int_strategy(32, False), FieldDescriptor.TYPE_FIXED32: _int_strategy(32, False),
    FieldDescriptor.TYPE_UINT64: _int_strategy(64, False), FieldDescriptor.TYPE_FIXED64: _int_strategy(64, False),
    FieldDescriptor.TYPE_BOOL: st.booleans(),
    FieldDescriptor.TYPE_DOUBLE: st.floats(), FieldDescriptor.TYPE_FLOAT: st.floats(width=32),
    FieldDescriptor.TYPE_STRING: st.one_of(st.sampled_from(_SPECIAL_STRINGS), _TEXT),
    FieldDescriptor.TYPE_BYTES: st.binary(max_size=64),
    FieldDescriptor.TYPE_ENUM: st.integers(-3, 40),  # unknown values included
}


def _value(f: FieldDescriptor, depth: int) -> st.SearchStrategy[Any] | None:
    if f.type == FieldDescriptor.TYPE_MESSAGE:
        if depth >= 4:
            return None
        return message_strategy(f.message_type, depth + 1)
    return _SCALARS[f.type]


def _is_map(f: FieldDescriptor) -> bool:
    return f.type == FieldDescriptor.TYPE_MESSAGE and f.message_type.GetOptions().map_entry


def message_strategy(desc: Descriptor, depth: int = 0) -> st.SearchStrategy[Message]:
    """Any message of this type: each field unset or set (repeated: up to 3 items, maps up to 3 entries)."""
    cls = _message_class(desc)
    parts: dict[str, st.SearchStrategy[Any]] = {}
    for f in desc.fields:
        if _is_map(f):
            key = _SCALARS[f.message_type.fields_by_name["key"].type]
            val = _value(f.message_type.fields_by_name["value"], depth)
            if val is not None:
                parts[f.name] = st.none() | st.dictionaries(key, val, max_size=3)
            continue
        inner = _value(f, depth)
        if inner is None:
            continue
        if f.label == FieldDescriptor.LABEL_REPEATED:
            parts[f.name] = st.none() | st.lists(inner, max_size=3)
        else:
            parts[f.name] = st.none() | inner
    return st.fixed_dictionaries(parts).map(lambda values: _build(cls, desc, values))


def _message_class(desc: Descriptor) -> Callable[[], Message]:
    from google.protobuf import message_factory

    return message_factory.GetMessageClass(desc)


def _build(cls: Callable[[], Message], desc: Descriptor, values: dict[str, Any]) -> Message:
    msg = cls()
    for name, value in values.items():
        if value is None:
            continue
        f = desc.fields_by_name[name]
        target = getattr(msg, name)
        if _is_map(f):
            for k, v in value.items():
                if isinstance(v, Message):
                    target[k].CopyFrom(v)
                else:
                    target[k] = v
        elif f.label == FieldDescriptor.LABEL_REPEATED:
            if f.type == FieldDescriptor.TYPE_MESSAGE:
                for v in value:
                    target.add().CopyFrom(v)
            else:
                target.extend(value)
        elif f.type == FieldDescriptor.TYPE_MESSAGE:
            target.CopyFrom(value)
        else:
            setattr(msg, name, value)
    return msg


@dataclass
class Tally:
    requests: int = 0
    codes: Counter[str] = field(default_factory=Counter)
    failures: list[str] = field(default_factory=list)


def rpcs() -> list[tuple[str, str, Descriptor]]:
    """(service, method, input type) of every RPC narwhald serves."""
    out = []
    for service in ("RuntimeService", "ImageService"):
        for method in api_pb2.DESCRIPTOR.services_by_name[service].methods:
            out.append((service, method.name, method.input_type))
    return out


def fuzz_rpc(channel: grpc.Channel, service: str, method: str, input_type: Descriptor, tally: Tally, *,
             examples: int, call_timeout: float = 60.0) -> None:
    stub: Any = (api_pb2_grpc.RuntimeServiceStub if service == "RuntimeService" else api_pb2_grpc.ImageServiceStub)(
        channel)
    call = getattr(stub, method)

    @settings(max_examples=examples, derandomize=True, deadline=None, database=None,
              suppress_health_check=list(HealthCheck))
    @given(message_strategy(input_type))
    def one(request: Message) -> None:
        tally.requests += 1
        start = time.monotonic()
        try:
            if method in STREAMING:
                stream = call(request, timeout=1.0)
                try:
                    for _ in stream:
                        break
                finally:
                    stream.cancel()
                code = grpc.StatusCode.OK
            else:
                call(request, timeout=call_timeout)
                code = grpc.StatusCode.OK
        except grpc.RpcError as err:
            code = err.code()
            if method in STREAMING and code in (grpc.StatusCode.DEADLINE_EXCEEDED, grpc.StatusCode.CANCELLED):
                code = grpc.StatusCode.OK
            elif code in BAD_CODES or code == grpc.StatusCode.DEADLINE_EXCEEDED:
                tally.failures.append(f"{method}: {code.name}: {err.details()} "
                                      f"({time.monotonic() - start:.1f}s) request={request!r:.300}")
        tally.codes[code.name] += 1

    one()
