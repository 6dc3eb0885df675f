"""Tests for L{grafana_aggregator.storage.etcd_client} with a fake HTTP client and a Clock: one deadline a call,
which failures move on to the next endpoint (any for reads, only never-sent ones for writes), etcd's errors."""

from __future__ import annotations

import json
from typing import Any

from twisted.internet.defer import CancelledError, Deferred, fail, succeed
from twisted.internet.error import ConnectionLost, ConnectionRefusedError
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase
from twisted.python.failure import Failure
from twisted.web.client import ResponseFailed, ResponseNeverReceived

from grafana_aggregator.storage import ExpiredError, StorageFullError, StorageTimeoutError, StorageUnavailableError
from grafana_aggregator.storage.etcd_client import EtcdClient


class FakeResponse:
    """A response with a status code (its body is what the patched treq.content gives)."""

    def __init__(self, code: int):
        self.code = code


class FakeHTTP:
    """Answers each POST by its endpoint: a FakeResponse, an exception, or None (never answers)."""

    def __init__(self, answers: dict[str, Any]):
        self.answers = answers
        self.posted: list[str] = []

    def post(self, url: str, /, **kwargs: Any) -> Deferred[Any]:
        self.posted.append(url)
        answer = self.answers[url.split("/v3/")[0]]
        if answer is None:
            return Deferred()
        if answer == SENT_NEVER_ANSWERED:
            return Deferred(lambda d: d.errback(ResponseNeverReceived([Failure(CancelledError())])))
        if isinstance(answer, Exception):
            return fail(answer)
        return succeed(answer)


OK = {"header": {"revision": "7"}}
#: An answer never given to a request treq has sent: cancelling it fails as Twisted's Agent does.
SENT_NEVER_ANSWERED = "sent, never answered"


class EtcdClientTests(SynchronousTestCase):
    """EtcdClient.call's deadline, failover and errors."""

    def setUp(self) -> None:
        self.patch(__import__("treq"), "content", lambda response: succeed(self.bodies[id(response)]))
        self.bodies: dict[int, bytes] = {}

    def answer(self, code: int, body: dict[str, Any]) -> Any:
        response = FakeResponse(code)
        self.bodies[id(response)] = json.dumps(body).encode()
        return response

    def client(self, answers: dict[str, Any], clock: Clock | None = None) -> tuple[EtcdClient, FakeHTTP]:
        http = FakeHTTP(answers)
        return EtcdClient(list(answers), http, clock or Clock(), timeout=5.0), http

    def test_read_fails_over_after_any_transport_failure(self) -> None:
        """A range whose connection broke mid-way is asked again of the next endpoint, which later calls keep."""
        client, http = self.client({"http://a": ResponseFailed([Failure(ConnectionLost())]), "http://b": self.answer(200, OK)})
        self.assertEqual(self.successResultOf(Deferred.fromCoroutine(client.range(b"k"))), OK)
        self.assertEqual(client.endpoint, "http://b")
        self.assertEqual([u.split("/v3/")[0] for u in http.posted], ["http://a", "http://b"])

    def test_write_fails_over_only_when_never_sent(self) -> None:
        """A txn whose connection was refused goes to the next endpoint; one that may have reached etcd does not."""
        client, http = self.client({"http://a": ConnectionRefusedError(), "http://b": self.answer(200, OK)})
        self.assertEqual(self.successResultOf(Deferred.fromCoroutine(client.txn([], [], []))), OK)
        client, http = self.client({"http://a": ResponseFailed([Failure(ConnectionLost())]), "http://b": self.answer(200, OK)})
        failure = self.failureResultOf(Deferred.fromCoroutine(client.txn([], [], [])), StorageUnavailableError)
        self.assertIn("its outcome is unknown", str(failure.value))
        self.assertEqual(len(http.posted), 1)

    def test_deadline(self) -> None:
        """A call etcd never answers fails with StorageTimeoutError (504) at the client's timeout."""
        clock = Clock()
        client, _ = self.client({"http://a": None}, clock)
        call = Deferred.fromCoroutine(client.range(b"k"))
        clock.advance(4.9)
        self.assertNoResult(call)
        clock.advance(0.2)
        failure = self.failureResultOf(call, StorageTimeoutError)
        self.assertEqual(str(failure.value), "etcd (http://a) did not answer kv/range within 5 s")

    def test_deadline_cuts_a_request_treq_had_sent(self) -> None:
        """A txn and a range that treq sent and etcd never answers (a stopped member: treq turns the deadline's
        cancel into ResponseNeverReceived) time out as 504s with a clear message, and the next call goes to the
        next endpoint."""
        for call in (lambda client: client.txn([], [], []), lambda client: client.range(b"k")):
            clock = Clock()
            client, http = self.client({"http://a": SENT_NEVER_ANSWERED, "http://b": self.answer(200, OK)}, clock)
            calling = Deferred.fromCoroutine(call(client))
            clock.advance(5.1)
            failure = self.failureResultOf(calling, StorageTimeoutError)
            self.assertRegex(str(failure.value), r"^etcd \(http://a\) did not answer kv/(txn|range) within 5 s")
            self.assertEqual(client.endpoint, "http://b")

    def test_calls_failing_together_move_on_once(self) -> None:
        """Two calls that time out together on one endpoint move the client on to the next endpoint once, not
        twice (which would lead back to the endpoint that hangs)."""
        clock = Clock()
        client, _ = self.client({"http://a": SENT_NEVER_ANSWERED, "http://b": self.answer(200, OK)}, clock)
        calls = [Deferred.fromCoroutine(client.txn([], [], [])) for _ in range(2)]
        clock.advance(5.1)
        for call in calls:
            self.failureResultOf(call, StorageTimeoutError)
        self.assertEqual(client.endpoint, "http://b")

    def test_all_endpoints_down(self) -> None:
        """When no endpoint can be reached the error names each one."""
        client, _ = self.client({"http://a": ConnectionRefusedError(), "http://b": ConnectionRefusedError()})
        failure = self.failureResultOf(Deferred.fromCoroutine(client.range(b"k")), StorageUnavailableError)
        self.assertEqual(str(failure.value), "etcd cannot be reached (http://a: Connection was refused by other side.; "
                                             "http://b: Connection was refused by other side.)")

    def test_compacted_is_expired(self) -> None:
        """etcd's OutOfRange (a compacted revision) is ExpiredError."""
        client, _ = self.client({"http://a": self.answer(400, {
            "error": "etcdserver: mvcc: required revision has been compacted", "code": 11})})
        failure = self.failureResultOf(Deferred.fromCoroutine(client.range(b"k", revision=2)), ExpiredError)
        self.assertEqual(str(failure.value),
                         "too old resource version: etcdserver: mvcc: required revision has been compacted")

    def test_space_exceeded_is_full(self) -> None:
        """etcd's ResourceExhausted (its space quota used up) is StorageFullError (507)."""
        client, _ = self.client({"http://a": self.answer(500, {
            "error": "etcdserver: mvcc: database space exceeded", "code": 8})})
        self.failureResultOf(Deferred.fromCoroutine(client.txn([], [], [])), StorageFullError)
