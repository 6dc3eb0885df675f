"""One REST call on a kind, as every verb family sees it: what the path names, the query, the negotiated output,
the store, the warnings gathered so far, kube's Status errors, the request body, and how the answer is written.

The verb families (reads, writes, watch) share this context instead of each other, so none imports another.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from attrs import frozen
from twisted.internet.interfaces import IReactorTime
from twisted.web.iweb import IRequest

from ..storage import (
    AlreadyExistsError,
    Collection,
    ConflictError,
    ExpiredError,
    InvalidKeyError,
    IStore,
    NotFoundError,
    StorageFullError,
    StorageTimeoutError,
    StorageUnavailableError,
)
from .fielderrors import FieldError
from .gotypes import decode_error
from .negotiation import MAX_BODY_BYTES, MAX_OBJECT_VALUES, Decoded, Output, decode_object, encode
from .query import Query, field_validation, single
from .status import StatusError
from .strategy import Object, Strategy, wall_clock
from .tables import table_of


@frozen
class Target:
    """What a request path names inside a group-version."""

    kind: Strategy
    namespace: str | None
    name: str
    subresource: str

    @property
    def collection(self) -> Collection:
        return Collection(self.kind.info.group, self.kind.info.plural)

    @property
    def key_namespace(self) -> str:
        return self.namespace or ""


def request_header(request: IRequest, name: bytes) -> str | None:
    """A request header as text, or None."""
    value = request.getHeader(name)
    return value.decode("latin-1") if value is not None else None


def content_type(output: Output) -> bytes:
    """The Content-Type of a response in the given form (Tables say so, as kube-apiserver does)."""
    if output.form == "table":
        return f"{output.encoding};as=Table;v=v1;g=meta.k8s.io".encode()
    return output.encoding.encode()


def respond(request: IRequest, code: int, body: Any, output: Output, warnings: Sequence[str] = ()) -> None:
    """Write a whole response in the negotiated encoding and finish the request."""
    data = encode(body, output.encoding)
    request.setResponseCode(code)
    request.setHeader(b"Content-Type", content_type(output))
    request.setHeader(b"Cache-Control", b"no-cache, private")
    request.setHeader(b"Content-Length", str(len(data)).encode())
    for warning in warnings:
        add_warning(request, warning)
    if request.method != b"HEAD":
        request.write(data)
    request.finish()


def add_warning(request: IRequest, text: str) -> None:
    """A `Warning: 299` header, as kube sends its warnings (kubectl prints them as `Warning: <text>`)."""
    request.responseHeaders.addRawHeader(b"Warning", f'299 - "{_escape(text)}"'.encode())


def _escape(text: str) -> str:
    return text.replace("\\", "\\\\").replace('"', '\\"')


class ResourceRequest:
    """One request on one kind: its target, options and output, the store it reads and writes, and its warnings."""

    def __init__(self, request: IRequest, target: Target, query: Query, output: Output, store: IStore,
                 clock: IReactorTime):
        self.request = request
        self.target = target
        self.kind = target.kind
        self.info = target.kind.info
        self.query = query
        self.output = output
        self.store = store
        self.clock = clock
        #: The current time by the injected clock (creation timestamps, managedFields times, Table ages).
        self.now = wall_clock(clock)
        #: Sent as `Warning: 299` headers with the response.
        self.warnings: list[str] = []
        #: How many values an object of this kind may hold (the kind's own limit, else the server's).
        self.max_values = target.kind.max_values or MAX_OBJECT_VALUES

    def header(self, name: bytes) -> str | None:
        return request_header(self.request, name)

    # -- Status errors ---------------------------------------------------------------------------

    @property
    def qualified(self) -> str:
        return f"{self.info.plural}.{self.info.group}" if self.info.group else self.info.plural

    def not_found(self, name: str) -> StatusError:
        return StatusError(404, f'{self.qualified} "{name}" not found', "NotFound",
                           {"name": name, "group": self.info.group, "kind": self.info.plural})

    def already_exists(self, name: str) -> StatusError:
        return StatusError(409, f'{self.qualified} "{name}" already exists', "AlreadyExists",
                           {"name": name, "group": self.info.group, "kind": self.info.plural})

    def conflict(self, name: str, detail: str) -> StatusError:
        return StatusError(409, f'Operation cannot be fulfilled on {self.qualified} "{name}": {detail}', "Conflict",
                           {"name": name, "group": self.info.group, "kind": self.info.plural})

    def invalid(self, name: str, errors: list[FieldError]) -> StatusError:
        listed = str(errors[0]) if len(errors) == 1 else "[" + ", ".join(str(e) for e in errors) + "]"
        kind = f"{self.info.kind}.{self.info.group}" if self.info.group else self.info.kind
        return StatusError(422, f'{kind} "{name}" is invalid: {listed}', "Invalid", {
            "name": name, "group": self.info.group, "kind": self.info.kind,
            "causes": [{"reason": e.reason, "message": e.message, "field": e.path} for e in errors],
        })

    def storage_error(self, error: Exception, name: str) -> StatusError:
        """The Status for a storage error (re-raising anything that is not one)."""
        if isinstance(error, NotFoundError):
            return self.not_found(name)
        if isinstance(error, AlreadyExistsError):
            return self.already_exists(name)
        if isinstance(error, ConflictError):
            return self.conflict(name, str(error))
        if isinstance(error, InvalidKeyError):
            return StatusError(400, str(error), "BadRequest")
        if isinstance(error, ExpiredError):
            return StatusError(410, str(error), "Expired")
        if isinstance(error, StorageFullError):
            return StatusError(507, f"the object could not be stored: {error}", "InsufficientStorage")
        if isinstance(error, StorageTimeoutError):
            return StatusError(504, f"the storage did not answer in time: {error}", "Timeout",
                               {"retryAfterSeconds": 1})
        if isinstance(error, StorageUnavailableError):
            return StatusError(503, f"the storage is unavailable: {error}", "ServiceUnavailable",
                               {"retryAfterSeconds": 1})
        raise error

    # -- the body --------------------------------------------------------------------------------

    def read_body(self) -> bytes:
        content = self.request.content
        if content is None:
            return b""
        content.seek(0, 2)
        size = content.tell()
        if size > MAX_BODY_BYTES:
            raise StatusError(413, "Request entity too large: limit is 3145728", "RequestEntityTooLarge")
        content.seek(0)
        data: bytes = content.read()
        return data

    def decode_body(self) -> Decoded:
        data = self.read_body()
        if not data.strip():
            raise StatusError(400, "the request body is empty; an object is required", "BadRequest")
        return decode_object(data, self.header(b"content-type"), self.max_values)

    def check_object(self, decoded: Decoded, obj: Any, url_name: str | None, from_body: bool = True, *,
                     apply: bool = False, validate_fields: bool = True) -> Object:
        """Check kind, apiVersion, namespace and name of a body against the URL and prune unknown fields.

        A built-in kind's object (one with a Go type) gets apiVersion and kind from the endpoint when it
        has none, as kube's decoder defaults them; a server-side apply must name them.  A request body
        (from_body) that does not decode into the Go type is 400, as kube's decode fails.
        """
        if not isinstance(obj, dict):
            raise StatusError(400, "the request body must be a JSON or YAML object", "BadRequest")
        go_type = self.info.go_type
        given = {key: obj.get(key) for key in ("apiVersion", "kind")}
        if go_type is not None and not apply and any(value in (None, "") for value in given.values()):
            defaults = {"apiVersion": self.info.api_version, "kind": self.info.kind}
            obj = {**{key: defaults[key] if value in (None, "") else value for key, value in given.items()},
                   **{key: value for key, value in obj.items() if key not in given}}
        api_version, kind = obj.get("apiVersion"), obj.get("kind")
        if not kind:
            raise StatusError(400, f"Object 'Kind' is missing in '{_short(obj)}'", "BadRequest")
        if not api_version:
            raise StatusError(400, f"Object 'apiVersion' is missing in '{_short(obj)}'", "BadRequest")
        if api_version != self.info.api_version or kind != self.info.kind:
            raise StatusError(400, f"the API version in the data ({api_version}) does not match the expected API "
                                   f"version ({self.info.api_version})" if api_version != self.info.api_version else
                              f"the kind in the data ({kind}) does not match the expected kind ({self.info.kind})",
                              "BadRequest")
        if go_type is not None and from_body and not apply:
            problem = decode_error(obj, go_type)
            if problem:
                raise StatusError(400, f'{self.info.kind} in version "{self.info.version}" cannot be handled as a '
                                       f'{self.info.kind}: {problem}', "BadRequest")
        meta = obj.get("metadata")
        if meta is None:
            meta = obj["metadata"] = {}
        if not isinstance(meta, dict):
            raise StatusError(400, "metadata must be an object", "BadRequest")
        namespace = meta.get("namespace")
        if self.info.namespaced:
            if namespace and namespace != self.target.namespace:
                raise StatusError(400, "the namespace of the provided object does not match the namespace sent on "
                                       "the request", "BadRequest")
            meta["namespace"] = self.target.namespace
        elif namespace:
            # kube clears the namespace of cluster-scoped objects before validation.
            meta.pop("namespace", None)
        if url_name is not None and meta.get("name") != url_name:
            raise StatusError(400, f"the name of the object ({meta.get('name')}) does not match the name on the URL "
                                   f"({url_name})", "BadRequest")
        if validate_fields:
            self.apply_field_validation(decoded, obj, from_body)
        checked: Object = obj
        return checked

    def apply_field_validation(self, decoded: Decoded, obj: Object, from_body: bool = True) -> None:
        """Prune unknown fields, then warn about them and duplicates, or refuse them, as fieldValidation says."""
        mode = field_validation(self.query)
        problems = [f'unknown field "{path}"' for path in self.kind.prune(obj)]
        problems += [f'duplicate field "{name}"' for name in decoded.duplicates]
        if not problems or mode == "Ignore":
            return
        if mode == "Strict":
            prefix = (f'{self.info.kind} in version "{self.info.version}" cannot be handled as a {self.info.kind}: '
                      if from_body else "")
            raise StatusError(400, prefix + "strict decoding error: " + ", ".join(problems), "BadRequest")
        self.warnings.extend(problems)

    # -- the answer ------------------------------------------------------------------------------

    def matches(self, obj: Object, labels: Any, fields: Any) -> bool:
        """Whether the label and field selectors select an object of this kind."""
        return bool(labels.matches(obj.get("metadata", {}).get("labels") or {})) and bool(
            fields.matches(self.kind.selectable_fields(obj)))

    def table(self, items: list[Object], list_meta: dict[str, Any]) -> dict[str, Any]:
        return table_of(self.kind, items, list_meta, self.now(), single(self.query, "includeObject") or "Metadata")

    def respond(self, code: int, body: Any) -> None:
        """Answer with one object, as a one-row Table when a Table was asked for."""
        if isinstance(body, dict) and body.get("kind") == self.info.kind:
            body = self.kind.on_read(body)
        if self.output.form == "table":
            body = self.table([body], {"resourceVersion": body.get("metadata", {}).get("resourceVersion", "")})
        respond(self.request, code, body, self.output, self.warnings)


def _short(obj: Any) -> str:
    text = json.dumps(obj, separators=(",", ":"))
    return text if len(text) < 200 else text[:200] + "…"
