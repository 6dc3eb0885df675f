"""The measurements of `make bench`, one function per section, each adding rows with their references."""

from __future__ import annotations

import base64
import collections
import contextlib
import functools
import http.client
import json
import os
import re
import resource
import ssl
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from .harness import (AUTHORIZATION, LARGE_BYTES, LARGE_PATH, SMALL_PATH, TOKEN, UPLOAD_PATH, VERSION, Api, Pki,
                      Process, Processes, RssSampler, WrkResult, cpu_seconds, free_port, percentile, wait_port, wrk)
from . import crds as crdbench
from . import propagation
from .report import Results, Row
from .stack import (Aggregator, Etcd, Nginx, register, start_aggregator, start_backend, start_etcd,
                    start_reference_proxy, wait_available)

MB = 1024 * 1024
#: Rounds of the proxy section: each path gets `--seconds` of load in this many turns, the paths alternating.
PROXY_ROUNDS = 3
#: Transfers of each 10 MB body per path (each lasts 20-80 ms, so one alone is noise).
BODY_REPEATS = 9
BENCH = os.path.dirname(os.path.abspath(__file__))
APISERVICES = "/apis/apiregistration.k8s.io/v1/apiservices"


@dataclass
class BareProxy:
    """bench/bare_proxy.py running, and where it listens."""

    process: Process
    port: int


@dataclass
class Context:
    """The run's processes, started once and shared by the sections, and the daemon's RSS at rest."""

    processes: Processes
    pki: Pki
    results: Results
    seconds: float
    _backend: Nginx | None = None
    _aggregator: Aggregator | None = None
    _proxy: Nginx | None = None
    _bare_proxy: BareProxy | None = None
    rss_at_rest: int = 0
    #: The RSS sampler of every load, by phase name, for the memory rows.
    phases: list[tuple[str, RssSampler]] = field(default_factory=list)

    @property
    def backend(self) -> Nginx:
        if self._backend is None:
            self._backend = start_backend(self.processes, self.pki)
        return self._backend

    @property
    def aggregator(self) -> Aggregator:
        if self._aggregator is None:
            backend = self.backend
            self._aggregator = start_aggregator(self.processes, self.pki)
            name = register(self._aggregator.api, self.pki, "bench.grafana.app", backend.port)
            wait_available(self._aggregator.api, name, "True", within=30)
            time.sleep(1.0)
            self.rss_at_rest = self._aggregator.process.rss()
        return self._aggregator

    @property
    def proxy(self) -> Nginx:
        if self._proxy is None:
            self._proxy = start_reference_proxy(self.processes, self.pki, self.backend.port)
        return self._proxy

    @property
    def bare_proxy(self) -> BareProxy:
        """bench/bare_proxy.py, started once for the sections that measure it."""
        if self._bare_proxy is None:
            self._bare_proxy = start_bare_proxy(self)
        return self._bare_proxy

    def add(self, row: Row) -> Row:
        return self.results.add(row)

    def sampler(self, phase: str) -> RssSampler:
        sampler = RssSampler(self.aggregator.process.pid)
        self.phases.append((phase, sampler))
        return sampler

    def finish(self) -> None:
        """The daemon's RSS rows: at rest, then the peak of every phase, with the resting figure as reference."""
        if self._aggregator is None:
            return
        rest = self.rss_at_rest / MB
        self.add(Row("memory", "RSS at rest", rest, "MB"))
        for phase, sampler in self.phases:
            self.add(Row("memory", f"RSS peak: {phase}", sampler.peak / MB, "MB", rest, "at rest"))


def _wrk_rows(ctx: Context, section: str, label: str, result: WrkResult, reference: WrkResult | None,
              reference_name: str) -> None:
    ref = reference
    ctx.add(Row(section, f"{label}: requests/s", result.rps, "req/s", ref.rps if ref else None, reference_name))
    ctx.add(Row(section, f"{label}: p50", result.p50_ms, "ms", ref.p50_ms if ref else None, reference_name))
    ctx.add(Row(section, f"{label}: p99", result.p99_ms, "ms", ref.p99_ms if ref else None, reference_name))
    if result.errors:
        ctx.add(Row(section, f"{label}: errors", result.errors, "", at_most=0))


def start_floor(ctx: Context) -> int:
    """bench/floor.py: bare twisted.web over TLS serving the same small object; returns its port."""
    port = free_port()
    body = os.path.join(ctx.processes.folder, "backend-root", SMALL_PATH.lstrip("/") + ".json")
    ctx.processes.start("floor", [sys.executable, os.path.join(BENCH, "floor.py"), ctx.pki.server_cert,
                                  ctx.pki.server_key, str(port), body])
    wait_port(port)
    return port


def start_bare_proxy(ctx: Context) -> BareProxy:
    """bench/bare_proxy.py: a bare Twisted reverse proxy to the same backend, the floor for one process."""
    port = free_port()
    pki = ctx.pki
    process = ctx.processes.start("bare-proxy", [sys.executable, os.path.join(BENCH, "bare_proxy.py"), str(port),
                                                 "localhost", str(ctx.backend.port), pki.server_cert, pki.server_key,
                                                 pki.ca, pki.client_cert, pki.client_key, TOKEN])
    wait_port(port)
    return BareProxy(process, port)


def proxy(ctx: Context) -> None:
    """Small GETs at concurrency 1 and 50: direct to the backend, through nginx, through the aggregator.

    Two floors are measured too: bare twisted.web over TLS answering the same object from memory (no
    proxy can be faster than the HTTP server it is built on) and a bare Twisted reverse proxy doing
    only the aggregator's essential job (bench/bare_proxy.py): the aggregator's own cost is the gap to it.
    Every path is loaded in PROXY_ROUNDS alternating rounds, so that the machine's drift during the section
    falls on all of them rather than on whichever was measured at the time.
    """
    auth = [f"Authorization: {AUTHORIZATION}"]
    targets = {
        "direct": f"https://127.0.0.1:{ctx.backend.port}{SMALL_PATH}",
        "nginx": f"https://127.0.0.1:{ctx.proxy.port}{SMALL_PATH}",
        "aggregator": f"{ctx.aggregator.url}{SMALL_PATH}",
        "floor": f"https://127.0.0.1:{start_floor(ctx)}{SMALL_PATH}",
        "bare": f"https://127.0.0.1:{ctx.bare_proxy.port}{SMALL_PATH}",
    }
    round_seconds = max(2, round(ctx.seconds / PROXY_ROUNDS))  # wrk takes whole seconds
    for connections in (1, 50):
        rounds: dict[str, list[WrkResult]] = {name: [] for name in targets}
        for url in targets.values():
            wrk(url, connections, 1, auth)  # warm up connections, pools and caches
        with ctx.sampler(f"proxy c={connections}"):
            for _ in range(PROXY_ROUNDS):
                for name, url in targets.items():
                    rounds[name].append(wrk(url, connections, round_seconds, auth))
        measured = {name: _combined(results) for name, results in rounds.items()}
        direct, nginx, aggregator, floor, bare = (measured[n] for n in ("direct", "nginx", "aggregator", "floor",
                                                                          "bare"))
        section = f"proxy c={connections}"
        _wrk_rows(ctx, section, "direct", direct, None, "")
        _wrk_rows(ctx, section, "nginx proxy", nginx, direct, "direct")
        _wrk_rows(ctx, section, "bare Twisted proxy", bare, nginx, "nginx")
        _wrk_rows(ctx, section, "aggregator", aggregator, bare, "bare Twisted proxy")
        _wrk_rows(ctx, section, "twisted.web alone, no proxy", floor, None, "")
        if connections == 50:
            ctx.add(Row(section, "aggregator requests/s (target)", aggregator.rps, "req/s", nginx.rps, "nginx",
                        at_least=3000))
            ctx.add(Row(section, "aggregator requests/s vs bare Twisted proxy", aggregator.rps / bare.rps, "×", 1.0,
                        "bare Twisted proxy", at_least=0.75))
            ctx.add(Row(section, "aggregator requests/s vs nginx proxy", aggregator.rps / nginx.rps, "×", 1.0,
                        "nginx proxy"))
            ctx.add(Row(section, "aggregator requests/s vs twisted.web alone", aggregator.rps, "req/s", floor.rps,
                        "twisted.web alone"))
        else:
            ctx.add(Row(section, "aggregator added p50 over bare Twisted proxy", aggregator.p50_ms - bare.p50_ms, "ms",
                        bare.p50_ms - direct.p50_ms, "bare added over direct", at_most=0.2))
            ctx.add(Row(section, "aggregator added p50 over direct", aggregator.p50_ms - direct.p50_ms, "ms",
                        nginx.p50_ms - direct.p50_ms, "nginx added", at_most=1.0))
            ctx.add(Row(section, "aggregator added p99 over direct", aggregator.p99_ms - direct.p99_ms, "ms",
                        nginx.p99_ms - direct.p99_ms, "nginx added", at_most=5.0))
            ctx.add(Row(section, "twisted.web alone, p50 over direct", floor.p50_ms - direct.p50_ms, "ms"))


