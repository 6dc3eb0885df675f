# -*- test-case-name: tests.integration.test_etcd_workers -*-
"""`workers` with `storage_type = etcd` over real processes and a real etcd: every worker is a full replica that
serves local REST, writes and watches itself (the owner may be frozen), sees every other process's writes, survives
a killed sibling, drains on SIGTERM, and answers the summed `/metrics` and a `/readyz` with `workers` and `etcd`."""

from __future__ import annotations

import json
import os
import re
import signal
import time
from typing import Any

import treq
from twisted.internet import reactor
from twisted.internet.task import deferLater
from twisted.internet.threads import deferToThread

from ..etcd import EtcdServer
from .test_daemon import DaemonProcess
from .test_workers_e2e import EXTERNALNAMES, SERVED_BY, WorkersCase, externalname, served_by

#: Seconds a request may take before the test calls it hung (a request waiting on a frozen owner).
PATIENCE = 5


def served_paths(output: bytes, method: bytes, path: bytes) -> set[int]:
    """The processes whose access log has a line of that method for exactly that path."""
    return {int(m.group(4)) for m in SERVED_BY.finditer(output) if m.group(1) == method and m.group(2) == path}


def worker_folder(daemon: DaemonProcess, worker: int) -> str:
    """The private folder the owner gave worker `worker` (read from the worker's environment)."""
    pid = int(re.search(rb"started worker %d \(pid (\d+)\)" % worker, daemon.output).group(1))  # type: ignore[union-attr]
    with open(f"/proc/{pid}/environ", "rb") as handle:
        for entry in handle.read().split(b"\0"):
            name, _, value = entry.partition(b"=")
            if name == b"GRAFANA_AGGREGATOR_WORKER":
                return value.decode().split(":", 2)[2]
    raise AssertionError(f"worker {worker} has no GRAFANA_AGGREGATOR_WORKER")


