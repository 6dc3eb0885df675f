"""`meta/v1` Status objects and the exception that carries one to the response, as k8s.io/apiserver writes them."""

from __future__ import annotations

import json
from typing import Any

from twisted.web.iweb import IRequest
from twisted.web.server import NOT_DONE_YET

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
    507: "InsufficientStorage",
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


def method_not_allowed() -> StatusError:
    """The error for a method the path does not support."""
    return StatusError(405, "the server does not allow this method on the requested resource", "MethodNotAllowed", {})


def internal_error(what: str = "unexpected server error (see the server log)") -> StatusError:
    """The 500 for a failure of the server itself, never of the request (the details go to the log only)."""
    return StatusError(500, f"Internal error occurred: {what}")


def timeout_status() -> StatusError:
    """kube's 504 for a request that ran out of time."""
    return StatusError(504, "request did not complete within the allotted timeout", "Timeout", {})


def not_installed_yet() -> StatusError:
    """kube's answer while starting, instead of a 404 that controllers would take for "gone"."""
    return StatusError(503, "the request has been made before all known HTTP paths have been installed, please try "
                            "again", "ServiceUnavailable", {"retryAfterSeconds": 5})


def encode_json(obj: Any) -> bytes:
    """Compact JSON with a trailing newline, as Go's json.Encoder writes it."""
    return json.dumps(obj, separators=(",", ":"), ensure_ascii=False).encode("utf-8") + b"\n"


def write_json(request: IRequest, code: int, obj: Any) -> bytes:
    """Set the status and JSON content type of the response and return its encoded body."""
    request.setResponseCode(code)
    request.setHeader(b"Content-Type", b"application/json")
    request.setHeader(b"Cache-Control", b"no-cache, private")
    return encode_json(obj)


def write_status(request: IRequest, error: StatusError) -> int:
    """Answer the request with the error's `Status` and finish it: the one way every error response is written.

    Sets the code, JSON content type, no-cache and Content-Length, and `Retry-After: 1` for 429 and 503;
    HEAD gets the headers only.  Returns NOT_DONE_YET, so `render` can return what this returns.
    """
    body = encode_json(error.to_status())
    request.setResponseCode(error.code)
    request.setHeader(b"Content-Type", b"application/json")
    request.setHeader(b"Cache-Control", b"no-cache, private")
    request.setHeader(b"Content-Length", b"%d" % len(body))
    if error.code in (429, 503):
        request.setHeader(b"Retry-After", b"1")
    request.write(body)
    request.finish()
    return NOT_DONE_YET
