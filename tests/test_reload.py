"""Certificate rotation: change detection, validation and installation of reloaded certificate files."""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

from cryptography import x509
from twisted.internet import reactor
from twisted.internet.defer import Deferred, succeed
from twisted.internet.endpoints import TCP4ServerEndpoint
from twisted.internet.task import Clock, deferLater
from twisted.logger import formatEvent, globalLogPublisher
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase, TestCase
from twisted.web.client import readBody
from twisted.web.http import HTTPChannel
from twisted.web.iweb import IRequest
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET, Site

from grafana_aggregator.identity.auth import AuthenticationError, ChainVerifier
from grafana_aggregator.tls.reload import RELOAD_INTERVAL, CertificateReloader, FileWatcher, ReloadableVerifier
from grafana_aggregator.tls.certificates import ServingTLS, TLSServerEndpoint, load_key_pair
from grafana_aggregator.aggregation.upstream import Backend, UpstreamClients

from .support import CertificateAuthority


def write(path: str, data: bytes) -> None:
    with open(path, "wb") as handle:
        handle.write(data)


class ReloadableVerifierTests(SynchronousTestCase):
    """The verifier held by the authenticators follows its replaced CA bundle."""

    def test_replaced_bundle_is_used(self) -> None:
        """After replace_cas, certificates of the new CA verify and those of the dropped one do not."""
        old, new = CertificateAuthority("old"), CertificateAuthority("new")
        verifier = ReloadableVerifier([old.certificate])
        self.assertIsInstance(verifier, ChainVerifier)
        connection = object()
        verifier.verify([old.issue("alice").certificate])
        leaf = new.issue("bob").certificate
        self.assertRaises(AuthenticationError, verifier.verify, [leaf], connection)
        verifier.replace_cas([new.certificate])
        verifier.verify([leaf], connection)
        self.assertRaises(AuthenticationError, verifier.verify, [old.issue("alice").certificate])
        self.assertEqual(verifier.cas, (new.certificate,))


class FileWatcherTests(SynchronousTestCase):
    """A watcher's digest changes with the bytes of any of its files, and only then."""

    def test_digest_follows_content(self) -> None:
        """Rewriting the same bytes keeps the digest; other bytes in either file change it."""
        folder = self.mktemp()
        os.makedirs(folder)
        a, b = os.path.join(folder, "a"), os.path.join(folder, "b")
        write(a, b"one")
        write(b, b"two")
        watcher = FileWatcher([a, b])
        first = watcher.read()
        write(a, b"one")
        self.assertEqual(watcher.read(), first)
        write(b, b"three")
        self.assertNotEqual(watcher.read(), first)
        write(a, b"onetwo")
        write(b, b"")
        self.assertNotEqual(watcher.read(), FileWatcher([a]).read())


