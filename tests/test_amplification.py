# -*- test-case-name: tests.test_amplification -*-
"""No single request holds the reactor for more than 100 ms: patches that amplify themselves (JSON patch `copy`
operations that each double a value, a YAML alias bomb in an apply), the largest patches and applies accepted,
pathological label and field selectors, and lists of a couple of thousand objects.

Each request runs on a MemoryStore behind StubTreq with a Clock, so that everything it does happens inside the
calls made here: the time of each synchronous stretch (the request's first, then each reactor turn it lets pass) is
the time it would hold the reactor.  This is a bound, not a benchmark: the CPU time of the longest stretch (immune
to other processes on the machine) is compared with 100 ms, the best of three runs.
"""

from __future__ import annotations

import json
import time
from datetime import datetime, timezone
from typing import Any, NamedTuple
from urllib.parse import quote

import yaml
from treq import collect
from treq.testing import StubTreq
from twisted.internet.defer import Deferred
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase
from twisted.web.resource import Resource

from grafana_aggregator.apimachinery.negotiation import YAML, encode
from grafana_aggregator.storage import Collection
from grafana_aggregator.storage.memory import MemoryStore
from grafana_aggregator.tap import local_groups
from .support import serve_apis

EPOCH = 1_700_000_000
HOST = "https://agg.test"
APIREG = "apiregistration.k8s.io/v1"
APISERVICES = f"{HOST}/apis/apiregistration.k8s.io/v1/apiservices"
NAME = "v1.foo.example.com"
URL = f"{APISERVICES}/{NAME}"
JSON = "application/json"
MERGE_PATCH = "application/merge-patch+json"
JSON_PATCH = "application/json-patch+json"
APPLY_PATCH = "application/apply-patch+yaml"
TABLE = "application/json;as=Table;v=v1;g=meta.k8s.io"
#: The most one request may hold the reactor.
BOUND = 0.100
#: How many objects the list tests store (each with a dozen labels).
OBJECTS = 2000


class TurnClock(Clock):
    """A Clock whose `turn()` runs what is due as one reactor iteration does: calls scheduled meanwhile (a request
    letting the reactor run) wait for the next turn, where Clock.advance would run them at once."""

    def turn(self) -> None:
        due = [call for call in self.calls if call.getTime() <= self.seconds()]
        for call in due:
            self.calls.remove(call)
            call.called = 1
            call.func(*call.args, **call.kw)


class Run(NamedTuple):
    """One request: its code, its body, and the longest time it held the reactor."""

    code: int
    body: bytes
    longest: float


def apiservice(name: str = NAME, annotations: int = 0) -> dict[str, Any]:
    version, _, group = name.partition(".")
    obj: dict[str, Any] = {"apiVersion": APIREG, "kind": "APIService", "metadata": {"name": name},
                           "spec": {"group": group, "version": version, "groupPriorityMinimum": 100,
                                    "versionPriority": 10}}
    if annotations:
        obj["metadata"]["annotations"] = {f"note-{i}": f"value {i}" for i in range(annotations)}
    return obj


class _TimedTestCase(SynchronousTestCase):
    """The daemon's groups over a MemoryStore behind StubTreq with a Clock, and one stored APIService."""

    def setUp(self) -> None:
        self.clock = TurnClock()
        self.clock.advance(EPOCH)
        _, groups = local_groups(lambda: datetime.fromtimestamp(self.clock.seconds(), timezone.utc))
        self.store = MemoryStore()
        root = Resource()
        root.putChild(b"apis", serve_apis(self.store, self.clock, groups).apis)
        self.client: Any = StubTreq(root)
        self.assertEqual(self.call("POST", APISERVICES, apiservice()).code, 201)

    def stretch(self, work: Any) -> float:
        """The CPU time one synchronous stretch of work takes."""
        started = time.thread_time()
        work()
        return time.thread_time() - started

    def call(self, method: str, url: str, body: Any = None, content_type: str = JSON,
            accept: str | None = None) -> Run:
        """Send one request and run it to its answer (a watch: to its first events), timing every stretch."""
        headers = {"Content-Type": content_type}
        if accept:
            headers["Accept"] = accept
        data = body if isinstance(body, bytes) else body.encode() if isinstance(body, str) else \
            json.dumps(body).encode() if body is not None else None
        responses: list[Any] = []

        def start() -> None:
            self.client.request(method, url, data=data, headers=headers, unbuffered=True).addBoth(responses.append)
            self.client.flush()

        longest = self.stretch(start)
        turns = 0
        while not responses and turns < 1000:
            longest = max(longest, self.stretch(lambda: (self.clock.turn(), self.client.flush())))
            turns += 1
        self.assertEqual(len(responses), 1, f"no answer to {method} {url[:80]}")
        response = responses[0]
        chunks: list[bytes] = []
        ended: list[object] = []
        collect(response, chunks.append).addBoth(ended.append)
        longest = max(longest, self.stretch(self.client.flush))
        while not ended and turns < 2000 and not (method == "GET" and "watch=true" in url):
            longest = max(longest, self.stretch(lambda: (self.clock.turn(), self.client.flush())))
            turns += 1
        self.assertEqual(self.flushLoggedErrors(), [])
        return Run(response.code, b"".join(chunks), longest)

    def assertQuick(self, code: int, method: str, url: str, body: Any = None, content_type: str = JSON,
                    accept: str | None = None, before: Any = None) -> Run:
        """The request answers `code`, and holds the reactor less than BOUND at a time (the best of three runs;
        `before` puts the store back as it was before each)."""
        runs = []
        for _ in range(3):
            if before is not None:
                before()
            runs.append(self.call(method, url, body, content_type, accept))
            self.assertEqual(runs[-1].code, code, runs[-1].body[:500])
        best = min(runs, key=lambda r: r.longest)
        self.assertLess(best.longest, BOUND, f"{method} {url[:80]} held the reactor for {best.longest:.3f} s")
        return best


