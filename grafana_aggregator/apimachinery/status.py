"""`meta/v1` Status objects and the exception that carries one to the response, as k8s.io/apiserver writes them."""

from __future__ import annotations

import json
from typing import Any

from twisted.web.iweb import IRequest

#: HTTP status code → the StatusReason Kubernetes uses for it when no more specific one applies.
REASONS = {
    400: "BadRequest",
    401: "Unauthorized",
    403: "Forbidden",
    404: "NotFound",
    405: "MethodNotAllowed",
    406: "NotAcceptable",
    409: "Conflict",
    410: "Expired",
    413: "RequestEntityTooLarge",
    415: "UnsupportedMediaType",
    422: "Invalid",
    429: "TooManyRequests",
    500: "InternalError",
    503: "ServiceUnavailable",
    504: "Timeout",
}


class StatusError(Exception):
    """An API error that becomes a `Status` response with the given code, reason, message and details."""

    def __init__(self, code: int, message: str, reason: str | None = None, details: dict[str, Any] | None = None):
        super().__init__(message)
        self.code = code
        self.message = message
        self.reason = reason or REASONS.get(code, "Unknown")
        self.details = details

    def to_status(self) -> dict[str, Any]:
        """The `Status` object for this error."""
        return status_object(self.code, self.message, self.reason, self.details)


def status_object(code: int, message: str, reason: str, details: dict[str, Any] | None = None) -> dict[str, Any]:
    """A failure `Status` exactly as kube-apiserver serialises it (key order included)."""
    status: dict[str, Any] = {
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "message": message,
        "reason": reason,
    }
    if details is not None:
        status["details"] = details
    status["code"] = code
    return status


def not_found_path() -> StatusError:
    """The error for a path nothing is served at."""
    return StatusError(404, "the server could not find the requested resource", "NotFound", {})


def unauthorized() -> StatusError:
    """The error for a request whose credentials were rejected or are required."""
    return StatusError(401, "Unauthorized", "Unauthorized")


def method_not_allowed(method: str, path: str) -> StatusError:
    """The error for a method the path does not support."""
    return StatusError(405, "the server does not allow this method on the requested resource", "MethodNotAllowed", {})


def encode_json(obj: Any) -> bytes:
    """Compact JSON with a trailing newline, as Go's json.Encoder writes it."""
    return json.dumps(obj, separators=(",", ":"), ensure_ascii=False).encode("utf-8") + b"\n"


def write_json(request: IRequest, code: int, obj: Any) -> bytes:
    """Set the status and JSON content type of the response and return its encoded body."""
    request.setResponseCode(code)
    request.setHeader(b"Content-Type", b"application/json")
    request.setHeader(b"Cache-Control", b"no-cache, private")
    return encode_json(obj)


def write_status(request: IRequest, error: StatusError) -> bytes:
    """Answer the request with the error's `Status`."""
    body = write_json(request, error.code, error.to_status())
    if error.code == 429:
        request.setHeader(b"Retry-After", b"1")
    return body
