"""SIGTERM while a slow proxied request is in flight: the request completes before the daemon exits 0."""

from __future__ import annotations

import os

import treq
from twisted.internet import reactor
from twisted.internet.endpoints import TCP4ServerEndpoint
from twisted.internet.task import deferLater
from twisted.trial.unittest import TestCase
from twisted.web.iweb import IRequest
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET, Site

from grafana_aggregator.tls.certificates import ServingTLS, TLSServerEndpoint, load_key_pair

from . import test_shutdown
from .test_daemon import get_until
from ..support import CertificateAuthority


class SlowBackend(Resource):
    """Answers discovery at once and everything else after two seconds."""

    isLeaf = True

    def render(self, request: IRequest) -> bytes | int:
        request.setHeader(b"Content-Type", b"application/json")
        if request.path.rstrip(b"/") == b"/apis/slow.example/v1":
            return b'{"kind":"APIResourceList","apiVersion":"v1","groupVersion":"slow.example/v1","resources":[]}'
        if request.path != b"/apis/slow.example/v1/things":
            request.setResponseCode(404)
            return b"{}"
        gone: list[object] = []
        request.notifyFinish().addBoth(gone.append)  # type: ignore[attr-defined]

        def answer() -> None:
            if not gone:
                request.write(b'{"slow":true}')
                request.finish()

        reactor.callLater(2, answer)
        return NOT_DONE_YET


class DrainTests(TestCase):
    """In-flight requests are drained at shutdown."""

    timeout = 60
    setUp = test_shutdown.ShutdownTests.setUp
    start = test_shutdown.ShutdownTests.start

    async def test_slow_request_completes(self) -> None:
        """A proxied request that takes 2 s, started before SIGTERM, still gets its 200; the exit status is 0."""
        folder = os.path.abspath(self.mktemp())
        pair = load_key_pair(*CertificateAuthority().server().write(folder, "backend"))
        port = await TLSServerEndpoint(TCP4ServerEndpoint(reactor, 0, interface="127.0.0.1"),
                                       ServingTLS(pair)).listen(Site(SlowBackend()))
        self.addCleanup(port.stopListening)
        daemon, url = await self.start()
        externalname = {"apiVersion": "service.grafana.app/v0alpha1", "kind": "ExternalName",
                        "metadata": {"name": "slow", "namespace": "default"}, "spec": {"host": "127.0.0.1"}}
        apiservice = {"apiVersion": "apiregistration.k8s.io/v1", "kind": "APIService",
                      "metadata": {"name": "v1.slow.example"},
                      "spec": {"group": "slow.example", "version": "v1", "groupPriorityMinimum": 1000,
                               "versionPriority": 15, "insecureSkipTLSVerify": True,
                               "service": {"name": "slow", "namespace": "default", "port": port.getHost().port}}}
        for path, body in (("/apis/service.grafana.app/v0alpha1/namespaces/default/externalnames", externalname),
                           ("/apis/apiregistration.k8s.io/v1/apiservices", apiservice)):
            created = await self.client.post(url + path, json=body, headers=self.headers)
            self.assertEqual(created.code, 201, await treq.content(created))
        probe = await get_until(self.client, url + "/apis/slow.example/v1", self.headers, 200, 0.1)
        self.assertEqual(probe, 200)

        slow = self.client.get(url + "/apis/slow.example/v1/things", headers=self.headers)
        await deferLater(reactor, 0.3, lambda: None)
        daemon.process.signalProcess("TERM")
        response = await slow
        self.assertEqual((response.code, await treq.content(response)), (200, b'{"slow":true}'))
        self.assertEqual(await daemon.ended, 0)
