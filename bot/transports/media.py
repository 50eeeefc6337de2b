"""Images for Matrix: upload a PNG to the media repository and build the `m.image` content.

In an encrypted room the file is encrypted before the upload (nio's `encrypt=True`) and the content
carries the `file` object (url, key, iv, hashes, v) instead of `url`, as the spec's encrypted
attachments require; the homeserver only ever holds ciphertext.
"""

from __future__ import annotations

import io
from typing import Any

from nio import AsyncClient, UploadResponse

from bot.transports.base import DeliveryError

__all__ = ["image_content", "png_size"]


def png_size(png: bytes) -> tuple[int, int]:
    """Width and height from a PNG's IHDR chunk; raises ValueError for something else."""
    if png[:8] != b"\x89PNG\r\n\x1a\n" or png[12:16] != b"IHDR":
        raise ValueError("not a PNG image")
    return int.from_bytes(png[16:20], "big"), int.from_bytes(png[20:24], "big")


async def image_content(client: AsyncClient, room: str, png: bytes, body: str, filename: str) -> dict[str, Any]:
    """Upload the PNG (encrypted when the room is) and return the m.image content; raises DeliveryError."""
    known = client.rooms.get(room)
    encrypted = bool(known is not None and known.encrypted)
    width, height = png_size(png)
    response, keys = await client.upload(
        io.BytesIO(png), content_type="image/png", filename=filename, encrypt=encrypted, filesize=len(png)
    )
    if not isinstance(response, UploadResponse):
        raise DeliveryError(f"{room}: the media repository refused the image: {response}")
    info = {"mimetype": "image/png", "size": len(png), "w": width, "h": height}
    content: dict[str, Any] = {"msgtype": "m.image", "body": body, "filename": filename, "info": info}
    if encrypted:
        assert keys is not None
        content["file"] = {
            "url": response.content_uri,
            "key": keys["key"],
            "iv": keys["iv"],
            "hashes": keys["hashes"],
            "v": keys["v"],
            "mimetype": "image/png",
        }
    else:
        content["url"] = response.content_uri
    return content
