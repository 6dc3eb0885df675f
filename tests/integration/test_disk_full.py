# -*- test-case-name: tests.integration.test_disk_full -*-
"""The installed daemon on a file system that really fills up: a small tmpfs mounted for the test.

Mounting needs root (CAP_SYS_ADMIN); CI runs as root.  Anywhere the mount is refused the test is skipped,
saying why.  The daemon keeps its whole data folder on the tmpfs; the test fills the rest of it with a
file, so every write the daemon tries meets ENOSPC from the kernel, then frees the room again.
"""

from __future__ import annotations

import errno
import json
import os
import re
import subprocess
from typing import Any

import yaml
from treq.client import HTTPClient
from twisted.internet import reactor, ssl
from twisted.internet.defer import Deferred
from twisted.internet.task import deferLater
from twisted.trial.unittest import SkipTest, TestCase
from twisted.web.client import Agent, BrowserLikePolicyForHTTPS, HTTPConnectionPool

from .test_daemon import TWISTD, DaemonProcess

EXTERNALNAMES = "/apis/service.grafana.app/v0alpha1/namespaces/default/externalnames"
FULL_STATUS = {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
               "message": "the object could not be stored: the storage folder's file system is full "
                          "(No space left on device)",
               "reason": "InsufficientStorage", "code": 507}
#: The tmpfs: room for the daemon's own files, and little enough to fill in a moment.
TMPFS_SIZE = "2m"


def external_name(name: str, host: str) -> dict[str, Any]:
    return {"apiVersion": "service.grafana.app/v0alpha1", "kind": "ExternalName", "metadata": {"name": name},
            "spec": {"host": host}}


def fill(path: str) -> None:
    """Write path until the file system has no room left at all."""
    with open(path, "wb", buffering=0) as handle:
        for size in (1 << 16, 1 << 12, 1):
            while True:
                try:
                    handle.write(b"\0" * size)
                except OSError as error:
                    if error.errno != errno.ENOSPC:
                        raise
                    break


