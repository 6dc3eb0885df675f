# -*- test-case-name: tests.test_registry_externalname -*-
"""Grafana's `service.grafana.app/v0alpha1` ExternalName kind: the host an APIService's backend is reached at.

Grafana's replacement for a core/v1 Service of `type: ExternalName` (grafana-aggregator.md §1): namespaced,
one spec field `host`, no status.  Unlike Grafana, which accepts any host, `spec.host` is validated here.
"""

from __future__ import annotations

import datetime
from typing import Any

from ..apimachinery.validation import is_dns1123_subdomain, is_ip, type_invalid
from ..apimachinery.strategy import type_meta_properties
from ..apimachinery.strategy import AGE_COLUMN, NAME_COLUMN, KindInfo, Object, Strategy, TableColumn, human_age
from ..apimachinery.fielderrors import FieldError, invalid, required
from ..apimachinery.gotypes import OBJECT_META_TYPE, STRING_TYPE, GoField, struct, type_meta_fields

GROUP = "service.grafana.app"
VERSION = "v0alpha1"
DESCRIPTION = (
    "ExternalName names the host that serves an aggregated API: an APIService whose spec.service refers to it "
    "(by namespace and name) is proxied to https://<spec.host>:<spec.service.port>."
)
HOST_DESCRIPTION = "The DNS name or IP address of the backend that serves the APIService."
HOST_INVALID = "must be a valid DNS subdomain or IP address"
HOST_COLUMN = TableColumn("Host", "string", "", HOST_DESCRIPTION)

#: OpenAPI v3 schema of ExternalName (Grafana publishes no descriptions; these are ours).
SCHEMA: dict[str, Any] = {
    "description": DESCRIPTION,
    "type": "object",
    "properties": {
        **type_meta_properties(),
        "spec": {
            "description": "ExternalNameSpec holds the host of the backend; its port comes from the APIService.",
            "type": "object",
            "default": {},
            "properties": {
                "host": {
                    "description": (
                        HOST_DESCRIPTION + " It must be a DNS subdomain (RFC 1123) or an IPv4 or IPv6 address "
                        "without a port."
                    ),
                    "type": "string",
                },
            },
        },
    },
    "x-kubernetes-group-version-kind": [{"group": GROUP, "kind": "ExternalName", "version": VERSION}],
}

#: Grafana's Go types (pkg/apis/service/v0alpha1): a built-in kind of its API server, so bodies decode into
#: them and strategic merge patch applies (no field has a patch strategy besides ObjectMeta's).
GO_TYPE = struct(
    "v0alpha1.ExternalName",
    *type_meta_fields(), GoField("metadata", OBJECT_META_TYPE),
    GoField("spec", struct("v0alpha1.ExternalNameSpec", GoField("host", STRING_TYPE))),
)

INFO = KindInfo(
    group=GROUP, version=VERSION, kind="ExternalName", plural="externalnames", singular="externalname",
    namespaced=True, has_status=False, schema=SCHEMA, description=DESCRIPTION, go_type=GO_TYPE,
)
#: Where ExternalNames are stored.
EXTERNALNAMES = INFO.collection


def host(obj: Object) -> str:
    """spec.host, or "" when absent or malformed."""
    spec = obj.get("spec")
    value = spec.get("host") if isinstance(spec, dict) else None
    return value if isinstance(value, str) else ""


def validate_external_name(obj: Object) -> list[FieldError]:
    """spec.host is required and must be a DNS-1123 subdomain or an IP address."""
    spec = obj.get("spec")
    if spec is None:
        spec = {}
    if not isinstance(spec, dict):
        return [type_invalid("spec", spec, "object")]
    value = spec.get("host")
    if value is None or value == "":
        return [required("spec.host")]
    if not isinstance(value, str):
        return [type_invalid("spec.host", value, "string")]
    if is_dns1123_subdomain(value) and is_ip(value):
        return [invalid("spec.host", value, HOST_INVALID)]
    return []


class ExternalNameStrategy(Strategy):
    """The strategy of `externalnames`: no status, spec.host validated, printed as NAME, HOST, AGE."""

    info = INFO
    columns = (NAME_COLUMN, HOST_COLUMN, AGE_COLUMN)

    def validate(self, obj: Object) -> list[FieldError]:
        """spec.host is required and must be a DNS subdomain or an IP address."""
        return validate_external_name(obj)

    def table_cells(self, obj: Object, now: datetime.datetime) -> list[Any]:
        """NAME, HOST and AGE."""
        meta = obj.get("metadata")
        name = meta.get("name", "") if isinstance(meta, dict) else ""
        return [name, host(obj), human_age(obj, now)]
