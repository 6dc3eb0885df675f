"""Server-side apply and managedFields tracking, after k8s.io/apimachinery's FieldManager and structured-merge-diff.

Objects are schema-less JSON: every map key is a field, lists are atomic except the list-maps the caller names
(`list_map_keys`, a dotted field path such as `status.conditions` to its key fields), and ownership is recorded in
`metadata.managedFields` in the FieldsV1 format. Single-version: managers recorded at another apiVersion are compared
against the same object.

The walks here recurse; they only ever see objects within negotiation's limits (at most MAX_DEPTH levels), and
JSON held in strings (FieldsV1 keys, kubectl's last-applied annotation) is decoded within the same limits.  An
apply that would make an object larger than negotiation.check_object_size allows is a 413.
"""

from __future__ import annotations

import json
from collections.abc import Collection, Iterable, Mapping
from datetime import datetime
from types import MappingProxyType
from typing import Any

from attrs import evolve, frozen

from grafana_aggregator.apimachinery.negotiation import (
    MAX_BODY_VALUES,
    MAX_OBJECT_VALUES,
    BodyError,
    check_object_size,
    copy_json,
    load_json,
)
from grafana_aggregator.apimachinery.patch import json_equal
from grafana_aggregator.apimachinery.gotypes import go_quote
from grafana_aggregator.apimachinery.status import StatusError

#: A path element: (0, field name), (1, list-map key fields), (2, set value) or (3, list index).
PathElement = tuple[int, Any]
#: A field path from the object's root.
Path = tuple[PathElement, ...]

LAST_APPLIED_ANNOTATION = "kubectl.kubernetes.io/last-applied-configuration"
BEFORE_FIRST_APPLY = "before-first-apply"
ANCIENT_CHANGES = "ancient-changes"
MAX_UPDATE_MANAGERS = 10

_FIELD, _KEY, _VALUE, _INDEX = range(4)
_ABSENT: Any = object()
_NO_LIST_MAPS: Mapping[str, tuple[str, ...]] = MappingProxyType({})


def _field(name: str) -> PathElement:
    """The path element of a map key."""
    return (_FIELD, name)


def _dotted(path: str) -> Path:
    """A dotted field path such as `metadata.name` as a Path."""
    return tuple(_field(part) for part in path.split("."))


#: Paths no manager ever owns (stripMetaManager's set).
_STRIPPED: frozenset[Path] = frozenset(
    [_dotted("apiVersion"), _dotted("kind"), _dotted("metadata")]
    + [_dotted("metadata." + name) for name in ("name", "namespace", "creationTimestamp", "selfLink", "uid",
                                                "clusterName", "generation", "managedFields", "resourceVersion")])


# --- values and path elements ---

def _freeze(value: Any) -> tuple[int, Any]:
    """A hashable, ordered form of a JSON value (numbers < strings < booleans < lists < maps < null)."""
    if value is None:
        return (5, None)
    if isinstance(value, bool):
        return (2, value)
    if isinstance(value, (int, float)):
        return (0, value)
    if isinstance(value, str):
        return (1, value)
    return (3 if isinstance(value, list) else 4, json.dumps(value, sort_keys=True, separators=(",", ":")))


def _thaw(frozen_value: tuple[int, Any]) -> Any:
    """The JSON value a frozen value stands for."""
    rank, payload = frozen_value
    return json.loads(payload) if rank in (3, 4) else payload


def _go_float(number: float) -> str:
    """A float as Go's %v prints it."""
    if number.is_integer() and abs(number) < 1e21:
        return str(int(number))
    return repr(number)


def _go_json(value: Any, sort_keys: bool = False) -> str:
    """Compact JSON as Go's encoding/json writes it (HTML characters escaped, integral floats without `.0`)."""
    def normalise(v: Any) -> Any:
        if isinstance(v, float) and v.is_integer() and abs(v) < 1e21:
            return int(v)
        if isinstance(v, dict):
            return {k: normalise(x) for k, x in v.items()}
        if isinstance(v, list):
            return [normalise(x) for x in v]
        return v
    text = json.dumps(normalise(value), separators=(",", ":"), ensure_ascii=False, sort_keys=sort_keys)
    for char, escape in (("<", "\\u003c"), (">", "\\u003e"), ("&", "\\u0026"), ("\u2028", "\\u2028"),
                         ("\u2029", "\\u2029")):
        text = text.replace(char, escape)
    return text


def _value_string(frozen_value: tuple[int, Any]) -> str:
    """A value as structured-merge-diff's value.ToString prints it in paths."""
    value = _thaw(frozen_value)
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return _go_float(value)
    if isinstance(value, int):
        return str(value)
    if isinstance(value, str):
        return go_quote(value)
    if isinstance(value, list):
        return "[" + ",".join(_value_string(_freeze(v)) for v in value) + "]"
    return "".join(f"{k}={_value_string(_freeze(v))}" for k, v in value.items())