class CertificateReloaderTests(SynchronousTestCase):
    """The reloader looks at the files on every tick of the injected clock and installs valid changes."""

    def setUp(self) -> None:
        self.folder = os.path.abspath(self.mktemp())
        os.makedirs(self.folder)
        self.server_ca = CertificateAuthority("server-ca")
        self.client_ca = CertificateAuthority("client-ca")
        self.header_ca = CertificateAuthority("header-ca")
        self.proxy_ca = CertificateAuthority("proxy-ca")
        self.serving_files = self.server_ca.server().write(self.folder, "serving")
        self.proxy_files = self.proxy_ca.issue("front-proxy-client").write(self.folder, "proxy")
        self.client_ca_file = self.client_ca.write_ca(self.folder, "client-ca")
        self.header_ca_file = self.header_ca.write_ca(self.folder, "header-ca")
        self.serving = load_key_pair(*self.serving_files)
        self.proxy = load_key_pair(*self.proxy_files)
        self.calls: dict[str, list[Any]] = {"serving": [], "client": [], "header": [], "proxy": []}
        self.events: list[dict[str, Any]] = []
        globalLogPublisher.addObserver(self.events.append)
        self.addCleanup(globalLogPublisher.removeObserver, self.events.append)
        self.clock = Clock()
        self.reloader = CertificateReloader(
            self.clock,
            serving=self.serving,
            on_serving=lambda pair, cas: self.calls["serving"].append((pair, list(cas))),
            client_ca_file=self.client_ca_file,
            client_ca=[self.client_ca.certificate],
            on_client_ca=lambda cas: self.calls["client"].append(list(cas)),
            requestheader_ca_file=self.header_ca_file,
            requestheader_ca=[self.header_ca.certificate],
            on_requestheader_ca=lambda cas: self.calls["header"].append(list(cas)),
            proxy_client=self.proxy,
            on_proxy_client=lambda pair: self.calls["proxy"].append(pair),
        )
        self.reloader.startService()
        self.addCleanup(self.reloader.stopService)

    def tick(self) -> None:
        self.clock.advance(RELOAD_INTERVAL)

    def messages(self) -> list[str]:
        return [str(formatEvent(e)) for e in self.events]

    def assertNoCalls(self) -> None:
        self.assertEqual(self.calls, {"serving": [], "client": [], "header": [], "proxy": []})

    def test_unchanged_files_install_nothing(self) -> None:
        """The files as loaded at start-up, even rewritten with the same bytes, install nothing."""
        self.tick()
        write(self.serving_files[0], open(self.serving_files[0], "rb").read())
        self.tick()
        self.assertNoCalls()
        self.assertEqual([c.getTime() for c in self.clock.getDelayedCalls()], [3 * RELOAD_INTERVAL])

    def test_new_serving_pair_installed(self) -> None:
        """A new serving certificate and key reach on_serving with the client CAs of both bundles."""
        new = self.server_ca.server()
        new.write(self.folder, "serving")
        self.tick()
        [(pair, cas)] = self.calls["serving"]
        self.assertEqual(pair.chain[0], new.certificate)
        self.assertEqual(cas, [self.client_ca.certificate, self.header_ca.certificate])
        self.tick()
        self.assertEqual(len(self.calls["serving"]), 1)
        self.assertTrue(any("serial" in m and "serving.crt" in m for m in self.messages()))

    def test_new_client_ca_installed(self) -> None:
        """A new client CA bundle reaches on_client_ca, and on_serving with the new CA names."""
        other = CertificateAuthority("other-ca")
        write(self.client_ca_file, self.client_ca.issued.cert_pem + other.issued.cert_pem)
        self.tick()
        self.assertEqual(self.calls["client"], [[self.client_ca.certificate, other.certificate]])
        [(pair, cas)] = self.calls["serving"]
        self.assertEqual(pair, self.serving)
        self.assertEqual(cas, [self.client_ca.certificate, other.certificate, self.header_ca.certificate])
        self.assertEqual((self.calls["header"], self.calls["proxy"]), ([], []))

    def test_new_requestheader_ca_installed(self) -> None:
        """A new request-header CA bundle reaches on_requestheader_ca."""
        other = CertificateAuthority("other-header-ca")
        other.write_ca(self.folder, "header-ca")
        self.tick()
        self.assertEqual(self.calls["header"], [[other.certificate]])
        self.assertEqual(self.calls["serving"][0][1], [self.client_ca.certificate, other.certificate])

    def test_new_proxy_client_installed(self) -> None:
        """A new proxy client certificate and key reach on_proxy_client, once."""
        new = self.proxy_ca.issue("front-proxy-client")
        new.write(self.folder, "proxy")
        self.tick()
        self.tick()
        [pair] = self.calls["proxy"]
        self.assertEqual((pair.chain[0], pair.cert_file), (new.certificate, self.proxy_files[0]))
        self.assertEqual(self.calls["serving"], [])

    def test_certificate_before_key_waits_one_tick(self) -> None:
        """A new certificate seen with the old key is skipped without a warning, then installed with its key."""
        new = self.server_ca.server()
        write(self.serving_files[0], new.cert_pem)
        self.tick()
        self.assertNoCalls()
        self.assertFalse([e for e in self.events if e.get("log_level") is not None and e["log_level"].name == "warn"])
        write(self.serving_files[1], new.key_pem)
        self.tick()
        self.assertEqual(self.calls["serving"][0][0].chain[0], new.certificate)

    def test_persistent_mismatch_is_reported_and_never_installed(self) -> None:
        """A pair still mismatched on the next tick is reported once, naming the key file; nothing is installed."""
        write(self.serving_files[0], self.server_ca.server().cert_pem)
        for _ in range(4):
            self.tick()
        self.assertNoCalls()
        warnings = [m for m in self.messages() if "does not belong" in m and "stays in use" in m]
        self.assertEqual(len(warnings), 1)
        self.assertIn(self.serving_files[1], warnings[0])

    def test_broken_file_keeps_old(self) -> None:
        """A broken CA file is reported once, naming it; fixing it later installs the fixed bundle."""
        write(self.client_ca_file, b"-----BEGIN CERTIFICATE-----\ngarbage\n")
        self.tick()
        self.tick()
        self.assertNoCalls()
        warnings = [m for m in self.messages() if self.client_ca_file in m]
        self.assertEqual(len(warnings), 1)
        self.assertIn("previous one stays in use", warnings[0])
        other = CertificateAuthority("fixed")
        other.write_ca(self.folder, "client-ca")
        self.tick()
        self.assertEqual(self.calls["client"], [[other.certificate]])

    def test_missing_file_keeps_old(self) -> None:
        """A missing key file is reported, naming it, and the old pair stays until the file is back."""
        os.remove(self.proxy_files[1])
        self.tick()
        self.assertNoCalls()
        self.assertTrue(any(self.proxy_files[1] in m and "cannot be read" in m for m in self.messages()))
        self.proxy_ca.issue("front-proxy-client").write(self.folder, "proxy")
        self.tick()
        self.assertEqual(len(self.calls["proxy"]), 1)

    def test_failing_callback_is_logged_and_retried(self) -> None:
        """A callback that raises is logged, the loop keeps running, and the change is offered again."""
        attempts: list[Sequence[x509.Certificate]] = []

        def failing(cas: Sequence[x509.Certificate]) -> None:
            attempts.append(cas)
            raise RuntimeError("boom")

        self.reloader._on_client_ca = failing
        CertificateAuthority("other").write_ca(self.folder, "client-ca")
        self.tick()
        self.tick()
        self.assertEqual(len(attempts), 2)
        self.assertEqual(len(self.flushLoggedErrors(RuntimeError)), 2)
        self.assertEqual(self.calls["serving"], [])
        self.assertTrue(self.clock.getDelayedCalls())

    def test_unexpected_error_never_stops_the_loop(self) -> None:
        """An error outside the callbacks is logged and the next tick still runs."""
        watched: Any = self.reloader._serving
        original = watched.same
        watched.same = lambda a, b: 1 / 0
        self.server_ca.server().write(self.folder, "serving")
        self.tick()
        self.assertEqual(len(self.flushLoggedErrors(ZeroDivisionError)), 1)
        watched.same = original
        self.tick()
        self.assertEqual(len(self.calls["serving"]), 1)

    def test_stop_stops_looking(self) -> None:
        """After stopService no tick is scheduled."""
        self.reloader.stopService()
        self.assertEqual(self.clock.getDelayedCalls(), [])


