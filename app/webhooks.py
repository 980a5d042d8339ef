"""Webhook URLs: accepted only if they cannot be turned against the operator's own network (SSRF):
http(s) only, and every address the host resolves to must be public unless the operator allows
private ones (FLUXGATE_WEBHOOK_ALLOW_PRIVATE, e.g. for receivers inside the cluster)."""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from urllib.parse import urlsplit

from fastapi import HTTPException


def _invalid(message: str) -> HTTPException:
    return HTTPException(422, [{"loc": ["body", "webhook_url"], "msg": message, "type": "value_error"}])


async def check_webhook_url(url: str, allow_private: bool) -> str:
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise _invalid("webhook_url must be an http(s) URL with a host")
    if parts.username or parts.password:
        raise _invalid("webhook_url must not carry credentials")
    try:
        infos = await asyncio.get_running_loop().getaddrinfo(parts.hostname, parts.port or 443,
                                                             type=socket.SOCK_STREAM)
    except OSError:
        raise _invalid(f"webhook_url host {parts.hostname!r} does not resolve") from None
    for info in infos:
        address = ipaddress.ip_address(info[4][0])
        if not allow_private and not address.is_global:
            raise _invalid(f"webhook_url resolves to a non-public address ({address}); webhooks go to public "
                           "hosts only")
    return url
