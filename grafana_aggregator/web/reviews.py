# -*- test-case-name: tests.test_reviews -*-
"""`/apis/authorization.k8s.io/v1` and `/apis/authentication.k8s.io/{v1,v1beta1}`: the self-reviews, create only.

Each group-version is one leaf below `/apis/<group>/<version>`, routed like any local group-version:
a GET of it is its APIResourceList, a POST to a review's collection creates (answers) a review for
the user the request acts as, and everything else is kube's 404 or 405.  The create options are
kube's (`dryRun`, which changes nothing since nothing is stored, `fieldValidation`, `fieldManager`).
Bodies and answers are JSON, YAML or kube's protobuf, which kubectl 1.32 and later use for these.
"""

from __future__ import annotations

from urllib.parse import parse_qs

from twisted.internet.interfaces import IReactorTime
from twisted.web.iweb import IRequest

from ..apimachinery.discovery import api_resource_list, parse_accept
from ..apimachinery.negotiation import JSON, MAX_BODY_BYTES, YAML, Output, media_type, negotiate_output
from ..apimachinery.query import dry_run, field_manager, field_validation
from ..apimachinery.resource import ApiResource
from ..apimachinery.resourcerequest import request_header, respond
from ..apimachinery.status import StatusError, method_not_allowed, not_found_path
from ..apimachinery.strategy import LocalGroupVersion, wall_clock
from ..identity.reviews import ReviewKind, decode_review
from ..identity.reviewtypes import PROTOBUF, encode_protobuf, wrap
from .site import api_call

_NOT_ACCEPTABLE = ("only the following media types are accepted: application/json, application/yaml, "
                   "application/vnd.kubernetes.protobuf, application/json;as=Table;v=v1;g=meta.k8s.io")
#: The media types a review's body may be in, as kube lists them in its 415.
_BODY_TYPES = (JSON, YAML, PROTOBUF)
_YAML_ALIASES = ("application/x-yaml", "text/yaml")
#: The form of an answer in kube's protobuf.
PROTOBUF_OUTPUT = Output("protobuf", PROTOBUF)


def _output(request: IRequest) -> Output:
    """The form of an answer: the first Accept clause that can be produced, protobuf included; a review is not
    printed as a Table, so a Table request gets the object."""
    accept = request_header(request, b"accept")
    for clause in (accept or "").split(","):
        media = parse_accept(clause)
        if not media:
            continue
        if f"{media[0].type}/{media[0].subtype}" == PROTOBUF and not media[0].params.get("as"):
            return PROTOBUF_OUTPUT
        output = negotiate_output(clause)
        if output is not None and output.form == "table":
            return Output("yaml", YAML) if output.encoding == YAML else Output("json", JSON)
        if output is not None:
            return output
    if accept and accept.strip():
        raise StatusError(406, _NOT_ACCEPTABLE, "NotAcceptable")
    return Output("json")


def _check_body_type(request: IRequest) -> None:
    kind = media_type(request_header(request, b"content-type"))
    if kind and kind not in _BODY_TYPES and kind not in _YAML_ALIASES:
        raise StatusError(415, "the body of the request was in an unknown format - accepted media types include: "
                               + ", ".join(_BODY_TYPES), "UnsupportedMediaType")


def _answer(request: IRequest, kind: ReviewKind, answer: dict[str, object], output: Output,
            warnings: list[str]) -> None:
    if output.form != PROTOBUF_OUTPUT.form:
        respond(request, 201, answer, output, warnings)
        return
    data = wrap(kind.info.api_version, kind.info.kind, encode_protobuf(answer, kind.go_type))
    request.setResponseCode(201)
    request.setHeader(b"Content-Type", PROTOBUF.encode())
    request.setHeader(b"Cache-Control", b"no-cache, private")
    request.setHeader(b"Content-Length", b"%d" % len(data))
    for warning in warnings:
        escaped = warning.replace("\\", "\\\\").replace('"', '\\"')
        request.responseHeaders.addRawHeader(b"Warning", f'299 - "{escaped}"'.encode())
    request.write(data)
    request.finish()


def _body(request: IRequest) -> bytes:
    content = request.content
    if content is None:
        return b""
    content.seek(0, 2)
    if content.tell() > MAX_BODY_BYTES:
        raise StatusError(413, f"Request entity too large: limit is {MAX_BODY_BYTES}", "RequestEntityTooLarge")
    content.seek(0)
    data: bytes = content.read()
    return data


class ReviewsResource(ApiResource):
    """Everything under `/apis/<group>/<version>` of a review group-version."""

    isLeaf = True
    #: Which methods a path allows depends on the path: `handle` decides.
    allowed_methods = None

    def __init__(self, group_version: LocalGroupVersion, clock: IReactorTime):
        super().__init__()
        self._kinds = {k.info.plural: k for k in group_version.kinds if isinstance(k, ReviewKind)}
        self._resource_list = api_resource_list(group_version.group, group_version.version, group_version.infos)
        self._now = wall_clock(clock)

    async def handle(self, request: IRequest) -> None:
        method = request.method.decode("ascii", "replace").upper()
        segments = [s.decode("utf-8", "replace") for s in (request.postpath or [])]
        if not segments or segments == [""]:
            if method not in ("GET", "HEAD"):
                raise method_not_allowed()
            output = _output(request)
            respond(request, 200, self._resource_list, Output("json") if output.form == PROTOBUF_OUTPUT.form else output)
            return
        kind = self._kinds.get(segments[0]) if len(segments) == 1 else None
        if kind is None:
            raise not_found_path()
        if method != "POST":
            raise method_not_allowed()
        await self.create(request, kind)

    async def create(self, request: IRequest, kind: ReviewKind) -> None:
        """POST to a review's collection: kube's create options, the body, the answer (201)."""
        output = _output(request)
        _check_body_type(request)
        query = parse_qs(request.uri.partition(b"?")[2].decode("utf-8", "replace"), keep_blank_values=True)
        dry_run(query)
        validation = field_validation(query)
        manager = field_manager(query, request_header(request, b"user-agent"))
        user = api_call(request).user
        if user is None:
            raise StatusError(400, "no user present on request", "BadRequest")
        review, warnings = decode_review(kind, _body(request), request_header(request, b"content-type"), validation)
        answer = kind.answer(review, user, self._now(), manager)
        _answer(request, kind, answer, output, warnings)


def serve_reviews(groups: list[LocalGroupVersion], clock: IReactorTime) -> list[tuple[LocalGroupVersion, ReviewsResource]]:
    """The handler of each review group-version, for the routing table."""
    return [(gv, ReviewsResource(gv, clock)) for gv in groups]
