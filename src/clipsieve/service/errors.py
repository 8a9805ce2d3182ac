"""The one error shape of the service: ``{"error": {"code": ..., "message": ...}}``."""

from __future__ import annotations

from typing import Any

__all__ = ["STATUS_CODES", "ServiceError", "error_body"]

#: Error code used for an HTTP status when nothing more specific applies.
STATUS_CODES: dict[int, str] = {
    400: "bad_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    409: "conflict",
    413: "payload_too_large",
    415: "unsupported_media_type",
    422: "invalid_request",
    429: "too_many_requests",
    500: "internal_error",
    501: "not_implemented",
    502: "bad_gateway",
    503: "unavailable",
    504: "timeout",
}


def error_body(code: str, message: str) -> dict[str, Any]:
    return {"error": {"code": code, "message": message}}


class ServiceError(Exception):
    """An error answered to the client as ``status`` with :func:`error_body`.

    Args:
        status: the HTTP status.
        code: a short machine-readable code (``payload_too_large``, ``truncated``…).
        message: one line for people; never contains a secret.
        headers: extra response headers (``Retry-After``…).
    """

    def __init__(
        self, status: int, code: str, message: str, headers: dict[str, str] | None = None
    ) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.headers = headers or {}

    def body(self) -> dict[str, Any]:
        return error_body(self.code, self.message)
