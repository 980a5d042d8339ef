"""Image inputs: base64 uploads or images of the caller's earlier jobs, validated before they are
stored (format, dimensions, aspect ratio, and a decompression-bomb limit checked from the header,
before any pixel is decoded)."""

from __future__ import annotations

import base64
import binascii
import io
import re

from fastapi import HTTPException
from PIL import Image

from store.jobstore import JobStore
from store.records import JobStatus

MAX_ENCODED_BYTES = 8 * 2**20  # per image, after base64 decoding
MAX_PIXELS = 4096 * 4096  # decompression-bomb limit
MIN_SIDE = 16
MAX_ASPECT = 8.0
FORMATS = {"PNG", "JPEG", "WEBP"}
# "<job id>/<index>" or an image URL of ours ending in /v1/jobs/<job id>/images/<index>
_JOB_IMAGE = re.compile(r"(?:^|/v1/jobs/)([0-9a-f]{32})(?:/images/|/)(\d{1,2})$")


def _invalid(field: str, message: str) -> HTTPException:
    return HTTPException(422, [{"loc": ["body", field], "msg": message, "type": "value_error"}])


def decode_upload(field: str, value: str) -> bytes:
    """Validated image bytes from base64 (optionally a data: URL)."""
    if value.startswith("data:"):
        value = value.partition(",")[2]
    if len(value) > MAX_ENCODED_BYTES * 4 // 3 + 4:
        raise _invalid(field, f"image is larger than {MAX_ENCODED_BYTES // 2**20} MiB")
    try:
        data = base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        raise _invalid(field, "not valid base64 (send the image file's bytes base64-encoded, or a data: URL)") \
            from None
    check_image(field, data)
    return data


def check_image(field: str, data: bytes) -> Image.Image:
    try:
        image = Image.open(io.BytesIO(data))  # reads the header only
    except (OSError, ValueError, Image.DecompressionBombError):
        raise _invalid(field, "not a readable image (PNG, JPEG or WebP)") from None
    if image.format not in FORMATS:
        raise _invalid(field, f"image format {image.format} is not supported; use PNG, JPEG or WebP")
    width, height = image.size
    if width * height > MAX_PIXELS:
        raise _invalid(field, f"image is {width}x{height}; at most {MAX_PIXELS} pixels are accepted")
    if min(width, height) < MIN_SIDE or max(width, height) / min(width, height) > MAX_ASPECT:
        raise _invalid(field, f"image is {width}x{height}; sides must be >= {MIN_SIDE} px and the aspect ratio "
                              f"at most {MAX_ASPECT:g}:1")
    try:
        image.load()  # now decode, knowing the size is sane
    except (OSError, ValueError):
        raise _invalid(field, "the image data is truncated or corrupt") from None
    return image


async def resolve_image(field: str, value: str, store: JobStore, account: str) -> bytes:
    """An input given as base64, or as `<job id>/<index>` / an image URL of the caller's own job."""
    match = _JOB_IMAGE.search(value) if len(value) < 300 else None
    if match is None:
        return decode_upload(field, value)
    job_id, index = match.group(1), int(match.group(2))
    job = await store.get(job_id)
    if job is None or job.account != account or job.status != JobStatus.SUCCEEDED or index >= job.images:
        raise _invalid(field, f"no image {index} of a succeeded job {job_id} for this key")
    data = await store.image(job_id, index)
    if data is None:
        raise _invalid(field, f"image {index} of job {job_id} has expired")
    return data
