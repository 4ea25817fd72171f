"""The CRI gRPC server (grpc.aio) on a unix socket."""
from __future__ import annotations

import logging
from pathlib import Path

import grpc
from cri_api.v1 import api_pb2, api_pb2_grpc

from cri import unimplemented
from cri.image import ImageService
from cri.interceptors import ErrorMapping
from cri.runtime import RuntimeService
from pkg import sockets
from pkg.metrics import Metrics

log = logging.getLogger(__name__)

MAX_MESSAGE = 16 << 20  # kubelet's default max message size


class CRIServer:
    def __init__(self, socket: Path, runtime: RuntimeService, image: ImageService, metrics: Metrics) -> None:
        self.socket = socket
        self._server = grpc.aio.server(
            interceptors=[ErrorMapping(metrics)],
            options=[
                ("grpc.max_receive_message_length", MAX_MESSAGE),
                ("grpc.max_send_message_length", MAX_MESSAGE),
            ],
        )
        services = api_pb2.DESCRIPTOR.services_by_name
        unimplemented.fill(runtime, api_pb2_grpc.RuntimeServiceServicer, services["RuntimeService"])
        unimplemented.fill(image, api_pb2_grpc.ImageServiceServicer, services["ImageService"])
        api_pb2_grpc.add_RuntimeServiceServicer_to_server(runtime, self._server)
        api_pb2_grpc.add_ImageServiceServicer_to_server(image, self._server)

    async def start(self) -> None:
        self.socket.parent.mkdir(parents=True, exist_ok=True)
        with sockets.staged(self.socket) as private:  # gRPC binds here, in a 0700 directory
            self._server.add_insecure_port(f"unix://{private}")
        await self._server.start()
        log.info("CRI server listening on %s", self.socket)

    async def stop(self, grace: float = 5.0) -> None:
        await self._server.stop(grace)
        self.socket.unlink(missing_ok=True)
