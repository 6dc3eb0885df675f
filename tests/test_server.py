"""The served tree's own answers: /version and the paths below it."""

from __future__ import annotations

from treq.testing import StubTreq
from twisted.trial.unittest import SynchronousTestCase

from grafana_aggregator import __version__
from grafana_aggregator.identity.auth import Authenticator
from grafana_aggregator.web.health import HealthChecks
from grafana_aggregator.web.site import build_site
from grafana_aggregator.web.root import AuthenticatingRoot, build_tree

from .support import empty_apis


class ServerTests(SynchronousTestCase):
    """Through the real site with anonymous access and no authenticators (anonymous may read /version only)."""

    def client(self, emulated: tuple[int, int] = (1, 33)) -> StubTreq:
        tree = build_tree(health=HealthChecks(), emulated_version=emulated, apis=empty_apis())
        return StubTreq(build_site(AuthenticatingRoot(tree, Authenticator([], anonymous=True))).resource)

    def test_version_shape(self) -> None:
        """/version has kube's fields, with the emulated major and minor and a semver gitVersion."""
        client = self.client((1, 30))
        response = self.successResultOf(client.get("https://agg.test/version"))
        self.assertEqual(response.headers.getRawHeaders("content-type"), ["application/json"])
        self.assertEqual(self.successResultOf(client.json_content(response)), {
            "major": "1", "minor": "30", "gitVersion": f"v1.30.0+grafana.aggregator.{__version__}",
            "gitCommit": "", "gitTreeState": "", "buildDate": "", "goVersion": "", "compiler": "cpython",
            "platform": "linux/amd64",
        })

    def test_version_trailing_slash_and_children(self) -> None:
        """/version/ is /version, and a path below it is a 404 Status."""
        client = self.client()
        self.assertEqual(self.successResultOf(client.get("https://agg.test/version/")).code, 200)
        response = self.successResultOf(client.get("https://agg.test/version/x"))
        self.assertEqual((response.code, self.successResultOf(client.json_content(response))["reason"]),
                         (404, "NotFound"))