class ApplyTests(SynchronousTestCase):
    """The callbacks of the real objects take the reloaded material."""

    def test_serving_tls_update(self) -> None:
        """ServingTLS.update swaps the context for new connections and keeps the pair it serves."""
        folder = self.mktemp()
        ca = CertificateAuthority()
        first = load_key_pair(*ca.server().write(folder, "a"))
        second = load_key_pair(*ca.server().write(folder, "b"))
        tls = ServingTLS(first, [ca.certificate])
        before = tls.serverConnectionForTLS(None)
        tls.update(second, [ca.certificate])
        after = tls.serverConnectionForTLS(None)
        self.assertIs(tls.pair, second)
        self.assertIsNot(before.get_context(), after.get_context())

    def test_replace_proxy_client_retires_pools(self) -> None:
        """replace_proxy_client hands out new clients and closes the idle connections of the old pools."""
        from grafana_aggregator.aggregation.upstream import Backend

        folder = self.mktemp()
        ca = CertificateAuthority()
        first = load_key_pair(*ca.issue("proxy").write(folder, "a"))
        second = load_key_pair(*ca.issue("proxy").write(folder, "b"))
        clients = UpstreamClients(Clock(), first, None)
        backend = Backend("127.0.0.1", 443, ("127.0.0.1",), None, True)
        old = clients.client_for(backend)
        old_pool: Any = clients._clients[next(iter(clients._clients))].pool
        clients.replace_proxy_client(second)
        self.assertIs(clients.proxy_client, second)
        self.assertIsNot(clients.client_for(backend), old)
        self.assertTrue(old_pool.retired)

    def test_retired_pool_closes_connections_when_done(self) -> None:
        """A connection coming back to a retired pool after its response is closed, not cached."""
        from grafana_aggregator.aggregation.upstream import _RetirablePool

        closed: list[bool] = []

        class Transport:
            def loseConnection(self) -> None:
                closed.append(True)

        class Connection:
            state = "QUIESCENT"
            transport = Transport()

            def abort(self) -> Deferred[None]:
                self.transport.loseConnection()
                return succeed(None)

        clock = Clock()
        reported: list[tuple[str, int]] = []
        pool = _RetirablePool(clock, lambda host, port: reported.append((host, port)))
        pool._putConnection("key", Connection())
        self.assertEqual(closed, [])
        pool.retire()
        self.assertEqual(closed, [True])
        pool._putConnection("key", Connection())
        self.assertEqual(closed, [True, True])
        self.assertEqual(pool._connections.get("key", []), [])
        self.assertEqual(reported, [])