def _curl(url: str, pki: Pki, *extra: str) -> float:
    """One curl transfer; returns its bytes per second (download or upload, whichever is larger)."""
    argv = ["curl", "-s", "-S", "-f", "-o", "/dev/null", "--cacert", pki.ca, "--cert", pki.client_cert,
            "--key", pki.client_key, "-H", f"Authorization: {AUTHORIZATION}", "-w", "%{speed_download} %{speed_upload}",
            *extra, url]
    completed = subprocess.run(argv, check=True, capture_output=True, text=True, timeout=120)
    download, upload = (float(part) for part in completed.stdout.split())
    return max(download, upload)


def bodies(ctx: Context) -> None:
    """A 10 MB download and a 10 MB upload, direct, through the bare Twisted proxy and through the aggregator, in
    alternating rounds; the daemon's RSS must stay flat.  Each proxy's CPU per transfer is its own (from /proc),
    which the machine's drift moves far less than the transfer rates."""
    upload = os.path.join(ctx.processes.folder, "upload.bin")
    with open(upload, "wb") as handle:
        handle.write(os.urandom(LARGE_BYTES))
    aggregator, bare = ctx.aggregator, ctx.bare_proxy
    bases = {"direct": f"https://localhost:{ctx.backend.port}", "aggregator": f"https://localhost:{aggregator.port}",
             "bare": f"https://localhost:{bare.port}"}
    pids = {"aggregator": aggregator.process.pid, "bare": bare.process.pid}
    before = aggregator.process.rss()  # earlier loads may have grown the heap; growth is counted from here
    for label, path, extra in (("10 MB download", LARGE_PATH, ()),
                               ("10 MB upload", UPLOAD_PATH, ("-T", upload))):
        speeds: dict[str, list[float]] = {name: [] for name in bases}
        cpu: dict[str, float] = {name: 0.0 for name in pids}
        for base in bases.values():
            _curl(base + path, ctx.pki, *extra)
        with ctx.sampler(label):
            for _ in range(BODY_REPEATS):
                for name, base in bases.items():
                    started = cpu_seconds(pids[name]) if name in pids else 0.0
                    speeds[name].append(_curl(base + path, ctx.pki, *extra))
                    if name in pids:
                        cpu[name] += cpu_seconds(pids[name]) - started
        direct, through, floor = (statistics.median(speeds[name]) / MB for name in ("direct", "aggregator", "bare"))
        ctx.add(Row("bodies", f"{label}: direct", direct, "MB/s"))
        ctx.add(Row("bodies", f"{label}: bare Twisted proxy", floor, "MB/s", direct, "direct"))
        ctx.add(Row("bodies", f"{label}: aggregator", through, "MB/s", direct, "direct"))
        ctx.add(Row("bodies", f"{label}: aggregator / direct", 100 * through / direct, "%", at_least=50))
        ctx.add(Row("bodies", f"{label}: aggregator / bare Twisted proxy", through / floor, "×", 1.0,
                    "bare Twisted proxy"))
        ctx.add(Row("bodies", f"{label}: aggregator CPU per transfer", 1000 * cpu["aggregator"] / BODY_REPEATS, "ms",
                    1000 * cpu["bare"] / BODY_REPEATS, "bare Twisted proxy"))
    peak = max(s.peak for phase, s in ctx.phases if phase.startswith("10 MB"))
    ctx.add(Row("bodies", "RSS growth while streaming", (peak - before) / MB, "MB",
                LARGE_BYTES / MB, "one body", at_most=LARGE_BYTES / MB / 2))


def _output_line(process: Process, prefix: str, within: float) -> str:
    """The first line of a child's output starting with prefix, waiting for it; fails if the child ends without it."""
    deadline = time.monotonic() + within
    while True:
        exited = process.popen.poll() is not None
        for line in process.output().splitlines():
            if line.startswith(prefix):
                return line
        if exited or time.monotonic() > deadline:
            raise RuntimeError(f"{process.name} printed no {prefix!r} line:\n{process.output()[-2000:]}")
        time.sleep(0.02)


def _remote_apiservice(group: str, label: str) -> dict[str, Any]:
    """An APIService for group/v0alpha1 whose ExternalName bench/nope does not exist (so no backend is ever contacted)."""
    return {"apiVersion": "apiregistration.k8s.io/v1", "kind": "APIService",
            "metadata": {"name": f"{VERSION}.{group}", "labels": {"bench": label}},
            "spec": {"group": group, "version": VERSION, "groupPriorityMinimum": 1000, "versionPriority": 15,
                     "service": {"namespace": "bench", "name": "nope", "port": 443}}}


LEGACY_DISCOVERY = "application/json"
AGGREGATED_DISCOVERY = "application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList"
DISCOVERY_SIZES = (10, 100, 1000)
DISCOVERY_SUFFIX = ".discovery.bench"


def _discovery_groups(api: Api) -> int:
    """How many of the discovery section's groups legacy `GET /apis` lists."""
    status, _, data = api.request("GET", "/apis", headers={"Accept": LEGACY_DISCOVERY})
    if status != 200:
        raise RuntimeError(f"GET /apis answered {status}: {data[:500]!r}")
    return sum(1 for group in json.loads(data)["groups"] if group["name"].endswith(DISCOVERY_SUFFIX))


def _wait_discovery_groups(api: Api, count: int, within: float = 120.0) -> None:
    """Wait until `/apis` lists exactly count of the section's groups (discovery may follow storage later)."""
    deadline = time.monotonic() + within
    while (listed := _discovery_groups(api)) != count:
        if time.monotonic() > deadline:
            raise RuntimeError(f"/apis lists {listed} discovery bench groups, not {count}, after {within}s")
        time.sleep(0.05)
    # Then until the availability controller has written every one's condition: the figures are of a server at rest.
    while True:
        items = api.json("GET", f"{APISERVICES}?labelSelector=bench%3Ddiscovery")["items"]
        if all(any(c.get("type") == "Available" for c in (i.get("status") or {}).get("conditions", [])) for i in items):
            break
        if time.monotonic() > deadline:
            raise RuntimeError(f"the availability of the discovery bench APIServices was not written within {within}s")
        time.sleep(0.1)


