"""Fetching an image by URL: off unless the server names the hosts it may reach.

Only ``http``/``https`` URLs whose host is on the allow-list (``example.com`` exactly, or
``*.example.com`` for its sub-domains) are fetched; redirects are not followed (a redirect
could lead anywhere); the body is streamed with the same size limit as uploads and the
request's own time limit.
"""

from __future__ import annotations

from urllib.parse import urlsplit

from clipsieve.service.errors import ServiceError
from clipsieve.service.uploads import Upload, too_large

__all__ = ["check_url", "fetch_url", "host_allowed"]


def host_allowed(host: str, allow: tuple[str, ...]) -> bool:
    host = host.lower().rstrip(".")
    for pattern in allow:
        if pattern.startswith("*."):
            if host.endswith(pattern[1:]) and host != pattern[2:]:
                return True
        elif host == pattern:
            return True
    return False


def check_url(url: str, allow: tuple[str, ...]) -> str:
    """The URL's host when fetching it is allowed.

    Raises:
        ServiceError: 403 when fetching is off or the host is not allowed, 422 for a bad URL.
    """
    if not allow:
        raise ServiceError(403, "url_fetch_disabled",
                           "this server does not fetch URLs (start it with --fetch-allow HOST)")
    try:
        parts = urlsplit(url)
    except ValueError:
        raise ServiceError(422, "invalid_request", "not a valid URL") from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ServiceError(422, "invalid_request", "only http and https URLs can be fetched")
    if parts.username or parts.password:
        raise ServiceError(422, "invalid_request", "URLs with credentials are not fetched")
    if not host_allowed(parts.hostname, allow):
        raise ServiceError(403, "url_not_allowed",
                           f"host {parts.hostname!r} is not on this server's fetch allow-list")
    return parts.hostname


async def fetch_url(url: str, allow: tuple[str, ...], *, limit: int, timeout: float) -> Upload:
    """Download ``url`` (checked by :func:`check_url`) into an :class:`Upload`.

    Raises:
        ServiceError: 403/422 as :func:`check_url`, 413 over ``limit``, 502 when the remote
            server fails or answers other than 200.
    """
    import httpx

    check_url(url, allow)
    name = urlsplit(url).path.rsplit("/", 1)[-1] or "download"
    try:
        async with httpx.AsyncClient(follow_redirects=False, timeout=timeout,
                                     trust_env=False) as client:
            async with client.stream("GET", url) as resp:
                if resp.status_code != 200:
                    raise ServiceError(502, "fetch_failed",
                                       f"fetching the URL gave HTTP {resp.status_code}")
                declared = resp.headers.get("content-length")
                if declared and declared.isdigit() and int(declared) > limit:
                    raise too_large(limit)
                data = bytearray()
                async for chunk in resp.aiter_bytes():
                    data += chunk
                    if len(data) > limit:
                        raise too_large(limit)
    except httpx.HTTPError as exc:
        raise ServiceError(502, "fetch_failed",
                           f"cannot fetch the URL: {type(exc).__name__}") from None
    return Upload.from_bytes(name, bytes(data))