class PatchTests(_TimedTestCase):
    """Patches that grow themselves are refused within milliseconds; the largest accepted answer within the bound."""

    def test_copy_doubling(self) -> None:
        """A few kilobytes of `copy` operations that each double a value: 422 after a few doublings, whether the
        value is copied into itself or beside itself and moved back."""
        into_itself = [{"op": "add", "path": "/spec/a", "value": [1]}]
        into_itself += [{"op": "copy", "from": "/spec/a", "path": "/spec/a/-"}] * 64
        beside = [{"op": "add", "path": "/spec/a", "value": [1]}]
        for _ in range(64):
            beside += [{"op": "copy", "from": "/spec/a", "path": "/spec/b"},
                       {"op": "move", "from": "/spec/b", "path": "/spec/a/-"}]
        for operations in (into_itself, beside):
            run = self.assertQuick(422, "PATCH", URL, operations, JSON_PATCH)
            self.assertIn("Unable to complete the copy", json.loads(run.body)["details"]["causes"][0]["message"])
            self.assertLess(len(json.dumps(operations)), 8192)

    def test_copy_limit_in_bytes(self) -> None:
        """kube's limit: the copies of one patch add up to at most 3 MiB of JSON (a 1 MiB string, 1 MiB and 2
        bytes of JSON, copied three times is a 422 saying so)."""
        operations = [{"op": "add", "path": "/spec/big", "value": "x" * (1 << 20)}]
        operations += [{"op": "copy", "from": "/spec/big", "path": f"/spec/copy{i}"} for i in range(4)]
        run = self.assertQuick(422, "PATCH", URL, operations, JSON_PATCH)
        self.assertIn("the accumulated size increase of copy is 3145734, exceeding the limit 3145728",
                      json.loads(run.body)["details"]["causes"][0]["message"])

    def test_copy_and_remove_churn(self) -> None:
        """Copying a large value and removing it again, thousands of times, is refused once the copies add up."""
        operations: list[dict[str, Any]] = [{"op": "add", "path": "/spec/a", "value": list(range(400))}]
        operations += [{"op": "copy", "from": "/spec/a", "path": "/spec/b"}, {"op": "remove", "path": "/spec/b"}] * 4000
        self.assertQuick(422, "PATCH", URL, operations, JSON_PATCH)

    def test_most_operations(self) -> None:
        """A JSON patch of kube's maximum of 10,000 operations is applied within the bound; one more is a 413."""
        operations = [{"op": "test", "path": "/spec/group", "value": "foo.example.com"}] * 10_000
        self.assertQuick(200, "PATCH", URL, operations, JSON_PATCH)
        run = self.assertQuick(413, "PATCH", URL, operations + operations[:1], JSON_PATCH)
        self.assertIn("The allowed maximum operations in a JSON patch is 10000, got 10001", run.body.decode())

    def test_largest_objects(self) -> None:
        """The largest object accepted is created, merge-patched, applied and read within the bound; a larger one
        is a 413 at once, as is a merge patch or an apply that would make one."""
        name = "v1.large.example.com"

        def fresh() -> None:
            self.call("DELETE", f"{APISERVICES}/{name}")
            self.assertEqual(self.call("POST", APISERVICES, apiservice(name, 900)).code, 201)

        self.assertQuick(201, "POST", APISERVICES, apiservice(name, 900), before=lambda: self.call(
            "DELETE", f"{APISERVICES}/{name}"))
        changed = {"metadata": {"annotations": {f"note-{i}": f"changed {i}" for i in range(900)}}}
        self.assertQuick(200, "PATCH", f"{APISERVICES}/{name}", changed, MERGE_PATCH, before=fresh)
        applied = apiservice(name, 900)
        applied["metadata"]["annotations"] = changed["metadata"]["annotations"]
        self.assertQuick(200, "PATCH", f"{APISERVICES}/{name}?fieldManager=tool&force=true", applied, APPLY_PATCH,
                         before=fresh)
        self.assertQuick(200, "GET", f"{APISERVICES}/{name}")
        self.assertQuick(413, "POST", APISERVICES, apiservice("v1.larger.example.com", 1500))
        self.assertQuick(413, "PATCH", f"{APISERVICES}/{name}",
                         {"metadata": {"annotations": {f"more-{i}": "x" for i in range(1500)}}}, MERGE_PATCH)
        self.assertQuick(413, "PATCH", f"{APISERVICES}/{name}?fieldManager=tool",
                         apiservice(name, 1900), APPLY_PATCH)

    def test_alias_bomb_apply(self) -> None:
        """A YAML "billion laughs" apply is refused at once, whatever it expands to."""
        lines = ["l0: &l0 [lol,lol,lol,lol,lol,lol,lol,lol,lol]"]
        lines += [f"l{i}: &l{i} [" + ",".join([f"*l{i - 1}"] * 9) + "]" for i in range(1, 10)]
        body = "\n".join([f"apiVersion: {APIREG}", "kind: APIService", f"metadata: {{name: {NAME}}}",
                          "spec:", *("  " + line for line in lines)])
        run = self.assertQuick(400, "PATCH", f"{URL}?fieldManager=tool", body, APPLY_PATCH)
        self.assertIn("excessive aliasing", run.body.decode())

    def test_deep_bodies(self) -> None:
        """Bodies nested thousands of levels deep are refused at once, on every patch type."""
        deep = "[" * 60_000 + "]" * 60_000
        self.assertQuick(400, "PATCH", URL, f'[{{"op":"add","path":"/spec/x","value":{deep[:20_000]}{deep[-20_000:]}}}]',
                         JSON_PATCH)
        self.assertQuick(413, "PATCH", URL, f'{{"spec":{{"x":{deep}}}}}', MERGE_PATCH)
        self.assertQuick(413, "PATCH", f"{URL}?fieldManager=tool",
                         f'{{"apiVersion":"{APIREG}","kind":"APIService","metadata":{{"name":"{NAME}"}},'
                         f'"spec":{{"x":{deep}}}}}', APPLY_PATCH)
        self.assertQuick(400, "PATCH", f"{URL}?fieldManager=tool",
                         f"apiVersion: {APIREG}\nkind: APIService\nmetadata: {{name: {NAME}}}\nspec: {deep}\n",
                         APPLY_PATCH)


