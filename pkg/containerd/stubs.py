"""Callables for containerd's gRPC methods, made from the service's descriptor the first time each is used.

grpcio's generated ``*_pb2_grpc`` stubs make a multicallable for every method of a service when the stub is
built, and importing the ten modules narwhald needs costs an idle daemon ~1.3 MiB for methods most daemons
never call (``Diff``, ``Leases``, most of ``Tasks``).  A ServiceStub makes a method's callable when it is
first asked for, with what the generated stub passes: the ``/<package>.<Service>/<Method>`` path, the
request's ``SerializeToString`` and the response's ``FromString`` (the message classes of the ``*_pb2``
modules, found through their descriptors) and ``_registered_method``.  The ``*_pb2`` module itself is
imported then too.  Callers and tests see the same attributes as on a generated stub.
"""
from __future__ import annotations

import importlib
from typing import Any

import grpc
from google.protobuf import message_factory

_MAKERS = {
    (False, False): "unary_unary",
    (False, True): "unary_stream",
    (True, False): "stream_unary",
    (True, True): "stream_stream",
}


class ServiceStub:
    """One containerd service on a channel: ``stub.Method(request, timeout=…)`` as on a generated stub."""

    def __init__(self, channel: grpc.aio.Channel, module: str, service: str) -> None:
        """``module``: the ``*_pb2`` module declaring ``service``, the service's short name (``Tasks``)."""
        self._channel = channel
        self._module = module
        self._service = service

    def __getattr__(self, name: str) -> Any:
        # Only called for names not yet in the instance's dict: a method is made once, then found there.
        if name.startswith("_"):
            raise AttributeError(name)
        service = importlib.import_module(self._module).DESCRIPTOR.services_by_name[self._service]
        method = service.methods_by_name.get(name)
        if method is None:
            raise AttributeError(f"{service.full_name} has no method {name}")
        request = message_factory.GetMessageClass(method.input_type)
        response = message_factory.GetMessageClass(method.output_type)
        make = getattr(self._channel, _MAKERS[(method.client_streaming, method.server_streaming)])
        call = make(f"/{service.full_name}/{name}", request_serializer=request.SerializeToString,
                    response_deserializer=response.FromString, _registered_method=True)
        setattr(self, name, call)
        return call
