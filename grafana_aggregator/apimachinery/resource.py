"""The async base of API resources: a coroutine per request, with every error answered as a Status."""

from __future__ import annotations

from typing import Any

from twisted.internet.defer import Deferred
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web.iweb import IRequest
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET

from .status import StatusError, encode_json

_log = Logger()


class AsyncResource(Resource):
    """Runs `handle(request)` as a coroutine; a StatusError becomes its Status, anything else a logged 500."""

    async def handle(self, request: IRequest) -> None:
        raise NotImplementedError

    def render(self, request: IRequest) -> int:
        finished: list[object] = []
        request.notifyFinish().addBoth(finished.append)  # type: ignore[attr-defined]
        result = Deferred.fromCoroutine(self.handle(request))
        result.addErrback(self._failed, request, finished)
        return NOT_DONE_YET

    def _failed(self, failure: Failure, request: IRequest, finished: list[object]) -> None:
        if failure.check(StatusError):
            error: Any = failure.value
        else:
            _log.failure("error serving {method} {uri}", failure, method=request.method, uri=request.uri)
            error = StatusError(500, "Internal error occurred: unexpected server error (see the server log)")
        if finished or request.finished:  # type: ignore[attr-defined]
            return
        if request.startedWriting:  # type: ignore[attr-defined]
            request.loseConnection()  # type: ignore[attr-defined]
            return
        body = encode_json(error.to_status())
        request.setResponseCode(error.code)
        request.setHeader(b"Content-Type", b"application/json")
        request.setHeader(b"Cache-Control", b"no-cache, private")
        request.setHeader(b"Content-Length", str(len(body)).encode())
        if error.code == 429 or error.code == 503:
            request.setHeader(b"Retry-After", b"1")
        request.write(body)
        request.finish()