class ListTests(_TimedTestCase):
    """Selectors of thousands of terms, and lists of a couple of thousand objects."""

    def setUp(self) -> None:
        super().setUp()
        collection = Collection("apiregistration.k8s.io", "apiservices")
        for i in range(OBJECTS):
            obj = apiservice(f"v1.group{i}.example.com")
            obj["metadata"]["labels"] = {"app": f"app{i % 10}", "tier": "web", **{f"label{j}": "yes" for j in range(10)}}
            self.successResultOf(Deferred.fromCoroutine(self.store.create(collection, "", obj["metadata"]["name"], obj)))

    def test_lists(self) -> None:
        """Lists of all the objects, with a selector, paged, as kubectl's Table, and as YAML (encoded a batch at a
        time, exactly as in one go), hold the reactor less than the bound."""
        for query, accept, count in (("labelSelector=app%3Dapp1", None, OBJECTS // 10),
                                     ("labelSelector=tier%3Dweb,app%20notin%20(app1,app2)", None, OBJECTS * 8 // 10),
                                     ("", None, OBJECTS + 1), ("limit=500", TABLE, 500), ("", TABLE, OBJECTS + 1)):
            run = self.assertQuick(200, "GET", f"{APISERVICES}?{query}", accept=accept)
            body = json.loads(run.body)
            self.assertEqual(len(body["rows"] if accept else body["items"]), count, query)
        listed = json.loads(self.call("GET", APISERVICES).body)
        run = self.assertQuick(200, "GET", APISERVICES, accept=YAML)
        self.assertEqual(run.body, encode(listed, YAML))
        run = self.assertQuick(200, "GET", f"{APISERVICES}?labelSelector=app%3Dapp3",
                               accept="application/yaml;as=Table;v=v1;g=meta.k8s.io")
        self.assertEqual(len(yaml.safe_load(run.body)["rows"]), OBJECTS // 10)

    def test_pathological_selectors(self) -> None:
        """Selectors of thousands of terms, or of an `in` set of thousands of values, as long as a request line
        may be (16 KiB), hold the reactor less than the bound over all the objects, for a list and a watch."""
        selectors = {
            "a thousand absent keys": ("labelSelector", ",".join(f"!absent{i}" for i in range(1000))),
            "a thousand present keys": ("labelSelector", ",".join(f"label{i % 10}" for i in range(1100))),
            "hundreds of unequal values": ("labelSelector", ",".join(f"label{i % 10}!=no{i}" for i in range(800))),
            "an in set of 1,500 values": ("labelSelector", "app in (" + ",".join(f"app{i}" for i in range(1500)) + ")"),
            "hundreds of field terms": ("fieldSelector", ",".join(f"metadata.name!=n{i}" for i in range(550))),
        }
        for label, (parameter, selector) in selectors.items():
            query = f"{parameter}={quote(selector)}"
            self.assertLess(len(query), 16_000, label)
            run = self.assertQuick(200, "GET", f"{APISERVICES}?{query}")
            self.assertGreater(len(json.loads(run.body)["items"]), 0, label)
            self.assertQuick(200, "GET", f"{APISERVICES}?watch=true&timeoutSeconds=60&{query}")
