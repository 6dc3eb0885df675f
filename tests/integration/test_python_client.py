"""The Python `kubernetes` client's dynamic client against a started daemon: CRUD, apply, watch and errors.

The client is synchronous (urllib3), so each step runs in a thread while the daemon runs as its own
process, reached through the kubeconfig it writes.
"""

from __future__ import annotations

import json
import os
from typing import Any

from twisted.internet import reactor
from twisted.internet.defer import Deferred
from twisted.internet.threads import deferToThread
from twisted.trial.unittest import TestCase

from .test_daemon import TWISTD, DaemonProcess

APISERVICE = {
    "apiVersion": "apiregistration.k8s.io/v1",
    "kind": "APIService",
    "metadata": {"name": "v0alpha1.example.grafana.app", "labels": {"team": "a"}},
    "spec": {"group": "example.grafana.app", "version": "v0alpha1", "groupPriorityMinimum": 1000,
             "versionPriority": 15, "insecureSkipTLSVerify": True,
             "service": {"name": "example-apiserver", "namespace": "grafana", "port": 7443}},
}


class PythonClientTests(TestCase):
    """kubernetes.dynamic.DynamicClient discovers and uses the served kinds like any Kubernetes server's."""

    timeout = 120

    async def setUp(self) -> None:  # type: ignore[override]
        folder = os.path.abspath(self.mktemp())
        os.makedirs(folder)
        data = os.path.join(folder, "data")
        env = {**os.environ, "HOME": folder, "PYTHONUNBUFFERED": "1"}
        daemon = DaemonProcess()
        argv = [TWISTD, "--nodaemon", "--pidfile=", "grafana-aggregator", "--listen", "tcp:0:interface=127.0.0.1",
                "--data-dir", data, "--ensure-kubectl-access", "true"]
        daemon.process = reactor.spawnProcess(daemon, TWISTD, argv, env=env, path=folder)  # type: ignore[attr-defined]
        self.addCleanup(lambda: Deferred.fromCoroutine(daemon.stop()))
        await daemon.serving
        self.kubeconfig = os.path.join(data, "grafana-apiserver", "grafana.kubeconfig")
        self.dynamic = await deferToThread(self._client)

    def _client(self) -> Any:
        from kubernetes import dynamic
        from kubernetes.client import api_client

        return dynamic.DynamicClient(api_client.ApiClient(configuration=_loaded(self.kubeconfig)))

    async def test_crud(self) -> None:
        """Create, get, list with a label selector, merge-patch, server-side apply, replace and delete an APIService."""
        def steps() -> list[Any]:
            from kubernetes.dynamic.exceptions import ConflictError, NotFoundError

            api = self.dynamic.resources.get(api_version="apiregistration.k8s.io/v1", kind="APIService")
            created = api.create(body=APISERVICE)
            seen = [created.metadata.uid is not None, created.metadata.generation]
            got = api.get(name="v0alpha1.example.grafana.app")
            seen.append(got.spec.service.port)
            listed = api.get(label_selector="team=a")
            seen.append([i.metadata.name for i in listed.items])
            patched = api.patch(name="v0alpha1.example.grafana.app", body={"spec": {"versionPriority": 20}},
                                content_type="application/merge-patch+json")
            seen.append((patched.spec.versionPriority, patched.metadata.generation))
            applied = api.server_side_apply(body={**APISERVICE, "spec": {**APISERVICE["spec"], "versionPriority": 30}},
                                            field_manager="python", force_conflicts=True)
            seen.append(applied.spec.versionPriority)
            stale = dict(got.to_dict())
            try:
                api.replace(body=stale)
            except ConflictError as error:
                seen.append(error.status)
            api.delete(name="v0alpha1.example.grafana.app")
            try:
                api.get(name="v0alpha1.example.grafana.app")
            except NotFoundError as error:
                seen.append(error.status)
            names = [i.metadata.name for i in api.get().items]
            seen.append(sorted(names))
            return seen

        seen = await deferToThread(steps)
        self.assertEqual(seen, [True, 1, 7443, ["v0alpha1.example.grafana.app"], (20, 2), 30, 409, 404,
                                ["v0alpha1.service.grafana.app", "v1.apiextensions.k8s.io", "v1.apiregistration.k8s.io",
                                 "v1.authentication.k8s.io", "v1.authorization.k8s.io",
                                 "v1beta1.authentication.k8s.io"]])

    async def test_namespaced_and_watch(self) -> None:
        """ExternalNames in a namespace, and a watch that sees ADDED, MODIFIED and DELETED in order."""
        def steps() -> list[tuple[str, str]]:
            api = self.dynamic.resources.get(api_version="service.grafana.app/v0alpha1", kind="ExternalName")
            start = api.get(namespace="grafana").metadata.resourceVersion
            body = {"apiVersion": "service.grafana.app/v0alpha1", "kind": "ExternalName",
                    "metadata": {"name": "backend", "namespace": "grafana"}, "spec": {"host": "localhost"}}
            api.create(body=body, namespace="grafana")
            api.patch(name="backend", namespace="grafana", body={"spec": {"host": "127.0.0.1"}},
                      content_type="application/merge-patch+json")
            api.delete(name="backend", namespace="grafana")
            events = []
            for event in api.watch(namespace="grafana", resource_version=start, timeout=5):
                events.append((event["type"], event["object"].spec.host))
                if event["type"] == "DELETED":
                    break
            return events

        self.assertEqual(await deferToThread(steps),
                         [("ADDED", "localhost"), ("MODIFIED", "127.0.0.1"), ("DELETED", "127.0.0.1")])

    async def test_custom_resources(self) -> None:
        """The typed clients on a CRD and its kind: ApiextensionsV1Api creates and patches the CRD (a dict patch is
        sent as a strategic merge patch, which kube accepts for CRDs), CustomObjectsApi creates, patches, lists
        and deletes instances, and the dynamic client discovers the new kind."""
        def steps() -> list[Any]:
            import time

            from kubernetes import client
            from kubernetes.client.exceptions import ApiException

            api = client.ApiClient(configuration=_loaded(self.kubeconfig))
            extensions, objects = client.ApiextensionsV1Api(api), client.CustomObjectsApi(api)
            extensions.create_custom_resource_definition(WIDGETS_CRD)
            for _ in range(100):
                crd = extensions.read_custom_resource_definition("widgets.example.com")
                if any(c.type == "Established" and c.status == "True" for c in crd.status.conditions or []):
                    break
                time.sleep(0.05)
            seen: list[Any] = [[(c.type, c.status) for c in crd.status.conditions]]
            patched = extensions.patch_custom_resource_definition(
                "widgets.example.com", {"metadata": {"labels": {"team": "a"}}})
            seen.append(patched.metadata.labels)
            created = objects.create_namespaced_custom_object("example.com", "v1", "default", "widgets", {
                "apiVersion": "example.com/v1", "kind": "Widget", "metadata": {"name": "w1"}, "spec": {"size": 3}})
            seen.append(created["spec"])
            merged = objects.patch_namespaced_custom_object("example.com", "v1", "default", "widgets", "w1",
                                                            {"spec": {"size": 4}})
            seen.append(merged["spec"])
            try:
                objects.create_namespaced_custom_object("example.com", "v1", "default", "widgets", {
                    "apiVersion": "example.com/v1", "kind": "Widget", "metadata": {"name": "w2"},
                    "spec": {"size": "big"}})
            except ApiException as error:
                seen.append((error.status, json.loads(error.body)["reason"]))
            listed = objects.list_namespaced_custom_object("example.com", "v1", "default", "widgets")
            seen.append([item["metadata"]["name"] for item in listed["items"]])
            kind = self.dynamic.resources.get(api_version="example.com/v1", kind="Widget")
            seen.append(kind.name)
            objects.delete_namespaced_custom_object("example.com", "v1", "default", "widgets", "w1")
            return seen

        self.assertEqual(await deferToThread(steps), [
            [("NamesAccepted", "True"), ("Established", "True")], {"team": "a"}, {"size": 3}, {"size": 4},
            (422, "Invalid"), ["w1"], "widgets"])


WIDGETS_CRD = {
    "apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
    "metadata": {"name": "widgets.example.com"},
    "spec": {"group": "example.com", "scope": "Namespaced",
             "names": {"plural": "widgets", "singular": "widget", "kind": "Widget"},
             "versions": [{"name": "v1", "served": True, "storage": True, "schema": {"openAPIV3Schema": {
                 "type": "object", "properties": {"spec": {"type": "object", "properties": {
                     "size": {"type": "integer"}}}}}}}]},
}


def _loaded(kubeconfig: str) -> Any:
    from kubernetes import client, config

    configuration = client.Configuration()
    config.load_kube_config(config_file=kubeconfig, client_configuration=configuration)
    return configuration