def discovery(ctx: Context) -> None:
    """`GET /apis`, legacy and aggregated, with 10, 100 and 1000 APIServices, against `GET /version`; then a 304."""
    api = ctx.aggregator.api
    seconds = max(2.0, ctx.seconds / 2)
    auth = f"Authorization: {AUTHORIZATION}"
    apis_url, version_url = f"{ctx.aggregator.url}/apis", f"{ctx.aggregator.url}/version"
    section = "discovery"
    create_ms: list[float] = []
    aggregated = None
    for size in DISCOVERY_SIZES:
        while len(create_ms) < size:
            started = time.monotonic()
            api.json("POST", APISERVICES, _remote_apiservice(f"g{len(create_ms):04d}{DISCOVERY_SUFFIX}", "discovery"))
            create_ms.append((time.monotonic() - started) * 1000)
        _wait_discovery_groups(api, size)
        version = wrk(version_url, 1, seconds, [auth, "Accept: application/json"])
        with ctx.sampler(f"discovery, {size} APIServices"):
            legacy = wrk(apis_url, 1, seconds, [auth, f"Accept: {LEGACY_DISCOVERY}"])
            aggregated = wrk(apis_url, 1, seconds, [auth, f"Accept: {AGGREGATED_DISCOVERY}"])
        target = 10.0 if size == DISCOVERY_SIZES[-1] else None
        for label, result in (("legacy", legacy), ("aggregated", aggregated)):
            name = f"{size} APIServices: {label} /apis"
            ctx.add(Row(section, f"{name} p50", result.p50_ms, "ms", version.p50_ms, "GET /version"))
            ctx.add(Row(section, f"{name} p99", result.p99_ms, "ms", version.p99_ms, "GET /version", at_most=target))
        for label, result in (("/version", version), ("legacy /apis", legacy), ("aggregated /apis", aggregated)):
            if result.errors:
                ctx.add(Row(section, f"{size} APIServices: {label} errors", result.errors, "", at_most=0))
    assert aggregated is not None

    status, headers, body = api.request("GET", "/apis", headers={"Accept": AGGREGATED_DISCOVERY})
    etag = headers.get("etag", "")
    ctx.add(Row(section, f"{DISCOVERY_SIZES[-1]} APIServices: aggregated /apis body", len(body) / 1024, "KB"))
    revalidated, _, _ = api.request("GET", "/apis", headers={"Accept": AGGREGATED_DISCOVERY, "If-None-Match": etag})
    ctx.add(Row(section, "If-None-Match with the ETag answers 304", 1.0 if revalidated == 304 else 0.0, "",
                at_least=1))
    if etag:
        not_modified = wrk(apis_url, 1, seconds, [auth, f"Accept: {AGGREGATED_DISCOVERY}", f"If-None-Match: {etag}"])
        reference = "aggregated 200"
        ctx.add(Row(section, "304 revalidation p50", not_modified.p50_ms, "ms", aggregated.p50_ms, reference))
        ctx.add(Row(section, "304 revalidation p99", not_modified.p99_ms, "ms", aggregated.p99_ms, reference))
        ctx.add(Row(section, "304 revalidation errors", not_modified.errors, "", at_most=0))

    ctx.add(Row(section, "POST APIService p50", percentile(create_ms, 0.5), "ms"))
    ctx.add(Row(section, "POST APIService p99", percentile(create_ms, 0.99), "ms"))
    started = time.monotonic()
    api.json("DELETE", f"{APISERVICES}?labelSelector=bench%3Ddiscovery")
    _wait_discovery_groups(api, 0)
    ctx.add(Row(section, f"deletecollection of {len(create_ms)} until gone from /apis", time.monotonic() - started,
                "s"))


AVAILABILITY_GROUP = "avail.grafana.app"
#: Seconds the backend stays down before it starts, so the controller's retry backoff is at different points.
AVAILABILITY_PAUSES = (1.0, 3.0, 6.0)
STATUS_POLL = 0.01


def _direct_discovery_get(pki: Pki, port: int, path: str) -> float:
    """Seconds for one GET of the backend's discovery document on a new mutual-TLS connection (what a probe does)."""
    context = ssl.create_default_context(cafile=pki.ca)
    context.load_cert_chain(pki.client_cert, pki.client_key)
    started = time.monotonic()
    connection = http.client.HTTPSConnection("localhost", port, context=context, timeout=10)
    try:
        connection.request("GET", path, headers={"Connection": "close"})
        response = connection.getresponse()
        response.read()
    finally:
        connection.close()
    if response.status != 200:
        raise RuntimeError(f"the backend answered {response.status} for {path}")
    return time.monotonic() - started


def availability(ctx: Context) -> None:
    """How soon Available follows a backend: True after it starts listening, False after a request fails on it."""
    api = ctx.aggregator.api
    port = free_port()
    name = register(api, ctx.pki, AVAILABILITY_GROUP, port)  # before the backend exists: Available=False first
    path = f"/apis/{AVAILABILITY_GROUP}/{VERSION}"
    ups, downs, stops, direct = [], [], [], []
    failed_statuses: list[int] = []
    for pause in AVAILABILITY_PAUSES:
        wait_available(api, name, "False", within=30, poll=STATUS_POLL)
        time.sleep(pause)
        backend = start_backend(ctx.processes, ctx.pki, name="avail-backend", port=port, groups=[AVAILABILITY_GROUP])
        try:
            seen = wait_available(api, name, "True", within=30, poll=STATUS_POLL)
            ups.append(seen - backend.listening)
            direct.append(_direct_discovery_get(ctx.pki, port, path))
        finally:
            ctx.processes.stop(backend.process)
        stopped_at = time.monotonic()
        status, _, _ = api.request("GET", path)
        failed_at = time.monotonic()
        failed_statuses.append(status)
        seen_false = wait_available(api, name, "False", within=30, poll=STATUS_POLL)
        downs.append(seen_false - failed_at)
        stops.append(seen_false - stopped_at)
    # Once more with no request at all after the stop: only the periodic resync (30 s) can notice.
    backend = start_backend(ctx.processes, ctx.pki, name="avail-backend", port=port, groups=[AVAILABILITY_GROUP])
    try:
        wait_available(api, name, "True", within=30, poll=STATUS_POLL)
    finally:
        ctx.processes.stop(backend.process)
    stopped_at = time.monotonic()
    unnoticed = wait_available(api, name, "False", within=45, poll=0.05) - stopped_at

    section = "availability"
    ups_ms, downs_ms = [1000 * up for up in ups], [1000 * down for down in downs]
    probe, probe_name = 1000 * statistics.median(direct), "direct discovery GET, new TLS connection"
    poll, poll_name = 1000 * STATUS_POLL, "status poll interval"
    ctx.add(Row(section, "backend listening → Available=True: median", statistics.median(ups_ms), "ms", probe, probe_name))
    ctx.add(Row(section, "backend listening → Available=True: max", max(ups_ms), "ms", probe, probe_name,
                at_most=2000))
    ctx.add(Row(section, "failed proxied GET → Available=False: median", statistics.median(downs_ms), "ms", poll, poll_name))
    ctx.add(Row(section, "failed proxied GET → Available=False: max", max(downs_ms), "ms", poll, poll_name,
                at_most=2000))
    stops_ms = [1000 * stop for stop in stops]
    ctx.add(Row(section, "backend stopped → Available=False, one GET right after: max", max(stops_ms), "ms", poll,
                poll_name))
    ctx.add(Row(section, "backend stopped → Available=False, no traffic", unnoticed, "s", 30.0,
                "resync interval"))
    for status in sorted(set(failed_statuses)):
        ctx.add(Row(section, "HTTP status of the GET to the stopped backend", status, "",
                    reference_name=f"{failed_statuses.count(status)} of {len(failed_statuses)} rounds"))
    api.json("DELETE", f"{APISERVICES}/{name}")
    api.json("DELETE", "/apis/service.grafana.app/v0alpha1/namespaces/bench/externalnames/avail-backend")


