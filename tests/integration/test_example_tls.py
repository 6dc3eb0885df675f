"""The example backend over real TLS on 127.0.0.1, and its twistd plugin as a real process."""

from __future__ import annotations

import os
import sys
from typing import Any

import treq
from treq.client import HTTPClient
from twisted.internet import reactor, ssl
from twisted.internet.interfaces import IOpenSSLClientConnectionCreator
from twisted.internet.utils import getProcessOutputAndValue
from twisted.trial.unittest import TestCase
from twisted.web.client import Agent, HTTPConnectionPool
from twisted.web.iweb import IPolicyForHTTPS
from zope.interface import implementer

from grafana_aggregator.example.tap import Options, make_service

from ..support import CertificateAuthority, Issued

TWISTD = os.path.join(os.path.dirname(sys.executable), "twistd")
GV = "/apis/example.grafana.app/v0alpha1"


@implementer(IPolicyForHTTPS)
class TrustOneCA:
    """Verify the server against one CA and present a client certificate when given one."""

    def __init__(self, ca: bytes, client: Issued | None):
        self._trust = ssl.Certificate.loadPEM(ca)
        self._client = ssl.PrivateCertificate.loadPEM(client.cert_pem + client.key_pem) if client else None

    def creatorForNetloc(self, hostname: bytes, port: int) -> IOpenSSLClientConnectionCreator:
        return ssl.optionsForClientTLS(hostname.decode(), trustRoot=self._trust, clientCertificate=self._client)


class ExampleTLSTests(TestCase):
    """The wired example server, started from the seed's flags on an ephemeral loopback port."""

    def setUp(self) -> None:
        folder = os.path.abspath(self.mktemp())
        self.ca = CertificateAuthority("grafana-aggregator-dev-ca")
        cert, key = self.ca.server().write(folder, "server")
        options = Options()
        options.parseOptions([
            "--runtime-config=example.grafana.app/v0alpha1=true", "--listen", "tcp:0:interface=127.0.0.1",
            "--tls-cert-file", cert, "--tls-private-key-file", key,
            f"--requestheader-client-ca-file={self.ca.write_ca(folder)}",
            "--requestheader-extra-headers-prefix=X-Remote-Extra-", "--requestheader-group-headers=X-Remote-Group",
            "--requestheader-username-headers=X-Remote-User", "-v", "10",
        ])
        self.service = make_service(options.settings, reactor, options.material)
        self.service.startService()
        self.addCleanup(self.service.stopService)
        endpoint: Any = self.service.getServiceNamed("https").endpoint  # type: ignore[attr-defined]
        self.base = f"https://127.0.0.1:{endpoint.port.getHost().port}"

    async def get(self, path: str, certificate: Issued | None, **headers: str) -> tuple[int, Any]:
        pool = HTTPConnectionPool(reactor, persistent=False)
        client = HTTPClient(Agent(reactor, TrustOneCA(self.ca.issued.cert_pem, certificate), pool=pool))
        response = await client.get(self.base + path, headers={k.replace("_", "-"): v for k, v in headers.items()})
        if response.headers.getRawHeaders("content-type", [""])[0].startswith("application/json"):
            return response.code, await treq.json_content(response)
        return response.code, await response.text()

    async def test_front_proxy_reads_dummy_and_identity(self) -> None:
        """A request-header CA certificate with X-Remote-User lists dummy objects and sees its identity on sub."""
        proxy = self.ca.issue("development", ["system:masters"])
        code, body = await self.get(GV + "/namespaces/default/dummy", proxy, X_Remote_User="alice")
        self.assertEqual((code, [item["spec"] for item in body["items"]]),
                         (200, ["dummy: test1", "dummy: test2", "dummy: test3"]))
        code, body = await self.get(GV + "/namespaces/default/dummy/test1/sub", proxy, X_Remote_User="alice",
                                    X_Remote_Group="dev", X_Remote_Extra_Team="blue")
        self.assertEqual((code, body["status"], body["identity"]), (200, "OK", {
            "user": "alice", "uid": "", "groups": ["dev", "system:authenticated"], "extra": {"team": ["blue"]}}))

    async def test_no_certificate_is_401(self) -> None:
        """Without a client certificate the caller is anonymous: /healthz answers, the API is 401 even with a user."""
        self.assertEqual(await self.get("/healthz", None), (200, "ok"))
        code, body = await self.get(GV + "/namespaces/default/dummy", None, X_Remote_User="alice")
        self.assertEqual((code, body["reason"]), (401, "Unauthorized"))

    async def test_other_ca_is_401(self) -> None:
        """A client certificate from another CA completes the handshake and is refused with 401."""
        stranger = CertificateAuthority("stranger").issue("development", ["system:masters"])
        code, body = await self.get(GV + "/namespaces/default/dummy", stranger, X_Remote_User="alice")
        self.assertEqual((code, body["reason"]), (401, "Unauthorized"))


class ExamplePluginTests(TestCase):
    """The installed dropin."""

    timeout = 120

    async def test_plugin_listed(self) -> None:
        """`twistd --help` lists grafana-example-apiserver, and its own --help names the seed's flags."""
        out, err, code = await getProcessOutputAndValue(TWISTD, ["--help"], env=dict(os.environ))
        self.assertEqual(code, 0, err)
        self.assertIn(b"grafana-example-apiserver", out)
        out, err, code = await getProcessOutputAndValue(TWISTD, ["grafana-example-apiserver", "--help"],
                                                        env=dict(os.environ))
        self.assertEqual(code, 0, err)
        for flag in (b"--runtime-config", b"--requestheader-client-ca-file", b"--requestheader-username-headers"):
            self.assertIn(flag, out)
