"""The base of every API resource: 405 for a method it does not serve, a coroutine per request, errors as Status."""

from __future__ import annotations

from collections.abc import Collection

from twisted.internet.defer import Deferred
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web.iweb import IRequest
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET

from .status import StatusError, internal_error, method_not_allowed, write_status

_log = Logger()

#: What read-only resources (discovery, OpenAPI, /version, /metrics) serve.
READ_METHODS: Collection[bytes] = (b"GET", b"HEAD")


class ApiResource(Resource):
    """Runs `handle(request)` as a coroutine for the methods in `allowed_methods` (every method when None).

    Another method gets kube's 405 Status without `handle` running.  A StatusError raised by `handle`
    becomes its Status; anything else is logged and becomes a 500 Status.  Once the response has
    started, an error can only drop the connection.
    """

    allowed_methods: Collection[bytes] | None = READ_METHODS

    async def handle(self, request: IRequest) -> None:
        raise NotImplementedError

    def render(self, request: IRequest) -> int:
        if self.allowed_methods is not None and request.method not in self.allowed_methods:
            return write_status(request, method_not_allowed())
        finished: list[object] = []
        request.notifyFinish().addBoth(finished.append)  # type: ignore[attr-defined]
        result = Deferred.fromCoroutine(self.handle(request))
        result.addErrback(self._failed, request, finished)
        return NOT_DONE_YET

    def _failed(self, failure: Failure, request: IRequest, finished: list[object]) -> None:
        if failure.check(StatusError):
            error: StatusError = failure.value  # type: ignore[assignment]
        else:
            _log.failure("error serving {method} {uri}", failure, method=request.method, uri=request.uri)
            error = internal_error()
        if finished or request.finished:  # type: ignore[attr-defined]
            return
        if request.startedWriting:  # type: ignore[attr-defined]
            request.loseConnection()  # type: ignore[attr-defined]
            return
        write_status(request, error)


class StatusResource(Resource):
    """Answers every request below it with one Status error."""

    isLeaf = True

    def __init__(self, error: StatusError):
        super().__init__()
        self._error = error

    def render(self, request: IRequest) -> int:
        return write_status(request, self._error)
