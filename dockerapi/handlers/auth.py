"""POST /auth (docker login) and Docker's credentials: the ``X-Registry-Auth`` header and the /auth body.

Both carry moby's AuthConfig JSON (``username``, ``password``, ``auth``,
``serveraddress``, ``identitytoken``, ``registrytoken``); Go decodes its keys
case-insensitively, so we do too.  The header is base64url, padded or not.
"""
from __future__ import annotations

import base64
import binascii
import json
from typing import Any

from aiohttp import web

from dockerapi import params
from dockerapi.backend import backends, need
from pkg import errors
from pkg.images.model import RegistryAuth


def auth_from_json(doc: dict[str, Any]) -> RegistryAuth:
    fields = {str(k).lower(): v for k, v in doc.items()}

    def text(key: str) -> str:
        value = fields.get(key)
        return value if isinstance(value, str) else ""

    username, password = text("username"), text("password")
    encoded = text("auth")
    if encoded and not (username or password):  # "auth": base64("user:password"), as in config.json
        try:
            username, colon, password = base64.b64decode(encoded, validate=True).decode().partition(":")
        except (binascii.Error, UnicodeDecodeError, ValueError):
            colon = ""
        if not colon:
            raise errors.InvalidArgument("invalid auth configuration: 'auth' is not base64 user:password")
    return RegistryAuth(username=username, password=password, identity_token=text("identitytoken"),
                        registry_token=text("registrytoken"), server_address=text("serveraddress"))


def registry_auth(request: web.Request) -> RegistryAuth | None:
    """The ``X-Registry-Auth`` credentials; like moby, an undecodable header counts as none."""
    header = request.headers.get("X-Registry-Auth", "").strip()
    if not header:
        return None
    try:
        doc = json.loads(base64.urlsafe_b64decode(header + "=" * (-len(header) % 4)))
    except (binascii.Error, ValueError):
        return None
    if not isinstance(doc, dict):
        return None
    auth = auth_from_json(doc)
    return None if auth.empty else auth


async def login(request: web.Request) -> web.Response:
    try:
        doc = params.loads(await request.read())
    except ValueError:
        raise errors.InvalidArgument("invalid auth configuration: the body is not JSON") from None
    if not isinstance(doc, dict):
        raise errors.InvalidArgument("invalid auth configuration: expected a JSON object")
    images = need(backends(request).images, "images")
    status = await images.login(auth_from_json(doc))
    return web.json_response({"Status": status, "IdentityToken": ""})


ROUTES = [
    ("POST", "/auth", login),
]