WATCHERS = 1000
WATCH_EVENTS = 20
WATCH_INTERVAL = 0.2
WATCH_APISERVICE = f"{VERSION}.watch.bench"
SENT_ANNOTATION = "bench.grafana.app/sent"


@dataclass
class _WatchRun:
    """What one run of bench/watchers.py saw, in milliseconds, for the marks this harness sent."""

    report: dict[str, Any]
    sent: list[str]
    patch_ms: list[float]
    rss_peak: int = 0
    #: The daemon's CPU time per change, from the first PATCH until the client had everything.
    daemon_cpu_ms: float = 0.0

    @property
    def deliveries(self) -> list[float]:
        latencies = self.report["latencies"]
        return [1000 * latency for sent in self.sent for latency in latencies.get(sent, [])]

    @property
    def slowest_per_update(self) -> list[float]:
        latencies = self.report["latencies"]
        return [1000 * max(latencies[sent]) for sent in self.sent if latencies.get(sent)]


def _watch_run(ctx: Context, count: int) -> _WatchRun:
    """Open count watches in a child process, change the watched APIService WATCH_EVENTS times, collect latencies."""
    api = ctx.aggregator.api
    resource_version = api.json("GET", APISERVICES)["metadata"]["resourceVersion"]
    argv = [sys.executable, os.path.join(BENCH, "watchers.py"), "--port", str(ctx.aggregator.port), "--token", TOKEN,
            "--count", str(count), "--events", str(WATCH_EVENTS), "--resource-version", resource_version,
            "--timeout", str(WATCH_EVENTS * WATCH_INTERVAL + 15)]
    process = ctx.processes.start(f"watchers-{count}", argv)
    try:
        _output_line(process, "connected", within=180)
        sent, patch_ms = [], []
        daemon_cpu = cpu_seconds(ctx.aggregator.process.pid)
        with ctx.sampler(f"{count} watches" if count > 1 else "1 watch") as sampler:
            for _ in range(WATCH_EVENTS):
                mark = f"{time.time():.6f}"
                api.json("PATCH", f"{APISERVICES}/{WATCH_APISERVICE}",
                         {"metadata": {"annotations": {SENT_ANNOTATION: mark}}},
                         content_type="application/merge-patch+json")
                elapsed = time.time() - float(mark)
                sent.append(mark)
                patch_ms.append(1000 * elapsed)
                time.sleep(max(0.0, WATCH_INTERVAL - elapsed))
            process.popen.wait(timeout=WATCH_EVENTS * WATCH_INTERVAL + 60)
        daemon_cpu = cpu_seconds(ctx.aggregator.process.pid) - daemon_cpu
        report = json.loads(_output_line(process, "{", within=5))
    finally:
        ctx.processes.stop(process)
    return _WatchRun(report, sent, patch_ms, sampler.peak, 1000 * daemon_cpu / WATCH_EVENTS)


def watches(ctx: Context) -> None:
    """1000 concurrent watches on APIServices: delivery latency of 20 changes, against the same with one watch."""
    api = ctx.aggregator.api
    api.json("POST", APISERVICES, _remote_apiservice("watch.bench", "watches"))
    single = _watch_run(ctx, 1)
    many = _watch_run(ctx, WATCHERS)
    api.json("DELETE", f"{APISERVICES}/{WATCH_APISERVICE}")

    section = f"watches n={WATCHERS}"
    reference = "1 watch"
    one, all_ = single.deliveries, many.deliveries
    ctx.add(Row(section, "delivery latency p50", percentile(all_, 0.5), "ms", percentile(one, 0.5), reference))
    ctx.add(Row(section, "delivery latency p99", percentile(all_, 0.99), "ms", percentile(one, 0.99), reference,
                at_most=100))
    ctx.add(Row(section, "delivery latency max", max(all_, default=float("nan")), "ms",
                max(one, default=float("nan")), reference))
    ctx.add(Row(section, "change → last watcher has it, p99 over changes", percentile(many.slowest_per_update, 0.99),
                "ms", percentile(single.slowest_per_update, 0.99), reference))
    expected = WATCHERS * WATCH_EVENTS
    ctx.add(Row(section, "deliveries received", len(all_), "", expected, "expected", at_least=expected))
    ctx.add(Row(section, "watches refused or ended early", sum(many.report["errors"].values()), "", at_most=0))
    ctx.add(Row(section, f"RSS with {WATCHERS} watches open", many.rss_peak / MB, "MB", ctx.rss_at_rest / MB,
                "at rest", at_most=150))
    ctx.add(Row(section, f"time to open {WATCHERS} watches", many.report["connect_seconds"], "s",
                single.report["connect_seconds"], reference))
    ctx.add(Row(section, "daemon CPU per change (PATCH and delivery)", many.daemon_cpu_ms, "ms",
                single.daemon_cpu_ms, reference))
    ctx.add(Row(section, "PATCH round trip p50 (included in latency)", percentile(many.patch_ms, 0.5), "ms",
                percentile(single.patch_ms, 0.5), reference))
    reading = many.report["reading_seconds"]
    ctx.add(Row(section, "watch client CPU while reading", 100 * many.report["reading_cpu_seconds"] / reading
                if reading else float("nan"), "%"))
    for error, times in many.report["errors"].items():
        ctx.add(Row(section, f"watch error: {error[:80]}", times, "watches"))


STORED_OBJECTS = 500


def storage(ctx: Context) -> None:
    """FileStore create and update of 500 ~1 KB objects against a bare durable write, in a separate process."""
    folder = os.path.join(ctx.processes.folder, "storage-bench")
    process = ctx.processes.start("storage", [sys.executable, os.path.join(BENCH, "storage.py"), "--folder", folder,
                                              "--count", str(STORED_OBJECTS)])
    try:
        process.popen.wait(timeout=300)
        report = json.loads(_output_line(process, "{", within=5))
    finally:
        ctx.processes.stop(process)
    store, bare, folder_fsync = report["store"], report["reference"], report["reference_folder_fsync"]
    section = "storage"
    reference = "tmp+fsync+rename"
    for operation in ("create", "update"):
        for label, fraction in (("p50", 0.5), ("p99", 0.99)):
            at_most = 20.0 if (operation, label) == ("create", "p99") else None
            ctx.add(Row(section, f"FileStore {operation} {label}", percentile(store[operation], fraction), "ms",
                        percentile(bare[operation], fraction), reference, at_most=at_most))
    for label, fraction in (("p50", 0.5), ("p99", 0.99)):
        ctx.add(Row(section, f"reference with folder fsync {label}", percentile(folder_fsync["create"], fraction),
                    "ms", percentile(bare["create"], fraction), reference))
    ctx.add(Row(section, f"FileStore open with {STORED_OBJECTS} objects", store["open_ms"], "ms"))
    ctx.add(Row(section, "object size on disk", store["object_bytes"] / 1024, "KB"))


WORKERS_CONNECTIONS = (50, 200)
WORKERS_ROUNDS = 2


def _machine_ticks() -> tuple[int, int, int]:
    """The machine's busy, stolen and total CPU ticks since boot, from /proc/stat: busy is user, nice, system, irq
    and softirq (guest time is already in user); stolen is the time the hypervisor gave the cores to others."""
    with open("/proc/stat") as handle:
        user, nice, system, idle, iowait, irq, softirq, steal = (int(v) for v in handle.readline().split()[1:9])
    busy = user + nice + system + irq + softirq
    return busy, steal, busy + idle + iowait + steal


