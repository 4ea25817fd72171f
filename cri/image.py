"""ImageService: every RPC answers UNIMPLEMENTED until the image core lands."""
from __future__ import annotations

from cri_api.v1 import api_pb2_grpc


class ImageService(api_pb2_grpc.ImageServiceServicer):
    pass
