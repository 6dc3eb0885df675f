"""Full-replica workers (etcd storage), in memory: the owner's `/workers` on its control socket and a worker's
`workers` check that reads it."""

from __future__ import annotations

from treq.testing import StubTreq
from twisted.internet.defer import Deferred
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from grafana_aggregator.processes.replica import OwnerWorkersCheck, WorkersStatusResource


class WorkersStatusResourceTests(SynchronousTestCase):
    """The owner's `/workers` says what its supervisor's readiness check says."""

    def test_ok_then_why_not(self) -> None:
        """200 `ok` while the check passes; 503 with the check's reason while it fails."""
        problem: list[str | None] = [None]
        client = StubTreq(WorkersStatusResource(lambda: problem[0]))
        response = self.successResultOf(client.get("http://control/workers"))
        self.assertEqual((response.code, self.successResultOf(client.content(response))), (200, b"ok"))
        problem[0] = "worker 2 is not ready"
        response = self.successResultOf(client.get("http://control/workers"))
        self.assertEqual((response.code, self.successResultOf(client.content(response))),
                         (503, b"worker 2 is not ready"))


class OwnerWorkersCheckTests(SynchronousTestCase):
    """A replica worker's `workers` check follows the owner's, read every interval."""

    def setUp(self) -> None:
        self.clock = Clock()
        self.answers: list[Deferred[tuple[int, bytes]]] = []

        def fetch() -> Deferred[tuple[int, bytes]]:
            answer: Deferred[tuple[int, bytes]] = Deferred()
            self.answers.append(answer)
            return answer

        self.check = OwnerWorkersCheck(fetch, self.clock, interval=1.0)
        self.check.startService()
        self.addCleanup(self.check.stopService)

    def test_fails_until_read_then_follows_the_owner(self) -> None:
        """Unread it fails; then it passes on 200, names the owner's reason on 503, and reads again each second."""
        self.assertIsNotNone(self.check.check())
        self.answers[0].callback((200, b"ok"))
        self.assertIsNone(self.check.check())
        self.clock.advance(1.0)
        self.answers[1].callback((503, b"worker 1 is not running"))
        self.assertEqual(self.check.check(), "worker 1 is not running")
        self.clock.advance(1.0)
        self.answers[2].callback((200, b"ok"))
        self.assertIsNone(self.check.check())

    def test_owner_not_answering_fails_and_the_loop_goes_on(self) -> None:
        """An owner whose control socket fails makes the check fail; the next read can pass again."""
        self.answers[0].errback(ConnectionRefusedError())
        self.assertEqual(self.check.check(),
                         "the owner does not answer on its control socket (ConnectionRefusedError)")
        self.clock.advance(1.0)
        self.answers[1].callback((200, b"ok"))
        self.assertIsNone(self.check.check())
