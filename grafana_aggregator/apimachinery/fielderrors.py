"""Validation failures as k8s.io/apimachinery's field.Error: a reason, a JSON path and kube's exact message."""

from __future__ import annotations

import json
from typing import Any

from attrs import frozen


@frozen
class FieldError:
    """One validation failure, as k8s.io/apimachinery's field.Error.

    reason is the cause type (FieldValueRequired, FieldValueInvalid, FieldValueNotSupported,
    FieldValueDuplicate, FieldValueForbidden, FieldValueTooLong, FieldValueTypeInvalid); path is the
    JSON path (`spec.service.port`); message is the full text after the path, for example
    `Required value` or `Invalid value: 0: must be positive and less than 20000`.
    """

    reason: str
    path: str
    message: str

    def __str__(self) -> str:
        return f"{self.path}: {self.message}"


def required(path: str, detail: str = "") -> FieldError:
    """field.Required."""
    return FieldError("FieldValueRequired", path, "Required value" + (f": {detail}" if detail else ""))


def invalid(path: str, value: Any, detail: str) -> FieldError:
    """field.Invalid: the value is printed Go-style (strings quoted, numbers bare)."""
    return FieldError("FieldValueInvalid", path, f"Invalid value: {go_value(value)}" + (f": {detail}" if detail else ""))


def not_supported(path: str, value: Any, supported: list[str]) -> FieldError:
    """field.NotSupported."""
    quoted = ", ".join(f'"{s}"' for s in supported)
    return FieldError("FieldValueNotSupported", path, f"Unsupported value: {go_value(value)}: supported values: {quoted}")


def forbidden(path: str, detail: str) -> FieldError:
    """field.Forbidden."""
    return FieldError("FieldValueForbidden", path, f"Forbidden: {detail}")


def too_long(path: str, limit: int) -> FieldError:
    """field.TooLong (as of Kubernetes 1.32)."""
    return FieldError("FieldValueTooLong", path, f"Too long: may not be more than {limit} bytes")


def go_value(value: Any) -> str:
    """Render a value as Go's %#v would for the simple types field errors carry."""
    if isinstance(value, str):
        return json.dumps(value)
    if isinstance(value, bool):
        return "true" if value else "false"
    if value is None:
        return "null"
    return str(value)
