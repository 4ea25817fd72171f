"""ImageService: the CRI image RPCs over the shared image core (pkg.images)."""
from __future__ import annotations

import json

import grpc
from cri_api.v1 import api_pb2, api_pb2_grpc

from cri import image_convert
from pkg import errors
from pkg.images.service import ImageService as ImageCore


class ImageService(api_pb2_grpc.ImageServiceServicer):
    def __init__(self, images: ImageCore) -> None:
        self._images = images

    async def ListImages(self, request: api_pb2.ListImagesRequest,
                         context: grpc.aio.ServicerContext) -> api_pb2.ListImagesResponse:
        ref_filter = request.filter.image.image if request.HasField("filter") else ""
        images = await self._images.list(ref_filter or None)
        return api_pb2.ListImagesResponse(images=[image_convert.image(i) for i in images])

    async def ImageStatus(self, request: api_pb2.ImageStatusRequest,
                          context: grpc.aio.ServicerContext) -> api_pb2.ImageStatusResponse:
        ref = request.image.image
        if not ref:
            raise errors.InvalidArgument("image: no reference given")
        try:
            img = await self._images.get(ref)
        except errors.NotFound:
            return api_pb2.ImageStatusResponse()  # api.proto: absent image -> no image, no error
        info: dict[str, str] = {}
        if request.verbose:
            info["info"] = json.dumps(await self._images.inspect(img), sort_keys=True)
        return api_pb2.ImageStatusResponse(image=image_convert.image(img), info=info)

    async def PullImage(self, request: api_pb2.PullImageRequest,
                        context: grpc.aio.ServicerContext) -> api_pb2.PullImageResponse:
        ref = request.image.image
        if not ref:
            raise errors.InvalidArgument("image: no reference given")
        auth = image_convert.auth(request.auth) if request.HasField("auth") else None
        img = await self._images.pull(ref, auth)
        return api_pb2.PullImageResponse(image_ref=img.id)

    async def RemoveImage(self, request: api_pb2.RemoveImageRequest,
                          context: grpc.aio.ServicerContext) -> api_pb2.RemoveImageResponse:
        ref = request.image.image
        if not ref:
            raise errors.InvalidArgument("image: no reference given")
        await self._images.remove(ref)
        return api_pb2.RemoveImageResponse()

    async def ImageFsInfo(self, request: api_pb2.ImageFsInfoRequest,
                          context: grpc.aio.ServicerContext) -> api_pb2.ImageFsInfoResponse:
        usages = await self._images.fs_info()
        return api_pb2.ImageFsInfoResponse(image_filesystems=[image_convert.filesystem(u) for u in usages])
