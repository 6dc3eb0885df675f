"""etcd store create and update latency beside a bare etcd put through the same JSON gateway, in one process.

Starts its own etcd on loopback (tests/etcd.py), then for each of N objects: an EtcdStore create (a compare-and-
swap transaction, then the wait for the watch cache to hold it), a bare put of the same bytes (/v3/kv/put), an
EtcdStore update, and a bare compare-and-swap transaction (/v3/kv/txn) on the put key, interleaved so that both see the same machine.  Prints one JSON line of
the milliseconds of each call.  Usage: .venv/bin/python bench/etcd_latency.py [--count N]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

from twisted.internet import defer, task

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from grafana_aggregator.storage import Collection  # noqa: E402
from grafana_aggregator.storage.etcd import EtcdStore  # noqa: E402
from grafana_aggregator.storage.etcd_client import b64, make_client  # noqa: E402
from tests.etcd import EtcdServer  # noqa: E402

THINGS = Collection("example.grafana.app", "things")


def _object(i: int) -> dict[str, object]:
    """About 1 KB, like an APIService with its status."""
    return {"apiVersion": "example.grafana.app/v1", "kind": "Thing", "metadata": {"uid": f"uid-{i}"},
            "spec": {"note": "x" * 900, "i": i}}


async def main(reactor: object, count: int) -> None:
    server = EtcdServer()
    server.start()
    try:
        client = make_client(reactor, [server.url])
        store = EtcdStore(client, reactor, "/bench")  # type: ignore[arg-type]
        await store.list(THINGS, None)
        times: dict[str, list[float]] = {"create": [], "update": [], "put": [], "txn": []}
        value = b64(json.dumps(_object(0)).encode())
        for i in range(count):
            started = time.perf_counter()
            await store.create(THINGS, "", f"object-{i}", _object(i))
            times["create"].append((time.perf_counter() - started) * 1000)
            key = b64(f"/bare/{i}".encode())
            for _ in range(2):
                started = time.perf_counter()
                put = await client.call("kv/put", {"key": key, "value": value}, idempotent=False)
                times["put"].append((time.perf_counter() - started) * 1000)
            started = time.perf_counter()
            await store.update(THINGS, "", f"object-{i}", _object(i + 1))
            times["update"].append((time.perf_counter() - started) * 1000)
            # An update's bare equivalent: the same compare-and-swap on the key's mod_revision, then the put.
            started = time.perf_counter()
            answer = await client.txn([{"key": key, "target": "MOD", "result": "EQUAL",
                                        "mod_revision": put["header"]["revision"]}],
                                      [{"request_put": {"key": key, "value": value}}], [])
            times["txn"].append((time.perf_counter() - started) * 1000)
            if not answer.get("succeeded"):
                raise RuntimeError(f"the bare compare-and-swap failed: {answer}")
        await store.close()
        print(json.dumps(times))
    finally:
        server.remove()


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--count", type=int, default=500)
    options = parser.parse_args()
    task.react(lambda reactor: defer.ensureDeferred(main(reactor, options.count)))