def _process_tree(pid: int) -> list[int]:
    """A process and its descendants (an aggregator's workers), from /proc."""
    found, queue = [], [pid]
    while queue:
        current = queue.pop()
        found.append(current)
        try:
            with open(f"/proc/{current}/task/{current}/children") as handle:
                queue.extend(int(child) for child in handle.read().split())
        except OSError:
            pass
    return found


def _tree_cpu(pid: int) -> float:
    total = 0.0
    for member in _process_tree(pid):
        try:
            total += cpu_seconds(member)
        except OSError:
            pass  # a worker that ended meanwhile
    return total


@dataclass
class CpuUse:
    """Cores used during the wrk rounds of one aggregator: the whole machine, the aggregator's processes, and wrk
    (a child of this process, counted by getrusage once it has ended)."""

    seconds: float = 0.0
    busy: float = 0.0
    stolen: float = 0.0
    daemon: float = 0.0
    load: float = 0.0

    @contextlib.contextmanager
    def measuring(self, pid: int) -> Iterator[None]:
        ticks_busy, ticks_stolen, ticks_total = _machine_ticks()
        daemon = _tree_cpu(pid)
        children = resource.getrusage(resource.RUSAGE_CHILDREN)
        started = time.monotonic()
        yield
        elapsed = time.monotonic() - started
        self.seconds += elapsed
        now_busy, now_stolen, now_total = _machine_ticks()
        core_seconds = len(os.sched_getaffinity(0)) * elapsed / max(1, now_total - ticks_total)
        self.busy += (now_busy - ticks_busy) * core_seconds
        self.stolen += (now_stolen - ticks_stolen) * core_seconds
        self.daemon += _tree_cpu(pid) - daemon
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        self.load += (after.ru_utime - children.ru_utime) + (after.ru_stime - children.ru_stime)

    def _cores(self, cpu_seconds: float) -> float:
        return cpu_seconds / self.seconds if self.seconds else 0.0

    @property
    def busy_cores(self) -> float:
        return self._cores(self.busy)

    @property
    def stolen_cores(self) -> float:
        return self._cores(self.stolen)

    @property
    def daemon_cores(self) -> float:
        return self._cores(self.daemon)

    @property
    def wrk_cores(self) -> float:
        return self._cores(self.load)


def _combined(rounds: list[WrkResult]) -> WrkResult:
    """Rounds of one path as one result: all their requests over all their time, the median p50 and p90 of the
    rounds, the worst p99."""
    return WrkResult(sum(r.requests for r in rounds), sum(r.seconds for r in rounds),
                     statistics.median(r.p50_ms for r in rounds), statistics.median(r.p90_ms for r in rounds),
                     max(r.p99_ms for r in rounds), sum(r.errors for r in rounds))


