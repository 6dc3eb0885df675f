# -*- test-case-name: tests.test_jsonpath -*-
"""Kubernetes JSONPath, the part CRD printer columns and selectable fields use, evaluated over decoded JSON.

kube evaluates `additionalPrinterColumns[*].jsonPath` with client-go's jsonpath package (wrapped as `{<path>}`).
This parser takes the same expressions: fields (`.spec.replicas`), quoted keys (`['app.kubernetes.io/name']`),
indexes (`[0]`, `[-1]`), slices (`[1:3]`), wildcards (`[*]`, `.*`), recursive descent (`..name`) and filters
(`[?(@.type=="Ready")]`, with `==`, `!=`, `<`, `<=`, `>`, `>=` against a quoted string or a number, or
`[?(@.key)]` for presence).  A path that matches nothing gives no results, as kube's `allowMissingKeys` does.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from typing import Any

from attrs import frozen


class JSONPathError(ValueError):
    """The expression is not a JSONPath this evaluator (and kube) accepts."""


@frozen
class _Field:
    name: str


@frozen
class _Wildcard:
    pass


@frozen
class _Recursive:
    pass


@frozen
class _Index:
    start: int | None
    end: int | None
    single: bool


@frozen
class _Filter:
    path: tuple[Any, ...]
    op: str | None
    value: Any


Step = _Field | _Wildcard | _Recursive | _Index | _Filter

_NAME = re.compile(r"[A-Za-z0-9_$\-/]+")
_FILTER = re.compile(r"\?\(\s*@((?:\.[A-Za-z0-9_\-/]+|\['[^']*'\])*)\s*(?:(==|!=|<=|>=|<|>)\s*(.+?))?\s*\)$")


def parse(expression: str) -> tuple[Step, ...]:
    """The steps of a path like `.status.conditions[?(@.type=="Ready")].status` (braces `{...}` allowed)."""
    text = expression.strip()
    if text.startswith("{") and text.endswith("}"):
        text = text[1:-1].strip()
    if text.startswith("$"):
        text = text[1:]
    steps: list[Step] = []
    position = 0
    while position < len(text):
        char = text[position]
        if text.startswith("..", position):
            steps.append(_Recursive())
            position += 2
            match = _NAME.match(text, position)
            if match:
                steps.append(_Field(match.group()))
                position = match.end()
            continue
        if char == ".":
            position += 1
            if position < len(text) and text[position] == "*":
                steps.append(_Wildcard())
                position += 1
                continue
            match = _NAME.match(text, position)
            if not match:
                if position >= len(text):
                    break  # a lone "." is the object itself
                raise JSONPathError(f"unrecognized character in action: {text[position]!r} in {expression!r}")
            steps.append(_Field(match.group()))
            position = match.end()
            continue
        if char == "[":
            end = _closing_bracket(text, position, expression)
            steps.append(_bracket(text[position + 1:end].strip(), expression))
            position = end + 1
            continue
        raise JSONPathError(f"unrecognized character in action: {char!r} in {expression!r}")
    return tuple(steps)


def _closing_bracket(text: str, start: int, expression: str) -> int:
    depth, quote = 0, ""
    for position in range(start, len(text)):
        char = text[position]
        if quote:
            if char == quote:
                quote = ""
            continue
        if char in "'\"":
            quote = char
        elif char in "[(":
            depth += 1
        elif char in "])":
            depth -= 1
            if depth == 0:
                return position
    raise JSONPathError(f"unterminated array in {expression!r}")


def _bracket(inner: str, expression: str) -> Step:
    if inner == "*":
        return _Wildcard()
    if len(inner) >= 2 and inner[0] == inner[-1] and inner[0] in "'\"":
        return _Field(inner[1:-1])
    if inner.startswith("?"):
        match = _FILTER.match(inner)
        if not match:
            raise JSONPathError(f"invalid filter {inner!r} in {expression!r}")
        path = parse(match.group(1)) if match.group(1) else ()
        value: Any = None
        if match.group(2):
            literal = match.group(3).strip()
            if len(literal) >= 2 and literal[0] == literal[-1] and literal[0] in "'\"":
                value = literal[1:-1]
            else:
                try:
                    value = json.loads(literal)
                except ValueError:
                    raise JSONPathError(f"invalid filter value {literal!r} in {expression!r}") from None
        return _Filter(path, match.group(2), value)
    if ":" in inner:
        start, _, end = inner.partition(":")
        end = end.partition(":")[0]
        try:
            return _Index(int(start) if start.strip() else None, int(end) if end.strip() else None, False)
        except ValueError:
            raise JSONPathError(f"invalid array index {inner!r} in {expression!r}") from None
    try:
        return _Index(int(inner), None, True)
    except ValueError:
        raise JSONPathError(f"invalid array index {inner!r} in {expression!r}") from None


def find(obj: Any, expression: str | tuple[Step, ...]) -> list[Any]:
    """Every value the path selects in obj, in document order (empty when nothing matches)."""
    steps = parse(expression) if isinstance(expression, str) else expression
    return list(_walk([obj], steps))


def _walk(values: list[Any], steps: tuple[Step, ...]) -> Iterator[Any]:
    if not steps:
        yield from values
        return
    step, rest = steps[0], steps[1:]
    following: list[Any] = []
    for value in values:
        following.extend(_apply(step, value))
    yield from _walk(following, rest)


def _apply(step: Step, value: Any) -> list[Any]:
    if isinstance(step, _Field):
        return [value[step.name]] if isinstance(value, dict) and step.name in value else []
    if isinstance(step, _Wildcard):
        if isinstance(value, dict):
            return [value[key] for key in sorted(value)]
        return list(value) if isinstance(value, list) else []
    if isinstance(step, _Recursive):
        return list(_descendants(value))
    if isinstance(step, _Index):
        if not isinstance(value, list):
            return []
        if step.single:
            index = step.start if step.start is not None else 0
            if -len(value) <= index < len(value):
                return [value[index]]
            return []
        return value[step.start:step.end]
    items = value if isinstance(value, list) else [value] if isinstance(value, dict) else []
    return [item for item in items if _matches(step, item)]


def _descendants(value: Any) -> Iterator[Any]:
    yield value
    children = [value[key] for key in sorted(value)] if isinstance(value, dict) else value if isinstance(value, list) else []
    for child in children:
        yield from _descendants(child)


def _matches(step: _Filter, item: Any) -> bool:
    found = list(_walk([item], step.path))
    if step.op is None:
        return bool(found)
    if not found:
        return False
    left, right = found[0], step.value
    if step.op == "==":
        return bool(left == right)
    if step.op == "!=":
        return bool(left != right)
    if isinstance(left, bool) or isinstance(right, bool):
        return False
    if isinstance(left, (int, float)) and isinstance(right, (int, float)):
        pass
    elif not (isinstance(left, str) and isinstance(right, str)):
        return False
    if step.op == "<":
        return bool(left < right)
    if step.op == "<=":
        return bool(left <= right)
    if step.op == ">":
        return bool(left > right)
    return bool(left >= right)


__all__ = ["JSONPathError", "find", "parse"]
