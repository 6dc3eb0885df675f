"""Mutual TLS from the aggregator to a backend over real sockets: which backend certificates are accepted."""

from __future__ import annotations

import os

from cryptography.x509.oid import ExtendedKeyUsageOID
from twisted.internet import reactor
from twisted.internet.defer import Deferred
from twisted.internet.endpoints import TCP4ServerEndpoint
from twisted.trial.unittest import TestCase
from twisted.web.client import ResponseNeverReceived
from twisted.web.iweb import IRequest
from twisted.web.resource import Resource
from twisted.web.server import Site

from grafana_aggregator.tls.certificates import ServingTLS, TLSServerEndpoint, load_key_pair, peer_chain
from grafana_aggregator.aggregation.upstream import Backend, UpstreamClients

from ..support import CertificateAuthority, Issued


class WhoAmI(Resource):
    """Answers with the CN of the client certificate it was shown."""

    isLeaf = True

    def render(self, request: IRequest) -> bytes:
        chain = peer_chain(request.channel.transport)  # type: ignore[attr-defined]
        return chain[0].subject.rfc4514_string().encode() if chain else b"anonymous"


class BackendTLSTests(TestCase):
    """UpstreamClients verifies the backend by CA and name, and presents the proxy client certificate."""

    def setUp(self) -> None:
        self.folder = os.path.abspath(self.mktemp())
        os.makedirs(self.folder)
        self.ca = CertificateAuthority("backend-ca")
        proxy_ca = CertificateAuthority("front-proxy-ca")
        self.proxy = load_key_pair(*proxy_ca.issue("front-proxy-client").write(self.folder, "proxy"))

    async def serve(self, certificate: Issued) -> int:
        pair = load_key_pair(*certificate.write(self.folder, "backend"))
        endpoint = TLSServerEndpoint(TCP4ServerEndpoint(reactor, 0, interface="127.0.0.1"), ServingTLS(pair))
        port = await endpoint.listen(Site(WhoAmI()))
        self.addCleanup(port.stopListening)
        return int(port.getHost().port)

    async def fetch(self, backend: Backend) -> bytes:
        clients = UpstreamClients(reactor, self.proxy, [self.ca.certificate])
        self.addCleanup(lambda: Deferred.fromCoroutine(clients.close()))
        response = await clients.client_for(backend).get(f"{backend.url}/", allow_redirects=False)
        return await response.content()  # type: ignore[no-any-return]

    def backend(self, port: int, host: str = "127.0.0.1", insecure: bool = False,
                ca_bundle: bytes | None = None) -> Backend:
        return Backend(host=host, port=port, names=(host, "example-apiserver.grafana.svc"), ca_bundle=ca_bundle,
                       insecure=insecure)

    async def test_host_name_accepted_and_proxy_certificate_presented(self) -> None:
        """A certificate for the ExternalName host from the trusted CA is accepted; the backend sees the proxy CN."""
        port = await self.serve(self.ca.issue("b", ips=["127.0.0.1"], usages=[ExtendedKeyUsageOID.SERVER_AUTH]))
        self.assertEqual(await self.fetch(self.backend(port)), b"CN=front-proxy-client")

    async def test_new_connections_are_not_logged(self) -> None:
        """Opening and closing backend connections logs nothing (probes open one every time they run)."""
        from twisted.logger import globalLogPublisher

        events: list[dict[str, object]] = []
        globalLogPublisher.addObserver(events.append)
        self.addCleanup(globalLogPublisher.removeObserver, events.append)
        port = await self.serve(self.ca.issue("b", ips=["127.0.0.1"], usages=[ExtendedKeyUsageOID.SERVER_AUTH]))
        clients = UpstreamClients(reactor, self.proxy, [self.ca.certificate])
        response = await clients.client_for(self.backend(port)).get(f"https://127.0.0.1:{port}/",
                                                                   headers={"Connection": ["close"]})
        await response.content()
        await clients.close()
        from twisted.web.client import _HTTP11ClientFactory

        client_factory_events = [e for e in events if isinstance(e.get("factory"), _HTTP11ClientFactory)]
        self.assertEqual(client_factory_events, [])

    async def test_service_name_accepted(self) -> None:
        """A certificate valid only for <service>.<namespace>.svc is accepted too."""
        port = await self.serve(self.ca.issue("b", dns=["example-apiserver.grafana.svc"],
                                              usages=[ExtendedKeyUsageOID.SERVER_AUTH]))
        self.assertEqual(await self.fetch(self.backend(port)), b"CN=front-proxy-client")

    async def test_other_name_refused(self) -> None:
        """A certificate from the trusted CA for some other name is refused."""
        port = await self.serve(self.ca.issue("b", dns=["elsewhere.test"], usages=[ExtendedKeyUsageOID.SERVER_AUTH]))
        with self.assertRaises(ResponseNeverReceived):
            await self.fetch(self.backend(port))

    async def test_other_ca_refused_unless_insecure(self) -> None:
        """A certificate from another CA is refused, and accepted only with insecureSkipTLSVerify."""
        other = CertificateAuthority("other")
        port = await self.serve(other.issue("b", ips=["127.0.0.1"], usages=[ExtendedKeyUsageOID.SERVER_AUTH]))
        with self.assertRaises(ResponseNeverReceived):
            await self.fetch(self.backend(port))
        self.assertEqual(await self.fetch(self.backend(port, insecure=True)), b"CN=front-proxy-client")

    async def test_ca_bundle_of_apiservice_wins(self) -> None:
        """The APIService's caBundle replaces the default bundle."""
        other = CertificateAuthority("other")
        port = await self.serve(other.issue("b", ips=["127.0.0.1"], usages=[ExtendedKeyUsageOID.SERVER_AUTH]))
        self.assertEqual(await self.fetch(self.backend(port, ca_bundle=other.issued.cert_pem)), b"CN=front-proxy-client")
