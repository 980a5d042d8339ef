"""Image encoding for results."""

from __future__ import annotations

import io

from PIL import Image

_PIL_FORMATS = {"png": "PNG", "jpeg": "JPEG", "webp": "WEBP"}


def encode_image(image: Image.Image, output_format: str) -> bytes:
    buffer = io.BytesIO()
    options = {"quality": 95} if output_format in ("jpeg", "webp") else {}
    image.convert("RGB").save(buffer, format=_PIL_FORMATS[output_format], **options)
    return buffer.getvalue()