def _element_string(element: PathElement) -> str:
    """A path element as fieldpath.PathElement.String prints it."""
    tag, payload = element
    if tag == _FIELD:
        return f".{payload}"
    if tag == _KEY:
        return "[" + ",".join(f"{name}={_value_string(v)}" for name, v in payload) + "]"
    if tag == _VALUE:
        return f"[={_value_string(payload)}]"
    return f"[{payload}]"


def path_string(path: Path) -> str:
    """A path as conflicts print it, e.g. `.status.conditions[type="Available"].status`."""
    return "".join(_element_string(e) for e in path)


def _element_key(element: PathElement) -> str:
    """A path element as a FieldsV1 key: `f:name`, `k:{"type":"Ready"}`, `v:"x"` or `i:0`."""
    tag, payload = element
    if tag == _FIELD:
        return f"f:{payload}"
    if tag == _KEY:
        return "k:{" + ",".join(f"{_go_json(name)}:{_go_json(_thaw(v))}" for name, v in payload) + "}"
    if tag == _VALUE:
        return "v:" + _go_json(_thaw(payload))
    return f"i:{payload}"


def _json_value(text: str) -> Any:
    """JSON held in a client's string (a FieldsV1 key), decoded within the body limits; ValueError if it is not."""
    try:
        return load_json(text.encode("utf-8", "surrogatepass")).value
    except BodyError as error:
        raise ValueError(f"invalid JSON: {error.detail}") from None


def _parse_element(text: str) -> PathElement | None:
    """A FieldsV1 key as a path element; None for an unknown kind, which is skipped; ValueError if malformed."""
    if len(text) < 2:
        raise ValueError("key must be 2 characters long:")
    if text[1] != ":":
        raise ValueError(f"missing colon: {text}")
    kind, rest = text[0], text[2:]
    if kind == "f":
        return _field(rest)
    if kind == "k":
        fields = _json_value(rest)
        if not isinstance(fields, dict):
            raise ValueError(f"invalid key element: {text}")
        return (_KEY, tuple(sorted((name, _freeze(v)) for name, v in fields.items())))
    if kind == "v":
        return (_VALUE, _freeze(_json_value(rest)))
    if kind == "i":
        return (_INDEX, int(rest))
    return None


# --- field sets ---

def _tree(paths: Iterable[Path]) -> dict[PathElement, tuple[bool, dict[PathElement, Any]]]:
    """Paths as a tree: element → (whether the path ending here is a member, children)."""
    root: dict[PathElement, Any] = {}
    for path in paths:
        node = root
        for i, element in enumerate(path):
            member, children = node.get(element, (False, {}))
            node[element] = (member or i == len(path) - 1, children)
            node = children
    return root


def fields_v1(paths: Iterable[Path]) -> dict[str, Any]:
    """A field set in the FieldsV1 format, keys in structured-merge-diff's order, `.` marking owned parents."""
    def encode(tree: dict[PathElement, Any]) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for element in sorted(tree):
            member, children = tree[element]
            inner: dict[str, Any] = {}
            if children:
                if member:
                    inner["."] = {}
                inner.update(encode(children))
            out[_element_key(element)] = inner
        return out
    return encode(_tree(paths))


def parse_fields_v1(fields: Any) -> frozenset[Path]:
    """The field set a FieldsV1 object describes; ValueError if it is malformed."""
    paths: set[Path] = set()

    def read(node: Any, prefix: Path) -> bool:
        if not isinstance(node, dict):
            raise ValueError("fieldsV1 must be an object")
        has_children = False
        member = False
        for key, child in node.items():
            if key == ".":
                member = True
                continue
            element = _parse_element(key)
            if element is None:
                continue
            has_children = True
            if read(child, prefix + (element,)):
                paths.add(prefix + (element,))
        return member or not has_children

    read(fields, ())
    return frozenset(paths)


def _iteration_order(paths: Iterable[Path]) -> list[Path]:
    """Paths in fieldpath.Set.Iterate order: at each level the members, then the children, each sorted."""
    ordered: list[Path] = []

    def walk(tree: dict[PathElement, Any], prefix: Path) -> None:
        for element in sorted(tree):
            if tree[element][0]:
                ordered.append(prefix + (element,))
        for element in sorted(tree):
            walk(tree[element][1], prefix + (element,))

    walk(_tree(paths), ())
    return ordered


def _ensure_named(paths: Iterable[Path]) -> frozenset[Path]:
    """The set plus every field ancestor of its members (EnsureNamedFieldsAreMembers; every map key is a field)."""
    result = set(paths)
    for path in list(result):
        for end in range(1, len(path)):
            if path[end - 1][0] == _FIELD:
                result.add(path[:end])
    return frozenset(result)


def _without_prefixes(paths: Iterable[Path], prefixes: Collection[Path]) -> frozenset[Path]:
    """The paths that neither are nor lie under any of the prefixes."""
    if not prefixes:
        return frozenset(paths)
    lengths = sorted({len(p) for p in prefixes})
    return frozenset(p for p in paths if not any(p[:n] in prefixes for n in lengths if n <= len(p)))


# --- the schema: which lists are list-maps ---

