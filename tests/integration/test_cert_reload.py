"""Certificate rotation over real sockets: a listener built like the daemon's picks up replaced files."""

from __future__ import annotations

import os
from typing import Any

import treq
from OpenSSL import SSL
from treq.client import HTTPClient
from twisted.internet import reactor, ssl
from twisted.internet.endpoints import TCP4ServerEndpoint
from twisted.internet.interfaces import IOpenSSLClientConnectionCreator
from twisted.internet.task import Clock, deferLater
from twisted.trial.unittest import TestCase
from twisted.web.client import Agent, HTTPConnectionPool
from twisted.web.iweb import IPolicyForHTTPS, IRequest
from twisted.web.resource import Resource
from zope.interface import implementer

from grafana_aggregator.identity.auth import Authenticator, X509Authenticator, load_ca_bundle
from grafana_aggregator.tls.reload import CertificateReloader, ReloadableVerifier
from grafana_aggregator.web.site import build_site, request_user
from grafana_aggregator.web.root import AuthenticatingRoot
from grafana_aggregator.tls.certificates import ServingTLS, TLSServerEndpoint, load_key_pair

from ..support import CertificateAuthority, Issued

INTERVAL = 10.0


@implementer(IOpenSSLClientConnectionCreator)
class RecordingCreator:
    """Client TLS that remembers each connection it makes, to read the server's certificate afterwards."""

    def __init__(self, inner: IOpenSSLClientConnectionCreator, connections: list[SSL.Connection]):
        self._inner = inner
        self._connections = connections

    def clientConnectionForTLS(self, tlsProtocol: Any) -> SSL.Connection:
        connection = self._inner.clientConnectionForTLS(tlsProtocol)
        self._connections.append(connection)
        return connection


@implementer(IPolicyForHTTPS)
class RecordingPolicy:
    """Trust one CA, optionally present a client certificate, and record every TLS connection."""

    def __init__(self, trust: bytes, client: Issued | None):
        self._trust = ssl.Certificate.loadPEM(trust)
        self._client = ssl.PrivateCertificate.loadPEM(client.cert_pem + client.key_pem) if client else None
        self.connections: list[SSL.Connection] = []

    def creatorForNetloc(self, hostname: bytes, port: int) -> IOpenSSLClientConnectionCreator:
        inner = ssl.optionsForClientTLS(hostname.decode(), trustRoot=self._trust, clientCertificate=self._client)
        return RecordingCreator(inner, self.connections)

    def server_serials(self) -> list[int]:
        """The serial number of the serving certificate each recorded connection saw."""
        serials = []
        for connection in self.connections:
            certificate = connection.get_peer_certificate(as_cryptography=True)
            assert certificate is not None
            serials.append(certificate.serial_number)
        return serials


class Who(Resource):
    """Answers with the client's port (one per connection) and the authenticated user's name."""

    isLeaf = True

    def render_GET(self, request: IRequest) -> bytes:
        user = request_user(request)
        return f"{request.getClientAddress().port} {user.name if user else '-'}".encode()  # type: ignore[attr-defined]


