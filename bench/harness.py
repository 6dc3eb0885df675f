"""Processes, certificates, HTTP calls and measurements shared by the benchmarks; everything listens on loopback.

Every process started here is registered with a `Processes` set and stopped when the run ends, even
on failure, so `make bench` leaves nothing behind.
"""

from __future__ import annotations

import base64
import http.client
import json
import math
import os
import shutil
import signal
import socket
import ssl
import subprocess
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BIN = os.path.join(REPO, ".venv", "bin")
TOKEN = "bench-token-0123456789abcdef"
AUTHORIZATION = f"Bearer {TOKEN}"
GROUP = "bench.grafana.app"
VERSION = "v0alpha1"
SMALL_PATH = f"/apis/{GROUP}/{VERSION}/namespaces/default/things/small"
LARGE_PATH = f"/apis/{GROUP}/{VERSION}/namespaces/default/things/large"
UPLOAD_PATH = f"/apis/{GROUP}/{VERSION}/namespaces/default/uploads/blob"
LARGE_BYTES = 10 * 1024 * 1024
WRK_REPORT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "wrk_report.lua")


def free_port() -> int:
    """A loopback port that was free a moment ago."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def wait_port(port: int, within: float = 20.0) -> float:
    """Wait until something accepts on 127.0.0.1:port; return the moment it first did (time.monotonic)."""
    deadline = time.monotonic() + within
    while True:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return time.monotonic()
        except OSError:
            if time.monotonic() > deadline:
                raise RuntimeError(f"nothing listens on 127.0.0.1:{port} after {within}s") from None
            time.sleep(0.005)


def rss_bytes(pid: int) -> int:
    """Resident set size of a process, from /proc."""
    with open(f"/proc/{pid}/status") as handle:
        for line in handle:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    return 0


def cpu_seconds(pid: int) -> float:
    """User plus system CPU time a process has used, from /proc."""
    with open(f"/proc/{pid}/stat") as handle:
        fields = handle.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def percentile(values: Sequence[float], fraction: float) -> float:
    """The value below which `fraction` of the samples fall (nearest rank)."""
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    rank = max(0, min(len(ordered) - 1, math.ceil(fraction * len(ordered)) - 1))
    return ordered[rank]


@dataclass
class Process:
    """A child process with its log file; `stop()` ends it with SIGTERM, then SIGKILL."""

    name: str
    popen: subprocess.Popen[bytes]
    log: str

    @property
    def pid(self) -> int:
        return self.popen.pid

    def rss(self) -> int:
        return rss_bytes(self.pid)

    def output(self) -> str:
        with open(self.log, errors="replace") as handle:
            return handle.read()

    def stop(self, timeout: float = 15.0) -> None:
        if self.popen.poll() is None:
            self.popen.send_signal(signal.SIGTERM)
            try:
                self.popen.wait(timeout)
            except subprocess.TimeoutExpired:
                self.popen.kill()
                self.popen.wait()


@dataclass
class Processes:
    """Everything the run started, stopped in reverse order at the end."""

    folder: str
    running: list[Process] = field(default_factory=list)

    def start(self, name: str, argv: Sequence[str], env: dict[str, str] | None = None) -> Process:
        log = os.path.join(self.folder, f"{name}.log")
        with open(log, "ab") as sink:
            popen = subprocess.Popen(list(argv), stdout=sink, stderr=subprocess.STDOUT, cwd=self.folder,
                                     env={**os.environ, **(env or {})}, start_new_session=True)
        process = Process(name, popen, log)
        self.running.append(process)
        return process

    def stop(self, process: Process) -> None:
        process.stop()
        if process in self.running:
            self.running.remove(process)

    def stop_all(self) -> None:
        for process in reversed(self.running):
            process.stop()
        self.running.clear()


class RssSampler:
    """Samples a process's RSS every 20 ms in a thread, to report the peak of a phase."""

    def __init__(self, pid: int):
        self._pid = pid
        self.peak = rss_bytes(pid)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def _sample(self) -> None:
        while not self._stop.wait(0.02):
            try:
                self.peak = max(self.peak, rss_bytes(self._pid))
            except OSError:
                return

    def __enter__(self) -> RssSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