@frozen
class _Schema:
    """Which field paths (map keys only, list items skipped) hold list-maps, and their key fields."""

    list_maps: Mapping[tuple[str, ...], tuple[str, ...]]

    def keys(self, field_path: tuple[str, ...]) -> tuple[str, ...] | None:
        """The key fields of the list-map at this field path, or None for an atomic list."""
        return self.list_maps.get(field_path)


def _schema(list_map_keys: Mapping[str, tuple[str, ...]]) -> _Schema:
    """The schema for a caller's list_map_keys."""
    return _Schema({tuple(path.split(".")): tuple(keys) for path, keys in list_map_keys.items()})


def _item_element(item: Any, keys: tuple[str, ...]) -> PathElement:
    """The key element of a list-map item; ValueError with structured-merge-diff's message if it has none."""
    if item is None:
        raise ValueError("associative list with keys may not have a null element")
    if not isinstance(item, dict):
        raise ValueError("associative list with keys may not have non-map elements")
    fields = tuple(sorted((k, _freeze(item[k])) for k in keys if k in item))
    if not fields:
        quoted = " ".join(go_quote(k) for k in keys)
        raise ValueError(f"associative list with keys has an element that omits all key fields [{quoted}] "
                         "(and doesn't have default values for any key fields)")
    return (_KEY, fields)


def _validate(value: Any, schema: _Schema, allow_duplicates: bool, path: Path = (),
              field_path: tuple[str, ...] = ()) -> list[str]:
    """Errors converting an object to a typed value (bad or, unless allowed, duplicated list-map items)."""
    errors: list[str] = []
    if isinstance(value, dict):
        for key, child in value.items():
            errors += _validate(child, schema, allow_duplicates, path + (_field(key),), field_path + (key,))
    elif isinstance(value, list) and (keys := schema.keys(field_path)) is not None:
        seen: set[PathElement] = set()
        for i, item in enumerate(value):
            try:
                element = _item_element(item, keys)
            except ValueError as e:
                errors.append(f"{path_string(path)}: element {i}: {e}")
                return errors
            if element in seen and not allow_duplicates:
                errors.append(f"{path_string(path)}: duplicate entries for key {_element_string(element)}")
            seen.add(element)
            errors += _validate(item, schema, allow_duplicates, path + (element,), field_path)
    return errors


def _validation_message(errors: list[str]) -> str:
    """ValidationErrors.Error()."""
    return errors[0] if len(errors) == 1 else "\n  ".join(["errors:", *errors])


def _field_set(value: Any, schema: _Schema, path: Path = (), field_path: tuple[str, ...] = ()) -> set[Path]:
    """The fields an applied configuration sets (TypedValue.ToFieldSet)."""
    paths: set[Path] = set()
    if isinstance(value, dict):
        for key, child in value.items():
            child_path = path + (_field(key),)
            paths |= _field_set(child, schema, child_path, field_path + (key,))
            if child is None or child == {}:
                paths.add(child_path)
    elif isinstance(value, list) and (keys := schema.keys(field_path)) is not None:
        elements = [_item_element(item, keys) for item in value]
        duplicated = {e for e in elements if elements.count(e) > 1}
        for element, item in zip(elements, value):
            paths.add(path + (element,))
            if element not in duplicated:
                paths |= _field_set(item, schema, path + (element,), field_path)
    else:
        paths.add(path)
    return paths


@frozen
class _Comparison:
    """The fields added, modified and removed between two objects."""

    added: frozenset[Path]
    modified: frozenset[Path]
    removed: frozenset[Path]

    def without(self, prefixes: Collection[Path]) -> _Comparison:
        """The comparison with the paths under the given prefixes left out."""
        return _Comparison(_without_prefixes(self.added, prefixes), _without_prefixes(self.modified, prefixes),
                           _without_prefixes(self.removed, prefixes))


def _container_kind(value: Any, schema: _Schema, field_path: tuple[str, ...]) -> str:
    """"map", "list" (a list-map), "null", "absent" or "leaf" (scalars and atomic lists)."""
    if value is _ABSENT:
        return "absent"
    if value is None:
        return "null"
    if isinstance(value, dict):
        return "map"
    if isinstance(value, list) and schema.keys(field_path) is not None:
        return "list"
    return "leaf"


