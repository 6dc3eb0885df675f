"""CustomResourceDefinitions end to end with the real kubectl 1.27 and 1.33 and real operators' CRDs (issue 15).

kubectl installs the unchanged CRDs of prometheus-operator, cert-manager and Argo CD (tests/crds) and a small
one of ours with scale and a deprecated version, then creates, lists (printer columns), explains, patches,
edits, scales and watches instances, sees kube's validation errors, and deletes a CRD, which removes its
instances and its API.  A restart in between shows everything was stored.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from typing import Any

from twisted.internet import reactor
from twisted.internet.defer import Deferred
from twisted.internet.task import deferLater
from twisted.internet.protocol import ProcessProtocol
from twisted.python.failure import Failure
from twisted.trial.unittest import TestCase

from .test_kubectl_e2e import KubectlDaemonCase, versioned_kubectl

CRDS = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "crds")

WIDGETS_CRD = """\
apiVersion: apiextensions.k8s.io/v1
kind: CustomResourceDefinition
metadata:
  name: widgets.example.com
spec:
  group: example.com
  scope: Namespaced
  names: {plural: widgets, singular: widget, kind: Widget, shortNames: [wd], categories: [all]}
  versions:
  - name: v1beta1
    served: true
    storage: false
    deprecated: true
    deprecationWarning: "example.com/v1beta1 Widget is deprecated; use example.com/v1"
    schema:
      openAPIV3Schema:
        type: object
        x-kubernetes-preserve-unknown-fields: true
  - name: v1
    served: true
    storage: true
    subresources:
      status: {}
      scale: {specReplicasPath: .spec.replicas, statusReplicasPath: .status.replicas}
    additionalPrinterColumns:
    - {name: Replicas, type: integer, jsonPath: .spec.replicas}
    - {name: Color, type: string, jsonPath: .spec.color}
    - {name: Age, type: date, jsonPath: .metadata.creationTimestamp}
    schema:
      openAPIV3Schema:
        type: object
        properties:
          spec:
            type: object
            description: What the widget should be.
            properties:
              replicas: {type: integer, minimum: 0, default: 1, description: How many widgets.}
              color: {type: string, enum: [red, blue], description: The widget's colour.}
          status:
            type: object
            properties:
              replicas: {type: integer}
"""

INSTANCES = """\
apiVersion: example.com/v1
kind: Widget
metadata: {name: w1, namespace: default}
spec: {color: red}
---
apiVersion: monitoring.coreos.com/v1
kind: ServiceMonitor
metadata: {name: sm1, namespace: default}
spec:
  selector: {matchLabels: {app: web}}
  endpoints: [{port: http, interval: 30s}]
---
apiVersion: cert-manager.io/v1
kind: Certificate
metadata: {name: c1, namespace: default}
spec:
  secretName: c1-tls
  dnsNames: [example.com]
  issuerRef: {name: ca, kind: Issuer}
---
apiVersion: argoproj.io/v1alpha1
kind: Application
metadata: {name: app1, namespace: default}
spec:
  project: default
  source: {repoURL: "https://example.com/repo.git", path: ., targetRevision: HEAD}
  destination: {server: "https://kubernetes.default.svc", namespace: default}
---
apiVersion: monitoring.coreos.com/v1
kind: Alertmanager
metadata: {name: am1, namespace: default}
spec:
  replicas: 2
  containers:
  - name: sidecar
    image: busybox
    ports: [{containerPort: 80, name: web}, {containerPort: 81, name: metrics}]
"""

BAD_CERTIFICATE = """\
apiVersion: cert-manager.io/v1
kind: Certificate
metadata: {name: c2, namespace: default}
spec:
  dnsNames: [example.com]
  issuerRef: {name: ca}
  duration: 5
  privateKey: {algorithm: DSA}
"""

ESTABLISHED_CRDS = ["alertmanagers.monitoring.coreos.com", "applications.argoproj.io", "certificates.cert-manager.io",
                    "issuers.cert-manager.io", "prometheusrules.monitoring.coreos.com",
                    "servicemonitors.monitoring.coreos.com", "widgets.example.com"]


class KubectlWatch(ProcessProtocol):
    """A running `kubectl get --watch`: its output so far, and whether it has ended."""

    def __init__(self, case: TestCase) -> None:
        self.case = case
        self.output = b""
        self.done = False
        self.process: Any = None

    def outReceived(self, data: bytes) -> None:
        self.output += data

    def processEnded(self, reason: Failure) -> None:
        self.done = True

    async def lines(self, count: int, within: float = 30) -> None:
        """Wait until the watch has printed count lines."""
        started = time.monotonic()
        while len(self.output.splitlines()) < count:
            if time.monotonic() - started > within or self.done:
                self.case.fail(f"kubectl's watch printed {self.output!r}, not {count} lines, within {within} s")
            await deferLater(reactor, 0.05, lambda: None)

    async def ended_within(self, seconds: float) -> bool:
        started = time.monotonic()
        while not self.done and time.monotonic() - started < seconds:
            await deferLater(reactor, 0.05, lambda: None)
        return self.done

    async def stop(self) -> None:
        """End the watch (if it has not ended) and wait for the process to go."""
        if not self.done and self.process is not None:
            self.process.signalProcess("TERM")
            if not await self.ended_within(10):
                self.process.signalProcess("KILL")
                await self.ended_within(10)


class CRDRoundTripTests(KubectlDaemonCase):
    """The issue's Done-when round trip, once per kubectl version, each against a server emulating it."""

    timeout = 400

    def setUp(self) -> None:
        super().setUp()
        self.manifests_dir = os.path.join(self.folder, "crds")
        shutil.copytree(CRDS, self.manifests_dir)
        for name, text in (("widgets.yaml", WIDGETS_CRD), ("instances.yaml", INSTANCES),
                           ("bad-certificate.yaml", BAD_CERTIFICATE)):
            with open(os.path.join(self.folder, name), "w") as handle:
                handle.write(text)

    def path(self, name: str) -> str:
        return os.path.join(self.folder, name)

    def watch(self, binary: str, resource: str, columns: str) -> KubectlWatch:
        """`kubectl get <resource> --watch` in the default namespace, its output collected as it comes."""
        watcher = KubectlWatch(self)
        argv = [binary, "get", resource, "-n", "default", "--watch", "--output-watch-events", "-o", columns]
        watcher.process = reactor.spawnProcess(watcher, binary, argv, env=self.env, path=self.folder)  # type: ignore[attr-defined]
        self.addCleanup(lambda: Deferred.fromCoroutine(watcher.stop()))
        return watcher

    async def round_trip(self, binary: str) -> None:
        # CRDs: the real ones server-side (the Alertmanager CRD is larger than kubectl's last-applied annotation
        # may be, as on kube), ours client-side.
        out, err = await self.kubectl("apply", "--server-side", "-f", os.path.join(self.manifests_dir, "cert-manager"),
                                      "-f", os.path.join(self.manifests_dir, "prometheus-operator"),
                                      "-f", os.path.join(self.manifests_dir, "argo-cd"), binary=binary)
        self.assertEqual(len(out.splitlines()), 6, out)
        self.assertIn("x-kubernetes-validations rule", err)  # cert-manager's CEL rules: accepted, said unenforced
        out, _ = await self.kubectl("apply", "-f", self.path("widgets.yaml"), binary=binary)
        self.assertEqual(out.strip(), "customresourcedefinition.apiextensions.k8s.io/widgets.example.com created")
        out, _ = await self.kubectl("wait", "--for=condition=Established", "crd", "--all", "--timeout=10s",
                                    binary=binary)
        self.assertEqual(len(out.splitlines()), 7, out)
        out, _ = await self.kubectl("get", "crd", "-o", "name", binary=binary)
        self.assertEqual(sorted(line.split("/")[1] for line in out.split()), ESTABLISHED_CRDS)
        out, _ = await self.kubectl("get", "crd", "issuers.cert-manager.io", "-o", "json", binary=binary)
        conditions = {c["type"]: c for c in json.loads(out)["status"]["conditions"]}
        self.assertEqual(conditions["ValidationRulesEnforced"]["status"], "False")
        self.assertEqual((conditions["NamesAccepted"]["reason"], conditions["Established"]["reason"]),
                         ("NoConflicts", "InitialNamesAccepted"))

        # Instances: created, listed with each CRD's printer columns, refused as kube refuses them.
        out, _ = await self.kubectl("apply", "-f", self.path("instances.yaml"), binary=binary)
        self.assertEqual(out.splitlines(), [
            "widget.example.com/w1 created", "servicemonitor.monitoring.coreos.com/sm1 created",
            "certificate.cert-manager.io/c1 created", "application.argoproj.io/app1 created",
            "alertmanager.monitoring.coreos.com/am1 created"])
        out, _ = await self.kubectl("get", "wd", "-n", "default", binary=binary)
        self.assertEqual([line.split()[:4] for line in out.splitlines()],
                         [["NAME", "REPLICAS", "COLOR", "AGE"], ["w1", "1", "red", line_age(out)]])
        out, _ = await self.kubectl("get", "certificates", "-n", "default", binary=binary)
        self.assertEqual(out.splitlines()[0].split(), ["NAME", "READY", "SECRET", "AGE"])
        self.assertEqual(out.splitlines()[1].split()[:2], ["c1", "c1-tls"])
        out, _ = await self.kubectl("get", "alertmanager", "-n", "default", binary=binary)
        self.assertEqual(out.splitlines()[0].split(),
                         ["NAME", "VERSION", "REPLICAS", "READY", "RECONCILED", "AVAILABLE", "AGE"])
        self.assertEqual(out.splitlines()[1].split()[:2], ["am1", "2"])
        out, _ = await self.kubectl("get", "applications", "-n", "default", binary=binary)
        self.assertEqual(out.splitlines()[0].split(), ["NAME", "SYNC", "STATUS", "HEALTH", "STATUS"])
        _, err = await self.kubectl("apply", "-f", self.path("bad-certificate.yaml"), binary=binary, ok=False)
        self.assertIn('The Certificate "c2" is invalid', err)
        for line in ('spec.duration: Invalid value: "integer": spec.duration in body must be of type string: '
                     '"integer"',
                     'spec.privateKey.algorithm: Unsupported value: "DSA": supported values: "RSA", "ECDSA", '
                     '"Ed25519"',
                     "spec.secretName: Required value"):
            self.assertIn(line, err)
        _, err = await self.kubectl("patch", "widget", "w1", "-n", "default", "--type", "strategic", "-p",
                                    '{"spec":{"color":"blue"}}', binary=binary, ok=False)
        self.assertIn("the body of the request was in an unknown format - accepted media types include: "
                      "application/json-patch+json, application/merge-patch+json, application/apply-patch+yaml", err)

        # explain, from the OpenAPI the CRD's schema became.
        out, _ = await self.kubectl("explain", "certificate.spec.issuerRef", binary=binary)
        self.assertIn("Reference to the issuer responsible for issuing the certificate.", out)
        out, _ = await self.kubectl("explain", "widgets.spec", binary=binary)
        self.assertIn("The widget's colour.", out)
        out, _ = await self.kubectl("api-resources", "--api-group", "monitoring.coreos.com", "-o", "name",
                                    binary=binary)
        self.assertEqual(sorted(out.split()), ["alertmanagers.monitoring.coreos.com",
                                               "prometheusrules.monitoring.coreos.com",
                                               "servicemonitors.monitoring.coreos.com"])

        # patch, edit, scale, and a watch that sees them.
        watcher = self.watch(binary, "widgets", "custom-columns=EVENT:.type,COLOR:.object.spec.color,"
                                                "REPLICAS:.object.spec.replicas")
        await watcher.lines(2)  # the header and ADDED: the watch is open
        out, _ = await self.kubectl("patch", "widget", "w1", "-n", "default", "--type", "merge", "-p",
                                    '{"spec":{"color":"blue"}}', binary=binary)
        self.assertEqual(out.strip(), "widget.example.com/w1 patched")
        _, err = await self.kubectl("patch", "widget", "w1", "-n", "default", "--type", "merge", "-p",
                                    '{"spec":{"color":"green"}}', binary=binary, ok=False)
        self.assertIn('spec.color: Unsupported value: "green": supported values: "red", "blue"', err)
        out, _ = await self.kubectl("edit", "widget", "w1", "-n", "default", binary=binary,
                                    env={"EDITOR": "sed -i s/color:.blue/color:\\ red/", "KUBE_EDITOR": ""})
        self.assertEqual(out.strip(), "widget.example.com/w1 edited")
        out, _ = await self.kubectl("scale", "widget", "w1", "-n", "default", "--replicas=3", binary=binary)
        self.assertEqual(out.strip(), "widget.example.com/w1 scaled")
        out, _ = await self.kubectl("get", "--raw", "/apis/example.com/v1/namespaces/default/widgets/w1/scale",
                                    binary=binary)
        scale = json.loads(out)
        self.assertEqual((scale["kind"], scale["apiVersion"], scale["spec"], scale["status"]),
                         ("Scale", "autoscaling/v1", {"replicas": 3}, {"replicas": 0}))
        out, _ = await self.kubectl("scale", "alertmanager", "am1", "-n", "default", "--replicas=4", binary=binary)
        out, _ = await self.kubectl("get", "alertmanager", "am1", "-n", "default", "-o", "jsonpath={.spec.replicas}",
                                    binary=binary)
        self.assertEqual(out, "4")
        await watcher.lines(5)
        await watcher.stop()
        events = [line.split() for line in watcher.output.decode().splitlines()]
        self.assertEqual(events, [["EVENT", "COLOR", "REPLICAS"], ["ADDED", "red", "1"], ["MODIFIED", "blue", "1"],
                                  ["MODIFIED", "red", "1"], ["MODIFIED", "red", "3"]])

        # The deprecated version: served, every answer carrying its deprecationWarning.
        _, err = await self.kubectl("get", "widgets.v1beta1.example.com", "-n", "default", binary=binary)
        self.assertIn("Warning: example.com/v1beta1 Widget is deprecated; use example.com/v1", err)

    async def delete_crd(self, binary: str) -> None:
        """Deleting a CRD deletes its instances first, then its API (kubectl waits for both); a watch of its kind
        sees the instance go and then ends, as kube ends it."""
        watcher = self.watch(binary, "certificates", "custom-columns=EVENT:.type,NAME:.object.metadata.name")
        await watcher.lines(2)
        out, _ = await self.kubectl("delete", "crd", "certificates.cert-manager.io", "--timeout=30s", binary=binary)
        self.assertEqual(out.strip(), 'customresourcedefinition.apiextensions.k8s.io "certificates.cert-manager.io" '
                                      'deleted')
        _, err = await self.kubectl("get", "--raw", "/apis/cert-manager.io/v1/namespaces/default/certificates",
                                    binary=binary, ok=False)
        self.assertIn("NotFound", err)
        ended = await watcher.ended_within(30)
        self.assertTrue(ended, "the watch of a deleted CRD's kind was not ended")
        self.assertEqual(watcher.output.decode().split(), ["EVENT", "NAME", "ADDED", "c1", "DELETED", "c1"])
        out, _ = await self.kubectl("api-resources", "--api-group", "cert-manager.io", "-o", "name", binary=binary)
        self.assertEqual(out.split(), ["issuers.cert-manager.io"])
        out, _ = await self.kubectl("get", "apiservice", "v1.cert-manager.io", "-o", "jsonpath={.spec.groupPriorityMinimum}",
                                    binary=binary)
        self.assertEqual(out, "1000")  # issuers keep the group-version registered
        # Created again, the kind starts empty: nothing of the old instances is left in storage.
        await self.kubectl("apply", "--server-side", "-f",
                           os.path.join(self.manifests_dir, "cert-manager", "cert-manager.io_certificates.yaml"),
                           binary=binary)
        await self.kubectl("wait", "--for=condition=Established", "crd/certificates.cert-manager.io",
                           "--timeout=10s", binary=binary)
        out, err = await self.kubectl("get", "certificates", "-A", binary=binary)
        self.assertIn("No resources found", out + err)

    async def test_kubectl_1_33(self) -> None:
        """The round trip with kubectl 1.33 against a 1.33-emulating server, then a restart and the delete."""
        binary = versioned_kubectl(33)
        await self.start("1.33")
        await self.round_trip(binary)
        await self.stop()
        await self.start("1.33")
        out, _ = await self.kubectl("get", "widget", "w1", "-n", "default", "-o", "jsonpath={.spec}", binary=binary)
        self.assertEqual(json.loads(out), {"color": "red", "replicas": 3})
        await self.delete_crd(binary)

    async def test_kubectl_1_27(self) -> None:
        """The round trip with kubectl 1.27 (OpenAPI v2 for explain) against a 1.27-emulating server."""
        binary = versioned_kubectl(27)
        await self.start("1.27")
        await self.round_trip(binary)
        await self.delete_crd(binary)


def line_age(text: str) -> str:
    """The AGE cell of the first row (whatever it is now), so a row can be compared whole."""
    return text.splitlines()[1].split()[3]

