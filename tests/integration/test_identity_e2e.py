"""Impersonation and the self-reviews with the real kubectl 1.27 and 1.33, the aggregator and the example backend.

The set-up is the seed's (tests.integration.test_seed_walkthrough): the dev PKI, conf/dev.ini on an
ephemeral port, the example server as the backend of `v0alpha1.example.grafana.app`; the aggregator
also reads a token file with a user outside system:masters, and emulates the Kubernetes version
whose kubectl runs the steps.  The admin is the kubeconfig's user (system:apiserver, a master).
"""

from __future__ import annotations

import json
import os
import re

from twisted.internet.utils import getProcessOutputAndValue

from .test_kubectl_e2e import versioned_kubectl
from .test_seed_walkthrough import WalkthroughCase

SUB = "/apis/example.grafana.app/v0alpha1/namespaces/default/dummy/test1/sub"
ALICE = ("--token", "alicetoken")


class IdentityWithKubectlTests(WalkthroughCase):
    """`kubectl --as`, `kubectl auth can-i` (with `--list`) and `kubectl auth whoami` against the aggregator."""

    def emulate(self, minor: int) -> str:
        """Have the aggregator emulate Kubernetes 1.<minor> and know alice's token; the kubectl 1.<minor> binary."""
        tokens = os.path.join(self.folder, "tokens.csv")
        with open(tokens, "w") as handle:
            handle.write('alicetoken,alice,1001,"dev"\n')
        with open(self.ini) as handle:
            ini = handle.read()
        listen = "listen = tcp:0:interface=127.0.0.1\n"
        with open(self.ini, "w") as handle:
            handle.write(ini.replace(listen, f"{listen}token_auth_file = {tokens}\nemulated_version = 1.{minor}\n"))
        return versioned_kubectl(minor)

    async def invoke(self, binary: str, *args: str) -> tuple[str, str, int]:
        out, err, code = await getProcessOutputAndValue(binary, args, env=self.env, path=self.folder)
        return out.decode(), err.decode(), code

    async def ok(self, binary: str, *args: str) -> str:
        out, err, code = await self.invoke(binary, *args)
        self.assertEqual(code, 0, f"kubectl {' '.join(args)} failed: {err}")
        return out

    def table(self, out: str) -> list[list[str]]:
        """kubectl's table output as rows of cells (columns are two or more spaces apart)."""
        return [re.split(r"\s{2,}", line.strip()) for line in out.splitlines() if line.strip()]

    async def walkthrough(self, minor: int) -> None:
        binary = self.emulate(minor)
        await self.start_aggregator().serving
        await self.ok(binary, "apply", "-f", self.manifests)
        self.start_example()
        await self.wait_available("True", within=15)

        # --as: refused for a caller outside system:masters, applied for the admin.
        _, err, code = await self.invoke(binary, *ALICE, "--as", "bob", "get", "--raw", SUB)
        self.assertNotEqual(code, 0)
        self.assertIn('users "bob" is forbidden: User "alice" cannot impersonate resource "users" in API group "" at '
                      'the cluster scope', err)
        out = await self.ok(binary, "--as", "bob", "--as-group", "system:masters", "--as-uid", "b-42",
                            "get", "--raw", SUB)
        identity = json.loads(out)["identity"]
        self.assertEqual((identity["user"], identity["uid"], identity["groups"]),
                         ("bob", "b-42", ["system:masters", "system:authenticated"]))
        # The impersonated user is authorized as itself: bob outside system:masters may not list dummies.
        _, err, code = await self.invoke(binary, "--as", "bob", "get", "dummy", "-n", "default")
        self.assertNotEqual(code, 0)
        self.assertIn('dummy.example.grafana.app is forbidden: User "bob" cannot list resource "dummy" in API group '
                      '"example.grafana.app" in the namespace "default"', err)

        # auth can-i
        out, err, code = await self.invoke(binary, "auth", "can-i", "create", "apiservices")
        self.assertEqual((out.strip(), code), ("yes", 0), err)
        out, err, code = await self.invoke(binary, *ALICE, "auth", "can-i", "create", "apiservices")
        self.assertEqual((out.strip(), code), ("no", 1), err)
        out, err, code = await self.invoke(binary, "--as", "bob", "auth", "can-i", "create", "apiservices")
        self.assertEqual((out.strip(), code), ("no", 1), err)
        out, err, code = await self.invoke(binary, *ALICE, "auth", "can-i", "get", "/apis")
        self.assertEqual((out.strip(), code), ("yes", 0), err)

        # auth can-i --list
        rows = self.table(await self.ok(binary, "auth", "can-i", "--list"))
        self.assertEqual(rows[0], ["Resources", "Non-Resource URLs", "Resource Names", "Verbs"])
        self.assertIn(["*.*", "[]", "[]", "[*]"], rows)
        self.assertIn(["[*]", "[]", "[*]"], rows)
        rows = self.table(await self.ok(binary, *ALICE, "auth", "can-i", "--list"))
        self.assertIn(["selfsubjectaccessreviews.authorization.k8s.io", "[]", "[]", "[create]"], rows)
        self.assertIn(["selfsubjectreviews.authentication.k8s.io", "[]", "[]", "[create]"], rows)
        self.assertIn(["[/apis]", "[]", "[get]"], rows)
        self.assertNotIn(["*.*", "[]", "[]", "[*]"], rows)

        # auth whoami, as oneself and impersonating
        rows = self.table(await self.ok(binary, "auth", "whoami"))
        self.assertEqual(rows[:2], [["ATTRIBUTE", "VALUE"], ["Username", "system:apiserver"]])
        self.assertIn(["Groups", "[system:masters system:authenticated]"], rows)
        rows = self.table(await self.ok(binary, *ALICE, "auth", "whoami"))
        self.assertEqual(rows, [["ATTRIBUTE", "VALUE"], ["Username", "alice"], ["UID", "1001"],
                                ["Groups", "[dev system:authenticated]"]])
        rows = self.table(await self.ok(binary, "--as", "bob", "--as-group", "dev", "auth", "whoami"))
        self.assertEqual(rows, [["ATTRIBUTE", "VALUE"], ["Username", "bob"], ["Groups", "[dev system:authenticated]"]])
        out = await self.ok(binary, "--as", "system:serviceaccount:grafana:robot", "auth", "whoami", "-o", "json")
        self.assertEqual(json.loads(out)["status"]["userInfo"], {
            "username": "system:serviceaccount:grafana:robot",
            "groups": ["system:serviceaccounts", "system:serviceaccounts:grafana", "system:authenticated"]})
        _, err, code = await self.invoke(binary, *ALICE, "--as", "bob", "auth", "whoami")
        self.assertNotEqual(code, 0)
        self.assertIn("you do not have permission to call it", err)

    async def test_kubectl_1_27(self) -> None:
        """kubectl 1.27 (whoami through authentication.k8s.io/v1beta1) against a 1.27-emulating aggregator."""
        await self.walkthrough(27)

    async def test_kubectl_1_33(self) -> None:
        """kubectl 1.33 (whoami through authentication.k8s.io/v1) against a 1.33-emulating aggregator."""
        await self.walkthrough(33)
