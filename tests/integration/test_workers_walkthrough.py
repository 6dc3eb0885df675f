"""The seed's walk-through with `workers = auto`: kubectl, the aggregator's processes and the example server."""

from __future__ import annotations

import json

from . import test_seed_walkthrough
from .test_workers_e2e import served_by


class WorkersWalkthroughTests(test_seed_walkthrough.SeedWalkthroughTests):
    """Every step of the seed's walk-through, and kubectl writes, with one process per CPU."""

    timeout = 240

    def setUp(self) -> None:
        super().setUp()
        with open(self.ini) as handle:
            ini = handle.read()
        with open(self.ini, "w") as handle:
            handle.write(ini.replace("listen = tcp:0:interface=127.0.0.1",
                                     "listen = tcp:0:interface=127.0.0.1\nworkers = auto"))

    async def test_kubectl_writes_through_every_process(self) -> None:
        """kubectl create, apply and delete of ExternalNames succeed whichever process accepts them."""
        aggregator = self.start_aggregator()
        await aggregator.serving
        for attempt in range(60):
            name = f"e{attempt}"
            manifest = self.manifests + f"/{name}.json"
            with open(manifest, "w") as handle:
                json.dump({"apiVersion": "service.grafana.app/v0alpha1", "kind": "ExternalName",
                           "metadata": {"name": name, "namespace": "grafana"}, "spec": {"host": "localhost"}}, handle)
            out, _ = await self.kubectl("create", "-f", manifest)
            self.assertEqual(out.strip(), f"externalname.service.grafana.app/{name} created")
            out, _ = await self.kubectl("apply", "-f", manifest)
            self.assertIn(f"externalname.service.grafana.app/{name}", out)
            out, _ = await self.kubectl("delete", "-f", manifest)
            self.assertEqual(out.strip(), f'externalname.service.grafana.app "{name}" deleted')
            if len(served_by(aggregator.output, b"POST")) >= 2 and len(served_by(aggregator.output, b"DELETE")) >= 2:
                break
        self.assertGreaterEqual(len(served_by(aggregator.output, b"POST")), 2, "every write went to one process")
        self.assertGreaterEqual(len(served_by(aggregator.output, b"PATCH")), 1)
        out, _ = await self.kubectl("get", "externalnames", "-A", "--no-headers", ok=False)
        self.assertNotIn(" e0 ", out)
