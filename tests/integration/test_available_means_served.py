"""Available means served, over real processes: discovery and OpenAPI never lag the Available condition, and a
killed backend is noticed without any traffic.

Scripts do `kubectl wait --for=condition=Available` and then use the backend's kinds at once; before the
discovery was seeded by the availability probe, `kubectl get` and `kubectl explain` said the kind did not exist
for a second or two.  The aggregator runs as `make run` runs it, the example server with the seed's flags.
"""

from __future__ import annotations

import json
import os
import signal
import time

from twisted.internet import reactor
from twisted.internet.task import deferLater

from .test_seed_walkthrough import WalkthroughCase

APISERVICE = "apiservice/v0alpha1.example.grafana.app"
#: How many times the backend is started and its kinds used right after `kubectl wait`.
REPETITIONS = 20


class AvailableMeansServedTests(WalkthroughCase):
    """`kubectl wait` for Available, then the kinds at once; and a dead backend seen without traffic."""

    timeout = 600

    async def test_kinds_usable_the_moment_available(self) -> None:
        """Twenty times: register the APIService, start the backend a little later, wait for Available, and `get`
        and `explain` its kind at once, with no retry."""
        await self.start_aggregator().serving
        for attempt in range(REPETITIONS):
            # A new kubectl cache each time: discovery is read from the server, as a fresh script would.
            cache = ("--cache-dir", os.path.join(self.folder, f"cache-{attempt}"))
            await self.kubectl("apply", "-f", self.manifests, *cache)
            # The backend comes up a varying while after the APIService is registered (a deployment rolling out).
            await deferLater(reactor, attempt % 4, lambda: None)
            example = self.start_example()
            await self.kubectl("wait", "--for=condition=Available", APISERVICE, "--timeout=30s", *cache)
            out, err = await self.kubectl("get", "dummy", "-n", "default", *cache, ok=False)
            self.assertEqual([line.split()[0] for line in out.splitlines()], ["NAME", "test1", "test2", "test3"],
                             f"attempt {attempt}: {err}")
            out, err = await self.kubectl("explain", "dummy", *cache, ok=False)
            self.assertIn("DummyResource", out, f"attempt {attempt}: {err}")
            await example.stop()
            await self.kubectl("wait", "--for=condition=Available=False", APISERVICE, "--timeout=30s", *cache)
            out, _ = await self.kubectl("get", "--raw", "/apis", *cache)
            self.assertIn("example.grafana.app", {group["name"] for group in json.loads(out)["groups"]},
                          "an unavailable APIService stays listed")
            await self.kubectl("delete", "-f", self.manifests, *cache)

    async def test_killed_backend_noticed_without_traffic(self) -> None:
        """With no request at all going to it, a backend killed with SIGKILL is unavailable within 2 s."""
        await self.start_aggregator().serving
        await self.kubectl("apply", "-f", self.manifests)
        example = self.start_example()
        await self.kubectl("wait", "--for=condition=Available", APISERVICE, "--timeout=30s")
        # Well past the probe that made it Available, well before the next 30 s resync.
        await deferLater(reactor, 3, lambda: None)
        killed = time.monotonic()
        example.process.signalProcess(signal.SIGKILL)
        await example.ended
        await self.kubectl("wait", "--for=condition=Available=False", APISERVICE, "--timeout=10s")
        seconds = time.monotonic() - killed
        self.assertLess(seconds, 2.0, f"the dead backend was noticed after {seconds:.2f} s")
        out, _ = await self.kubectl("get", APISERVICE, "-o", "json")
        condition = next(c for c in json.loads(out)["status"]["conditions"] if c["type"] == "Available")
        self.assertEqual((condition["status"], condition["reason"]), ("False", "FailedDiscoveryCheck"))
