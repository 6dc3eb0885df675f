"""Overload protection: the in-flight limits, as kube-apiserver's max-in-flight filter applies them."""

from __future__ import annotations

import json

from treq.testing import StubTreq
from twisted.trial.unittest import SynchronousTestCase
from twisted.web.iweb import IRequest
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET

from grafana_aggregator.identity.auth import Authenticator, TokenAuthenticator, UserInfo
from grafana_aggregator.web.site import Limits
from grafana_aggregator.web.root import AuthenticatingRoot, InFlight, Router


class Holding(Resource):
    """Never answers until told to."""

    isLeaf = True

    def __init__(self) -> None:
        super().__init__()
        self.held: list[IRequest] = []

    def render(self, request: IRequest) -> int:
        self.held.append(request)
        return NOT_DONE_YET


class InFlightTests(SynchronousTestCase):
    """Requests beyond the limit get 429 with Retry-After; watches and health probes are never refused."""

    def setUp(self) -> None:
        self.holding = Holding()
        tree = Router()
        tree.putChild(b"apis", self.holding)
        self.in_flight = InFlight(Limits(max_read_only_in_flight=2, max_mutating_in_flight=1))
        authenticator = Authenticator([TokenAuthenticator({
            "user": UserInfo(name="alice", groups=("system:masters-not",)),
            "admin": UserInfo(name="admin", groups=("system:masters",)),
        })], anonymous=False)
        root = AuthenticatingRoot(tree, authenticator, peer_certificates=lambda request: [], in_flight=self.in_flight)
        self.client = StubTreq(root)

    def send(self, path: str, token: str = "user", method: str = "GET") -> object:
        return self.client.request(method, f"https://a.test{path}", headers={"Authorization": f"Bearer {token}"})

    def test_read_only_limit(self) -> None:
        """The third concurrent read-only request is refused with kube's 429 Status and Retry-After: 1."""
        first, second = self.send("/apis/a"), self.send("/apis/b")
        self.assertNoResult(first)
        self.assertNoResult(second)
        response = self.successResultOf(self.send("/apis/c"))
        body = json.loads(self.successResultOf(self.client.content(response)))
        self.assertEqual((response.code, response.headers.getRawHeaders("retry-after"), body["reason"],
                          body["message"], body["details"]),
                         (429, ["1"], "TooManyRequests", "Too many requests, please try again later.",
                          {"retryAfterSeconds": 1}))

    def test_mutating_limit_is_separate(self) -> None:
        """Mutating requests have their own limit, independent of read-only ones."""
        self.send("/apis/a")
        self.send("/apis/b")
        self.assertNoResult(self.send("/apis/c", token="admin", method="POST"))
        self.assertEqual(self.successResultOf(self.send("/apis/d", token="admin", method="POST")).code, 429)

    def test_watches_and_probes_exempt(self) -> None:
        """A watch and a health probe pass when the limit is reached; system:masters are limited like others."""
        self.send("/apis/a")
        self.send("/apis/b")
        self.assertNoResult(self.send("/apis/g/v/things?watch=true", token="admin"))
        self.assertEqual(self.successResultOf(self.send("/apis/c", token="admin")).code, 429)
        self.assertEqual(self.successResultOf(self.send("/readyz")).code, 404)  # answered, not refused
        self.assertEqual((self.in_flight.read_only, self.in_flight.mutating), (2, 0))

    def test_finished_requests_free_their_place(self) -> None:
        """Once a request finishes, a new one is admitted; idle() fires when none is in flight."""
        first = self.send("/apis/a")
        self.send("/apis/b")
        idle = self.in_flight.idle()
        for request in list(self.holding.held):
            request.write(b"done")
            request.finish()
        self.client.flush()
        self.successResultOf(first)
        self.successResultOf(idle)
        self.assertNoResult(self.send("/apis/c"))
