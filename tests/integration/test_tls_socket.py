"""Mutual TLS over real sockets on 127.0.0.1: the daemon's wired service with certificates made at test time."""

from __future__ import annotations

import os
from typing import Any

import treq
from treq.client import HTTPClient
from twisted.internet import reactor, ssl
from twisted.internet.interfaces import IOpenSSLClientConnectionCreator
from twisted.trial.unittest import TestCase
from twisted.web.client import Agent, HTTPConnectionPool, ResponseNeverReceived
from twisted.web.iweb import IPolicyForHTTPS
from zope.interface import implementer

from grafana_aggregator.config.settings import load_settings
from grafana_aggregator.tap import listening_port, load_runtime, make_service

from ..support import CertificateAuthority, Issued, expired


@implementer(IPolicyForHTTPS)
class ClientPolicy:
    """Trust one CA and optionally present a client certificate."""

    def __init__(self, trust: bytes, client: Issued | None):
        self._trust = ssl.Certificate.loadPEM(trust)
        self._client = ssl.PrivateCertificate.loadPEM(client.cert_pem + client.key_pem) if client else None

    def creatorForNetloc(self, hostname: bytes, port: int) -> IOpenSSLClientConnectionCreator:
        return ssl.optionsForClientTLS(hostname.decode(), trustRoot=self._trust, clientCertificate=self._client)


class MutualTLSTests(TestCase):
    """The listener requests client certificates and each authenticator verifies them against its own CA."""

    def setUp(self) -> None:
        folder = os.path.abspath(self.mktemp())
        os.makedirs(folder)
        self.server_ca = CertificateAuthority("server-ca")
        self.client_ca = CertificateAuthority("client-ca")
        self.proxy_ca = CertificateAuthority("proxy-ca")
        cert, key = self.server_ca.server().write(folder, "server")
        tokens = os.path.join(folder, "tokens.csv")
        with open(tokens, "w") as handle:
            handle.write('admintoken,admin,1,"system:masters"\n')
        ini = os.path.join(folder, "aggregator.ini")
        with open(ini, "w") as handle:
            handle.write(
                "[paths]\n"
                f"data = {folder}/data\n"
                "[grafana-apiserver]\n"
                "listen = tcp:0:interface=127.0.0.1\n"
                f"tls_cert_file = {cert}\n"
                f"tls_private_key_file = {key}\n"
                f"client_ca_file = {self.client_ca.write_ca(folder, 'client-ca')}\n"
                f"requestheader_client_ca_file = {self.proxy_ca.write_ca(folder, 'proxy-ca')}\n"
                "requestheader_allowed_names = front-proxy-client\n"
                f"token_auth_file = {tokens}\n"
            )
        settings = load_settings(ini)
        self.service = make_service(settings, load_runtime(settings), reactor)
        self.service.startService()
        self.addCleanup(self.service.stopService)
        self.base = f"https://127.0.0.1:{listening_port(self.service).getHost().port}"

    def client(self, certificate: Issued | None) -> HTTPClient:
        pool = HTTPConnectionPool(reactor, persistent=False)
        return HTTPClient(Agent(reactor, ClientPolicy(self.server_ca.issued.cert_pem, certificate), pool=pool))

    async def get(self, path: str, certificate: Issued | None = None, **headers: str) -> tuple[int, Any]:
        client = self.client(certificate)
        response = await client.get(self.base + path, headers={k.replace("_", "-"): v for k, v in headers.items()})
        body = await treq.json_content(response) if response.headers.getRawHeaders("content-type", [""])[0].startswith(
            "application/json") else (await response.text())
        return response.code, body

    async def test_client_certificate_accepted(self) -> None:
        """A client certificate from the client CA in system:masters reaches /apis."""
        code, body = await self.get("/apis", self.client_ca.issue("development", ["system:masters"]))
        self.assertEqual((code, body["kind"]), (200, "APIGroupList"))

    async def test_no_certificate_is_anonymous(self) -> None:
        """Without a client certificate the caller is anonymous: /healthz is served, /apis is 401."""
        self.assertEqual(await self.get("/healthz"), (200, "ok"))
        code, body = await self.get("/apis")
        self.assertEqual((code, body["reason"]), (401, "Unauthorized"))

    async def test_wrong_ca_is_401(self) -> None:
        """A client certificate from an unknown CA completes the handshake but is refused with 401, even on /healthz."""
        stranger = CertificateAuthority("stranger").issue("development", ["system:masters"])
        self.assertEqual((await self.get("/apis", stranger))[0], 401)
        self.assertEqual((await self.get("/healthz", stranger))[0], 401)

    async def test_expired_is_401(self) -> None:
        """An expired client certificate from the right CA is refused with 401."""
        self.assertEqual((await self.get("/apis", expired(self.client_ca, "development", ["system:masters"])))[0], 401)

    async def test_token_over_tls(self) -> None:
        """A bearer token from the token file authenticates over TLS."""
        self.assertEqual((await self.get("/apis", Authorization="Bearer admintoken"))[0], 200)

    async def test_front_proxy_headers(self) -> None:
        """A front proxy's certificate asserts the X-Remote-User identity; the user alone is forbidden /metrics."""
        proxy = self.proxy_ca.issue("front-proxy-client")
        code, body = await self.get("/metrics", proxy, X_Remote_User="alice", X_Remote_Group="dev")
        self.assertEqual((code, body["message"]), (403, 'forbidden: User "alice" cannot get path "/metrics"'))
        code, body = await self.get("/nope", proxy, X_Remote_User="root", X_Remote_Group="system:masters")
        self.assertEqual(code, 404)

    async def test_front_proxy_headers_from_client_ca_ignored(self) -> None:
        """X-Remote-User sent with a client-CA certificate is ignored: the caller is the certificate's CN."""
        client = self.client_ca.issue("bob")
        code, body = await self.get("/metrics", client, X_Remote_User="admin", X_Remote_Group="system:masters")
        self.assertEqual((code, body["message"]), (403, 'forbidden: User "bob" cannot get path "/metrics"'))

    async def test_front_proxy_name_not_allowed(self) -> None:
        """A request-header CA certificate whose CN is not an allowed name cannot assert identity (401)."""
        evil = self.proxy_ca.issue("evil")
        code, _ = await self.get("/apis", evil, X_Remote_User="admin", X_Remote_Group="system:masters")
        self.assertEqual(code, 401)

    async def test_untrusted_server_refused_by_client(self) -> None:
        """A client that trusts another CA cannot talk to the server (the serving certificate is really used)."""
        pool = HTTPConnectionPool(reactor, persistent=False)
        other = CertificateAuthority("other")
        client = HTTPClient(Agent(reactor, ClientPolicy(other.issued.cert_pem, None), pool=pool))
        with self.assertRaises(ResponseNeverReceived):
            await client.get(self.base + "/healthz")


