"""Where a webhook may be sent: http(s) to hosts whose every address is public, unless the operator
allows private ones (FLUXGATE_WEBHOOK_ALLOW_PRIVATE, e.g. for receivers inside the cluster).

Checked twice: by the gateway when the URL is submitted (a 422 the caller can act on) and by the
worker before every delivery attempt, because a host's DNS can change between the two (DNS
rebinding would otherwise turn an accepted public name into a request to the operator's network).
"""

from __future__ import annotations

import ipaddress
import socket
from urllib.parse import urlsplit


def unsafe_target(url: str, allow_private: bool) -> str | None:
    """Why `url` must not receive a webhook (a sentence for the caller), or None if it may."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        return "webhook_url must be an http(s) URL with a host"
    if parts.username or parts.password:
        return "webhook_url must not carry credentials"
    try:
        infos = socket.getaddrinfo(parts.hostname, parts.port or 443, type=socket.SOCK_STREAM)
    except OSError:
        return f"webhook_url host {parts.hostname!r} does not resolve"
    for info in infos:
        address = ipaddress.ip_address(info[4][0])
        if not allow_private and not address.is_global:
            return f"webhook_url resolves to a non-public address ({address}); webhooks go to public hosts only"
    return None
