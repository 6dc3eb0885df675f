"""Server-side printing: the meta.k8s.io/v1 Table that `kubectl get` asks for, built from a kind's columns.

Every verb that answers with objects can be asked for a Table, so this sits below all of them.
"""

from __future__ import annotations

import datetime
from collections.abc import Sequence
from typing import Any

from .status import StatusError
from .strategy import Object, Strategy


def table_of(kind: Strategy, items: Sequence[Object], list_meta: dict[str, Any], now: datetime.datetime,
             include: str) -> dict[str, Any]:
    """A meta.k8s.io/v1 Table of objects of one kind, its rows carrying the objects as includeObject asks."""
    if include not in ("None", "Metadata", "Object"):
        raise StatusError(400, f'includeObject: Unsupported value: "{include}"', "BadRequest")
    rows = []
    for item in items:
        row: dict[str, Any] = {"cells": kind.table_cells(item, now)}
        if include == "Object":
            row["object"] = item
        elif include == "Metadata":
            row["object"] = {"kind": "PartialObjectMetadata", "apiVersion": "meta.k8s.io/v1",
                             "metadata": item.get("metadata", {})}
        rows.append(row)
    return {
        "kind": "Table",
        "apiVersion": "meta.k8s.io/v1",
        "metadata": list_meta,
        "columnDefinitions": [c.to_json() for c in kind.columns],
        "rows": rows,
    }
