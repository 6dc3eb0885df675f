"""Times FileStore creates and updates of ~1 KB APIServices against the bare minimum of a durable atomic write.

It runs in its own process (the installed grafana_aggregator, a real reactor, the same disk as the
benchmark's work folder) and prints one JSON line of per-call latencies in milliseconds.  The
reference writes the same bytes to a temporary file, fsyncs it and renames it over the target.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Callable
from typing import Any

from twisted.internet.defer import Deferred
from twisted.internet.task import react

from grafana_aggregator.storage.files import fsync_folder
from grafana_aggregator.storage import Collection
from grafana_aggregator.storage.file import FileStore

APISERVICES = Collection("apiregistration.k8s.io", "apiservices")


def apiservice(index: int, generation: int) -> dict[str, Any]:
    """An APIService of about 1 KB once stored (indented JSON, as the store writes it)."""
    group = f"g{index:04d}.storage.bench"
    return {
        "apiVersion": "apiregistration.k8s.io/v1", "kind": "APIService",
        "metadata": {"name": f"v0alpha1.{group}", "labels": {"bench": "storage"},
                     "annotations": {"bench.grafana.app/generation": str(generation),
                                     "bench.grafana.app/note": "x" * 200}},
        "spec": {"group": group, "version": "v0alpha1", "groupPriorityMinimum": 1000, "versionPriority": 15,
                 "service": {"namespace": "bench", "name": "nope", "port": 443}},
        "status": {"conditions": [{"type": "Available", "status": "False", "reason": "ServiceNotFound",
                                   "message": 'service/nope in "bench" is not present',
                                   "lastTransitionTime": "2026-11-23T00:00:00Z"}]},
    }


def encoded(obj: dict[str, Any]) -> bytes:
    return json.dumps(obj, indent=2, ensure_ascii=False).encode("utf-8") + b"\n"


def durable_write(path: str, data: bytes, folder_fsync: bool) -> None:
    """The reference: temporary file, write, fsync, rename over path (and fsync the folder if asked)."""
    temporary = f"{path}.tmp"
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.write(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(temporary, path)
    if folder_fsync:
        fsync_folder(os.path.dirname(path))


def timed(calls: list[Callable[[], None]]) -> list[float]:
    """Milliseconds each call took."""
    latencies = []
    for call in calls:
        started = time.perf_counter()
        call()
        latencies.append((time.perf_counter() - started) * 1000)
    return latencies


def reference(folder: str, payloads: list[bytes], folder_fsync: bool) -> dict[str, list[float]]:
    """Create then replace one file per payload, as the store would."""
    os.makedirs(folder)
    paths = [os.path.join(folder, f"{index:04d}.json") for index in range(len(payloads))]
    create = timed([lambda p=p, d=d: durable_write(p, d, folder_fsync) for p, d in zip(paths, payloads)])
    update = timed([lambda p=p, d=d: durable_write(p, d, folder_fsync) for p, d in zip(paths, payloads)])
    return {"create": create, "update": update}


async def measure_store(folder: str, count: int) -> dict[str, Any]:
    store = FileStore.open(folder)
    create, update = [], []
    stored = []
    for index in range(count):
        obj = apiservice(index, 1)
        started = time.perf_counter()
        stored.append(await store.create(APISERVICES, "", obj["metadata"]["name"], obj))
        create.append((time.perf_counter() - started) * 1000)
    for index, previous in enumerate(stored):
        obj = apiservice(index, 2)
        obj["metadata"]["resourceVersion"] = previous["metadata"]["resourceVersion"]
        started = time.perf_counter()
        await store.update(APISERVICES, "", obj["metadata"]["name"], obj,
                           int(previous["metadata"]["resourceVersion"]))
        update.append((time.perf_counter() - started) * 1000)
    await store.close()
    started = time.perf_counter()
    reopened = FileStore.open(folder)
    open_ms = (time.perf_counter() - started) * 1000
    await reopened.close()
    return {"create": create, "update": update, "open_ms": open_ms, "payloads": [encoded(o) for o in stored]}


async def run(options: argparse.Namespace) -> None:
    os.makedirs(options.folder, exist_ok=True)
    store = await measure_store(os.path.join(options.folder, "store"), options.count)
    payloads = store.pop("payloads")
    store["object_bytes"] = len(payloads[0])
    bare = reference(os.path.join(options.folder, "reference"), payloads, folder_fsync=False)
    with_folder = reference(os.path.join(options.folder, "reference-folder-fsync"), payloads, folder_fsync=True)
    print(json.dumps({"count": options.count, "store": store, "reference": bare,
                      "reference_folder_fsync": with_folder}), flush=True)


def main(reactor: Any, argv: list[str]) -> Deferred[None]:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--folder", required=True, help="a new folder on the disk to measure")
    parser.add_argument("--count", type=int, default=500, help="objects to create, then update")
    return Deferred.fromCoroutine(run(parser.parse_args(argv)))


if __name__ == "__main__":
    react(main, [sys.argv[1:]])
