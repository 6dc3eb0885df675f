# -*- test-case-name: tests.test_workers -*-
"""`/metrics` of every process: the owner adds its workers' expositions to its own, sample by sample.

Each worker serves its own `Metrics` on a control socket of its own (`worker-<n>.sock`, in the
channel's private folder).  The owner fetches them when `/metrics` is asked for and sums every
sample with the same name and labels: counters, histogram buckets, sums and counts, and gauges (in
flight, long-running) all add up across processes.  Every process renders with the same code, so
equal series are equal text.  Chosen over prometheus-client's multiprocess mode, which needs a
shared folder of memory-mapped files and does not support our custom collectors.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from prometheus_client.utils import floatToGoString
from twisted.internet.defer import Deferred, DeferredList
from twisted.logger import Logger
from twisted.web.iweb import IRequest

from ..apimachinery.resource import ApiResource
from ..web.metrics import Metrics

_log = Logger()

#: Fetches one worker's exposition text.
Fetch = Callable[[], Awaitable[bytes]]


def sum_expositions(texts: Sequence[bytes]) -> bytes:
    """One Prometheus text exposition whose every sample is the sum of that sample in `texts`."""
    families: dict[str, tuple[list[bytes], dict[bytes, float]]] = {}
    for text in texts:
        family: tuple[list[bytes], dict[bytes, float]] | None = None
        for line in text.splitlines():
            if not line:
                continue
            if line.startswith(b"#"):
                parts = line.split(b" ", 3)
                if len(parts) >= 3 and parts[1] in (b"HELP", b"TYPE"):
                    name = parts[2].decode("latin-1")
                    family = families.get(name)
                    if family is None:
                        family = families[name] = ([], {})
                    if not any(h.split(b" ", 2)[1] == parts[1] for h in family[0]):
                        family[0].append(line)
                continue
            series, _, value = line.rpartition(b" ")
            if family is None:
                family = families.setdefault("", ([], {}))
            try:
                number = float(value)
            except ValueError:
                continue
            family[1][series] = family[1].get(series, 0.0) + number
    out: list[bytes] = []
    for headers, samples in families.values():
        out.extend(headers)
        out.extend(series + b" " + floatToGoString(value).encode("ascii") for series, value in samples.items())
    return b"\n".join(out) + b"\n"


class SummedMetricsResource(ApiResource):
    """The owner's `/metrics`: its own metrics plus every running worker's (a worker that does not answer is left out)."""

    isLeaf = True

    def __init__(self, metrics: Metrics, workers: Callable[[], Sequence[Fetch]]):
        super().__init__()
        self._metrics = metrics
        self._workers = workers

    async def handle(self, request: IRequest) -> None:
        own, content_type = self._metrics.render()
        fetches = [Deferred.fromCoroutine(_awaited(fetch)) for fetch in self._workers()]
        texts = [own]
        results: list[tuple[bool, Any]] = await DeferredList(fetches, consumeErrors=True)
        for ok, result in results:
            if ok:
                texts.append(result)
            else:
                _log.info("a worker's metrics were left out: {error}", error=result.getErrorMessage())
        body = sum_expositions(texts)
        request.setResponseCode(200)
        request.setHeader(b"Content-Type", content_type.encode("ascii"))
        request.setHeader(b"Cache-Control", b"no-cache, private")
        request.setHeader(b"Content-Length", b"%d" % len(body))
        request.write(body)
        request.finish()


async def _awaited(fetch: Fetch) -> bytes:
    return await fetch()