def _compare(left: Any, right: Any, schema: _Schema) -> _Comparison:
    """What changed from `left` to `right` (TypedValue.Compare)."""
    added: set[Path] = set()
    modified: set[Path] = set()
    removed: set[Path] = set()

    def leaf(lhs: Any, rhs: Any, path: Path) -> None:
        if lhs is _ABSENT:
            added.add(path)
        elif rhs is _ABSENT:
            removed.add(path)
        elif not json_equal(lhs, rhs):
            modified.add(path)

    def granular(lhs: Any, rhs: Any, path: Path, field_path: tuple[str, ...]) -> None:
        if isinstance(lhs, list) or isinstance(rhs, list):
            items(lhs if isinstance(lhs, list) else [], rhs if isinstance(rhs, list) else [], path, field_path)
        else:
            left_map = lhs if isinstance(lhs, dict) else {}
            right_map = rhs if isinstance(rhs, dict) else {}
            for key in [*left_map, *(k for k in right_map if k not in left_map)]:
                walk(left_map.get(key, _ABSENT), right_map.get(key, _ABSENT), path + (_field(key),),
                     field_path + (key,))

    def items(lhs: list[Any], rhs: list[Any], path: Path, field_path: tuple[str, ...]) -> None:
        keys = schema.keys(field_path) or ()
        left_items: dict[PathElement, list[Any]] = {}
        right_items: dict[PathElement, list[Any]] = {}
        for item in lhs:
            left_items.setdefault(_item_element(item, keys), []).append(item)
        for item in rhs:
            right_items.setdefault(_item_element(item, keys), []).append(item)
        for element in [*left_items, *(e for e in right_items if e not in left_items)]:
            lefts, rights = left_items.get(element, []), right_items.get(element, [])
            item_path = path + (element,)
            if len(lefts) <= 1 and len(rights) <= 1:
                walk(lefts[0] if lefts else _ABSENT, rights[0] if rights else _ABSENT, item_path, field_path)
            elif len(lefts) >= 2 and len(rights) >= 2:
                if not json_equal(lefts, rights):
                    modified.add(item_path)
            elif len(lefts) >= 2:
                if rights:
                    walk(_ABSENT, rights[0], item_path, field_path)
                removed.add(item_path)
            else:
                if lefts:
                    walk(lefts[0], _ABSENT, item_path, field_path)
                added.add(item_path)

    def walk(lhs: Any, rhs: Any, path: Path, field_path: tuple[str, ...]) -> None:
        kinds = {_container_kind(lhs, schema, field_path), _container_kind(rhs, schema, field_path)}
        containers = kinds & {"map", "list"}
        if len(containers) == 2 or (containers and "leaf" in kinds):
            modified.add(path)
            granular(lhs if _container_kind(lhs, schema, field_path) in containers else _ABSENT, _ABSENT,
                     path, field_path)
            granular(_ABSENT, rhs if _container_kind(rhs, schema, field_path) in containers else _ABSENT,
                     path, field_path)
            return
        empty = all(v is _ABSENT or v is None or v == {} or v == [] for v in (lhs, rhs))
        if not containers or empty:
            leaf(lhs, rhs, path)
            return
        granular(lhs, rhs, path, field_path)
        if path and lhs is _ABSENT:
            added.add(path)
        elif path and rhs is _ABSENT:
            removed.add(path)

    walk(left, right, (), ())
    return _Comparison(frozenset(added), frozenset(modified), frozenset(removed))


def _merge(live: Any, config: Any, schema: _Schema, field_path: tuple[str, ...] = ()) -> Any:
    """The applied configuration merged into the live object (TypedValue.Merge): maps and list-maps merge."""
    if live is _ABSENT:
        return copy_json(config)
    keys = schema.keys(field_path)
    if config is None:
        if (isinstance(live, dict) or (isinstance(live, list) and keys is not None)) and live:
            return copy_json(live)
        return None
    if isinstance(config, dict) and isinstance(live, dict):
        merged = {k: (_merge(v, config[k], schema, field_path + (k,)) if k in config else copy_json(v))
                  for k, v in live.items()}
        merged.update((k, copy_json(v)) for k, v in config.items() if k not in live)
        return merged
    if isinstance(config, list) and isinstance(live, list) and keys is not None and (config or live):
        return _merge_items(live, config, keys, schema, field_path)
    return copy_json(config)


def _merge_items(live: list[Any], config: list[Any], keys: tuple[str, ...], schema: _Schema,
                 field_path: tuple[str, ...]) -> list[Any]:
    """Merge list-map items: shared items take the applied order, live-only items stay where they were."""
    live_elements = [_item_element(item, keys) for item in live]
    config_elements = [_item_element(item, keys) for item in config]
    config_items = dict(zip(config_elements, config))
    live_items: dict[PathElement, Any] = {}
    for element, item in zip(live_elements, live):
        live_items[element] = None if element in live_items else item  # duplicates are not merged
    shared = iter([e for e in config_elements if e in live_items])
    next_shared = next(shared, None)
    merged_config: set[PathElement] = set()
    out: list[Any] = []
    li = ci = 0
    while li < len(live_elements) or ci < len(config_elements):
        if li < len(live_elements) and ci < len(config_elements):
            element = live_elements[li]
            if element == config_elements[ci]:
                merged_config.add(element)
                out.append(_merge(live_items[element], config_items[element], schema, field_path))
                li, ci = li + 1, ci + 1
                next_shared = next(shared, None)
                continue
            if element in config_items and next_shared is not None and next_shared != element:
                li += 1
                continue
        if li < len(live_elements):
            element = live_elements[li]
            if element not in config_items:
                out.append(copy_json(live[li]))
                li += 1
                continue
            if element in merged_config:
                li += 1
        if ci < len(config_elements):
            element = config_elements[ci]
            merged_config.add(element)
            out.append(_merge(live_items.get(element, _ABSENT), config_items[element], schema, field_path))
            ci += 1
            if next_shared is not None and next_shared == element:
                next_shared = next(shared, None)
    return out


