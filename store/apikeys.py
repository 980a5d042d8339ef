"""API keys: format, checksum and hashing.

A key looks like `fg_<32 base62 chars><6 base62 checksum chars>`. The checksum lets the gateway
refuse a mistyped key before touching Redis; the prefix lets secret scanners recognise it. Only the
SHA-256 of a key is stored, and records are found by that hash, so a lookup reveals nothing through
its timing about keys that share a prefix.
"""

from __future__ import annotations

import hashlib
import secrets
import string
import zlib

PREFIX = "fg_"
_ALPHABET = string.digits + string.ascii_letters
_BODY_LEN = 32
_CHECK_LEN = 6


def _base62(number: int, width: int) -> str:
    chars = []
    for _ in range(width):
        number, digit = divmod(number, 62)
        chars.append(_ALPHABET[digit])
    return "".join(reversed(chars))


def _checksum(body: str) -> str:
    return _base62(zlib.crc32(body.encode()), _CHECK_LEN)


def generate() -> str:
    body = "".join(secrets.choice(_ALPHABET) for _ in range(_BODY_LEN))
    return PREFIX + body + _checksum(body)


def well_formed(key: str) -> bool:
    if not key.startswith(PREFIX) or len(key) != len(PREFIX) + _BODY_LEN + _CHECK_LEN:
        return False
    body, check = key[len(PREFIX) : -_CHECK_LEN], key[-_CHECK_LEN:]
    return all(c in _ALPHABET for c in body) and secrets.compare_digest(check, _checksum(body))


def hash_key(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def key_id(key_hash: str) -> str:
    """A short public identifier for a key (safe to log and show in usage records)."""
    return "key_" + key_hash[:12]
