# -*- test-case-name: tests.test_migrate -*-
"""Copying every stored object from one store to another (file storage to etcd and back), for
`grafana-aggregator-migrate`.

Collections are found generically (`stored_keys` of the source: every `<group>/<resource>` it holds), so kinds
added later are copied too.  Objects are copied whole, as stored (uid, creationTimestamp, labels, annotations,
managedFields, finalizers, deletionTimestamp, status), except resourceVersion, which the target assigns.  A
target that already holds objects in the collections copied is refused unless `overwrite` is given; then the
objects of the same key are replaced by a compare-and-swap update and the target's others are kept.
"""

from __future__ import annotations

from typing import Protocol

from attrs import frozen

from .interface import Collection, ListResult, Object, StorageError

#: How many existing objects the refusal names before it says "and N more".
NAMED_IN_REFUSAL = 5

Key = tuple[str, str]


class MigratableStore(Protocol):
    """What migrate needs of a store: the IStore calls it makes, and the keys of every object it holds."""

    async def stored_keys(self) -> dict[Collection, set[Key]]: ...

    async def list(self, collection: Collection, namespace: str | None) -> ListResult: ...

    async def create(self, collection: Collection, namespace: str, name: str, obj: Object) -> Object: ...

    async def update(self, collection: Collection, namespace: str, name: str, obj: Object,
                     expected_resource_version: int | None = None) -> Object: ...

    async def close(self) -> None: ...


class MigrationError(StorageError):
    """The copy failed; the message names the object (or the objects in the way) and what to do."""


@frozen
class CollectionReport:
    """What was (or, in a dry run, would be) done to one collection."""

    collection: Collection
    created: int
    replaced: int

    @property
    def copied(self) -> int:
        return self.created + self.replaced


@frozen
class MigrationReport:
    """Per collection, what was copied; `dry_run` when nothing was written."""

    collections: tuple[CollectionReport, ...]
    dry_run: bool

    @property
    def total(self) -> int:
        return sum(report.copied for report in self.collections)

    def lines(self) -> list[str]:
        """The report for a person: one line a collection, then a total line."""
        verb = "would copy" if self.dry_run else "copied"
        lines = []
        for report in self.collections:
            replaced = f" ({report.replaced} replacing existing objects)" if report.replaced else ""
            lines.append(f"{collection_name(report.collection)}: {verb} {report.copied}{replaced}")
        lines.append(f"total: {verb} {self.total} object{'s' if self.total != 1 else ''} "
                     f"in {len(self.collections)} collection{'s' if len(self.collections) != 1 else ''}"
                     + (" (dry run: nothing written)" if self.dry_run else ""))
        return lines


def _order(collection: Collection) -> tuple[str, str]:
    return (collection.group, collection.resource)


def collection_name(collection: Collection) -> str:
    """kubectl's name of a collection: `apiservices.apiregistration.k8s.io`, or `things` for the core group."""
    return f"{collection.resource}.{collection.group}" if collection.group else collection.resource


def object_name(collection: Collection, namespace: str, name: str) -> str:
    """An object as a person names it: `externalnames.service.grafana.app grafana/web`."""
    return f"{collection_name(collection)} {namespace}/{name}" if namespace else f"{collection_name(collection)} {name}"


async def migrate(source: MigratableStore, target: MigratableStore, *, overwrite: bool = False,
                  dry_run: bool = False) -> MigrationReport:
    """Copy every object of every collection of source into target (see the module docstring).

    MigrationError when the target already holds objects of those collections (and not overwrite), or when an
    object cannot be written (naming it); a dry run checks the same and writes nothing.
    """
    keys = await source.stored_keys()
    collections = sorted((collection for collection, found in keys.items() if found), key=_order)
    present = await target.stored_keys()
    in_the_way = [(collection, namespace, name) for collection in collections
                  for namespace, name in sorted(present.get(collection, ()))]
    if in_the_way and not overwrite:
        named = ", ".join(object_name(*key) for key in in_the_way[:NAMED_IN_REFUSAL])
        more = len(in_the_way) - NAMED_IN_REFUSAL
        raise MigrationError(
            f"the target already holds {len(in_the_way)} object{'s' if len(in_the_way) != 1 else ''} in the "
            f"collections to copy ({named}{f', and {more} more' if more > 0 else ''}); nothing was copied. "
            f"Pass --overwrite to replace those of the same name (the target's others are kept)")
    reports = []
    for collection in collections:
        items = (await source.list(collection, None)).items
        existing = {}
        if collection in present:
            existing = {(o["metadata"].get("namespace", ""), o["metadata"]["name"]): o
                        for o in (await target.list(collection, None)).items}
        created = replaced = 0
        for item in items:
            metadata = item["metadata"]
            namespace, name = metadata.get("namespace", ""), metadata["name"]
            if (namespace, name) not in keys[collection]:
                continue  # written after the keys were read, or kept only while a lease lives
            copy = {**item, "metadata": {k: v for k, v in metadata.items() if k != "resourceVersion"}}
            before = existing.get((namespace, name))
            if not dry_run:
                try:
                    if before is None:
                        await target.create(collection, namespace, name, copy)
                    else:
                        await target.update(collection, namespace, name, copy,
                                            int(before["metadata"]["resourceVersion"]))
                except StorageError as error:
                    raise MigrationError(f"cannot copy {object_name(collection, namespace, name)}: {error} "
                                         f"(the objects before it were copied)") from None
            if before is None:
                created += 1
            else:
                replaced += 1
        reports.append(CollectionReport(collection, created, replaced))
    return MigrationReport(tuple(reports), dry_run)


__all__ = ["CollectionReport", "MigratableStore", "MigrationError", "MigrationReport", "collection_name", "migrate"]
