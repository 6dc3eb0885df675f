"""Opens N concurrent watches on APIServices and reports how long each marked change took to reach each watcher.

It runs as its own process so that reading 1000 TLS streams does not compete with the harness; it
prints "connected <ok> <failed>" once every watch has answered (or failed), then one JSON line with
the latencies of every event carrying a `bench.grafana.app/sent` annotation (a time.time() string).

The watches are opened by a few threads with blocking sockets, then read by one epoll loop over
non-blocking `ssl` sockets: the decryption happens in C, so the client takes far less of the
machine's two cores than an asyncio reader (whose TLS layer is Python) and disturbs the daemon less.
"""

from __future__ import annotations

import argparse
import json
import re
import resource
import selectors
import socket
import ssl
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

#: The annotation value the harness sets to time.time() just before it sends the change.
SENT = re.compile(rb'"bench\.grafana\.app/sent":"([0-9.]+)"')
#: Bytes kept between reads, so that an annotation split across two reads is still found.
TAIL = 256


@dataclass
class Watcher:
    """One watch: what it saw, by sent time, and why it failed if it did."""

    index: int
    latencies: dict[str, float] = field(default_factory=dict)
    error: str = ""
    tail: bytes = b""

    def scan(self, data: bytes, now: float) -> None:
        """Record the latency of the first sighting of each sent mark in data."""
        buffer = self.tail + data
        end = 0
        for match in SENT.finditer(buffer):
            sent = match.group(1).decode("ascii")
            if sent not in self.latencies:
                self.latencies[sent] = now - float(sent)
            end = match.end()
        self.tail = buffer[end:][-TAIL:]


def raise_open_files_limit() -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != resource.RLIM_INFINITY and (hard == resource.RLIM_INFINITY or soft < hard):
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def tls_context() -> ssl.SSLContext:
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    return context


def open_watch(watcher: Watcher, port: int, request: bytes, context: ssl.SSLContext) -> ssl.SSLSocket | None:
    """Connect, send the watch request and read the response headers; a non-blocking socket, or None (and
    watcher.error) on failure."""
    try:
        sock = context.wrap_socket(socket.create_connection(("127.0.0.1", port), timeout=60))
        sock.sendall(request)
        head = b""
        while b"\r\n\r\n" not in head:
            data = sock.recv(65536)
            if not data:
                raise ConnectionError("closed before the response headers")
            head += data
    except (OSError, ssl.SSLError) as error:
        watcher.error = f"{type(error).__name__}: {error}"
        return None
    head, _, rest = head.partition(b"\r\n\r\n")
    status = head.split(b"\r\n", 1)[0]
    if b" 200 " not in status + b" ":
        watcher.error = status.decode("latin-1")
        sock.close()
        return None
    watcher.scan(rest, time.time())
    sock.setblocking(False)
    return sock


def read_events(pairs: list[tuple[Watcher, ssl.SSLSocket]], events: int, timeout: float) -> None:
    """Read every watch until each has seen `events` marks, ended, or the timeout passed."""
    selector = selectors.DefaultSelector()
    for watcher, sock in pairs:
        if len(watcher.latencies) < events:
            selector.register(sock, selectors.EVENT_READ, (watcher, sock))
    deadline = time.monotonic() + timeout
    while selector.get_map():
        left = deadline - time.monotonic()
        if left <= 0:
            break
        for key, _ in selector.select(min(left, 1.0)):
            watcher, sock = key.data
            while True:
                try:
                    data = sock.recv(65536)
                except ssl.SSLWantReadError:
                    break
                except (OSError, ssl.SSLError) as error:
                    watcher.error = f"{type(error).__name__}: {error}"
                    data = b""
                if not data:
                    watcher.error = watcher.error or "the server ended the watch"
                    selector.unregister(sock)
                    break
                watcher.scan(data, time.time())
                if len(watcher.latencies) >= events:
                    selector.unregister(sock)
                    break
    selector.close()


def main(options: argparse.Namespace) -> dict[str, object]:
    raise_open_files_limit()
    context = tls_context()
    path = (f"/apis/apiregistration.k8s.io/v1/apiservices?watch=1&resourceVersion={options.resource_version}"
            f"&allowWatchBookmarks=false")
    request = (f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{options.port}\r\nAuthorization: Bearer {options.token}\r\n"
               f"Accept: application/json\r\nUser-Agent: bench-watchers\r\n\r\n").encode("ascii")
    watchers = [Watcher(index) for index in range(options.count)]
    started = time.monotonic()
    with ThreadPoolExecutor(max_workers=options.connect_concurrency) as pool:
        sockets = list(pool.map(lambda w: open_watch(w, options.port, request, context), watchers))
    connect_seconds = time.monotonic() - started
    pairs = [(w, s) for w, s in zip(watchers, sockets) if s is not None]
    connected = len(pairs)
    print(f"connected {connected} {options.count - connected}", flush=True)

    cpu_before = time.process_time()
    reading_started = time.monotonic()
    read_events(pairs, options.events, options.timeout)
    reading_seconds = time.monotonic() - reading_started
    cpu_seconds = time.process_time() - cpu_before
    for _, sock in pairs:
        sock.close()

    by_sent: dict[str, list[float]] = {}
    for watcher in watchers:
        for sent, latency in watcher.latencies.items():
            by_sent.setdefault(sent, []).append(latency)
    errors: dict[str, int] = {}
    for watcher in watchers:
        if watcher.error:
            errors[watcher.error] = errors.get(watcher.error, 0) + 1
    return {"watchers": options.count, "connected": connected, "connect_seconds": connect_seconds,
            "reading_seconds": reading_seconds, "reading_cpu_seconds": cpu_seconds, "errors": errors,
            "latencies": by_sent}


def parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--port", type=int, required=True, help="the aggregator's port on 127.0.0.1")
    parser.add_argument("--token", required=True, help="the bearer token")
    parser.add_argument("--count", type=int, default=1000, help="how many watches to open")
    parser.add_argument("--events", type=int, default=20, help="marked changes each watch waits for")
    parser.add_argument("--resource-version", required=True, help="where the watches start (a list's)")
    parser.add_argument("--timeout", type=float, default=30.0, help="seconds to wait for the events once connected")
    parser.add_argument("--connect-concurrency", type=int, default=32, help="connections being opened at once")
    return parser.parse_args(argv)


if __name__ == "__main__":
    print(json.dumps(main(parse(sys.argv[1:]))), flush=True)