def workers(ctx: Context) -> None:
    """Small GETs at c=50 and c=200: the aggregator with `workers = 1` and with `workers = auto`, beside nginx.

    Both aggregators are started fresh for this section with the same settings (their own storage, one
    APIService), and measured in alternating rounds (1, auto, nginx, 1, auto, nginx): the machine's speed
    drifts within a run, and a path measured only before or only after the drift would take it all.  nginx
    runs one worker process, the reference proxy of the other sections.
    """
    auth = [f"Authorization: {AUTHORIZATION}"]
    nginx_url = f"https://127.0.0.1:{ctx.proxy.port}{SMALL_PATH}"
    one = start_aggregator(ctx.processes, ctx.pki, name="aggregator-one", workers="1")
    many = start_aggregator(ctx.processes, ctx.pki, name="aggregator-workers", workers="auto")
    try:
        for daemon in (one, many):
            name = register(daemon.api, ctx.pki, "bench.grafana.app", ctx.backend.port)
            wait_available(daemon.api, name, "True", within=30)
            deadline = time.monotonic() + 30
            while daemon.api.request("GET", "/readyz")[0] != 200 and time.monotonic() < deadline:
                time.sleep(0.1)
        processes = len(os.sched_getaffinity(0))
        targets = {"single": f"{one.url}{SMALL_PATH}", "auto": f"{many.url}{SMALL_PATH}", "nginx": nginx_url}
        round_seconds = max(2, int(ctx.seconds // WORKERS_ROUNDS))
        for connections in WORKERS_CONNECTIONS:
            rounds: dict[str, list[WrkResult]] = {label: [] for label in targets}
            for url in targets.values():
                wrk(url, connections, 1, auth)  # warm up connections, pools and caches
            usage = {label: CpuUse() for label in ("single", "auto")}
            for _ in range(WORKERS_ROUNDS):
                for label, url in targets.items():
                    daemon = {"single": one, "auto": many}.get(label)
                    if daemon is None:
                        rounds[label].append(wrk(url, connections, round_seconds, auth))
                        continue
                    with usage[label].measuring(daemon.process.pid):
                        rounds[label].append(wrk(url, connections, round_seconds, auth))
            measured = {label: _combined(results) for label, results in rounds.items()}
            section = f"workers c={connections}"
            # Where the cores went: with the load generator and the backend on the same cores, the aggregator's
            # processes can only use what is left, and workers = auto can gain no more than that over one process.
            for label, name in (("single", "workers = 1"), ("auto", f"workers = auto ({processes})")):
                use = usage[label]
                ctx.add(Row(section, f"cores busy, {name}", use.busy_cores, "cores", processes, "cores"))
                ctx.add(Row(section, f"cores used by the aggregator, {name}", use.daemon_cores, "cores",
                            use.busy_cores, "cores busy"))
                ctx.add(Row(section, f"cores used by wrk, {name}", use.wrk_cores, "cores", use.busy_cores,
                            "cores busy"))
                ctx.add(Row(section, f"cores taken by the hypervisor (steal), {name}", use.stolen_cores, "cores",
                            processes, "cores"))
            ctx.add(Row(section, "aggregator cores, workers = auto vs workers = 1",
                        usage["auto"].daemon_cores / usage["single"].daemon_cores, "×", 1.0, "workers = 1"))
            _wrk_rows(ctx, section, "aggregator, workers = 1", measured["single"], None, "")
            _wrk_rows(ctx, section, f"aggregator, workers = auto ({processes})", measured["auto"], measured["single"],
                      "workers = 1")
            _wrk_rows(ctx, section, "nginx proxy (1 worker)", measured["nginx"], None, "")
            ctx.add(Row(section, "workers = auto vs workers = 1", measured["auto"].rps / measured["single"].rps, "×",
                        1.0, "workers = 1", at_least=1.6 if connections == 200 else None))
            ctx.add(Row(section, "workers = auto vs nginx proxy", measured["auto"].rps / measured["nginx"].rps, "×",
                        1.0, "nginx proxy", at_least=0.12))
        # How evenly the kernel spread the connections over the processes sharing the one socket.
        served = collections.Counter(re.findall(r"worker=(\d+)", many.process.output()))
        if served:
            ctx.add(Row("workers", "busiest process's share of the requests", max(served.values()) / sum(served.values()),
                        "×", 1 / processes, "an even share"))
    finally:
        ctx.processes.stop(many.process)
        ctx.processes.stop(one.process)


NAMES = ("proxy", "bodies", "discovery", "availability", "watches", "storage", "workers")
RUNNERS: dict[str, Callable[[Context], None]] = {"proxy": proxy, "bodies": bodies, "discovery": discovery,
                                                 "availability": availability, "watches": watches, "storage": storage,
                                                 "workers": workers}


ETCD_OBJECTS = 500


def etcd(ctx: Context) -> None:
    """EtcdStore create and update of 500 ~1 KB objects against a bare etcd put and a bare compare-and-swap txn
    through the same gateway, on an etcd started for the run, in a separate process."""
    process = ctx.processes.start("etcd", [sys.executable, os.path.join(BENCH, "etcd_latency.py"),
                                           "--count", str(ETCD_OBJECTS)])
    try:
        process.popen.wait(timeout=300)
        report = json.loads(_output_line(process, "{", within=5))
    finally:
        ctx.processes.stop(process)
    section = "etcd"
    for operation, bare, reference in (("create", "put", "bare etcd put"),
                                       ("update", "txn", "bare etcd txn: compare mod_revision, put")):
        for label, fraction in (("p50", 0.5), ("p99", 0.99)):
            at_most = 10.0 if (operation, label) == ("create", "p99") else None
            ctx.add(Row(section, f"EtcdStore {operation} {label}", percentile(report[operation], fraction), "ms",
                        percentile(report[bare], fraction), reference, at_most=at_most))


NAMES = (*NAMES, "etcd")
RUNNERS["etcd"] = etcd


PROPAGATION_WRITES = 200
PROPAGATION_WRITERS = 4
PROPAGATION_NAMESPACE = "bench-propagation"
PROPAGATION_PREFIX = "/bench-replicas"
EXTERNALNAMES = f"/apis/service.grafana.app/v0alpha1/namespaces/{PROPAGATION_NAMESPACE}/externalnames"


@dataclass
class _Writes:
    """When each marked write was sent and when it was answered (time.monotonic())."""

    sent: dict[str, float] = field(default_factory=dict)
    answered: dict[str, float] = field(default_factory=dict)
    errors: list[str] = field(default_factory=list)


def _write_all(marks: list[str], writers: int, write: Callable[[str], None]) -> _Writes:
    """Write every mark, `writers` threads at a time (each its own sequence, one write at a time)."""
    writes = _Writes()

    def run(share: list[str]) -> None:
        for mark in share:
            writes.sent[mark] = time.monotonic()
            try:
                write(mark)
            except Exception as error:  # noqa: BLE001 - a failed write is reported as a row, not a crash
                writes.errors.append(f"{mark}: {error}")
                continue
            writes.answered[mark] = time.monotonic()

    threads = [threading.Thread(target=run, args=(marks[i::writers],), daemon=True) for i in range(writers)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)
    return writes


def _aggregator_watch(name: str, daemon: Aggregator, resource_version: str, deadline: float) -> propagation.StreamWatch:
    watch = propagation.StreamWatch(
        name, propagation.https_to(daemon.port), "GET",
        f"{EXTERNALNAMES}?watch=1&resourceVersion={resource_version}&allowWatchBookmarks=false", None,
        {"Authorization": AUTHORIZATION, "Accept": "application/json"}, propagation.aggregator_marks, deadline)
    watch.start()
    return watch


def _externalname(mark: str) -> dict[str, Any]:
    return {"apiVersion": "service.grafana.app/v0alpha1", "kind": "ExternalName",
            "metadata": {"name": mark, "namespace": PROPAGATION_NAMESPACE}, "spec": {"host": "localhost"}}


_etcd_connections = threading.local()


def _etcd_put(etcd: Etcd, prefix: str, value: str, mark: str) -> None:
    """A bare put through etcd's gateway on the calling thread's keep-alive connection (as A keeps its own)."""
    connection = getattr(_etcd_connections, "connection", None)
    if connection is None or connection.port != etcd.port:
        connection = _etcd_connections.connection = http.client.HTTPConnection("127.0.0.1", etcd.port, timeout=10)
    connection.request("POST", "/v3/kv/put", body=json.dumps({"key": _b64(prefix + mark), "value": value}).encode(),
                       headers={"Content-Type": "application/json"})
    response = connection.getresponse()
    answer = response.read()
    if response.status != 200:
        raise RuntimeError(f"etcd kv/put answered {response.status}: {answer[:200]!r}")


def _b64(data: str) -> str:
    return base64.b64encode(data.encode()).decode()


def replicas(ctx: Context) -> None:
    """Propagation from a write on one replica to a watch on another: two daemons (separate processes) on one
    etcd started for the section, ExternalNames created through A and watched on B and on A itself, one writer
    and then a few concurrent ones; beside the same with a bare etcd put and an etcd watch through the gateway.

    Each latency is from the moment A answered the write (and from the moment it was sent) to the moment the
    ADDED event was read from the watch stream.  A watch may get the event before the writer gets its answer,
    so figures "from the answer" can be below zero.
    """
    section = "etcd replicas"
    started: list[Process] = []
    switch = sys.getswitchinterval()
    try:
        etcd = start_etcd(ctx.processes, name="etcd-replicas")
        started.append(etcd.process)
        a = start_aggregator(ctx.processes, ctx.pki, name="replica-a", etcd=etcd, etcd_prefix=PROPAGATION_PREFIX)
        started.append(a.process)
        b = start_aggregator(ctx.processes, ctx.pki, name="replica-b", etcd=etcd, etcd_prefix=PROPAGATION_PREFIX)
        started.append(b.process)
        sys.setswitchinterval(0.0005)  # the reading threads must not wait 5 ms for the GIL behind a writer
        for writers in (1, PROPAGATION_WRITERS):
            run = "seq" if writers == 1 else f"c{writers}"
            label = "1 writer" if writers == 1 else f"{writers} writers"
            marks = [f"prop-{run}-{i:04d}" for i in range(PROPAGATION_WRITES)]
            deadline = time.monotonic() + 180
            resource_version = b.api.json("GET", EXTERNALNAMES)["metadata"]["resourceVersion"]
            on_b = _aggregator_watch("replica B", b, resource_version, deadline)
            on_a = _aggregator_watch("replica A", a, resource_version, deadline)
            apis = threading.local()
            clients: list[Api] = []

            def create(mark: str) -> None:
                if not hasattr(apis, "api"):
                    apis.api = Api(a.port)  # one keep-alive connection per writer
                    clients.append(apis.api)
                apis.api.json("POST", EXTERNALNAMES, _externalname(mark))

            try:
                writes = _write_all(marks, writers, create)
                on_b.wait_for(marks, within=10)
                on_a.wait_for(marks, within=10)
            finally:
                on_b.stop()
                on_a.stop()
                for client in clients:
                    client.close()

            # The reference: bare puts and an etcd watch on their prefix, through the same gateway.
            prefix = f"/bench-bare/{run}/"
            watch_body = json.dumps({"create_request": {"key": _b64(prefix), "range_end": _b64(prefix[:-1] + "0")}})
            on_etcd = propagation.StreamWatch("etcd", propagation.http_to(etcd.port), "POST", "/v3/watch",
                                              watch_body.encode(), {"Content-Type": "application/json"},
                                              propagation.etcd_marks, time.monotonic() + 120)
            on_etcd.start()
            value = _b64(json.dumps(_externalname("x")))
            try:
                bare = _write_all(marks, writers, functools.partial(_etcd_put, etcd, prefix, value))
                on_etcd.wait_for(marks, within=10)
            finally:
                on_etcd.stop()

            figures = {
                "write on A → watch on B": (writes, on_b.arrived),
                "write on A → watch on A": (writes, on_a.arrived),
                "bare etcd put → etcd watch": (bare, on_etcd.arrived),
            }
            measured = {(name, when): propagation.latencies(getattr(w, when), arrived)
                        for name, (w, arrived) in figures.items() for when in ("answered", "sent")}
            references = {"write on A → watch on B": "write on A → watch on A",
                          "write on A → watch on A": "bare etcd put → etcd watch",
                          "bare etcd put → etcd watch": None}
            for name, reference in references.items():
                for when, words in (("answered", "from the write's answer"), ("sent", "from sending the write")):
                    for tag, fraction in (("p50", 0.5), ("p99", 0.99)):
                        ref = percentile(measured[(reference, when)], fraction) if reference else None
                        # The target is on propagation proper: from the acknowledged write to the other replica.
                        target = 100.0 if name.endswith("on B") and (tag, when) == ("p99", "answered") else None
                        ctx.add(Row(f"{section}, {label}", f"{name}, {words}: {tag}",
                                    percentile(measured[(name, when)], fraction), "ms", ref, reference or "",
                                    at_most=target))
            round_trips = [1000 * (writes.answered[m] - writes.sent[m]) for m in writes.answered]
            bare_trips = [1000 * (bare.answered[m] - bare.sent[m]) for m in bare.answered]
            for tag, fraction in (("p50", 0.5), ("p99", 0.99)):
                ctx.add(Row(f"{section}, {label}", f"create through A: round trip {tag}",
                            percentile(round_trips, fraction), "ms", percentile(bare_trips, fraction), "bare etcd put"))
            for name, (w, arrived) in figures.items():
                seen = sum(1 for mark in w.answered if mark in arrived)
                ctx.add(Row(f"{section}, {label}", f"{name}: events seen of acknowledged writes", seen, "",
                            len(marks), "writes", at_least=len(marks)))
            for what, problem in (("replica B watch", on_b.error), ("replica A watch", on_a.error),
                                  ("etcd watch", on_etcd.error),
                                  ("writes through A", "; ".join(writes.errors[:3])),
                                  ("bare puts", "; ".join(bare.errors[:3]))):
                if problem:
                    ctx.add(Row(f"{section}, {label}", f"{what} failed: {problem[:100]}", float("nan"), "",
                                at_most=0))
    finally:
        sys.setswitchinterval(switch)
        for process in reversed(started):
            ctx.processes.stop(process)


NAMES = (*NAMES, "etcd-replicas")
RUNNERS["etcd-replicas"] = replicas


CRD_TIMED = 20
CRD_INSTALLED = 100
CRD_LISTED_WITHIN = 10.0
CR_CREATES = 600
CR_WRITERS = 4
CR_ROUNDS = 3
CR_NAMESPACE = "bench-crds"
CR_GROUP = f"cr{crdbench.GROUP_SUFFIX}"
REFERENCE_LABEL = "crds-reference"


def _crd_group(prefix: str, index: int) -> str:
    return f"{prefix}{index:03d}{crdbench.GROUP_SUFFIX}"


@dataclass
class _Listing:
    """When (seconds after its POST was sent) one new group was answered, then first listed in each `/apis`."""

    answered: float
    legacy: float | None = None
    aggregated: float | None = None


def _create_until_listed(api: Api, path: str, body: dict[str, Any], group: str, with_resources: bool) -> tuple[
        float, _Listing]:
    """POST body, then GET both `/apis` (one after the other, each until it lists group) for at most
    CRD_LISTED_WITHIN seconds; returns the moment the POST was sent and what was seen when."""
    started = time.monotonic()
    api.json("POST", path, body)
    listing = _Listing(time.monotonic() - started)
    while listing.legacy is None or listing.aggregated is None:
        if listing.legacy is None:
            _, _, data = api.request("GET", "/apis", headers={"Accept": LEGACY_DISCOVERY})
            if group in crdbench.legacy_groups(data):
                listing.legacy = time.monotonic() - started
        if listing.aggregated is None:
            _, _, data = api.request("GET", "/apis", headers={"Accept": AGGREGATED_DISCOVERY})
            if group in crdbench.aggregated_groups(data, with_resources):
                listing.aggregated = time.monotonic() - started
        if time.monotonic() - started > CRD_LISTED_WITHIN:
            break
    return started, listing


def _timed_post(api: Api, path: str, body: dict[str, Any]) -> float:
    """Milliseconds for one POST's round trip."""
    started = time.monotonic()
    api.json("POST", path, body)
    return 1000 * (time.monotonic() - started)


def _listed_groups(api: Api) -> tuple[set[str], set[str]]:
    """The bench CRD groups legacy `/apis` lists, and those aggregated `/apis` lists with resources."""
    legacy = crdbench.legacy_groups(api.request("GET", "/apis", headers={"Accept": LEGACY_DISCOVERY})[2])
    aggregated = crdbench.aggregated_groups(
        api.request("GET", "/apis", headers={"Accept": AGGREGATED_DISCOVERY})[2], with_resources=True)
    return ({g for g in legacy if g.endswith(crdbench.GROUP_SUFFIX)},
            {g for g in aggregated if g.endswith(crdbench.GROUP_SUFFIX)})


def _apis_loads(url: str, seconds: float) -> dict[str, WrkResult]:
    """`GET /apis`, legacy then aggregated, with wrk at c=1 after a second of warm-up each."""
    auth = f"Authorization: {AUTHORIZATION}"
    measured = {}
    for label, accept in (("legacy", LEGACY_DISCOVERY), ("aggregated", AGGREGATED_DISCOVERY)):
        wrk(url, 1, 1, [auth, f"Accept: {accept}"])
        measured[label] = wrk(url, 1, seconds, [auth, f"Accept: {accept}"])
    return measured


def _ms(values: list[float], fraction: float) -> float:
    return 1000 * percentile(values, fraction)


def crds(ctx: Context) -> None:
    """Issue 15, on a daemon of its own (file storage) so it starts with no CRD: CRD create → Established and listed
    in `/apis` against an APIService create → listed; custom resource creates against ExternalName creates;
    `/apis` with 100 CRDs against `/apis` with none.

    After the first 80 CRDs, 20 CRDs and 20 APIServices are created one at a time, alternately; after each POST
    the harness polls both `/apis` until they list the new group, and a CRD watch notes when the CRD is first seen
    Established.  The creates run
    in rounds that alternate the two kinds (one writer, then CR_WRITERS), so drift during the run hits both.
    """
    daemon = start_aggregator(ctx.processes, ctx.pki, name="aggregator-crds")
    api = daemon.api
    seconds = max(2.0, ctx.seconds / 2)
    try:
        rss_empty = daemon.process.rss()
        empty = _apis_loads(f"{daemon.url}/apis", seconds)
        bodies_empty = {label: len(api.request("GET", "/apis", headers={"Accept": accept})[2])
                        for label, accept in (("legacy", LEGACY_DISCOVERY), ("aggregated", AGGREGATED_DISCOVERY))}

        # 1. The first CRDs (the Widget kind's among them), then one CRD at a time: POST → Established (watch) and
        # → listed in both /apis, with 80-99 installed; an APIService beside each.
        wanted = {CR_GROUP}
        bulk_ms = [_timed_post(api, crdbench.CRDS, crdbench.widget_crd(CR_GROUP))]
        while len(wanted) < CRD_INSTALLED - CRD_TIMED:
            group = _crd_group("b", len(wanted))
            bulk_ms.append(_timed_post(api, crdbench.CRDS, crdbench.widget_crd(group)))
            wanted.add(group)
        resource_version = api.json("GET", crdbench.CRDS)["metadata"]["resourceVersion"]
        watch = propagation.StreamWatch(
            "CRDs", propagation.https_to(daemon.port), "GET",
            f"{crdbench.CRDS}?watch=1&resourceVersion={resource_version}&allowWatchBookmarks=false", None,
            {"Authorization": AUTHORIZATION, "Accept": "application/json"}, crdbench.established_marks,
            time.monotonic() + 300)
        watch.start()
        crd_posts: dict[str, tuple[float, _Listing]] = {}
        references: list[_Listing] = []
        try:
            for index in range(CRD_TIMED):
                group = _crd_group("r", index)
                apiservice = _remote_apiservice(group, REFERENCE_LABEL)
                references.append(_create_until_listed(api, APISERVICES, apiservice, group, False)[1])
                group = _crd_group("t", index)
                crd = crdbench.widget_crd(group)
                crd_posts[crd["metadata"]["name"]] = _create_until_listed(api, crdbench.CRDS, crd, group, True)
            watch.wait_for(crd_posts, within=CRD_LISTED_WITHIN)
        finally:
            watch.stop()
        established = [watch.arrived[name] - started for name, (started, _) in crd_posts.items()
                       if name in watch.arrived]
        listings = [listing for _, listing in crd_posts.values()]
        section = f"crds: create → served, {CRD_TIMED} one at a time, {len(bulk_ms)}+ installed"
        ctx.add(Row(section, f"CRD POST round trip while the first {len(bulk_ms)} were created: p50",
                    percentile(bulk_ms, 0.5), "ms"))
        ctx.add(Row(section, f"CRD POST round trip while the first {len(bulk_ms)} were created: p99",
                    percentile(bulk_ms, 0.99), "ms"))
        reference_name = "APIService"
        figures = (
            ("POST round trip", [x.answered for x in listings], [x.answered for x in references], None),
            ("POST → Established (watch)", established, [x.answered for x in references], 1000.0),
            ("POST → in legacy /apis", [x.legacy for x in listings if x.legacy is not None],
             [x.legacy for x in references if x.legacy is not None], 1000.0),
            ("POST → in aggregated /apis", [x.aggregated for x in listings if x.aggregated is not None],
             [x.aggregated for x in references if x.aggregated is not None], 1000.0),
        )
        for name, values, reference, target in figures:
            for tag, fraction in (("p50", 0.5), ("p99", 0.99), ("max", 1.0)):
                ctx.add(Row(section, f"CRD {name}: {tag}", _ms(values, fraction), "ms", _ms(reference, fraction),
                            f"{reference_name} {'POST round trip' if 'Established' in name else name}",
                            at_most=target if tag == "p99" else None))
        missing = (CRD_TIMED - len(established)) + sum(1 for x in listings if x.legacy is None or x.aggregated is None)
        ctx.add(Row(section, f"CRDs not Established and listed within {CRD_LISTED_WITHIN:g} s", missing, "",
                    at_most=0))
        if watch.error:
            ctx.add(Row(section, f"CRD watch failed: {watch.error[:100]}", float("nan"), "", at_most=0))

        # 2. 100 CRDs (the APIServices deleted): /apis beside /apis with none.
        api.json("DELETE", f"{APISERVICES}?labelSelector=bench%3D{REFERENCE_LABEL}")
        wanted |= {_crd_group("t", index) for index in range(CRD_TIMED)}
        deadline = time.monotonic() + 60
        while True:
            legacy, aggregated = _listed_groups(api)  # the reference APIServices' groups are gone from legacy too
            if legacy == wanted and aggregated == wanted:
                break
            if time.monotonic() > deadline:
                raise RuntimeError(f"{len(legacy)} / {len(aggregated)} of {len(wanted)} CRD groups listed after 60 s")
            time.sleep(0.1)
        installed = _apis_loads(f"{daemon.url}/apis", seconds)
        section = f"crds: {CRD_INSTALLED} CRDs installed"
        for label in ("legacy", "aggregated"):
            result, reference_result = installed[label], empty[label]
            ctx.add(Row(section, f"{label} /apis p50", result.p50_ms, "ms", reference_result.p50_ms, "0 CRDs"))
            ctx.add(Row(section, f"{label} /apis p99", result.p99_ms, "ms", reference_result.p99_ms, "0 CRDs",
                        at_most=10.0))
            ctx.add(Row(section, f"{label} /apis requests/s", result.rps, "req/s", reference_result.rps, "0 CRDs"))
            if result.errors or reference_result.errors:
                ctx.add(Row(section, f"{label} /apis errors", result.errors + reference_result.errors, "", at_most=0))
            body = len(api.request("GET", "/apis", headers={"Accept": LEGACY_DISCOVERY if label == "legacy"
                                                            else AGGREGATED_DISCOVERY})[2])
            ctx.add(Row(section, f"{label} /apis body", body / 1024, "KB", bodies_empty[label] / 1024, "0 CRDs"))
        ctx.add(Row(section, "daemon RSS", daemon.process.rss() / MB, "MB", rss_empty / MB, "0 CRDs"))

        # 3. Custom resource creates against ExternalName creates: same client, writers and count, alternating.
        widgets = f"/apis/{CR_GROUP}/{crdbench.CR_VERSION}/namespaces/{CR_NAMESPACE}/widgets"
        externalnames = f"/apis/service.grafana.app/v0alpha1/namespaces/{CR_NAMESPACE}/externalnames"
        kinds: dict[str, Callable[[str], tuple[str, dict[str, Any]]]] = {
            "Widget": lambda name: (widgets, crdbench.widget(CR_GROUP, CR_NAMESPACE, name)),
            "ExternalName": lambda name: (externalnames, {
                "apiVersion": "service.grafana.app/v0alpha1", "kind": "ExternalName",
                "metadata": {"name": name, "namespace": CR_NAMESPACE, "labels": {"app": "bench"}},
                "spec": {"host": "grafana.example.com"}}),
        }
        for writers in (1, CR_WRITERS):
            label = "1 writer" if writers == 1 else f"{writers} concurrent writers"
            round_trips: dict[str, list[float]] = {kind: [] for kind in kinds}
            errors: dict[str, list[str]] = {kind: [] for kind in kinds}
            for round_ in range(CR_ROUNDS):
                order = list(kinds) if round_ % 2 == 0 else list(reversed(kinds))
                for kind in order:
                    marks = [f"{kind.lower()}-w{writers}-r{round_}-{i:04d}" for i in range(CR_CREATES // CR_ROUNDS)]
                    apis = threading.local()
                    clients: list[Api] = []

                    def create(mark: str, make: Callable[[str], tuple[str, dict[str, Any]]] = kinds[kind]) -> None:
                        if not hasattr(apis, "api"):
                            apis.api = Api(daemon.port)  # one keep-alive connection per writer
                            clients.append(apis.api)
                        path, body = make(mark)
                        apis.api.json("POST", path, body)

                    if round_ == 0:
                        create(f"{kind.lower()}-w{writers}-warm-up")
                    try:
                        writes = _write_all(marks, writers, create)
                    finally:
                        for client in clients:
                            client.close()
                    round_trips[kind] += [1000 * (writes.answered[m] - writes.sent[m]) for m in writes.answered]
                    errors[kind] += writes.errors
            section = f"crds: create, {label}"
            cr, builtin = round_trips["Widget"], round_trips["ExternalName"]
            for tag, fraction in (("p50", 0.5), ("p99", 0.99)):
                ctx.add(Row(section, f"custom resource (Widget) create {tag}", percentile(cr, fraction), "ms",
                            percentile(builtin, fraction), "ExternalName create"))
            ctx.add(Row(section, "custom resource create p99 / ExternalName create p99",
                        percentile(cr, 0.99) / percentile(builtin, 0.99), "×", 1.0, "ExternalName", at_most=1.5))
            ctx.add(Row(section, "creates of each kind", len(cr), "", len(builtin), "ExternalName",
                        at_least=CR_CREATES))
            for kind, problems in errors.items():
                if problems:
                    ctx.add(Row(section, f"{kind} create failed: {problems[0][:100]}", len(problems), "", at_most=0))
        stored = api.json("GET", f"{widgets}/widget-w1-r0-0000")
        ctx.add(Row("crds: create, 1 writer", "stored Widget defaulted and pruned as its schema says",
                    1.0 if crdbench.defaulted_and_pruned(stored) else 0.0, "", at_least=1))
    finally:
        ctx.processes.stop(daemon.process)


NAMES = (*NAMES, "crds")
RUNNERS["crds"] = crds
