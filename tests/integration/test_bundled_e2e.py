# -*- test-case-name: tests.integration.test_bundled_e2e -*-
"""The bundled example group over real processes and kubectl: served in process with the toggle on and gone with
it off; and the clash, where a remote APIService of the same name exists and wins, unchanged, with the warning,
the condition and the metric, until the toggle is turned off again."""

from __future__ import annotations

import json

from .test_daemon import TWISTD, DaemonProcess
from .test_seed_walkthrough import WalkthroughCase

NAME = "v0alpha1.example.grafana.app"
DUMMY = "/apis/example.grafana.app/v0alpha1/namespaces/default/dummy"


class BundledGroupTests(WalkthroughCase):
    """`grafanaAPIServerWithExperimentalAPIs` (flag --with-experimental-apis) with kubectl."""

    timeout = 240

    async def restart(self, toggle: bool, previous: DaemonProcess | None = None) -> DaemonProcess:
        if previous is not None:
            self.assertEqual(await previous.stop(), 0)
        daemon = self.spawn(DaemonProcess(), TWISTD, [TWISTD, "--nodaemon", "--pidfile=", "grafana-aggregator",
                                                      "--config", self.ini, "--with-experimental-apis",
                                                      "true" if toggle else "false"])
        await daemon.serving
        await self.kubectl("wait", "--for=condition=Available", "apiservice/v1.apiregistration.k8s.io",
                           "--timeout=20s")
        return daemon

    async def apiservice(self) -> dict[str, object] | None:
        out, err = await self.kubectl("get", "apiservice", NAME, "-o", "json", ok=False)
        return json.loads(out) if out else None

    async def test_served_in_process_then_gone(self) -> None:
        daemon = await self.restart(toggle=True)
        out, _ = await self.kubectl("wait", "--for=condition=Available", f"apiservice/{NAME}", "--timeout=20s")
        stored = await self.apiservice()
        assert stored is not None
        self.assertNotIn("service", stored["spec"])  # type: ignore[operator]
        out, _ = await self.kubectl("get", "dummy", "-n", "default")
        self.assertEqual([line.split()[0] for line in out.splitlines()], ["NAME", "test1", "test2", "test3"])
        out, _ = await self.kubectl("get", "--raw", f"{DUMMY}/test1/sub")
        self.assertIn("system:masters", json.loads(out)["identity"]["groups"])
        out, _ = await self.kubectl("api-resources", "--api-group", "example.grafana.app", "-o", "name")
        self.assertEqual(sorted(out.split()), ["dummy.example.grafana.app", "runtime.example.grafana.app"])

        await self.restart(toggle=False, previous=daemon)
        self.assertIsNone(await self.apiservice())
        _, err = await self.kubectl("get", "--raw", DUMMY, ok=False)
        self.assertIn("NotFound", err)

    async def test_clash_remote_apiservice_wins(self) -> None:
        """The seed's third gotcha, the other way round: the stored remote APIService is never overwritten."""
        daemon = await self.restart(toggle=False)
        await self.kubectl("apply", "-f", self.manifests)
        before = await self.apiservice()
        assert before is not None

        daemon = await self.restart(toggle=True, previous=daemon)
        after = await self.apiservice()
        assert after is not None
        self.assertEqual(after["spec"], before["spec"])
        self.assertEqual(after["metadata"]["uid"], before["metadata"]["uid"])  # type: ignore[index]
        marked = [c for c in after["status"]["conditions"] if c["type"] == "BundledAPINotInstalled"]  # type: ignore[index]
        self.assertEqual([(c["status"], c["reason"]) for c in marked], [("True", "RemoteAPIServiceExists")])
        self.assertIn("grafanaAPIServerWithExperimentalAPIs", daemon.output.decode())
        self.assertIn(f"the remote APIService {NAME} already exists", daemon.output.decode())
        out, _ = await self.kubectl("get", "--raw", "/metrics")
        self.assertIn(f'grafana_aggregator_bundled_api_conflicts_total{{apiservice="{NAME}"}} 1.0', out)
        # Not served here: the remote backend is not running, so the group answers 503 instead of the dummies.
        _, err = await self.kubectl("get", "--raw", DUMMY, ok=False)
        self.assertIn("ServiceUnavailable", err)

        await self.restart(toggle=False, previous=daemon)
        final = await self.apiservice()
        assert final is not None
        self.assertEqual(final["spec"], before["spec"])
        self.assertEqual([c["type"] for c in final["status"]["conditions"]], ["Available"])  # type: ignore[index]