class _Hello(Resource):
    isLeaf = True

    def render(self, request: IRequest) -> bytes:
        return b"hello"


class _Channel(HTTPChannel):
    """A server connection its site keeps track of, until it is lost."""

    def connectionMade(self) -> None:
        super().connectionMade()
        self.lost: Deferred[None] = Deferred()
        self.factory.channels.append(self)

    def connectionLost(self, reason: Failure) -> None:  # type: ignore[override]
        super().connectionLost(reason)
        self.lost.callback(None)


class _TrackingSite(Site):
    protocol = _Channel

    def __init__(self) -> None:
        super().__init__(_Hello())
        self.channels: list[_Channel] = []
        self.noisy = False


class ClosedConnectionTests(TestCase):
    """A backend closing an idle pooled connection is reported to UpstreamClients' listeners (real TLS sockets)."""

    async def serve(self) -> tuple[_TrackingSite, Backend]:
        folder = os.path.abspath(self.mktemp())
        ca = CertificateAuthority("backend-ca")
        pair = load_key_pair(*ca.server().write(folder, "backend"))
        site = _TrackingSite()
        port = await TLSServerEndpoint(TCP4ServerEndpoint(reactor, 0, interface="127.0.0.1"), ServingTLS(pair)).listen(site)
        self.addCleanup(port.stopListening)
        return site, Backend("127.0.0.1", port.getHost().port, ("127.0.0.1",), ca.issued.cert_pem, False)

    def clients(self) -> tuple[UpstreamClients, list[tuple[str, int]]]:
        clients = UpstreamClients(reactor, None, None)
        self.addCleanup(lambda: Deferred.fromCoroutine(clients.close()))
        reported: list[tuple[str, int]] = []
        clients.add_closed_listener(lambda host, port: reported.append((host, port)))
        return clients, reported

    async def get(self, clients: UpstreamClients, backend: Backend) -> None:
        response = await clients.agent_for(backend).request(b"GET", f"{backend.url}/".encode())
        self.assertEqual(await readBody(response), b"hello")
        # The connection goes back to the pool a moment after the body is read: a test that ends now must not
        # leave it open behind the pool's back (closing the pool closes only the connections it holds).
        await self.settle()

    async def settle(self) -> None:
        """Let both ends of the loopback connections finish what they were doing."""
        await deferLater(reactor, 0.05, lambda: None)

    async def test_backend_close_reported_once(self) -> None:
        """An idle connection the backend closes is reported once with its host and port, and not reused."""
        site, backend = await self.serve()
        clients, reported = self.clients()
        told: Deferred[None] = Deferred()
        clients.add_closed_listener(lambda host, port: told.callback(None))
        await self.get(clients, backend)
        self.assertEqual((len(site.channels), reported), (1, []))
        site.channels[0].loseConnection()
        await told
        await self.settle()
        self.assertEqual(reported, [("127.0.0.1", backend.port)])
        await self.get(clients, backend)
        self.assertEqual((len(site.channels), reported), (2, [("127.0.0.1", backend.port)]))

    async def test_close_idle_not_reported(self) -> None:
        """Idle connections closed by close_idle (after a failed probe) are not reported."""
        site, backend = await self.serve()
        clients, reported = self.clients()
        await self.get(clients, backend)
        clients.close_idle(backend)
        await site.channels[0].lost
        await self.settle()
        self.assertEqual(reported, [])
        await self.get(clients, backend)
        self.assertEqual(len(site.channels), 2)

    async def test_idle_timeout_not_reported(self) -> None:
        """An idle connection the pool closes when its idle time is up is not reported."""
        site, backend = await self.serve()
        clients, reported = self.clients()
        clients.agent_for(backend)
        clients._by_backend[backend].pool.cachedConnectionTimeout = 0.05
        await self.get(clients, backend)
        await site.channels[0].lost
        await self.settle()
        self.assertEqual(reported, [])

    async def test_busy_connection_closed_not_reported(self) -> None:
        """A connection the backend drops in the middle of a request is that request's failure, not a report."""
        site, backend = await self.serve()
        clients, reported = self.clients()
        holding = Resource()
        held: list[IRequest] = []

        class Hold(Resource):
            isLeaf = True

            def render(self, request: IRequest) -> int:
                held.append(request)
                request.channel.transport.abortConnection()  # type: ignore[attr-defined]
                return NOT_DONE_YET

        holding.putChild(b"hold", Hold())
        site.resource = holding
        with self.assertRaises(Exception):
            await clients.agent_for(backend).request(b"GET", f"{backend.url}/hold".encode())
        await site.channels[0].lost
        await self.settle()
        self.assertEqual((len(held), reported), (1, []))