class ProtocolVersionTests(TestCase):
    """The listener speaks TLS 1.2 and later only."""

    def setUp(self) -> None:
        folder = os.path.abspath(self.mktemp())
        settings = load_settings(None, {"data-dir": folder, "listen": "tcp:0:interface=127.0.0.1"})
        self.service = make_service(settings, load_runtime(settings), reactor)
        self.service.startService()
        self.addCleanup(self.service.stopService)
        self.port = listening_port(self.service).getHost().port

    def handshake(self, version: Any) -> str:
        """Connect with exactly one TLS version (security level 0, so the client itself allows old ones)."""
        import socket
        import ssl as stdlib_ssl

        context = stdlib_ssl.SSLContext(stdlib_ssl.PROTOCOL_TLS_CLIENT)
        context.check_hostname = False
        context.verify_mode = stdlib_ssl.CERT_NONE
        context.set_ciphers("DEFAULT@SECLEVEL=0")
        context.minimum_version = context.maximum_version = version
        with socket.create_connection(("127.0.0.1", self.port), timeout=5) as raw:
            try:
                with context.wrap_socket(raw) as tls:
                    return str(tls.version())
            except stdlib_ssl.SSLError as error:
                return str(error)

    async def test_tls_1_1_refused_by_server(self) -> None:
        """A TLS 1.1 client is refused by the server with a protocol-version alert; TLS 1.2 and 1.3 connect."""
        from ssl import TLSVersion

        from twisted.internet.threads import deferToThread

        self.assertIn("alert protocol version", await deferToThread(self.handshake, TLSVersion.TLSv1_1))
        self.assertEqual(await deferToThread(self.handshake, TLSVersion.TLSv1_2), "TLSv1.2")
        self.assertEqual(await deferToThread(self.handshake, TLSVersion.TLSv1_3), "TLSv1.3")