class EtcdWorkersTests(WorkersCase):
    """The daemon with `--workers 3` on one etcd."""

    timeout = 150

    async def setUp(self) -> None:  # type: ignore[override]
        WorkersCase.setUp(self)
        self.etcd = EtcdServer()
        self.addCleanup(self.etcd.remove)
        await deferToThread(self.etcd.start)

    async def start_replicas(self, workers: str = "3") -> tuple[DaemonProcess, str]:
        return await self.start_workers(workers, "--storage-type", "etcd", "--etcd-servers", self.etcd.url,
                                        "--etcd-prefix", f"/{self.id().rpartition('.')[2]}")

    async def create(self, url: str, name: str) -> None:
        response = await self.client.post(url + EXTERNALNAMES, json=externalname(name), headers=self.headers,
                                          timeout=PATIENCE)
        self.assertEqual(response.code, 201, await treq.content(response))

    async def names(self, url: str) -> set[str]:
        response = await self.client.get(url + EXTERNALNAMES, headers=self.headers, timeout=PATIENCE)
        self.assertEqual(response.code, 200)
        return {item["metadata"]["name"] for item in (await treq.json_content(response))["items"]}

    async def test_workers_serve_local_rest_themselves(self) -> None:
        """No owner channel exists, and with the owner frozen (SIGSTOP) the workers still serve writes and lists."""
        daemon, url = await self.start_replicas()
        folder = worker_folder(daemon, 1)
        self.assertFalse(os.path.exists(os.path.join(folder, "owner.sock")), os.listdir(folder))
        os.kill(daemon.process.pid, signal.SIGSTOP)
        try:
            for n in range(12):
                await self.create(url, f"frozen{n}")
                self.assertIn(f"frozen{n}", await self.names(url))
            watch = await self.client.get(url + EXTERNALNAMES + "?watch=true", headers=self.headers,
                                          unbuffered=True, timeout=PATIENCE)
            self.assertEqual(watch.code, 200)
            chunks: list[bytes] = []
            done = treq.collect(watch, chunks.append)
            await self.create(url, "while-frozen")
            deadline = time.monotonic() + 2
            while time.monotonic() < deadline and b'"while-frozen"' not in b"".join(chunks):
                await deferLater(reactor, 0.05, lambda: None)
            self.assertIn(b'"while-frozen"', b"".join(chunks))
        finally:
            os.kill(daemon.process.pid, signal.SIGCONT)
        # The owner was frozen: every write was served by a worker (which ones is the kernel's choice).
        writers = served_by(daemon.output, b"POST")
        self.assertTrue(writers and writers <= {1, 2}, daemon.output.decode()[-3000:])
        self.assertEqual(await daemon.stop(), 0)
        await done

    async def test_write_on_any_process_reaches_lists_and_watches_on_all(self) -> None:
        """Watches opened on every process all get a write made through any process, and every list has it.

        Which process accepts a connection is the kernel's choice, and a busy one may take few: watches are
        opened in rounds (each ending by its timeoutSeconds, when the access log names its process) until
        every process has served at least one, each round's watches all getting that round's write.
        """
        daemon, url = await self.start_replicas()
        await self.create(url, "first")
        names = ["first"]
        watched_on: set[int] = set()
        for round_number in range(8):
            mark = len(daemon.output)
            streams: list[tuple[Any, list[bytes]]] = []
            for _ in range(12):
                response = await self.client.get(url + EXTERNALNAMES + "?watch=true&timeoutSeconds=3",
                                                 headers=self.headers, unbuffered=True, timeout=PATIENCE)
                self.assertEqual(response.code, 200)
                chunks: list[bytes] = []
                streams.append((treq.collect(response, chunks.append), chunks))
            name = f"seen-{round_number}"
            await self.create(url, name)
            names.append(name)
            marker = f'"{name}"'.encode()
            deadline = time.monotonic() + 2
            while time.monotonic() < deadline and not all(marker in b"".join(chunks) for _, chunks in streams):
                await deferLater(reactor, 0.05, lambda: None)
            for done, chunks in streams:
                await done  # (the watch ends by its timeoutSeconds)
                events = [json.loads(line) for line in b"".join(chunks).splitlines() if line]
                self.assertEqual([(e["type"], e["object"]["metadata"]["name"]) for e in events],
                                 [("ADDED", n) for n in names])
            watched_on |= served_paths(daemon.output[mark:], b"GET", EXTERNALNAMES.encode())
            if watched_on == {0, 1, 2}:
                break
        self.assertEqual(watched_on, {0, 1, 2})

        async def listed(n: int) -> None:
            self.assertEqual(await self.names(url), set(names))

        await self.until_every_process(daemon, 3, b"GET", listed)
        self.assertEqual(await daemon.stop(), 0)

    async def test_killed_worker_is_replaced_while_others_serve(self) -> None:
        """SIGKILL of a worker: writes and lists keep succeeding, it is restarted, and readyz is ok again."""
        daemon, url = await self.start_replicas()
        pid = int(re.search(rb"started worker 1 \(pid (\d+)\)", daemon.output).group(1))  # type: ignore[union-attr]
        os.kill(pid, signal.SIGKILL)
        started = time.monotonic()
        written = 0
        while time.monotonic() - started < 3:
            await self.create(url, f"after{written}")
            written += 1
            self.assertIn(f"after{written - 1}", await self.names(url))
        self.assertGreater(written, 5)
        self.assertIn(b"worker 1 (pid %d) exited" % pid, daemon.output)
        self.assertIn("[+]workers ok", await self.ready(url))
        pids = [int(p) for p in re.findall(rb"started worker 1 \(pid (\d+)\)", daemon.output)]
        self.assertEqual(len(pids), 2)

        async def listed(n: int) -> None:
            self.assertEqual(len(await self.names(url)), written)

        await self.until_every_process(daemon, 3, b"GET", listed)
        self.assertEqual(await daemon.stop(), 0)

    async def test_sigterm_with_watches_open_exits_zero(self) -> None:
        """SIGTERM while watches are open on the processes: every watch ends cleanly, every process exits 0."""
        daemon, url = await self.start_replicas()
        streams = []
        for _ in range(9):
            response = await self.client.get(url + EXTERNALNAMES + "?watch=true", headers=self.headers,
                                             unbuffered=True, timeout=PATIENCE)
            self.assertEqual(response.code, 200)
            streams.append(treq.collect(response, lambda chunk: None))
        self.assertEqual(await daemon.stop(), 0)
        for done in streams:
            await done
        self.assertEqual(len(re.findall(rb"worker \d exited \(status 0", daemon.output)), 2, daemon.output.decode())
        self.assertIn(b"shut down cleanly", daemon.output)

    async def test_metrics_summed_and_readyz_checks_on_every_process(self) -> None:
        """Whichever process answers, /metrics counts every process's requests once and /readyz has workers and etcd."""
        daemon, url = await self.start_replicas()
        created = 0

        async def create(n: int) -> None:
            nonlocal created
            await self.create(url, f"m{n}")
            created += 1

        await self.until_every_process(daemon, 3, b"POST", create)
        posts = re.compile(r'apiserver_request_total\{code="201",component="apiserver",group="service.grafana.app",'
                           r'resource="externalnames",scope="resource",subresource="",verb="POST",'
                           r'version="v0alpha1"\} (\S+)')
        readyz = []
        for _ in range(12):
            metrics = await self.client.get(url + "/metrics", headers=self.headers, timeout=PATIENCE)
            text = (await treq.content(metrics)).decode()
            found = posts.search(text)
            self.assertIsNotNone(found, text)
            assert found is not None
            self.assertEqual(float(found.group(1)), created)
            readyz.append(await self.ready(url))
        for text in readyz:
            self.assertIn("[+]workers ok", text)
            self.assertIn("[+]etcd ok", text)
        self.assertEqual(served_paths(daemon.output, b"GET", b"/metrics"), {0, 1, 2})
        self.assertEqual(await daemon.stop(), 0)