def _prune(value: Any, last: frozenset[Path], last_prefixes: frozenset[Path], owned: frozenset[Path],
           schema: _Schema, path: Path = (), field_path: tuple[str, ...] = ()) -> Any:
    """Remove what the manager applied last time and no longer applies, unless some manager owns it (Updater.prune).

    `last` and `owned` have their field ancestors made members, as structured-merge-diff does before pruning.
    """
    def keep(element: PathElement, child: Any, child_field_path: tuple[str, ...]) -> tuple[bool, Any]:
        child_path = path + (element,)
        if child_path in last:
            if child_path not in owned:
                return False, None
            return True, _prune(child, last, last_prefixes, owned, schema, child_path, child_field_path)
        if child_path in last_prefixes:
            return True, _prune(child, last, last_prefixes, owned, schema, child_path, child_field_path)
        return True, child

    if isinstance(value, dict):
        result: dict[str, Any] = {}
        for key, child in value.items():
            kept, pruned = keep(_field(key), child, field_path + (key,))
            if kept:
                result[key] = pruned
        return result
    if isinstance(value, list) and (keys := schema.keys(field_path)) is not None:
        items: list[Any] = []
        for item in value:
            kept, pruned = keep(_item_element(item, keys), item, field_path)
            if kept:
                items.append(pruned)
        return items
    return value


# --- managers ---

@frozen
class _Manager:
    """One managedFields entry: who, how, at which version, when, and the fields owned."""

    manager: str
    operation: str
    api_version: str
    fields: frozenset[Path]
    time: str | None = None
    subresource: str = ""

    def identifier(self) -> str:
        """The manager's identity (BuildManagerIdentifier): Apply entries are one per manager whatever the version."""
        return _identifier(self.manager, self.operation, self.api_version, self.subresource)

    def describe(self) -> str:
        """How a conflict names this manager, e.g. `"kubectl-edit" using v1`."""
        text = go_quote(self.manager)
        if self.subresource:
            text += f" with subresource {go_quote(self.subresource)}"
        if self.operation == "Update":
            text += f" using {self.api_version}"
        return text

    def encode(self) -> dict[str, Any]:
        """The managedFields entry, keys in Go's order."""
        entry: dict[str, Any] = {}
        if self.manager:
            entry["manager"] = self.manager
        entry["operation"] = self.operation
        entry["apiVersion"] = self.api_version
        if self.time is not None:
            entry["time"] = self.time
        entry["fieldsType"] = "FieldsV1"
        entry["fieldsV1"] = fields_v1(self.fields)
        if self.subresource:
            entry["subresource"] = self.subresource
        return entry


def _identifier(manager: str, operation: str, api_version: str, subresource: str) -> str:
    """BuildManagerIdentifier: the entry without time and fields (and without apiVersion for Apply) as Go JSON."""
    identity: dict[str, str] = {}
    if manager:
        identity["manager"] = manager
    identity["operation"] = operation
    if operation != "Apply" and api_version:
        identity["apiVersion"] = api_version
    if subresource:
        identity["subresource"] = subresource
    return _go_json(identity)


_Managers = dict[str, _Manager]


def _seconds(time: str | None) -> int:
    """The Unix seconds of an RFC 3339 time, 0 when there is none."""
    if not time:
        return 0
    try:
        return int(datetime.fromisoformat(time).timestamp())
    except ValueError:
        return 0


def _decode_managers(entries: Any) -> _Managers:
    """metadata.managedFields as managers by identifier (DecodeManagedFields); ValueError if malformed."""
    if entries is None:
        return {}
    if not isinstance(entries, list):
        raise ValueError("managedFields must be a list")
    managers: _Managers = {}
    for i, entry in enumerate(entries):
        if not isinstance(entry, dict):
            raise ValueError(f"managed fields entry {i} must be an object")
        operation = entry.get("operation")
        if operation not in ("Apply", "Update"):
            raise ValueError("operation must be `Apply` or `Update`")
        api_version = entry.get("apiVersion")
        if not isinstance(api_version, str) or not api_version:
            raise ValueError("apiVersion must not be empty")
        fields_type = entry.get("fieldsType") or ""
        if fields_type == "":
            raise ValueError(f"missing fieldsType in managed fields entry {i}")
        if fields_type != "FieldsV1":
            raise ValueError(f"invalid fieldsType {go_quote(str(fields_type))} in managed fields entry {i}")
        fields = entry.get("fieldsV1")
        time = entry.get("time")
        manager = _Manager(
            manager=str(entry.get("manager") or ""), operation=operation, api_version=api_version,
            fields=parse_fields_v1({} if fields is None else fields),
            time=time if isinstance(time, str) else None, subresource=str(entry.get("subresource") or ""))
        managers[manager.identifier()] = manager
    return managers


