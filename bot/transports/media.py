"""Attachments for Matrix: upload a PNG (`m.image`) or a text file (`m.file`) to the media repository and build
the message content.

In an encrypted room the file is encrypted before the upload (nio's `encrypt=True`) and the content
carries the `file` object (url, key, iv, hashes, v) instead of `url`, as the spec's encrypted
attachments require; the homeserver only ever holds ciphertext.
"""

from __future__ import annotations

import io
from typing import Any

from nio import AsyncClient, UploadResponse

from bot.transports.base import DeliveryError

__all__ = ["file_content", "image_content", "png_size"]


def png_size(png: bytes) -> tuple[int, int]:
    """Width and height from a PNG's IHDR chunk; raises ValueError for something else."""
    if png[:8] != b"\x89PNG\r\n\x1a\n" or png[12:16] != b"IHDR":
        raise ValueError("not a PNG image")
    return int.from_bytes(png[16:20], "big"), int.from_bytes(png[20:24], "big")


async def _upload(client: AsyncClient, room: str, data: bytes, mimetype: str, filename: str) -> dict[str, Any]:
    """Upload `data` (encrypted when the room is); the content's `url`, or its `file` object in an E2EE room."""
    known = client.rooms.get(room)
    encrypted = bool(known is not None and known.encrypted)
    response, keys = await client.upload(
        io.BytesIO(data), content_type=mimetype, filename=filename, encrypt=encrypted, filesize=len(data)
    )
    if not isinstance(response, UploadResponse):
        raise DeliveryError(f"{room}: the media repository refused the {filename}: {response}")
    if not encrypted:
        return {"url": response.content_uri}
    assert keys is not None
    return {
        "file": {
            "url": response.content_uri,
            "key": keys["key"],
            "iv": keys["iv"],
            "hashes": keys["hashes"],
            "v": keys["v"],
            "mimetype": mimetype,
        }
    }


async def image_content(client: AsyncClient, room: str, png: bytes, body: str, filename: str) -> dict[str, Any]:
    """Upload the PNG (encrypted when the room is) and return the m.image content; raises DeliveryError."""
    width, height = png_size(png)
    where = await _upload(client, room, png, "image/png", filename)
    info = {"mimetype": "image/png", "size": len(png), "w": width, "h": height}
    return {"msgtype": "m.image", "body": body, "filename": filename, "info": info, **where}


async def file_content(
    client: AsyncClient, room: str, data: bytes, body: str, filename: str, mimetype: str
) -> dict[str, Any]:
    """Upload a file (encrypted when the room is) and return the m.file content; raises DeliveryError."""
    where = await _upload(client, room, data, mimetype, filename)
    info = {"mimetype": mimetype, "size": len(data)}
    return {"msgtype": "m.file", "body": body, "filename": filename, "info": info, **where}
