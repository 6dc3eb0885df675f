# -*- test-case-name: tests.test_health, tests.test_storage_hardening -*-
"""`/healthz`, `/livez` and `/readyz` with named checks, answered exactly as kube-apiserver answers them.

Checks are callables that read state other parts keep up to date (they never do I/O in the request
path) and return None when healthy or a reason.  `/readyz/<check>` asks one check; `?verbose`
lists them all; `?exclude=<name>` leaves one out.

The `storage` readiness check (StorageCheck) fails from a write that found the disk full until a write
succeeds again; while it fails, a write that changes nothing is tried every few seconds, so the server
becomes ready again once there is room, even if no request writes (an unready server gets none).
"""

from __future__ import annotations

from collections.abc import Callable
from urllib.parse import parse_qs

from attrs import define, field
from twisted.application.service import Service
from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IReactorTime
from twisted.internet.task import LoopingCall
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web.iweb import IRequest
from twisted.web.resource import Resource

from ..apimachinery.status import not_found_path, write_status
from ..storage import IStore, StorageError

_log = Logger()

#: A check returns None when healthy, or why it is not.
Check = Callable[[], "str | None"]

ENDPOINTS = ("healthz", "livez", "readyz")


@define
class HealthChecks:
    """The named checks of each health endpoint, in the order they were added."""

    _checks: dict[str, dict[str, Check]] = field(factory=lambda: {e: {} for e in ENDPOINTS})

    def add(self, name: str, check: Check, endpoints: tuple[str, ...] = ENDPOINTS) -> None:
        """Register a check on some endpoints (all three by default)."""
        for endpoint in endpoints:
            if name in self._checks[endpoint]:
                raise ValueError(f"health check {name!r} is already registered on /{endpoint}")
        for endpoint in endpoints:
            self._checks[endpoint][name] = check

    def checks(self, endpoint: str) -> dict[str, Check]:
        """The checks of one endpoint."""
        return dict(self._checks[endpoint])


def _run(check: Check) -> str | None:
    try:
        return check()
    except Exception as error:
        _log.failure("health check raised")
        return f"check raised {type(error).__name__}"


class HealthResource(Resource):
    """One of /healthz, /livez, /readyz and their per-check children."""

    isLeaf = True

    def __init__(self, name: str, checks: HealthChecks):
        super().__init__()
        self._name = name
        self._checks = checks

    def render(self, request: IRequest) -> bytes | int:
        """Answer any method, as kube-apiserver's health handlers do."""
        postpath = request.postpath or []
        checks = self._checks.checks(self._name)
        if len(postpath) > 1 or postpath == [b""]:
            return write_status(request, not_found_path())
        if postpath:
            check_name = postpath[0].decode("utf-8", "replace")
            if check_name not in checks:
                return write_status(request, not_found_path())
            problem = _run(checks[check_name])
            if problem is not None:
                return _plain(request, 500, f"internal server error: {problem}\n")
            return _plain(request, 200, "ok")
        query = parse_qs(request.uri.partition(b"?")[2].decode("utf-8", "replace"), keep_blank_values=True)
        excluded = set(query.get("exclude", []))
        lines: list[str] = []
        failed: list[str] = []
        details: list[str] = []
        for check_name, check in checks.items():
            if check_name in excluded:
                excluded.discard(check_name)
                lines.append(f"[+]{check_name} excluded: ok")
                continue
            problem = _run(check)
            if problem is None:
                lines.append(f"[+]{check_name} ok")
            else:
                lines.append(f"[-]{check_name} failed: reason withheld")
                details.append(f"[-]{check_name} failed: {problem}")
                failed.append(check_name)
        if excluded:
            quoted = ",".join(f'"{n}"' for n in sorted(excluded))
            lines.append(f"warn: some health checks cannot be excluded: no matches for {quoted}")
        output = "".join(line + "\n" for line in lines)
        if failed:
            _log.info("{endpoint} check failed: {checks}\n{details}", endpoint=self._name,
                      checks=",".join(failed), details="\n".join(details))
            return _plain(request, 500, f"{output}{self._name} check failed\n")
        if "verbose" not in query:
            return _plain(request, 200, "ok")
        return _plain(request, 200, f"{output}{self._name} check passed\n")


def _plain(request: IRequest, code: int, text: str) -> bytes:
    request.setResponseCode(code)
    request.setHeader(b"Content-Type", b"text/plain; charset=utf-8")
    request.setHeader(b"X-Content-Type-Options", b"nosniff")
    request.setHeader(b"Cache-Control", b"no-cache, private")
    return text.encode("utf-8")



class ReadinessService(Service):
    """Tracks whether the daemon is shutting down, for the `shutdown` readiness check."""

    def __init__(self) -> None:
        self.shutting_down = False

    def stopService(self) -> None:
        self.shutting_down = True
        super().stopService()

    def check(self) -> str | None:
        """The `shutdown` check: failing once the daemon is stopping."""
        return "the server is shutting down" if self.shutting_down else None


#: Seconds between the write probes of a storage whose writes fail.
STORAGE_PROBE_INTERVAL = 5.0


class StorageCheck(Service):
    """The `storage` readiness check: failing while the store's writes find no room, probing it until they do.

    :param store: the store whose `write_problem` is reported and whose `probe_write` is tried.
    :param clock: time for the probes.
    :param interval: seconds between probes while writes fail.
    """

    def __init__(self, store: IStore, clock: IReactorTime, interval: float = STORAGE_PROBE_INTERVAL):
        self._store = store
        self._clock = clock
        self._interval = interval
        self._loop: LoopingCall | None = None

    def check(self) -> str | None:
        """None while writes work, else why they fail."""
        return self._store.write_problem()

    def startService(self) -> None:
        super().startService()
        self._loop = LoopingCall(self._probe)
        self._loop.clock = self._clock
        self._loop.start(self._interval, now=False).addErrback(
            lambda failure: _log.failure("the storage probe loop stopped", failure))

    def stopService(self) -> None:
        super().stopService()
        if self._loop is not None and self._loop.running:
            self._loop.stop()
        self._loop = None

    def _probe(self) -> Deferred[None] | None:
        if self._store.write_problem() is None:
            return None
        probing = Deferred.fromCoroutine(self._store.probe_write())
        probing.addErrback(self._probe_failed)
        return probing

    def _probe_failed(self, failure: Failure) -> None:
        if not failure.check(StorageError):
            _log.failure("probing whether the storage can be written failed", failure)