def _encode_managers(obj: dict[str, Any], managers: _Managers) -> dict[str, Any]:
    """The object with its managedFields set, sorted as kube sorts them, or removed when there are none."""
    metadata = obj.get("metadata")
    if not managers:
        if isinstance(metadata, dict):
            metadata.pop("managedFields", None)
        return obj
    if not isinstance(metadata, dict):
        metadata = obj["metadata"] = {}
    ordered = sorted(managers.values(), key=lambda m: (m.operation, _seconds(m.time), m.manager, m.api_version,
                                                       m.subresource))
    metadata["managedFields"] = [m.encode() for m in ordered]
    return obj


def _without_managed_fields(obj: Any) -> Any:
    """A copy of the object without metadata.managedFields."""
    result = copy_json(obj)
    if isinstance(result, dict) and isinstance(result.get("metadata"), dict):
        result["metadata"].pop("managedFields", None)
    return result


def _update_ownership(live: Any, new: Any, managers: _Managers, actor: str, force: bool,
                      reset: Collection[Path], schema: _Schema) -> tuple[_Managers, _Comparison]:
    """Updater.update: others lose the fields that changed (or, unless forced, conflict) and those removed."""
    comparison = _compare(_without_managed_fields(live), _without_managed_fields(new), schema).without(reset)
    changed = comparison.modified | comparison.added
    conflicts: list[tuple[str, Path]] = []
    result: _Managers = {}
    for identifier in sorted(managers):
        manager = managers[identifier]
        if identifier == actor:
            result[identifier] = manager
            continue
        lost = manager.fields & changed
        conflicts += [(identifier, path) for path in _iteration_order(lost)]
        result[identifier] = evolve(manager, fields=manager.fields - lost - comparison.removed)
    if conflicts and not force:
        raise _Conflicts(tuple((managers[i], p) for i, p in conflicts))
    return {i: m for i, m in result.items() if m.fields}, comparison


class _Conflicts(Exception):
    """Apply conflicts: (other manager, path) pairs."""

    def __init__(self, conflicts: tuple[tuple[_Manager, Path], ...]):
        super().__init__("apply conflicts")
        self.conflicts = conflicts

    def status_error(self) -> StatusError:
        """The 409 kube-apiserver returns (NewConflictError)."""
        causes = [{"reason": "FieldManagerConflict", "message": f"conflict with {m.describe()}",
                   "field": path_string(p)} for m, p in self.conflicts]
        if len(self.conflicts) == 1:
            manager, path = self.conflicts[0]
            message = f"Apply failed with 1 conflict: conflict with {manager.describe()}: {path_string(path)}"
        else:
            by_manager: dict[str, tuple[_Manager, list[Path]]] = {}
            for manager, path in self.conflicts:
                by_manager.setdefault(manager.identifier(), (manager, []))[1].append(path)
            lines: list[str] = []
            for identifier in sorted(by_manager):
                manager, paths = by_manager[identifier]
                lines.append(f"conflicts with {manager.describe()}:")
                lines += [f"- {path_string(p)}" for p in paths]
            message = f"Apply failed with {len(self.conflicts)} conflicts: " + "\n".join(lines)
        return StatusError(409, message, "Conflict", {"causes": causes})


def _record_update(live: Any, new: Any, managers: _Managers, manager: str, operation: str, now: str,
                   api_version: str, subresource: str, reset: Collection[Path], schema: _Schema) -> _Managers:
    """The managers after an Update-style write by `manager` (structured Update, stripped, timed and capped)."""
    identifier = _identifier(manager or "unknown", operation, api_version, subresource)
    managers, comparison = _update_ownership(live, new, managers, "", True, reset, schema)
    changed = _without_prefixes(comparison.modified | comparison.added, reset) - _STRIPPED
    if changed:
        previous = managers.get(identifier)
        managers[identifier] = _Manager(
            manager=manager or "unknown", operation=operation, api_version=api_version,
            fields=changed | (previous.fields if previous else frozenset()), time=now, subresource=subresource)
    return _cap_update_managers(managers)


def _cap_update_managers(managers: _Managers) -> _Managers:
    """Merge the oldest Update managers into `ancient-changes` past ten of them (capManagersManager)."""
    updaters = [i for i, m in managers.items() if m.operation != "Apply"]
    if len(updaters) <= MAX_UPDATE_MANAGERS:
        return managers
    managers = dict(managers)
    updaters.sort(key=lambda i: (_seconds(managers[i].time), i))
    first_by_version: dict[str, str] = {}
    remaining = len(updaters)
    for identifier in updaters:
        if remaining <= MAX_UPDATE_MANAGERS:
            break
        manager = managers[identifier]
        version = manager.api_version
        bucket = _identifier(ANCIENT_CHANGES, "Update", version, "")
        if version not in first_by_version:
            first_by_version[version] = identifier
            continue
        if bucket not in managers:
            first = managers.pop(first_by_version[version])
            managers[bucket] = _Manager(ANCIENT_CHANGES, "Update", version, first.fields, first.time)
        managers[bucket] = _Manager(ANCIENT_CHANGES, "Update", version, manager.fields | managers[bucket].fields,
                                    manager.time)
        del managers[identifier]
        remaining -= 1
    return managers


