"""Tests for L{grafana_aggregator.config.remote_services}: reading and checking the C{remote_services_file}."""

from __future__ import annotations

import os
from pathlib import Path

from twisted.trial.unittest import SynchronousTestCase

from grafana_aggregator.apimachinery.validation import (
    DNS1035_LABEL_ERR,
    DNS1035_LABEL_FMT,
    DNS1123_SUBDOMAIN_ERR,
    DNS1123_SUBDOMAIN_FMT,
)
from grafana_aggregator.config.remote_services import RemoteService, RemoteServicesError, load_remote_services

REPO_ROOT = Path(__file__).resolve().parent.parent
GROUP_PROBLEM = (f"{DNS1123_SUBDOMAIN_ERR} (e.g. 'example.com', regex used for validation is "
                 f"'{DNS1123_SUBDOMAIN_FMT}')")
VERSION_PROBLEM = f"{DNS1035_LABEL_ERR} (e.g. 'my-name' or 'abc-123', regex used for validation is '{DNS1035_LABEL_FMT}')"

GOOD = """\
- group: example.grafana.app
  version: v0alpha1
  host: localhost
  port: 7443
"""


class LoadRemoteServicesTests(SynchronousTestCase):
    """load_remote_services reads what Grafana reads and refuses malformed entries with a precise message."""

    def write(self, text: str) -> str:
        """Write text to a new file and return its path."""
        path = str(self.mktemp())
        with open(path, "w", encoding="utf-8") as handle:
            handle.write(text)
        return path

    def error(self, text: str) -> tuple[str, str]:
        """The path of a file holding text and the message load_remote_services raises for it."""
        path = self.write(text)
        with self.assertRaises(RemoteServicesError) as caught:
            load_remote_services(path)
        return path, str(caught.exception)

    def entry_error(self, entry: str, before: str = GOOD) -> tuple[str, str]:
        """Like error, for a file with a good first entry and then the given (block-style) second entry."""
        return self.error(before + entry)

    def test_entries(self) -> None:
        """Entries become RemoteServices in file order."""
        path = self.write(GOOD + "- {group: query.grafana.app, version: v0alpha1, host: 10.0.0.7, port: 7444}\n")
        self.assertEqual(load_remote_services(path), [
            RemoteService("example.grafana.app", "v0alpha1", "localhost", 7443),
            RemoteService("query.grafana.app", "v0alpha1", "10.0.0.7", 7444),
        ])

    def test_name(self) -> None:
        """The name of a service is `<version>.<group>`."""
        self.assertEqual(RemoteService("example.grafana.app", "v0alpha1", "localhost", 7443).name,
                         "v0alpha1.example.grafana.app")

    def test_ipv6_host(self) -> None:
        """A canonical IPv6 address is a host."""
        path = self.write("- {group: a.example, version: v1, host: '::1', port: 443}\n")
        self.assertEqual(load_remote_services(path), [RemoteService("a.example", "v1", "::1", 443)])

    def test_empty_file(self) -> None:
        """An empty file lists no services."""
        self.assertEqual(load_remote_services(self.write("")), [])

    def test_comments_only(self) -> None:
        """A file with only comments lists no services."""
        self.assertEqual(load_remote_services(self.write("# nothing yet\n")), [])

    def test_empty_list(self) -> None:
        """`[]` lists no services."""
        self.assertEqual(load_remote_services(self.write("[]\n")), [])

    def test_missing_file(self) -> None:
        """A file that cannot be read is named with the reason."""
        path = os.path.join(self.mktemp(), "absent.yaml")
        with self.assertRaises(RemoteServicesError) as caught:
            load_remote_services(path)
        self.assertEqual(str(caught.exception), f"remote_services_file {path}: cannot read: No such file or directory")

    def test_error_is_value_error(self) -> None:
        """RemoteServicesError is a ValueError."""
        self.assertTrue(issubclass(RemoteServicesError, ValueError))

    def test_invalid_yaml(self) -> None:
        """A YAML syntax error names the problem, line and column."""
        path, message = self.error("- group: [a\n")
        self.assertEqual(message, f"remote_services_file {path}: not valid YAML: expected ',' or ']', but got "
                                  "'<stream end>' (line 2, column 1)")

    def test_mapping_at_top(self) -> None:
        """The document must be a list, as in Grafana, not a mapping."""
        path, message = self.error("services:\n" + GOOD)
        self.assertEqual(message, f"remote_services_file {path}: must be a YAML list of entries with keys group, "
                                  "version, host, port, got a mapping")

    def test_scalar_at_top(self) -> None:
        """A scalar document is refused with its value."""
        path, message = self.error("hello\n")
        self.assertEqual(message, f"remote_services_file {path}: must be a YAML list of entries with keys group, "
                                  'version, host, port, got "hello"')

    def test_entry_not_mapping(self) -> None:
        """An entry that is not a mapping is named by its number."""
        path, message = self.entry_error("- example.grafana.app\n")
        self.assertEqual(message, f"remote_services_file {path}: entry 2: must be a mapping with keys group, version, "
                                  'host, port, got "example.grafana.app"')

    def test_unknown_key(self) -> None:
        """An unknown key is named."""
        path, message = self.entry_error("- {group: b.example, version: v1, host: h, port: 1, scheme: https}\n")
        self.assertEqual(message, f"remote_services_file {path}: entry 2 (b.example/v1): scheme: unknown key (the "
                                  "keys are group, version, host, port)")

    def test_missing_key(self) -> None:
        """A missing key is required."""
        path, message = self.entry_error("- {group: b.example, version: v1, port: 1}\n")
        self.assertEqual(message, f"remote_services_file {path}: entry 2 (b.example/v1): host: required")

    def test_missing_group(self) -> None:
        """Without a group the entry is named by its version."""
        path, message = self.error("- {version: v1, host: h, port: 1}\n")
        self.assertEqual(message, f"remote_services_file {path}: entry 1 (v1): group: required")

    def test_group_not_string(self) -> None:
        """A group that is not a string is refused with its value."""
        path, message = self.error("- {group: 12, version: v1, host: h, port: 1}\n")
        self.assertEqual(message, f"remote_services_file {path}: entry 1 (v1): group: must be a string, got 12")

    def test_group_empty(self) -> None:
        """An empty group is refused."""
        path, message = self.error("- {group: '', version: v1, host: h, port: 1}\n")
        self.assertEqual(message, f"remote_services_file {path}: entry 1 (v1): group: must not be empty")

    def test_group_not_subdomain(self) -> None:
        """A group must be a DNS-1123 subdomain."""
        path, message = self.error("- {group: Example_Group, version: v1, host: h, port: 1}\n")
        self.assertEqual(message, f"remote_services_file {path}: entry 1 (Example_Group/v1): group: "
                                  f'{GROUP_PROBLEM}, got "Example_Group"')

    def test_version_not_label(self) -> None:
        """A version must be a DNS-1035 label."""
        path, message = self.error("- {group: a.example, version: 1v, host: h, port: 1}\n")
        self.assertEqual(message, f"remote_services_file {path}: entry 1 (a.example/1v): version: "
                                  f'{VERSION_PROBLEM}, got "1v"')

    def test_version_null(self) -> None:
        """A null version is refused."""
        path, message = self.error("- {group: a.example, version: null, host: h, port: 1}\n")
        self.assertEqual(message, f"remote_services_file {path}: entry 1 (a.example): version: must be a string, "
                                  "got null")

    def test_name_too_long(self) -> None:
        """`<version>.<group>` must fit in 253 characters, the longest name that can be stored."""
        group = ".".join(["a" * 63] * 3) + "." + "b" * 61
        path, message = self.error(f"- {{group: {group}, version: v1, host: h, port: 1}}\n")
        self.assertEqual(message, f"remote_services_file {path}: entry 1 ({group}/v1): group: the APIService name "
                                  f"v1.{group} is longer than 253 characters")

    def test_host_invalid(self) -> None:
        """A host must be a DNS name or an IP address."""
        path, message = self.error("- {group: a.example, version: v1, host: 'https://h:1', port: 1}\n")
        self.assertEqual(message, f"remote_services_file {path}: entry 1 (a.example/v1): host: must be a DNS name "
                                  '(RFC 1123 subdomain) or an IP address, got "https://h:1"')

    def test_host_not_string(self) -> None:
        """A host that is a list is refused."""
        path, message = self.error("- {group: a.example, version: v1, host: [h], port: 1}\n")
        self.assertEqual(message, f"remote_services_file {path}: entry 1 (a.example/v1): host: must be a string, "
                                  "got a list")

    def test_port_string(self) -> None:
        """A port must be an integer, not a string."""
        path, message = self.entry_error('- {group: example.grafana.app, version: v0alpha1, host: h, port: "abc"}\n',
                                         before="- {group: a.example, version: v1, host: h, port: 1}\n")
        self.assertEqual(message, f"remote_services_file {path}: entry 2 (example.grafana.app/v0alpha1): port: "
                                  'must be an integer from 1 to 65535, got "abc"')

    def test_port_quoted_number(self) -> None:
        """A quoted number is a string, as Grafana's YAML decoder also refuses it."""
        path, message = self.error('- {group: a.example, version: v1, host: h, port: "7443"}\n')
        self.assertEqual(message, f"remote_services_file {path}: entry 1 (a.example/v1): port: must be an integer "
                                  'from 1 to 65535, got "7443"')

    def test_port_out_of_range(self) -> None:
        """Ports 0 and 65536 are out of range."""
        for port in ("0", "65536"):
            path, message = self.error(f"- {{group: a.example, version: v1, host: h, port: {port}}}\n")
            self.assertEqual(message, f"remote_services_file {path}: entry 1 (a.example/v1): port: must be an "
                                      f"integer from 1 to 65535, got {port}")

    def test_port_bool_and_float(self) -> None:
        """Booleans and floats are not ports."""
        for port, shown in (("true", "true"), ("7443.5", "7443.5")):
            path, message = self.error(f"- {{group: a.example, version: v1, host: h, port: {port}}}\n")
            self.assertEqual(message, f"remote_services_file {path}: entry 1 (a.example/v1): port: must be an "
                                      f"integer from 1 to 65535, got {shown}")

    def test_duplicate(self) -> None:
        """The same group/version twice is refused, naming both entries."""
        path, message = self.entry_error("- {group: example.grafana.app, version: v0alpha1, host: other, port: 1}\n")
        self.assertEqual(message, f"remote_services_file {path}: entry 2 (example.grafana.app/v0alpha1): "
                                  "group/version: already listed by entry 1")

    def test_same_group_other_version(self) -> None:
        """Two versions of one group are two services."""
        path = self.write(GOOD + "- {group: example.grafana.app, version: v1, host: localhost, port: 7443}\n")
        self.assertEqual([s.name for s in load_remote_services(path)],
                         ["v0alpha1.example.grafana.app", "v1.example.grafana.app"])


class ShippedFilesTests(SynchronousTestCase):
    """The remote services files shipped in conf/ and examples/ parse."""

    def test_conf_sample(self) -> None:
        """conf/aggregation/apiservices.yaml holds Grafana's sample, with example.grafana.app at v1."""
        self.assertEqual(load_remote_services(str(REPO_ROOT / "conf" / "aggregation" / "apiservices.yaml")), [
            RemoteService("example.grafana.app", "v1", "localhost", 7443),
            RemoteService("query.grafana.app", "v0alpha1", "localhost", 7444),
            RemoteService("testdata.datasource.grafana.app", "v0alpha1", "localhost", 7445),
        ])

    def test_autoregister_example(self) -> None:
        """examples/autoregister/apiservices.yaml lists the three v0alpha1 services on ports 7443 to 7445."""
        path = str(REPO_ROOT / "examples" / "autoregister" / "apiservices.yaml")
        self.assertEqual(load_remote_services(path), [
            RemoteService("example.grafana.app", "v0alpha1", "localhost", 7443),
            RemoteService("query.grafana.app", "v0alpha1", "localhost", 7444),
            RemoteService("testdata.datasource.grafana.app", "v0alpha1", "localhost", 7445),
        ])
