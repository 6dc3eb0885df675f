"""kubectl 1.27 and 1.33 (and the typed Python client) against a daemon emulating 1.33: `kind: List` backups,
default (strategic) patches, bodies without apiVersion and kind.

A backup made with `kubectl get apiservice,externalname -o yaml` is a `kind: List` in `v1`; kubectl maps it
only because `/api` lists `v1`.  The backup is deleted with `delete -f`, restored with `apply -f` and again
with `create -f`.  `kubectl patch` without `--type` sends a strategic merge patch, also to the status
subresource (kubectl 1.33; 1.27 has no `--subresource`).  kubectl 1.27 asks only for aggregated discovery
v2beta1 and gets it from the 1.33 daemon.  No command may print anything on stderr.
"""

from __future__ import annotations

import json
import os
import shutil
from typing import Any

import yaml
from twisted.internet import reactor
from twisted.internet.defer import Deferred
from twisted.internet.threads import deferToThread
from twisted.internet.utils import getProcessOutputAndValue
from twisted.trial.unittest import TestCase

from .test_daemon import TWISTD, DaemonProcess
from .test_kubectl_e2e import MANUAL_TEST, versioned_kubectl

REMOTE = "v0alpha1.example.grafana.app"
EXTERNAL_NAME = "example-apiserver"