class DiskFullTests(TestCase):
    """Writes to a full disk answer 507, keep what is stored, make /readyz fail, and recover once there is room."""

    timeout = 120

    def setUp(self) -> None:
        self.folder = os.path.abspath(self.mktemp())
        self.data = os.path.join(self.folder, "data")
        os.makedirs(self.data)
        mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={TMPFS_SIZE},mode=0700", "tmpfs", self.data],
                                 capture_output=True, text=True)
        if mounted.returncode != 0:
            raise SkipTest(f"cannot mount a tmpfs to fill (it needs root, CAP_SYS_ADMIN): {mounted.stderr.strip()}")
        self.addCleanup(self.unmount)
        self.env = {**os.environ, "HOME": self.folder, "PYTHONUNBUFFERED": "1"}
        self.env.pop("KUBECONFIG", None)

    def unmount(self) -> None:
        if subprocess.run(["umount", self.data], capture_output=True).returncode != 0:
            subprocess.run(["umount", "-l", self.data], capture_output=True)

    async def start(self) -> DaemonProcess:
        daemon = DaemonProcess()
        argv = [TWISTD, "--nodaemon", "--pidfile=", "grafana-aggregator", "--listen", "tcp:0:interface=127.0.0.1",
                "--data-dir", self.data, "--ensure-kubectl-access", "true"]
        daemon.process = reactor.spawnProcess(daemon, TWISTD, argv, env=self.env, path=self.folder)  # type: ignore[attr-defined]
        self.addCleanup(lambda: Deferred.fromCoroutine(daemon.stop()))
        self.url = await daemon.serving
        with open(os.path.join(self.data, "grafana-apiserver", "grafana.kubeconfig")) as handle:
            token = yaml.safe_load(handle)["users"][0]["user"]["token"]
        with open(os.path.join(self.data, "grafana-apiserver", "certs", "apiserver.crt"), "rb") as handle:
            anchor = re.findall(rb"-----BEGIN CERTIFICATE-----.+?-----END CERTIFICATE-----\n", handle.read(), re.S)[-1]
        self.client = HTTPClient(Agent(reactor, BrowserLikePolicyForHTTPS(trustRoot=ssl.Certificate.loadPEM(anchor)),
                                       pool=HTTPConnectionPool(reactor, persistent=False)))
        self.headers = {"Authorization": f"Bearer {token}"}
        await self.wait_ready()
        return daemon

    async def request(self, method: str, path: str, body: Any = None,
                      content_type: str = "application/json") -> tuple[int, Any]:
        data = json.dumps(body).encode() if body is not None else None
        headers = {**self.headers, "Content-Type": content_type}
        response = await self.client.request(method, self.url + path, data=data, headers=headers)
        text = await response.text()
        try:
            return response.code, json.loads(text)
        except ValueError:
            return response.code, text

    async def wait_ready(self, seconds: float = 15.0) -> None:
        for _ in range(int(seconds * 10)):
            code, _ = await self.request("GET", "/readyz")
            if code == 200:
                return
            await deferLater(reactor, 0.1, lambda: None)
        code, body = await self.request("GET", "/readyz?verbose")
        self.fail(f"/readyz still answers {code}:\n{body}")

    def leftovers(self) -> list[str]:
        """Temporary files anywhere in the data folder."""
        return [os.path.join(folder, name) for folder, _, names in os.walk(self.data)
                for name in names if ".tmp-" in name]

    async def test_full_disk(self) -> None:
        """With the disk full, writes answer 507 with one log line each, stored objects stay whole, /readyz
        fails on `storage`; once there is room, /readyz passes without any request writing, and writes work."""
        daemon = await self.start()
        code, before = await self.request("POST", EXTERNALNAMES, external_name("before", "before.example"))
        self.assertEqual(code, 201, before)
        stored_file = os.path.join(self.data, "grafana-apiserver", "service.grafana.app", "externalnames", "default",
                                   "before.json")
        with open(stored_file, "rb") as handle:
            stored_bytes = handle.read()

        filler = os.path.join(self.data, "filler")
        fill(filler)
        logged_before = len(daemon.output)
        code, status = await self.request("POST", EXTERNALNAMES, external_name("during", "during.example"))
        self.assertEqual((code, status), (507, FULL_STATUS))
        code, status = await self.request("PUT", f"{EXTERNALNAMES}/before", dict(before, spec={"host": "x.example"}))
        self.assertEqual((code, status), (507, FULL_STATUS))
        code, status = await self.request("PATCH", f"{EXTERNALNAMES}/before", {"spec": {"host": "y.example"}},
                                          "application/merge-patch+json")
        self.assertEqual((code, status), (507, FULL_STATUS))

        code, body = await self.request("GET", "/readyz?verbose")
        self.assertEqual(code, 500, body)
        self.assertIn("[-]storage failed: reason withheld\n", body)
        self.assertEqual(await self.request("GET", f"{EXTERNALNAMES}/before"), (200, before))
        with open(stored_file, "rb") as handle:
            self.assertEqual(handle.read(), stored_bytes)
        self.assertEqual(self.leftovers(), [])
        logged = daemon.output[logged_before:].decode("utf-8", "replace")
        self.assertEqual(len(re.findall(r"was not stored", logged)), 3, logged)
        self.assertNotIn("Traceback", logged)

        os.unlink(filler)
        await self.wait_ready(15.0)
        code, during = await self.request("POST", EXTERNALNAMES, external_name("during", "during.example"))
        self.assertEqual(code, 201, during)
        self.assertEqual(int(during["metadata"]["resourceVersion"]), int(before["metadata"]["resourceVersion"]) + 1)

        # After a restart on the same folder, everything written before and after the full disk is there.
        self.assertEqual(await daemon.stop(), 0)
        await self.start()
        code, listed = await self.request("GET", EXTERNALNAMES)
        self.assertEqual(code, 200, listed)
        self.assertEqual([item["metadata"]["name"] for item in listed["items"]], ["before", "during"])
        self.assertEqual(listed["items"][0]["spec"], {"host": "before.example"})