# --- public entry points ---

def _metadata(obj: Any) -> dict[str, Any]:
    """The object's metadata map, or an empty one."""
    metadata = obj.get("metadata") if isinstance(obj, dict) else None
    return metadata if isinstance(metadata, dict) else {}


def _reset_paths(reset_fields: Collection[str]) -> frozenset[Path]:
    """Dotted reset field paths as Paths."""
    return frozenset(_dotted(f) for f in reset_fields)


def _remove_paths(obj: dict[str, Any], paths: Collection[Path]) -> dict[str, Any]:
    """A copy of the object without the fields at the given (field-only) paths."""
    result: dict[str, Any] = copy_json(obj)
    for path in paths:
        node: Any = result
        for _, name in path[:-1]:
            node = node.get(name) if isinstance(node, dict) else None
        if isinstance(node, dict):
            node.pop(path[-1][1], None)
    return result


def _gvk_string(obj: Mapping[str, Any]) -> str:
    """The object's GroupVersionKind as Go prints it, e.g. `apiregistration.k8s.io/v1, Kind=APIService`."""
    api_version = obj.get("apiVersion")
    kind = obj.get("kind")
    api_version = api_version if isinstance(api_version, str) else ""
    kind = kind if isinstance(kind, str) else ""
    parts = api_version.split("/")
    if api_version == "":
        group, version = "", ""
    elif len(parts) == 1:
        group, version = "", parts[0]
    elif len(parts) == 2:
        group, version = parts
    else:
        group, version = "", ""
    return f"{group}/{version}, Kind={kind}"


def _describe_object(obj: Any) -> str:
    """objectGVKNN: `namespace/name; group/version, Kind=Kind`."""
    metadata = _metadata(obj)
    return f"{metadata.get('namespace') or ''}/{metadata.get('name') or ''}; {_gvk_string(obj)}"


def update_managed_fields(old: dict[str, Any] | None, new: dict[str, Any], manager: str, operation: str,
                          now: str, api_version: str, *, subresource: str = "", reset_fields: Collection[str] = (),
                          list_map_keys: Mapping[str, tuple[str, ...]] = _NO_LIST_MAPS) -> dict[str, Any]:
    """`new` with its managedFields updated for a create, update or non-apply patch by `manager`.

    As kube's FieldManager.UpdateNoErrors: `manager` takes every field it added or changed (others lose them),
    everyone loses removed fields, managedFields sent in `new` replace the stored ones (an empty list resets them),
    an existing object that has no managedFields stays untracked, and past ten Update managers the oldest merge
    into `ancient-changes`. `old` is None for a create.
    """
    schema = _schema(list_map_keys)
    reset = _reset_paths(reset_fields)
    live = old if old is not None else {}
    result: dict[str, Any] = copy_json(new)
    live_entries = _metadata(live).get("managedFields")
    try:
        live_managers = _decode_managers(live_entries)
    except ValueError:
        live_managers = {}
    sent = _metadata(new).get("managedFields", _ABSENT)
    managers = live_managers
    if not subresource and sent is not _ABSENT and sent is not None:
        if sent == [] or sent == [{}]:
            managers = {}
        else:
            try:
                managers = _decode_managers(sent) or live_managers
            except ValueError:
                managers = live_managers
    _encode_managers(result, {})
    if not managers and _metadata(live).get("uid"):
        return result
    if _validate(new, schema, True) or _validate(live, schema, True):
        if live_entries is not None:
            metadata = result.setdefault("metadata", {})
            if isinstance(metadata, dict):
                metadata["managedFields"] = copy_json(live_entries)
        return result
    managers = _record_update(live, result, managers, manager, operation, now, api_version, subresource, reset,
                              schema)
    return _encode_managers(result, managers)


