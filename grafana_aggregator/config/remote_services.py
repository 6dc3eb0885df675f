# -*- test-case-name: tests.test_remote_services -*-
"""The `remote_services_file`: the remote API servers to register at startup (grafana-aggregator.md §2.2).

The file is what Grafana reads: a top-level YAML sequence whose items are mappings with the keys
`group`, `version`, `host` and `port`.  An empty file, or `[]`, lists no services.  Grafana ignores
unknown keys and turns missing ones into ""/0; here any of that stops startup instead, with a
message naming the file, the entry (numbered from 1 in file order, which is also its
versionPriority) and the field.
"""

from __future__ import annotations

from typing import Any

import yaml
from attrs import frozen

from ..apimachinery.validation import go_json, is_dns1035_label, is_dns1123_subdomain, is_ip

#: The keys of an entry, in the order they are checked and reported.
KEYS = ("group", "version", "host", "port")
#: The longest name an APIService (`<version>.<group>`) can have and still be stored.
MAX_NAME_LENGTH = 253


class RemoteServicesError(ValueError):
    """The remote services file cannot be read, or one of its entries is malformed."""


@frozen
class RemoteService:
    """One entry of the file: the group-version `host:port` serves."""

    group: str
    version: str
    host: str
    port: int

    @property
    def name(self) -> str:
        """The name of its APIService and of its ExternalName: `<version>.<group>`."""
        return f"{self.version}.{self.group}"


def _describe(value: Any) -> str:
    """A YAML node's kind, for `must be a list, got a mapping`."""
    if value is None:
        return "null"
    if isinstance(value, dict):
        return "a mapping"
    if isinstance(value, list):
        return "a list"
    return go_json(value)


def _entry_label(number: int, raw: dict[str, Any]) -> str:
    """`entry 2 (example.grafana.app/v0alpha1)`, with as much of the group/version as is known."""
    group, version = raw.get("group"), raw.get("version")
    known = [str(part) for part in (group, version) if isinstance(part, str) and part]
    return f"entry {number} ({'/'.join(known)})" if known else f"entry {number}"


class _FieldProblem(Exception):
    """A problem with one field of one entry; turned into a RemoteServicesError with the file and entry."""

    def __init__(self, key: str, problem: str):
        super().__init__(key, problem)
        self.key = key
        self.problem = problem


def _string(raw: dict[str, Any], key: str) -> str:
    value = raw.get(key)
    if not isinstance(value, str):
        raise _FieldProblem(key, f"must be a string, got {_describe(value)}")
    if not value:
        raise _FieldProblem(key, "must not be empty")
    return value


def _parse_entry(raw: dict[str, Any]) -> RemoteService:
    """The entry as a RemoteService, or the first _FieldProblem, in KEYS order."""
    unknown = [key for key in raw if key not in KEYS]
    if unknown:
        raise _FieldProblem(str(unknown[0]), f"unknown key (the keys are {', '.join(KEYS)})")
    for key in KEYS:
        if key not in raw:
            raise _FieldProblem(key, "required")
    group = _string(raw, "group")
    problems = is_dns1123_subdomain(group)
    if problems:
        raise _FieldProblem("group", f"{'; '.join(problems)}, got {go_json(group)}")
    version = _string(raw, "version")
    problems = is_dns1035_label(version)
    if problems:
        raise _FieldProblem("version", f"{'; '.join(problems)}, got {go_json(version)}")
    if len(f"{version}.{group}") > MAX_NAME_LENGTH:
        raise _FieldProblem("group", f"the APIService name {version}.{group} is longer than {MAX_NAME_LENGTH} "
                                     "characters")
    host = _string(raw, "host")
    if is_dns1123_subdomain(host) and is_ip(host):
        raise _FieldProblem("host", f"must be a DNS name (RFC 1123 subdomain) or an IP address, got {go_json(host)}")
    port = raw["port"]
    if not isinstance(port, int) or isinstance(port, bool) or not 1 <= port <= 65535:
        raise _FieldProblem("port", f"must be an integer from 1 to 65535, got {_describe(port)}")
    return RemoteService(group=group, version=version, host=host, port=port)


def parse_remote_services(document: Any, path: str) -> list[RemoteService]:
    """The services of an already-parsed YAML document; RemoteServicesError names `path` in its message."""
    where = f"remote_services_file {path}"
    if document is None:
        return []
    if not isinstance(document, list):
        raise RemoteServicesError(f"{where}: must be a YAML list of entries with keys {', '.join(KEYS)}, "
                                  f"got {_describe(document)}")
    services: list[RemoteService] = []
    numbers: dict[str, int] = {}
    for number, raw in enumerate(document, start=1):
        if not isinstance(raw, dict):
            raise RemoteServicesError(f"{where}: entry {number}: must be a mapping with keys {', '.join(KEYS)}, "
                                      f"got {_describe(raw)}")
        try:
            service = _parse_entry(raw)
        except _FieldProblem as problem:
            raise RemoteServicesError(f"{where}: {_entry_label(number, raw)}: {problem.key}: {problem.problem}") \
                from None
        first = numbers.setdefault(service.name, number)
        if first != number:
            raise RemoteServicesError(f"{where}: {_entry_label(number, raw)}: group/version: "
                                      f"already listed by entry {first}")
        services.append(service)
    return services


def load_remote_services(path: str) -> list[RemoteService]:
    """Read and check the remote services file; RemoteServicesError on any problem."""
    where = f"remote_services_file {path}"
    try:
        with open(path, "rb") as handle:
            content = handle.read()
    except OSError as error:
        raise RemoteServicesError(f"{where}: cannot read: {error.strerror or error}") from None
    try:
        document = yaml.safe_load(content)
    except yaml.YAMLError as error:
        raise RemoteServicesError(f"{where}: not valid YAML: {_yaml_problem(error)}") from None
    return parse_remote_services(document, path)


def _yaml_problem(error: yaml.YAMLError) -> str:
    """The problem and where it is, on one line."""
    if isinstance(error, yaml.MarkedYAMLError) and error.problem_mark is not None:
        mark = error.problem_mark
        return f"{error.problem} (line {mark.line + 1}, column {mark.column + 1})"
    return " ".join(str(error).split())