class ParityTests(TestCase):
    """Backups as `kind: List` and default patches, with the real kubectl 1.27 and 1.33."""

    timeout = 300
    maxDiff = None

    def setUp(self) -> None:
        self.folder = os.path.abspath(self.mktemp())
        os.makedirs(self.folder)
        data = os.path.join(self.folder, "data")
        self.env = {**os.environ, "HOME": self.folder, "PYTHONUNBUFFERED": "1",
                    "KUBECONFIG": os.path.join(data, "grafana-apiserver", "grafana.kubeconfig")}
        self.manifests = os.path.join(self.folder, "manual-test")
        shutil.copytree(MANUAL_TEST, self.manifests)
        self.backup = os.path.join(self.folder, "backup.yaml")
        daemon = DaemonProcess()
        argv = [TWISTD, "--nodaemon", "--pidfile=", "grafana-aggregator", "--listen", "tcp:0:interface=127.0.0.1",
                "--data-dir", data, "--ensure-kubectl-access", "true", "--emulated-version", "1.33"]
        daemon.process = reactor.spawnProcess(daemon, TWISTD, argv, env=self.env, path=self.folder)  # type: ignore[attr-defined]
        self.addCleanup(lambda: Deferred.fromCoroutine(daemon.stop()))
        self.daemon = daemon

    async def kubectl(self, binary: str, *args: str) -> str:
        """Run kubectl, which must succeed without printing anything on stderr; return its output."""
        out, err, code = await getProcessOutputAndValue(binary, args, env=self.env, path=self.folder)
        self.assertEqual((code, err.decode()), (0, ""), f"kubectl {' '.join(args)}: {out.decode()}")
        return str(out.decode())

    async def get(self, binary: str, *what: str) -> dict[str, object]:
        return dict(json.loads(await self.kubectl(binary, "get", *what, "-n", "grafana", "-o", "json")))

    async def parity(self, minor: int) -> None:
        binary = versioned_kubectl(minor)
        await self.daemon.serving
        await self.kubectl(binary, "apply", "-f", self.manifests)
        await self.kubectl(binary, "label", "apiservice", REMOTE, "backup=yes")
        await self.kubectl(binary, "label", "externalname", EXTERNAL_NAME, "-n", "grafana", "backup=yes")

        backup = await self.kubectl(binary, "get", "apiservice,externalname", "-n", "grafana", "-l", "backup=yes",
                                    "-o", "yaml")
        listed = yaml.safe_load(backup)
        self.assertEqual((listed["apiVersion"], listed["kind"]), ("v1", "List"))
        self.assertEqual([item["metadata"]["name"] for item in listed["items"]], [REMOTE, EXTERNAL_NAME])
        with open(self.backup, "w") as handle:
            handle.write(backup)

        deleted = [f'apiservice.apiregistration.k8s.io "{REMOTE}" deleted',
                   f'externalname.service.grafana.app "{EXTERNAL_NAME}" deleted']
        self.assertEqual((await self.kubectl(binary, "delete", "-f", self.backup)).splitlines(), deleted)
        self.assertEqual((await self.kubectl(binary, "apply", "-f", self.backup)).splitlines(), [
            f"apiservice.apiregistration.k8s.io/{REMOTE} created",
            f"externalname.service.grafana.app/{EXTERNAL_NAME} created"])
        restored = await self.get(binary, "apiservice", REMOTE)
        self.assertEqual(restored["spec"], listed["items"][0]["spec"])
        self.assertEqual((await self.kubectl(binary, "delete", "-f", self.backup)).splitlines(), deleted)
        self.assertEqual((await self.kubectl(binary, "create", "-f", self.backup)).splitlines(), [
            f"apiservice.apiregistration.k8s.io/{REMOTE} created",
            f"externalname.service.grafana.app/{EXTERNAL_NAME} created"])
        self.assertEqual((await self.get(binary, "externalname", EXTERNAL_NAME))["spec"], {"host": "localhost"})

        # Client-side apply of a change: the patch kubectl computes is a strategic merge patch now.
        with open(os.path.join(self.manifests, "apiservice.yaml")) as handle:
            text = handle.read()
        with open(os.path.join(self.manifests, "apiservice.yaml"), "w") as handle:
            handle.write(text.replace("versionPriority: 15", "versionPriority: 16"))
        self.assertEqual(await self.kubectl(binary, "apply", "-f", os.path.join(self.manifests, "apiservice.yaml")),
                         f"apiservice.apiregistration.k8s.io/{REMOTE} configured\n")
        applied = await self.get(binary, "apiservice", REMOTE)
        self.assertEqual(applied["spec"]["versionPriority"], 16)  # type: ignore[index]
        # The backup's label was in the last applied configuration and is not in the file: apply removed it.
        self.assertNotIn("labels", applied["metadata"])

        self.assertEqual(await self.kubectl(binary, "patch", "apiservice", REMOTE,
                                            "-p", '{"spec":{"versionPriority":20}}'),
                         f"apiservice.apiregistration.k8s.io/{REMOTE} patched\n")
        patched = await self.get(binary, "apiservice", REMOTE)
        self.assertEqual(patched["spec"]["versionPriority"], 20)  # type: ignore[index]
        self.assertEqual(patched["spec"]["group"], "example.grafana.app")  # type: ignore[index]

        if minor < 28:  # --subresource came with kubectl 1.28
            return
        condition = {"type": "Parity", "status": "True", "reason": "Checked", "message": "by kubectl patch"}
        self.assertEqual(await self.kubectl(binary, "patch", "apiservice", REMOTE, "--subresource=status",
                                            "-p", json.dumps({"status": {"conditions": [condition]}})),
                         f"apiservice.apiregistration.k8s.io/{REMOTE} patched\n")
        conditions = (await self.get(binary, "apiservice", REMOTE))["status"]["conditions"]  # type: ignore[index]
        self.assertEqual([c["type"] for c in conditions], ["Parity", "Available"])
        self.assertEqual(conditions[0], condition)

    async def test_python_typed_client(self) -> None:
        """The typed Python client creates an APIService from its model (no apiVersion, no kind) and patches it."""
        await self.daemon.serving
        kubeconfig = self.env["KUBECONFIG"]

        def steps() -> list[Any]:
            from kubernetes import client, config

            configuration = client.Configuration()
            config.load_kube_config(config_file=kubeconfig, client_configuration=configuration)
            api = client.ApiregistrationV1Api(client.ApiClient(configuration))
            model = client.V1APIService(
                metadata=client.V1ObjectMeta(name=REMOTE),
                spec=client.V1APIServiceSpec(group="example.grafana.app", version="v0alpha1",
                                             group_priority_minimum=1000, version_priority=15,
                                             insecure_skip_tls_verify=True,
                                             service=client.ApiregistrationV1ServiceReference(
                                                 name=EXTERNAL_NAME, namespace="grafana", port=7443)))
            created = api.create_api_service(model)
            patched = api.patch_api_service(REMOTE, {"spec": {"versionPriority": 20}},
                                            _content_type="application/strategic-merge-patch+json")
            return [created.kind, created.api_version, created.spec.version_priority, patched.spec.version_priority]

        self.assertEqual(await deferToThread(steps), ["APIService", "apiregistration.k8s.io/v1", 15, 20])

    async def test_kubectl_1_27(self) -> None:
        """kubectl 1.27 (aggregated discovery v2beta1, OpenAPI v2) backs up, restores and patches."""
        await self.parity(27)

    async def test_kubectl_1_33(self) -> None:
        """kubectl 1.33 backs up, restores and patches, the status subresource included."""
        await self.parity(33)