class CertificateReloadTests(TestCase):
    """Replaced certificate files reach new handshakes and authentications; established connections go on."""

    def setUp(self) -> Any:
        self.folder = os.path.abspath(self.mktemp())
        os.makedirs(self.folder)
        self.server_ca = CertificateAuthority("server-ca")
        self.client_ca = CertificateAuthority("client-ca")
        self.first = self.server_ca.server()
        serving_files = self.first.write(self.folder, "server")
        self.client_ca_file = self.client_ca.write_ca(self.folder, "client-ca")
        serving = load_key_pair(*serving_files)
        client_cas = load_ca_bundle(self.client_ca_file)
        tls = ServingTLS(serving, client_cas)
        verifier = ReloadableVerifier(client_cas)
        tree = Resource()
        tree.putChild(b"healthz", Who())
        tree.putChild(b"who", Who())
        root = AuthenticatingRoot(tree, Authenticator([X509Authenticator(verifier)], anonymous=True))
        self.clock = Clock()
        self.reloader = CertificateReloader(self.clock, interval=INTERVAL, serving=serving, on_serving=tls.update,
                                            client_ca_file=self.client_ca_file, client_ca=client_cas,
                                            on_client_ca=verifier.replace_cas)
        self.reloader.startService()
        self.addCleanup(self.reloader.stopService)
        endpoint = TLSServerEndpoint(TCP4ServerEndpoint(reactor, 0, interface="127.0.0.1"), tls)
        return endpoint.listen(build_site(root)).addCallback(self._listening)

    def _listening(self, port: Any) -> None:
        self.addCleanup(port.stopListening)
        self.base = f"https://127.0.0.1:{port.getHost().port}"

    def client(self, certificate: Issued | None = None, persistent: bool = False) -> tuple[HTTPClient, RecordingPolicy]:
        pool = HTTPConnectionPool(reactor, persistent=persistent)
        self.addCleanup(self._close, pool)
        policy = RecordingPolicy(self.server_ca.issued.cert_pem, certificate)
        return HTTPClient(Agent(reactor, policy, pool=pool)), policy

    async def _close(self, pool: HTTPConnectionPool) -> None:
        await pool.closeCachedConnections()
        # Let the server side see the connections go before the reactor is checked for leftovers.
        await deferLater(reactor, 0.05, lambda: None)

    async def get(self, client: HTTPClient, path: str) -> tuple[int, str]:
        response = await client.get(self.base + path)
        return response.code, await treq.text_content(response)

    async def test_rotation(self) -> None:
        """A keep-alive connection survives the rotation; new connections see the new certificate and CA."""
        kept, kept_policy = self.client(persistent=True)
        code, body = await self.get(kept, "/healthz")
        self.assertEqual(code, 200)
        kept_port = body.split()[0]

        newcomer_ca = CertificateAuthority("new-client-ca")
        newcomer = newcomer_ca.issue("newcomer", ["system:masters"])
        refused, _ = self.client(newcomer)
        self.assertEqual((await self.get(refused, "/who"))[0], 401)

        second = self.server_ca.server()
        second.write(self.folder, "server")
        with open(self.client_ca_file, "wb") as handle:
            handle.write(self.client_ca.issued.cert_pem + newcomer_ca.issued.cert_pem)
        self.clock.advance(INTERVAL)

        code, body = await self.get(kept, "/healthz")
        self.assertEqual((code, body.split()[0]), (200, kept_port))
        self.assertEqual(kept_policy.server_serials(), [self.first.certificate.serial_number])

        fresh, fresh_policy = self.client()
        self.assertEqual((await self.get(fresh, "/healthz"))[0], 200)
        self.assertEqual(fresh_policy.server_serials(), [second.certificate.serial_number])

        accepted, accepted_policy = self.client(newcomer)
        code, body = await self.get(accepted, "/who")
        self.assertEqual((code, body.split()[1]), (200, "newcomer"))
        self.assertEqual(accepted_policy.server_serials(), [second.certificate.serial_number])

        old_client = self.client_ca.issue("veteran", ["system:masters"])
        still, _ = self.client(old_client)
        code, body = await self.get(still, "/who")
        self.assertEqual((code, body.split()[1]), (200, "veteran"))

    async def test_broken_files_keep_serving(self) -> None:
        """Garbage written over the serving key leaves the old certificate in use for new connections."""
        with open(os.path.join(self.folder, "server.key"), "wb") as handle:
            handle.write(b"not a key")
        self.clock.advance(INTERVAL)
        fresh, policy = self.client()
        self.assertEqual((await self.get(fresh, "/healthz"))[0], 200)
        self.assertEqual(policy.server_serials(), [self.first.certificate.serial_number])
