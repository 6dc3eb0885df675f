"""A bounded, property-based fuzz run of the daemon, driven by its own OpenAPI v3 documents (schemathesis).

Every operation of every group-version served here (and of a real CRD's kind, installed first) is called with generated valid and invalid
parameters and bodies, with a fixed seed and a time budget; no answer may be a 5xx or break the
documented response schema, and the daemon may log no traceback while it runs.
"""

from __future__ import annotations

import json
import os
import re
from typing import Any

import yaml
from treq.client import HTTPClient
from twisted.internet import reactor, ssl
from twisted.internet.task import deferLater
from twisted.internet.utils import getProcessOutputAndValue
from twisted.trial.unittest import TestCase
from twisted.web.client import Agent, BrowserLikePolicyForHTTPS, HTTPConnectionPool

from .test_daemon import BIN, TWISTD, DaemonProcess

CERTIFICATES_CRD = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "crds", "cert-manager",
                                "cert-manager.io_certificates.yaml")
#: The seed of the run: the same inputs on every run, so a failure can be reproduced.
SEED = 20261203
#: Seconds of fuzzing per group-version, and generated cases per operation at most.
SECONDS_PER_GROUP_VERSION = 40
MAX_EXAMPLES = 25
#: What must hold for every answer.
CHECKS = "not_a_server_error,response_schema_conformance"
#: Query parameters that turn a request into a stream (covered by the watch tests, not fuzzable as request/reply).
STREAMING_PARAMETERS = frozenset({"watch", "allowWatchBookmarks", "sendInitialEvents"})


def without_streaming(document: dict[str, Any]) -> dict[str, Any]:
    """The document with the parameters that open a watch stream taken out of every operation."""
    for item in document.get("paths", {}).values():
        for key, value in list(item.items()):
            if key == "parameters" and isinstance(value, list):
                item[key] = [p for p in value if p.get("name") not in STREAMING_PARAMETERS]
            elif isinstance(value, dict) and isinstance(value.get("parameters"), list):
                value["parameters"] = [p for p in value["parameters"] if p.get("name") not in STREAMING_PARAMETERS]
    return document


class FuzzTests(TestCase):
    """schemathesis against the installed daemon, on loopback, with the admin token of its kubeconfig."""

    timeout = 900

    def setUp(self) -> None:
        self.folder = os.path.abspath(self.mktemp())
        os.makedirs(self.folder)
        self.env = {**os.environ, "HOME": self.folder, "PYTHONUNBUFFERED": "1"}
        self.env.pop("KUBECONFIG", None)

    async def test_no_server_error_and_no_schema_violation(self) -> None:
        """Generated requests to every served operation get 2xx/4xx answers that match the documented schemas."""
        daemon = DaemonProcess()
        data = os.path.join(self.folder, "data")
        argv = [TWISTD, "--nodaemon", "--pidfile=", "grafana-aggregator", "--listen", "tcp:0:interface=127.0.0.1",
                "--data-dir", data, "--ensure-kubectl-access", "true"]
        daemon.process = reactor.spawnProcess(daemon, TWISTD, argv, env=self.env, path=self.folder)  # type: ignore[attr-defined]
        self.addCleanup(daemon.stop)
        url = await daemon.serving
        with open(os.path.join(data, "grafana-apiserver", "grafana.kubeconfig")) as handle:
            kubeconfig = yaml.safe_load(handle)
        token = kubeconfig["users"][0]["user"]["token"]
        ca = os.path.join(self.folder, "ca.pem")
        with open(os.path.join(data, "grafana-apiserver", "certs", "apiserver.crt"), "rb") as handle:
            chain = handle.read()
        anchor = re.findall(rb"-----BEGIN CERTIFICATE-----.+?-----END CERTIFICATE-----\n", chain, re.S)[-1]
        with open(ca, "wb") as handle:
            handle.write(anchor)
        client = HTTPClient(Agent(reactor, BrowserLikePolicyForHTTPS(trustRoot=ssl.Certificate.loadPEM(anchor)),
                                  pool=HTTPConnectionPool(reactor, persistent=False)))
        headers = {"Authorization": f"Bearer {token}"}
        # A real CRD, so that its kind (a large structural schema, served in process) is fuzzed too.
        with open(CERTIFICATES_CRD) as handle:
            crd = yaml.safe_load(handle)
        created = await client.post(url + "/apis/apiextensions.k8s.io/v1/customresourcedefinitions", json=crd,
                                    headers=headers)
        self.assertEqual(created.code, 201, await created.text())
        for _ in range(100):
            index = await (await client.get(url + "/openapi/v3", headers=headers)).json()
            if "apis/cert-manager.io/v1" in index["paths"]:
                break
            await deferLater(reactor, 0.05, lambda: None)
        # The CRD's kind first: fuzzing apiextensions.k8s.io may delete the CRD.
        keys = sorted(index["paths"], key=lambda key: (key != "apis/cert-manager.io/v1", key))
        self.assertIn("apis/apiregistration.k8s.io/v1", keys)
        self.assertEqual(keys[0], "apis/cert-manager.io/v1")
        for key in keys:
            document = await (await client.get(f"{url}/openapi/v3/{key}", headers=headers)).json()
            path = os.path.join(self.folder, key.replace("/", "_") + ".json")
            with open(path, "w") as handle:
                json.dump(without_streaming(document), handle)
            out, err, code = await getProcessOutputAndValue(
                os.path.join(BIN, "st"),
                ["run", path, "--url", url, "--header", f"Authorization: Bearer {token}", "--tls-verify", ca,
                 "--checks", CHECKS, "--mode", "all", "--seed", str(SEED), "--max-examples", str(MAX_EXAMPLES),
                 "--max-time", str(SECONDS_PER_GROUP_VERSION), "--workers", "1", "--request-timeout", "10",
                 "--phases", "examples,coverage,fuzzing", "--generation-database", "none", "--no-color"],
                env=self.env, path=self.folder)
            report = out.decode("utf-8", "replace") + err.decode("utf-8", "replace")
            self.assertEqual(code, 0, f"schemathesis found problems in {key}:\n{report[-6000:]}")
        logged = daemon.output.decode("utf-8", "replace")
        self.assertNotIn("Traceback", logged)
        self.assertNotIn("Unhandled", logged)
