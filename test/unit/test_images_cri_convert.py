"""CRI conversions of the image core's models: AuthConfig decoding, image user -> uid/username."""
import base64

import pytest
from cri_api.v1 import api_pb2

from cri import image_convert
from pkg.errors import InvalidArgument
from pkg.images.model import Descriptor, Image, ImageConfig


def _image(user: str) -> Image:
    return Image(id="sha256:" + "a" * 64, repo_tags=["docker.io/library/x:1"], repo_digests=[], size=10,
                 config=ImageConfig(user=user), target=Descriptor("m", "sha256:" + "b" * 64, 1), diff_ids=[],
                 chain_id="", pinned=True)


@pytest.mark.parametrize(("user", "uid", "username"),
                         [("", None, ""), ("1000", 1000, ""), ("0", 0, ""), ("1000:1000", 1000, ""),
                          ("nobody", None, "nobody"), ("nobody:nogroup", None, "nobody")])
def test_image_user(user: str, uid: int | None, username: str) -> None:
    msg = image_convert.image(_image(user))
    assert msg.HasField("uid") == (uid is not None)
    if uid is not None:
        assert msg.uid.value == uid
    assert msg.username == username
    assert msg.pinned and msg.spec.image == msg.id


def test_auth_fields_and_encoded_auth() -> None:
    assert image_convert.auth(api_pb2.AuthConfig()) is None
    plain = image_convert.auth(api_pb2.AuthConfig(username="u", password="p"))
    assert plain is not None and (plain.username, plain.password) == ("u", "p")
    encoded = image_convert.auth(api_pb2.AuthConfig(auth=base64.b64encode(b"u:p:with:colons").decode()))
    assert encoded is not None and (encoded.username, encoded.password) == ("u", "p:with:colons")
    token = image_convert.auth(api_pb2.AuthConfig(registry_token="t"))
    assert token is not None and token.registry_token == "t"


@pytest.mark.parametrize("bad", ["***", base64.b64encode(b"no-colon").decode()])
def test_bad_encoded_auth(bad: str) -> None:
    with pytest.raises(InvalidArgument):
        image_convert.auth(api_pb2.AuthConfig(auth=bad))
