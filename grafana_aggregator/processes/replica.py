# -*- test-case-name: tests.test_workers -*-
"""What ties full-replica workers (etcd storage) to their owner: the owner's control socket and the `workers` check.

With etcd every worker serves everything itself, `/readyz` included, but only the owner knows
whether every worker runs and is ready.  The owner therefore serves, on its control socket
(`worker-0.sock` in the private folder), its own `/metrics` and `/workers` (200 `ok`, or 503 and
why not); each worker's `OwnerWorkersCheck` reads `/workers` every second, so whichever process
answers `/readyz`, its `workers` check says what the owner's says.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from twisted.application.service import Service
from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IReactorTime
from twisted.internet.task import LoopingCall
from twisted.logger import Logger
from twisted.web.client import readBody
from twisted.web.http_headers import Headers
from twisted.web.iweb import IRequest
from twisted.web.resource import Resource

from .remote_store import unix_agent

_log = Logger()

#: Seconds between a worker's reads of the owner's `workers` check.
OWNER_CHECK_INTERVAL = 1.0
#: Seconds a control-socket request may take.
CONTROL_TIMEOUT = 2.0

#: Asks the owner's control socket for `/workers`: its status code and body.
FetchWorkers = Callable[[], Awaitable[tuple[int, bytes]]]


class WorkersStatusResource(Resource):
    """The owner's `/workers` on its control socket: 200 `ok` while every worker runs and is ready, else 503 and why."""

    isLeaf = True

    def __init__(self, check: Callable[[], str | None]):
        super().__init__()
        self._check = check

    def render_GET(self, request: IRequest) -> bytes:
        problem = self._check()
        request.setHeader(b"Content-Type", b"text/plain; charset=utf-8")
        if problem is None:
            return b"ok"
        request.setResponseCode(503)
        return problem.encode("utf-8")


class OwnerWorkersCheck(Service):
    """A worker's `workers` readiness check: the owner's, read from its control socket every `interval`."""

    def __init__(self, fetch: FetchWorkers, clock: IReactorTime, interval: float = OWNER_CHECK_INTERVAL):
        self._fetch = fetch
        self._clock = clock
        self._interval = interval
        self._problem: str | None = "the owner's workers check has not been read yet"
        self._loop: LoopingCall | None = None

    def check(self) -> str | None:
        """None while the owner says every worker runs and is ready, else why not."""
        return self._problem

    def startService(self) -> None:
        super().startService()
        self._loop = LoopingCall(lambda: Deferred.fromCoroutine(self._read()))
        self._loop.clock = self._clock
        self._loop.start(self._interval, now=True).addErrback(
            lambda failure: _log.failure("the owner's workers check loop stopped", failure))

    def stopService(self) -> None:
        super().stopService()
        if self._loop is not None and self._loop.running:
            self._loop.stop()
        self._loop = None

    async def _read(self) -> None:
        try:
            code, body = await self._fetch()
        except Exception as error:
            self._problem = f"the owner does not answer on its control socket ({type(error).__name__})"
            return
        if code == 200:
            self._problem = None
        else:
            self._problem = body.decode("utf-8", "replace") or f"the owner's workers check answered {code}"


async def control_get(reactor: Any, path: str, uri: bytes, timeout: float = CONTROL_TIMEOUT) -> tuple[int, bytes]:
    """GET `uri` from the control socket at `path` (a new connection, cancelled after `timeout` seconds)."""
    agent = unix_agent(reactor, path, persistent=False)
    request = agent.request(b"GET", b"http://control" + uri, Headers())
    timer = reactor.callLater(timeout, request.cancel)
    try:
        response = await request
        body: bytes = await readBody(response)
    finally:
        if timer.active():
            timer.cancel()
    return response.code, body
