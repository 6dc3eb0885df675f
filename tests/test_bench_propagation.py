"""The replica propagation benchmark's stream parsing (bench/propagation.py): a missed or misread event would turn
into a wrong latency or a false "events seen" count."""

from __future__ import annotations

import base64
import json

from twisted.trial.unittest import SynchronousTestCase

from bench.propagation import aggregator_marks, etcd_marks, latencies, lines


def _event(kind: str, name: str) -> bytes:
    return json.dumps({"type": kind, "object": {"kind": "ExternalName", "metadata": {"name": name}}},
                      separators=(",", ":")).encode()


class AggregatorMarksTests(SynchronousTestCase):
    """Lines of a Kubernetes watch stream."""

    def test_added_mark(self) -> None:
        """An ADDED event of a marked object names its mark; other events and other objects name none."""
        self.assertEqual(aggregator_marks(_event("ADDED", "prop-seq-0007")), ["prop-seq-0007"])
        self.assertEqual(aggregator_marks(_event("MODIFIED", "prop-seq-0007")), [])
        self.assertEqual(aggregator_marks(_event("ADDED", "bench-backend")), [])
        self.assertEqual(aggregator_marks(_event("ADDED", "prop-seq-0007-x")), [])

    def test_not_json(self) -> None:
        """A line that is not a JSON event (a torn read never reaches here, but garbage might) names no mark."""
        self.assertEqual(aggregator_marks(b'{"type":"ADDED"'), [])
        self.assertEqual(aggregator_marks(b"[1]"), [])


class EtcdMarksTests(SynchronousTestCase):
    """Lines of etcd's gateway watch stream."""

    def test_keys_marks(self) -> None:
        """Every event's key whose last segment is a mark counts, several per message."""
        def kv(key: str) -> dict[str, object]:
            return {"kv": {"key": base64.b64encode(key.encode()).decode(), "mod_revision": "5"}}

        message = {"result": {"header": {"revision": "5"},
                              "events": [kv("/bench-bare/seq/prop-seq-0001"), kv("/other/key"),
                                         kv("/bench-bare/seq/prop-seq-0002")]}}
        self.assertEqual(etcd_marks(json.dumps(message).encode()), ["prop-seq-0001", "prop-seq-0002"])

    def test_created_and_progress(self) -> None:
        """The watch's created message and progress notifications carry no events, hence no marks."""
        self.assertEqual(etcd_marks(b'{"result":{"header":{"revision":"3"},"created":true}}'), [])
        self.assertEqual(etcd_marks(b'{"error":{"message":"x"}}'), [])


class LinesTests(SynchronousTestCase):
    """Splitting a stream into its complete lines."""

    def test_keeps_the_incomplete_tail(self) -> None:
        """The bytes after the last newline wait for the next read; blank lines are dropped."""
        self.assertEqual(lines(b'{"a":1}\n\n{"b":'), ([b'{"a":1}'], b'{"b":'))
        self.assertEqual(lines(b"partial"), ([], b"partial"))


class LatenciesTests(SynchronousTestCase):
    """Latencies in milliseconds from each write's moment to its arrival."""

    def test_latencies(self) -> None:
        """Only marks that arrived count; an arrival before the moment is a negative latency, kept as such."""
        sent = {"prop-seq-0001": 10.0, "prop-seq-0002": 11.0, "prop-seq-0003": 12.0}
        arrived = {"prop-seq-0001": 10.005, "prop-seq-0002": 10.999}
        self.assertEqual([round(x, 3) for x in latencies(sent, arrived)], [5.0, -1.0])