@dataclass(frozen=True)
class Pki:
    """The dev PKI (hack/make-aggregator-pki.sh): a CA, a localhost serving pair and a client pair."""

    folder: str

    @property
    def ca(self) -> str:
        return os.path.join(self.folder, "ca.crt")

    @property
    def server_cert(self) -> str:
        return os.path.join(self.folder, "server.crt")

    @property
    def server_key(self) -> str:
        return os.path.join(self.folder, "server.key")

    @property
    def client_cert(self) -> str:
        return os.path.join(self.folder, "client.crt")

    @property
    def client_key(self) -> str:
        return os.path.join(self.folder, "client.key")

    def ca_bundle_b64(self) -> str:
        with open(self.ca, "rb") as handle:
            return base64.b64encode(handle.read()).decode()


def make_pki(folder: str) -> Pki:
    subprocess.run([os.path.join(REPO, "hack", "make-aggregator-pki.sh"), "--out", folder], check=True,
                   capture_output=True)
    return Pki(folder)


class Api:
    """A keep-alive HTTPS client for the aggregator's API, authenticated with the bench token."""

    def __init__(self, port: int, token: str = TOKEN):
        self.port = port
        self._token = token
        self._context = ssl.create_default_context()
        self._context.check_hostname = False
        self._context.verify_mode = ssl.CERT_NONE
        self._connection: http.client.HTTPSConnection | None = None

    def request(self, method: str, path: str, body: Any = None, headers: dict[str, str] | None = None,
                content_type: str = "application/json") -> tuple[int, dict[str, str], bytes]:
        all_headers = {"Authorization": f"Bearer {self._token}", "Accept": "application/json", **(headers or {})}
        payload = None
        if body is not None:
            payload = body if isinstance(body, bytes) else json.dumps(body).encode()
            all_headers["Content-Type"] = content_type
        for attempt in range(2):
            if self._connection is None:
                self._connection = http.client.HTTPSConnection("127.0.0.1", self.port, context=self._context,
                                                               timeout=60)
            try:
                self._connection.request(method, path, body=payload, headers=all_headers)
                response = self._connection.getresponse()
                data = response.read()
                return response.status, {k.lower(): v for k, v in response.getheaders()}, data
            except (ConnectionError, ssl.SSLEOFError, http.client.HTTPException):  # an idle connection the daemon closed
                self._connection.close()
                self._connection = None
                if attempt:
                    raise
        raise AssertionError("unreachable")

    def json(self, method: str, path: str, body: Any = None, expect: Sequence[int] = (200, 201),
             content_type: str = "application/json") -> Any:
        status, _, data = self.request(method, path, body, content_type=content_type)
        if status not in expect:
            raise RuntimeError(f"{method} {path} answered {status}: {data[:500]!r}")
        return json.loads(data) if data else None

    def close(self) -> None:
        if self._connection is not None:
            self._connection.close()
            self._connection = None


@dataclass(frozen=True)
class WrkResult:
    """One wrk run: throughput, latency percentiles in milliseconds, and errors (socket and non-2xx/3xx)."""

    requests: int
    seconds: float
    p50_ms: float
    p90_ms: float
    p99_ms: float
    errors: int

    @property
    def rps(self) -> float:
        return self.requests / self.seconds if self.seconds else 0.0


def wrk(url: str, connections: int, seconds: float, headers: Sequence[str] = (), threads: int = 1) -> WrkResult:
    """Run wrk against url and parse the JSON its report script prints."""
    argv = ["wrk", f"-t{threads}", f"-c{connections}", f"-d{seconds:g}s", "--timeout", "10s", "-s", WRK_REPORT]
    for header in headers:
        argv += ["-H", header]
    completed = subprocess.run([*argv, url], check=True, capture_output=True, text=True, timeout=seconds + 60)
    line = next(line for line in completed.stdout.splitlines() if line.startswith("{"))
    report = json.loads(line)
    return WrkResult(requests=report["requests"], seconds=report["duration_us"] / 1e6,
                     p50_ms=report["p50_us"] / 1000, p90_ms=report["p90_us"] / 1000,
                     p99_ms=report["p99_us"] / 1000, errors=report["errors"])


def require_tools(*names: str) -> None:
    missing = [name for name in names if shutil.which(name) is None]
    if missing:
        raise SystemExit(f"missing tools: {', '.join(missing)} (make bench installs wrk and nginx-light)")
