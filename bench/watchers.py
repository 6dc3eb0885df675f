"""Opens N concurrent watches on APIServices and reports how long each marked change took to reach each watcher.

It runs as its own process so that reading 1000 TLS streams does not compete with the harness; it
prints "connected <ok> <failed>" once every watch has answered (or failed), then one JSON line with
the latencies of every event carrying a `bench.grafana.app/sent` annotation (a time.time() string).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import re
import resource
import ssl
import sys
import time
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
    writer: asyncio.StreamWriter | None = None


def raise_open_files_limit() -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != resource.RLIM_INFINITY and (hard == resource.RLIM_INFINITY or soft < hard):
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def tls_context() -> ssl.SSLContext:
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    return context


async def open_watch(watcher: Watcher, port: int, request: bytes, context: ssl.SSLContext,
                     gate: asyncio.Semaphore) -> asyncio.StreamReader | None:
    """Connect, send the watch request and read the response headers; None (and watcher.error) on failure."""
    async with gate:
        try:
            reader, writer = await asyncio.open_connection("127.0.0.1", port, ssl=context, limit=1 << 20)
            writer.write(request)
            head = await reader.readuntil(b"\r\n\r\n")
        except (OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, ssl.SSLError) as error:
            watcher.error = f"{type(error).__name__}: {error}"
            return None
    status = head.split(b"\r\n", 1)[0]
    if b" 200 " not in status + b" ":
        watcher.error = status.decode("latin-1")
        writer.close()
        return None
    watcher.writer = writer
    return reader


async def read_events(watcher: Watcher, reader: asyncio.StreamReader, events: int) -> None:
    """Record the latency of the first sighting of each sent mark until `events` marks were seen."""
    tail = b""
    while len(watcher.latencies) < events:
        data = await reader.read(65536)
        if not data:
            watcher.error = watcher.error or "the server ended the watch"
            return
        now = time.time()
        buffer = tail + data
        end = 0
        for match in SENT.finditer(buffer):
            sent = match.group(1).decode("ascii")
            if sent not in watcher.latencies:
                watcher.latencies[sent] = now - float(sent)
            end = match.end()
        tail = buffer[end:][-TAIL:]


async def main(options: argparse.Namespace) -> dict[str, object]:
    raise_open_files_limit()
    context = tls_context()
    path = (f"/apis/apiregistration.k8s.io/v1/apiservices?watch=1&resourceVersion={options.resource_version}"
            f"&allowWatchBookmarks=false")
    request = (f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{options.port}\r\nAuthorization: Bearer {options.token}\r\n"
               f"Accept: application/json\r\nUser-Agent: bench-watchers\r\n\r\n").encode("ascii")
    watchers = [Watcher(index) for index in range(options.count)]
    gate = asyncio.Semaphore(options.connect_concurrency)
    started = time.monotonic()
    readers = await asyncio.gather(*(open_watch(w, options.port, request, context, gate) for w in watchers))
    connect_seconds = time.monotonic() - started
    connected = sum(1 for reader in readers if reader is not None)
    print(f"connected {connected} {options.count - connected}", flush=True)

    cpu_before = time.process_time()
    reading_started = time.monotonic()
    tasks = [asyncio.create_task(read_events(w, r, options.events)) for w, r in zip(watchers, readers) if r]
    if tasks:
        _, pending = await asyncio.wait(tasks, timeout=options.timeout)
        for task in pending:
            task.cancel()
        await asyncio.gather(*pending, return_exceptions=True)
    reading_seconds = time.monotonic() - reading_started
    cpu_seconds = time.process_time() - cpu_before
    for watcher in watchers:
        if watcher.writer is not None:
            watcher.writer.close()

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
    print(json.dumps(asyncio.run(main(parse(sys.argv[1:])))), flush=True)
