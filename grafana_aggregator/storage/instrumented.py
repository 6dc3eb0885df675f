"""A store wrapper that times every storage operation for the metrics, delegating everything else."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TypeVar

from twisted.internet.interfaces import IReactorTime
from zope.interface import implementer

from .interface import Collection, IStore, IWatch, ListResult, Object, WatchEvent

T = TypeVar("T")


@implementer(IStore)
class InstrumentedStore:
    """Observes `grafana_aggregator_storage_operation_duration_seconds{operation, resource}` around each call."""

    def __init__(self, store: IStore, observe: Callable[[str, str, float], None], clock: IReactorTime):
        self._store = store
        self._observe = observe
        self._clock = clock

    async def _timed(self, operation: str, collection: Collection, call: Awaitable[T]) -> T:
        started = self._clock.seconds()
        try:
            return await call
        finally:
            self._observe(operation, collection.resource, self._clock.seconds() - started)

    async def get(self, collection: Collection, namespace: str, name: str) -> Object:
        return await self._timed("get", collection, self._store.get(collection, namespace, name))

    async def list(self, collection: Collection, namespace: str | None) -> ListResult:
        return await self._timed("list", collection, self._store.list(collection, namespace))

    async def list_at(self, collection: Collection, namespace: str | None, resource_version: int) -> ListResult:
        return await self._timed("list", collection, self._store.list_at(collection, namespace, resource_version))

    async def create(self, collection: Collection, namespace: str, name: str, obj: Object) -> Object:
        return await self._timed("create", collection, self._store.create(collection, namespace, name, obj))

    async def update(self, collection: Collection, namespace: str, name: str, obj: Object,
                     expected_resource_version: int | None = None) -> Object:
        return await self._timed("update", collection, self._store.update(
            collection, namespace, name, obj, expected_resource_version=expected_resource_version))

    async def delete(self, collection: Collection, namespace: str, name: str,
                     expected_resource_version: int | None = None, expected_uid: str | None = None) -> Object:
        return await self._timed("delete", collection, self._store.delete(
            collection, namespace, name, expected_resource_version=expected_resource_version,
            expected_uid=expected_uid))

    def watch(self, collection: Collection, namespace: str | None, resource_version: int,
              on_event: Callable[[WatchEvent], None]) -> IWatch:
        return self._store.watch(collection, namespace, resource_version, on_event)

    def current_resource_version(self) -> int:
        return self._store.current_resource_version()

    def write_problem(self) -> str | None:
        return self._store.write_problem()

    async def probe_write(self) -> None:
        await self._store.probe_write()

    async def sync(self) -> None:
        await self._store.sync()

    async def close(self) -> None:
        await self._store.close()


__all__ = ["InstrumentedStore"]