def server_side_apply(live: dict[str, Any] | None, applied: dict[str, Any], manager: str, force: bool, now: str,
                      api_version: str, reset_fields: Collection[str] = (), *,
                      list_map_keys: Mapping[str, tuple[str, ...]] = _NO_LIST_MAPS, kind: str | None = None,
                      subresource: str = "", max_values: int = MAX_OBJECT_VALUES) -> dict[str, Any]:
    """The object after `manager` applies `applied` (an `application/apply-patch+yaml` body) to `live`.

    `live` is None when the apply creates the object. The manager comes to own exactly the applied fields; fields it
    applied before and no longer applies are removed unless another manager owns them; changing a field another
    manager owns is a 409 conflict unless `force` moves it. Fields under `reset_fields` are neither applied nor
    owned. `kind` (default: the live object's) and `api_version` must match the applied object's.
    """
    check_object_size(applied, "the applied configuration", max_values)
    schema = _schema(list_map_keys)
    reset = _reset_paths(reset_fields)
    expected_kind = kind if kind is not None else (live or applied).get("kind")
    if applied.get("apiVersion") != api_version or applied.get("kind") != expected_kind:
        raise StatusError(400, f"invalid object type: {_gvk_string(applied)}", "BadRequest")
    live_object = copy_json(live) if live is not None else {"apiVersion": api_version, "kind": expected_kind}
    try:
        managers = _decode_managers(_metadata(live_object).get("managedFields"))
    except ValueError as e:
        raise StatusError(500, f"failed to decode managed fields: {e}", "InternalError") from None

    def attempt(forced: bool) -> dict[str, Any]:
        return _apply(live_object, applied, managers, manager, forced, now, api_version, subresource, reset, schema)

    try:
        result = attempt(force)
    except _Conflicts as conflicts:
        allowed = _allowed_by_last_applied(live_object, api_version, schema) if manager == "kubectl" else None
        if allowed is None:
            raise conflicts.status_error() from None
        remaining = tuple((m, p) for m, p in conflicts.conflicts if p not in allowed)
        if remaining:
            raise _Conflicts(remaining).status_error() from None
        result = attempt(True)
    annotations = _metadata(result).get("annotations")
    if manager == "kubectl" and isinstance(annotations, dict) and annotations.get(LAST_APPLIED_ANNOTATION):
        annotations[LAST_APPLIED_ANNOTATION] = _last_applied(applied)
    check_object_size(result, "the applied object", max_values)
    return result


def _apply(live: dict[str, Any], applied: dict[str, Any], managers: _Managers, manager: str, force: bool,
           now: str, api_version: str, subresource: str, reset: frozenset[Path], schema: _Schema) -> dict[str, Any]:
    """One apply attempt (skipNonApplied, structured Apply, stripMeta and managedFieldsUpdater)."""
    errors = _validate(live, schema, True)
    if errors:
        raise StatusError(500, f"failed to create typed live object ({_describe_object(live)}): "
                               f"{_validation_message(errors)}", "InternalError")
    if not managers:
        empty = {"apiVersion": live.get("apiVersion"), "kind": live.get("kind")}
        managers = _record_update(empty, live, {}, BEFORE_FIRST_APPLY, "Update", now, api_version, subresource,
                                  reset, schema)
    if isinstance(_metadata(applied).get("managedFields"), list):
        raise StatusError(400, "metadata.managedFields must be nil", "BadRequest")
    errors = _validate(applied, schema, False)
    if errors:
        raise StatusError(500, f"failed to create typed patch object ({_describe_object(applied)}): "
                               f"{_validation_message(errors)}", "InternalError")
    config = _remove_paths(applied, reset)
    merged = _merge(live, config, schema)
    identifier = _identifier(manager, "Apply", api_version, subresource)
    previous = managers.get(identifier)
    managers = dict(managers)
    managers[identifier] = _Manager(manager, "Apply", api_version,
                                    _without_prefixes(_field_set(config, schema), reset),
                                    previous.time if previous else None, subresource)
    if previous is not None and previous.fields:
        last = _ensure_named(previous.fields)
        owned = _ensure_named(frozenset().union(*(m.fields for m in managers.values())) | _STRIPPED)
        prefixes = frozenset(p[:n] for p in last for n in range(1, len(p)))
        merged = _prune(merged, last, prefixes, owned, schema)
    managers, _ = _update_ownership(live, merged, managers, identifier, force, reset, schema)
    mine = managers.pop(identifier, None)
    if mine is not None and mine.fields - _STRIPPED:
        managers[identifier] = evolve(mine, fields=mine.fields - _STRIPPED)
    if json_equal(live, merged):
        result = _without_managed_fields(live)
    else:
        result = merged
        if identifier in managers:
            managers[identifier] = evolve(managers[identifier], time=now)
    return _encode_managers(result, managers)


def _allowed_by_last_applied(live: dict[str, Any], api_version: str, schema: _Schema) -> frozenset[Path] | None:
    """Fields kubectl's last-applied annotation set to the value still live: `kubectl` may take them over."""
    annotations = _metadata(live).get("annotations")
    text = annotations.get(LAST_APPLIED_ANNOTATION) if isinstance(annotations, dict) else None
    if not isinstance(text, str) or not text:
        return None
    try:
        last_applied = load_json(text.encode("utf-8", "surrogatepass"), MAX_BODY_VALUES).value
    except BodyError:
        return None
    if not isinstance(last_applied, dict) or not last_applied.get("kind"):
        return None
    if last_applied.get("apiVersion") != api_version or _validate(last_applied, schema, False):
        return None
    comparison = _compare(last_applied, live, schema)
    return frozenset(_field_set(last_applied, schema)) - comparison.modified - comparison.added - comparison.removed


def _last_applied(applied: dict[str, Any]) -> str:
    """The last-applied annotation value kube writes for an apply by kubectl: the applied object as JSON."""
    value = copy_json(applied)
    annotations = _metadata(value).get("annotations")
    if isinstance(annotations, dict):
        annotations.pop(LAST_APPLIED_ANNOTATION, None)
    return _go_json(value, sort_keys=True) + "\n"
