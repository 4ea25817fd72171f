"""Images: references, registry client, content, unpack, the image store and service."""
