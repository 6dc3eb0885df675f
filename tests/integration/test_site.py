"""The Site's last-resort error handling, over a real loopback socket (StubTreq builds its own Site)."""

from __future__ import annotations

import treq
from twisted.internet import reactor
from twisted.internet.endpoints import TCP4ServerEndpoint
from twisted.trial.unittest import TestCase
from twisted.web.client import Agent, HTTPConnectionPool
from twisted.web.iweb import IRequest
from twisted.web.resource import Resource

from grafana_aggregator.web.site import build_site


class Exploding(Resource):
    isLeaf = True

    def render(self, request: IRequest) -> bytes:
        raise RuntimeError("secret internal detail")


class SiteErrorTests(TestCase):
    """An exception escaping a handler becomes a 500 Status, never a traceback page."""

    async def test_unexpected_error_is_500_status(self) -> None:
        """A failing handler answers a 500 InternalError Status that does not leak the exception, and logs it."""
        root = Resource()
        root.putChild(b"boom", Exploding())
        port = await TCP4ServerEndpoint(reactor, 0, interface="127.0.0.1").listen(build_site(root))
        self.addCleanup(port.stopListening)
        client = treq.client.HTTPClient(Agent(reactor, pool=HTTPConnectionPool(reactor, persistent=False)))
        response = await client.get(f"http://127.0.0.1:{port.getHost().port}/boom")
        self.assertEqual(response.headers.getRawHeaders("content-type"), ["application/json"])
        self.assertEqual((response.code, await response.json()), (500, {
            "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
            "message": "Internal error occurred: unexpected server error (see the server log)",
            "reason": "InternalError", "code": 500,
        }))
        self.assertEqual(len(self.flushLoggedErrors(RuntimeError)), 1)
