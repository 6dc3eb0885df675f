# -*- test-case-name: tests.test_config -*-
"""Tests for L{grafana_aggregator.config.settings}: built-in defaults, ini files, flags, and the errors they raise.

Every error is checked by its exact message, because the message is what a person reads to fix the file.
"""

from __future__ import annotations

import os
import re
import shutil
from pathlib import Path

from attrs import evolve
from twisted.trial.unittest import SkipTest, SynchronousTestCase

from grafana_aggregator.config import settings as config
from grafana_aggregator.config.settings import ConfigError, RequestHeaderSettings, Settings, load_settings, read_ini

REPO_ROOT = Path(__file__).resolve().parent.parent
DEFAULTS_INI = REPO_ROOT / "conf" / "defaults.ini"
DEV_INI = REPO_ROOT / "conf" / "dev.ini"

#: What load_settings(None) must give: every field of Settings at its built-in default.
BUILT_IN = Settings(
    config_file=None,
    data_dir="data",
    bind_address="0.0.0.0",
    secure_port=6443,
    listen=None,
    tls_cert_file=None,
    tls_private_key_file=None,
    cert_dir="data/grafana-apiserver/certs",
    client_ca_file=None,
    token_auth_file=None,
    anonymous_auth=True,
    requestheader=RequestHeaderSettings(
        client_ca_file=None,
        allowed_names=(),
        username_headers=("X-Remote-User",),
        uid_headers=("X-Remote-Uid",),
        group_headers=("X-Remote-Group",),
        extra_headers_prefixes=("X-Remote-Extra-",),
    ),
    proxy_client_cert_file=None,
    proxy_client_key_file=None,
    apiservice_ca_bundle_file=None,
    remote_services_file=None,
    storage_type="file",
    storage_path="data/grafana-apiserver",
    emulated_version=(1, 33),
    kubernetes_aggregator=True,
    ensure_kubectl_access=False,
    unknown_keys=(),
)


class _FilesTestCase(SynchronousTestCase):
    """Helpers that write ini files and placeholder files into a fresh temporary folder."""

    def folder(self) -> str:
        """A new, empty, absolute folder for this test."""
        path = os.path.abspath(self.mktemp())
        os.makedirs(path)
        return path

    def write(self, folder: str, name: str, text: str) -> str:
        """Write text into folder/name and return its absolute path."""
        path = os.path.join(folder, name)
        with open(path, "w", encoding="utf-8") as handle:
            handle.write(text)
        return path

    def ini(self, text: str) -> str:
        """Write an ini file with the given text into a new folder and return its path."""
        return self.write(self.folder(), "aggregator.ini", text)


class DefaultsTests(SynchronousTestCase):
    """Built-in defaults, with neither an ini file nor flags."""

    def test_no_file_no_flags_gives_built_in_defaults(self) -> None:
        """Without a file or flags every setting takes its documented built-in default."""
        self.assertEqual(load_settings(None), BUILT_IN)

    def test_empty_flags_mapping_gives_built_in_defaults(self) -> None:
        """Flags that were not given (None, as tap.Options passes them) leave every default in place."""
        flags = {key.flag: None for key in config.KEYS if key.flag}
        self.assertEqual(load_settings(None, flags), BUILT_IN)

    def test_kubeconfig_path_is_in_storage_path(self) -> None:
        """The kubeconfig is written as grafana.kubeconfig inside the storage folder."""
        self.assertEqual(load_settings(None).kubeconfig_path, "data/grafana-apiserver/grafana.kubeconfig")

    def test_kubeconfig_path_follows_storage_path_flag(self) -> None:
        """Moving the storage folder moves the kubeconfig with it."""
        settings = load_settings(None, {"storage-path": "/var/lib/agg"})
        self.assertEqual(settings.kubeconfig_path, "/var/lib/agg/grafana.kubeconfig")


class PrecedenceTests(_FilesTestCase):
    """A flag beats the ini file, which beats the built-in default."""

    def test_secure_port_from_ini(self) -> None:
        """secure_port in the ini file replaces the default 6443."""
        path = self.ini("[grafana-apiserver]\nsecure_port = 8443\n")
        self.assertEqual(load_settings(path).secure_port, 8443)

    def test_secure_port_flag_beats_ini(self) -> None:
        """--secure-port replaces the ini file's secure_port."""
        path = self.ini("[grafana-apiserver]\nsecure_port = 8443\n")
        self.assertEqual(load_settings(path, {"secure-port": "9443"}).secure_port, 9443)

    def test_flag_given_as_none_does_not_override_ini(self) -> None:
        """A flag whose value is None counts as not given, so the ini value stays."""
        path = self.ini("[grafana-apiserver]\nsecure_port = 8443\n")
        self.assertEqual(load_settings(path, {"secure-port": None}).secure_port, 8443)

    def test_bind_address_from_ini_then_flag(self) -> None:
        """bind_address comes from the ini file unless --bind-address is given."""
        path = self.ini("[grafana-apiserver]\nbind_address = 127.0.0.1\n")
        self.assertEqual(load_settings(path).bind_address, "127.0.0.1")
        self.assertEqual(load_settings(path, {"bind-address": "::"}).bind_address, "::")

    def test_bind_address_is_normalised(self) -> None:
        """An IPv6 address is stored in its compressed canonical form."""
        settings = load_settings(None, {"bind-address": "0:0:0:0:0:0:0:1"})
        self.assertEqual(settings.bind_address, "::1")

    def test_data_from_paths_section(self) -> None:
        """[paths] data sets the data folder and the storage, certificate and kubeconfig paths under it."""
        path = self.ini("[paths]\ndata = /srv/agg\n")
        settings = load_settings(path)
        self.assertEqual(
            (settings.data_dir, settings.storage_path, settings.cert_dir, settings.kubeconfig_path),
            ("/srv/agg", "/srv/agg/grafana-apiserver", "/srv/agg/grafana-apiserver/certs",
             "/srv/agg/grafana-apiserver/grafana.kubeconfig"),
        )

    def test_data_dir_flag_beats_paths_section(self) -> None:
        """--data-dir replaces [paths] data, and the derived paths follow the flag."""
        path = self.ini("[paths]\ndata = /srv/agg\n")
        settings = load_settings(path, {"data-dir": "/opt/agg"})
        self.assertEqual(
            (settings.data_dir, settings.storage_path, settings.cert_dir),
            ("/opt/agg", "/opt/agg/grafana-apiserver", "/opt/agg/grafana-apiserver/certs"),
        )

    def test_storage_path_set_is_not_derived_from_data(self) -> None:
        """An explicit storage_path is kept as given, and cert_dir is derived from it instead of data."""
        path = self.ini("[paths]\ndata = /srv/agg\n[grafana-apiserver]\nstorage_path = /var/lib/store\n")
        settings = load_settings(path)
        self.assertEqual(
            (settings.data_dir, settings.storage_path, settings.cert_dir),
            ("/srv/agg", "/var/lib/store", "/var/lib/store/certs"),
        )

    def test_storage_path_flag_beats_ini(self) -> None:
        """--storage-path replaces the ini file's storage_path."""
        path = self.ini("[grafana-apiserver]\nstorage_path = /var/lib/store\n")
        self.assertEqual(load_settings(path, {"storage-path": "/elsewhere"}).storage_path, "/elsewhere")

    def test_cert_dir_set_is_kept(self) -> None:
        """An explicit cert_dir is not derived from storage_path."""
        path = self.ini("[grafana-apiserver]\ncert_dir = /etc/agg/certs\nstorage_path = /var/lib/store\n")
        self.assertEqual(load_settings(path).cert_dir, "/etc/agg/certs")

    def test_client_ca_file_from_ini_then_flag(self) -> None:
        """client_ca_file comes from the ini file unless --client-ca-file names another file."""
        folder = self.folder()
        in_ini = self.write(folder, "ini-ca.crt", "")
        in_flag = self.write(folder, "flag-ca.crt", "")
        path = self.write(folder, "a.ini", f"[grafana-apiserver]\nclient_ca_file = {in_ini}\n")
        self.assertEqual(load_settings(path).client_ca_file, in_ini)
        self.assertEqual(load_settings(path, {"client-ca-file": in_flag}).client_ca_file, in_flag)

    def test_flag_does_not_validate_overridden_ini_value(self) -> None:
        """A bad ini value that a flag replaces is never parsed, so it raises nothing."""
        path = self.ini("[grafana-apiserver]\nsecure_port = nonsense\n")
        self.assertEqual(load_settings(path, {"secure-port": "7443"}).secure_port, 7443)

    def test_ensure_kubectl_access_flag(self) -> None:
        """--ensure-kubectl-access sets the grafanaAPIServerEnsureKubectlAccess toggle."""
        path = self.ini("[feature_toggles]\ngrafanaAPIServerEnsureKubectlAccess = false\n")
        self.assertIs(load_settings(path).ensure_kubectl_access, False)
        self.assertIs(load_settings(path, {"ensure-kubectl-access": "true"}).ensure_kubectl_access, True)

    def test_kubernetes_aggregator_toggle_off(self) -> None:
        """[feature_toggles] kubernetesAggregator = false turns the aggregator off."""
        path = self.ini("[feature_toggles]\nkubernetesAggregator = false\n")
        self.assertIs(load_settings(path).kubernetes_aggregator, False)

    def test_empty_boolean_is_the_default(self) -> None:
        """An empty boolean key means its default, never false."""
        path = self.ini("[feature_toggles]\nkubernetesAggregator =\n[grafana-apiserver]\nanonymous_auth =\n")
        settings = load_settings(path)
        self.assertEqual((settings.kubernetes_aggregator, settings.anonymous_auth), (True, True))

    def test_anonymous_auth_off(self) -> None:
        """anonymous_auth = no is read as false."""
        path = self.ini("[grafana-apiserver]\nanonymous_auth = no\n")
        self.assertIs(load_settings(path).anonymous_auth, False)

    def test_boolean_spellings(self) -> None:
        """1/yes/true/on are true and 0/no/false/off are false, in any letter case."""
        for text, expected in [("1", True), ("YES", True), ("True", True), ("on", True),
                               ("0", False), ("No", False), ("FALSE", False), ("off", False)]:
            self.assertIs(load_settings(None, {"anonymous-auth": text}).anonymous_auth, expected, text)

    def test_inline_comment_is_not_part_of_value(self) -> None:
        """A ; or # comment after a value is stripped before the value is parsed."""
        path = self.ini("[grafana-apiserver]\nsecure_port = 8443 ; the port\nbind_address = ::1 # loopback\n")
        settings = load_settings(path)
        self.assertEqual((settings.secure_port, settings.bind_address), (8443, "::1"))

    def test_config_file_is_recorded(self) -> None:
        """The path of the ini file that was read is kept in the settings."""
        path = self.ini("[grafana-apiserver]\n")
        self.assertEqual(load_settings(path).config_file, path)

    def test_tls_pair_accepted(self) -> None:
        """tls_cert_file and tls_private_key_file given together are both kept."""
        folder = self.folder()
        cert, key = self.write(folder, "tls.crt", ""), self.write(folder, "tls.key", "")
        settings = load_settings(None, {"tls-cert-file": cert, "tls-private-key-file": key})
        self.assertEqual((settings.tls_cert_file, settings.tls_private_key_file), (cert, key))


class ListTests(_FilesTestCase):
    """Comma-separated values and versions."""

    def test_allowed_names_split_and_stripped(self) -> None:
        """requestheader_allowed_names 'a, b,,c' becomes ('a', 'b', 'c')."""
        path = self.ini("[grafana-apiserver]\nrequestheader_allowed_names = a, b,,c\n")
        self.assertEqual(load_settings(path).requestheader.allowed_names, ("a", "b", "c"))

    def test_allowed_names_empty(self) -> None:
        """An empty requestheader_allowed_names allows any name: the tuple is empty."""
        path = self.ini("[grafana-apiserver]\nrequestheader_allowed_names =\n")
        self.assertEqual(load_settings(path).requestheader.allowed_names, ())

    def test_header_lists(self) -> None:
        """Every requestheader_*_headers key is split on commas into header names."""
        path = self.ini(
            "[grafana-apiserver]\n"
            "requestheader_username_headers = X-Remote-User, X-Forwarded-User\n"
            "requestheader_uid_headers = X-Uid\n"
            "requestheader_group_headers = X-Group-A,X-Group-B\n"
            "requestheader_extra_headers_prefix = X-Extra-, X-Remote-Extra-\n"
        )
        self.assertEqual(
            load_settings(path).requestheader,
            RequestHeaderSettings(
                client_ca_file=None,
                allowed_names=(),
                username_headers=("X-Remote-User", "X-Forwarded-User"),
                uid_headers=("X-Uid",),
                group_headers=("X-Group-A", "X-Group-B"),
                extra_headers_prefixes=("X-Extra-", "X-Remote-Extra-"),
            ),
        )

    def test_emulated_version_with_v_and_patch(self) -> None:
        """emulated_version v1.30.2 is read as (1, 30)."""
        path = self.ini("[grafana-apiserver]\nemulated_version = v1.30.2\n")
        self.assertEqual(load_settings(path).emulated_version, (1, 30))

    def test_emulated_version_bounds(self) -> None:
        """1.27 and 1.33, the oldest and newest supported versions, are accepted."""
        self.assertEqual(load_settings(None, {"emulated-version": "1.27"}).emulated_version, (1, 27))
        self.assertEqual(load_settings(None, {"emulated-version": "1.33"}).emulated_version, (1, 33))

    def test_storage_type_case_insensitive(self) -> None:
        """storage_type FILE is read as file."""
        self.assertEqual(load_settings(None, {"storage-type": "FILE"}).storage_type, "file")


class BadValueTests(_FilesTestCase):
    """A bad value raises ConfigError naming the key and the file, or the flag."""

    def assertIniError(self, body: str, key: str, reason: str) -> None:
        """Loading [grafana-apiserver] with body raises exactly 'invalid value for <key> in <file>: <reason>'."""
        path = self.ini(f"[grafana-apiserver]\n{body}\n")
        error = self.assertRaises(ConfigError, load_settings, path)
        self.assertEqual(str(error), f"invalid value for [grafana-apiserver] {key} in {path}: {reason}")

    def assertFlagError(self, flags: dict[str, str], flag: str, reason: str) -> None:
        """Loading with flags raises exactly 'invalid value for --<flag>: <reason>'."""
        error = self.assertRaises(ConfigError, load_settings, None, flags)
        self.assertEqual(str(error), f"invalid value for --{flag}: {reason}")

    def test_non_numeric_port_in_ini(self) -> None:
        """A port that is not a number is rejected with the key and file named."""
        self.assertIniError("secure_port = https", "secure_port", "'https' is not a port number (1-65535)")

    def test_port_zero_in_ini(self) -> None:
        """Port 0 is rejected: the listener needs a fixed port."""
        self.assertIniError("secure_port = 0", "secure_port", "0 is not a port number (1-65535)")

    def test_port_too_large_in_ini(self) -> None:
        """Port 70000 is out of range."""
        self.assertIniError("secure_port = 70000", "secure_port", "70000 is not a port number (1-65535)")

    def test_non_numeric_port_flag(self) -> None:
        """A bad --secure-port is reported by its flag name."""
        self.assertFlagError({"secure-port": "abc"}, "secure-port", "'abc' is not a port number (1-65535)")

    def test_port_zero_flag(self) -> None:
        """--secure-port 0 is reported by its flag name."""
        self.assertFlagError({"secure-port": "0"}, "secure-port", "0 is not a port number (1-65535)")

    def test_port_too_large_flag(self) -> None:
        """--secure-port 70000 is reported by its flag name."""
        self.assertFlagError({"secure-port": "70000"}, "secure-port", "70000 is not a port number (1-65535)")

    def test_bad_bool_in_ini(self) -> None:
        """A boolean that is not one of the known spellings is rejected."""
        self.assertIniError("anonymous_auth = maybe", "anonymous_auth", "'maybe' is not a boolean (use true or false)")

    def test_bad_bool_flag(self) -> None:
        """A bad --ensure-kubectl-access value is reported by its flag name."""
        self.assertFlagError({"ensure-kubectl-access": "sure"}, "ensure-kubectl-access",
                             "'sure' is not a boolean (use true or false)")

    def test_bad_bool_feature_toggle(self) -> None:
        """A bad kubernetesAggregator value names the [feature_toggles] section and the file."""
        path = self.ini("[feature_toggles]\nkubernetesAggregator = enabled\n")
        error = self.assertRaises(ConfigError, load_settings, path)
        self.assertEqual(
            str(error),
            f"invalid value for [feature_toggles] kubernetesAggregator in {path}: "
            "'enabled' is not a boolean (use true or false)",
        )

    def test_bad_ip_address_in_ini(self) -> None:
        """A host name is not accepted where an IP address is needed."""
        self.assertIniError("bind_address = localhost", "bind_address",
                            "'localhost' is not an IP address (for example 0.0.0.0, 127.0.0.1 or ::)")

    def test_bad_ip_address_flag(self) -> None:
        """An out-of-range IPv4 address given by flag is reported by its flag name."""
        self.assertFlagError({"bind-address": "256.0.0.1"}, "bind-address",
                             "'256.0.0.1' is not an IP address (for example 0.0.0.0, 127.0.0.1 or ::)")

    def test_missing_path_in_ini(self) -> None:
        """A path key naming a file that does not exist is rejected."""
        missing = os.path.join(self.folder(), "nope.crt")
        self.assertIniError(f"client_ca_file = {missing}", "client_ca_file", f"{missing!r} does not exist")

    def test_missing_path_flag(self) -> None:
        """A --token-auth-file that does not exist is reported by its flag name."""
        missing = os.path.join(self.folder(), "tokens.csv")
        self.assertFlagError({"token-auth-file": missing}, "token-auth-file", f"{missing!r} does not exist")

    def test_folder_path_in_ini(self) -> None:
        """A path key naming a folder is rejected."""
        folder = self.folder()
        self.assertIniError(f"requestheader_client_ca_file = {folder}", "requestheader_client_ca_file",
                            f"{folder!r} is a folder, not a file")

    def test_unreadable_path_in_ini(self) -> None:
        """A path key naming a file this process cannot read is rejected."""
        if os.geteuid() == 0:
            raise SkipTest("root can read a file whatever its mode")
        unreadable = self.write(self.folder(), "ca.crt", "")
        os.chmod(unreadable, 0)
        self.addCleanup(os.chmod, unreadable, 0o600)
        self.assertIniError(f"client_ca_file = {unreadable}", "client_ca_file",
                            f"{unreadable!r} is not readable by this process")

    def test_bad_header_name_in_ini(self) -> None:
        """A header list with a name containing a space is rejected, naming that header."""
        self.assertIniError("requestheader_group_headers = X-Remote-Group, Bad Header",
                            "requestheader_group_headers", "'Bad Header' is not an HTTP header name")

    def test_bad_header_name_with_colon_flag(self) -> None:
        """A header name with a colon given by flag is reported by its flag name."""
        self.assertFlagError({"requestheader-username-headers": "X-User:"}, "requestheader-username-headers",
                             "'X-User:' is not an HTTP header name")

    def test_unsupported_storage_type_in_ini(self) -> None:
        """Only the file storage type is supported."""
        self.assertIniError("storage_type = etcd3", "storage_type",
                            "'etcd3' is not a storage type; supported: file, etcd")

    def test_unsupported_emulated_version_too_old(self) -> None:
        """Emulating 1.26 is rejected."""
        self.assertIniError("emulated_version = 1.26", "emulated_version",
                            "'1.26' is not a supported Kubernetes version (1.27 to 1.33)")

    def test_unsupported_emulated_version_too_new(self) -> None:
        """Emulating 1.34 is rejected."""
        self.assertIniError("emulated_version = 1.34", "emulated_version",
                            "'1.34' is not a supported Kubernetes version (1.27 to 1.33)")

    def test_unsupported_emulated_version_not_a_version(self) -> None:
        """An emulated version that is not a version at all is rejected."""
        self.assertFlagError({"emulated-version": "x"}, "emulated-version",
                             "'x' is not a supported Kubernetes version (1.27 to 1.33)")

    def test_tls_cert_without_key(self) -> None:
        """tls_cert_file without tls_private_key_file names both keys and the file."""
        folder = self.folder()
        cert = self.write(folder, "tls.crt", "")
        path = self.write(folder, "a.ini", f"[grafana-apiserver]\ntls_cert_file = {cert}\n")
        error = self.assertRaises(ConfigError, load_settings, path)
        self.assertEqual(
            str(error),
            f"[grafana-apiserver] tls_cert_file in {path} is set but "
            f"[grafana-apiserver] tls_private_key_file in {path} is not: set both or neither",
        )

    def test_tls_key_flag_without_cert(self) -> None:
        """--tls-private-key-file without a certificate names the flag and the missing key."""
        key = self.write(self.folder(), "tls.key", "")
        error = self.assertRaises(ConfigError, load_settings, None, {"tls-private-key-file": key})
        self.assertEqual(
            str(error),
            "--tls-private-key-file is set but [grafana-apiserver] tls_cert_file (built-in default) is not: "
            "set both or neither",
        )

    def test_proxy_client_cert_without_key(self) -> None:
        """proxy_client_cert_file without proxy_client_key_file names both keys and the file."""
        folder = self.folder()
        cert = self.write(folder, "client.crt", "")
        path = self.write(folder, "a.ini", f"[grafana-apiserver]\nproxy_client_cert_file = {cert}\n")
        error = self.assertRaises(ConfigError, load_settings, path)
        self.assertEqual(
            str(error),
            f"[grafana-apiserver] proxy_client_cert_file in {path} is set but "
            f"[grafana-apiserver] proxy_client_key_file in {path} is not: set both or neither",
        )

    def test_proxy_client_key_without_cert(self) -> None:
        """proxy_client_key_file without proxy_client_cert_file names both keys and the file."""
        folder = self.folder()
        key = self.write(folder, "client.key", "")
        path = self.write(folder, "a.ini", f"[grafana-apiserver]\nproxy_client_key_file = {key}\n")
        error = self.assertRaises(ConfigError, load_settings, path)
        self.assertEqual(
            str(error),
            f"[grafana-apiserver] proxy_client_key_file in {path} is set but "
            f"[grafana-apiserver] proxy_client_cert_file in {path} is not: set both or neither",
        )

    def test_empty_secure_port_in_ini(self) -> None:
        """An empty secure_port does not fall back to the default: it is an error naming the key and file."""
        path = self.ini("[grafana-apiserver]\nsecure_port =\n")
        error = self.assertRaises(ConfigError, load_settings, path)
        self.assertEqual(str(error), f"[grafana-apiserver] secure_port in {path} must not be empty")

    def test_empty_secure_port_flag(self) -> None:
        """An empty --secure-port is an error naming the flag."""
        error = self.assertRaises(ConfigError, load_settings, None, {"secure-port": ""})
        self.assertEqual(str(error), "--secure-port must not be empty")

    def test_empty_data_in_ini(self) -> None:
        """An empty [paths] data is an error naming the key and file."""
        path = self.ini("[paths]\ndata =\n")
        error = self.assertRaises(ConfigError, load_settings, path)
        self.assertEqual(str(error), f"[paths] data in {path} must not be empty")


class IniFileTests(_FilesTestCase):
    """Errors of the ini file as a whole, and what is read from it."""

    def test_missing_file(self) -> None:
        """A config file that does not exist is named in the error."""
        missing = os.path.join(self.folder(), "absent.ini")
        error = self.assertRaises(ConfigError, load_settings, missing)
        self.assertEqual(str(error), f"config file {missing!r} does not exist")

    def test_folder_as_file(self) -> None:
        """A folder given as the config file cannot be read, and the error names it."""
        folder = self.folder()
        error = self.assertRaises(ConfigError, read_ini, folder)
        self.assertEqual(str(error), f"config file {folder!r} cannot be read: [Errno 21] Is a directory: {folder!r}")

    def test_line_without_section(self) -> None:
        """A key before any section header makes the file invalid, and the error names the file."""
        path = self.ini("secure_port = 8443\n[grafana-apiserver]\n")
        error = self.assertRaises(ConfigError, load_settings, path)
        self.assertTrue(
            str(error).startswith(f"config file {path!r} is not a valid ini file: File contains no section headers."),
            str(error),
        )

    def test_duplicate_key_in_section(self) -> None:
        """The same key twice in one section is rejected (strict parser), naming the file, key and line."""
        path = self.ini("[grafana-apiserver]\nsecure_port = 1\nsecure_port = 2\n")
        error = self.assertRaises(ConfigError, load_settings, path)
        self.assertEqual(
            str(error),
            f"config file {path!r} is not a valid ini file: While reading from {path!r} [line  3]: "
            "option 'secure_port' in section 'grafana-apiserver' already exists",
        )

    def test_duplicate_section(self) -> None:
        """The same section twice is rejected (strict parser), naming the file."""
        path = self.ini("[paths]\ndata = a\n[paths]\n")
        error = self.assertRaises(ConfigError, load_settings, path)
        self.assertEqual(
            str(error),
            f"config file {path!r} is not a valid ini file: While reading from {path!r} [line  3]: "
            "section 'paths' already exists",
        )

    def test_read_ini_keeps_key_case(self) -> None:
        """read_ini does not lower-case keys, as Grafana's reader does not."""
        parser = read_ini(self.ini("[feature_toggles]\nkubernetesAggregator = true\n"))
        self.assertEqual(parser.options("feature_toggles"), ["kubernetesAggregator"])

    def test_read_ini_no_interpolation(self) -> None:
        """A % in a value is kept literally."""
        parser = read_ini(self.ini("[server]\nroot_url = %(protocol)s://x/\n"))
        self.assertEqual(parser.get("server", "root_url"), "%(protocol)s://x/")


class UnknownKeyTests(_FilesTestCase):
    """Keys the daemon does not know."""

    def test_unknown_keys_in_apiserver_section_are_reported(self) -> None:
        """Unknown keys in [grafana-apiserver] are listed in file order, with their section."""
        path = self.ini("[grafana-apiserver]\nsecure_prot = 1\nsecure_port = 8443\nstorage = x\n")
        settings = load_settings(path)
        self.assertEqual(settings.unknown_keys,
                         ("[grafana-apiserver] secure_prot", "[grafana-apiserver] storage"))
        self.assertEqual(settings.secure_port, 8443)

    def test_keys_are_case_sensitive_in_apiserver_section(self) -> None:
        """Secure_Port is not secure_port: it is reported unknown and the default port stays."""
        settings = load_settings(self.ini("[grafana-apiserver]\nSecure_Port = 8443\n"))
        self.assertEqual((settings.secure_port, settings.unknown_keys),
                         (6443, ("[grafana-apiserver] Secure_Port",)))

    def test_other_sections_are_ignored(self) -> None:
        """Grafana's own sections and keys, such as [server] http_port, are neither read nor reported."""
        path = self.ini("[server]\nhttp_port = not-a-port\n[database]\ntype = sqlite3\n")
        self.assertEqual(load_settings(path), evolve(BUILT_IN, config_file=path))

    def test_unknown_feature_toggles_are_ignored(self) -> None:
        """Other Grafana feature toggles, even with non-boolean values, are ignored."""
        path = self.ini("[feature_toggles]\nprovisioning = true\nenable = a b c\n")
        self.assertEqual(load_settings(path), evolve(BUILT_IN, config_file=path))

    def test_feature_toggle_names_are_case_sensitive(self) -> None:
        """kubernetesaggregator (wrong case) does not set kubernetesAggregator, which stays true."""
        path = self.ini("[feature_toggles]\nkubernetesaggregator = false\nGrafanaAPIServerEnsureKubectlAccess = true\n")
        settings = load_settings(path)
        self.assertEqual((settings.kubernetes_aggregator, settings.ensure_kubectl_access, settings.unknown_keys),
                         (True, False, ()))


class ShippedFilesTests(_FilesTestCase):
    """conf/defaults.ini and conf/dev.ini agree with the KEYS table."""

    def _sections(self) -> dict[str, list[str]]:
        """The lines of conf/defaults.ini, stripped, grouped by the section they appear in."""
        sections: dict[str, list[str]] = {"": []}
        current = ""
        for line in DEFAULTS_INI.read_text(encoding="utf-8").splitlines():
            line = line.strip()
            header = re.fullmatch(r"\[([^\]]+)\]", line)
            if header:
                current = header.group(1)
                sections.setdefault(current, [])
            else:
                sections[current].append(line)
        return sections

    def test_every_key_documented_in_defaults_ini(self) -> None:
        """Each key appears under its section as 'name = default', or ';name =' when it has no default."""
        sections = self._sections()
        missing = []
        for key in config.KEYS:
            expected = f";{key.name} =" if key.default is None else f"{key.name} = {key.default}".rstrip()
            if expected not in sections.get(key.section, []):
                missing.append(f"[{key.section}] {expected}")
        self.assertEqual(missing, [])

    def test_every_flag_documented_in_defaults_ini(self) -> None:
        """Each key with a flag is preceded, within its comment block, by '; flag: --<flag>'."""
        sections = self._sections()
        wrong = []
        for key in config.KEYS:
            if key.flag is None:
                continue
            lines = sections.get(key.section, [])
            entry = f";{key.name} =" if key.default is None else f"{key.name} = {key.default}".rstrip()
            if entry not in lines or lines.index(entry) == 0 or lines[lines.index(entry) - 1] != f"; flag: --{key.flag}":
                wrong.append(key.name)
        self.assertEqual(wrong, [])

    def test_defaults_ini_has_no_unknown_keys(self) -> None:
        """Every active key in conf/defaults.ini is one the daemon reads."""
        parser = read_ini(str(DEFAULTS_INI))
        known = {(k.section, k.name) for k in config.KEYS}
        found = {(section, name) for section in parser.sections() for name in parser.options(section)}
        self.assertEqual(found - known, set())

    def test_loading_defaults_ini_equals_built_in_defaults(self) -> None:
        """Loading conf/defaults.ini gives the same settings as loading no file at all."""
        settings = load_settings(str(DEFAULTS_INI))
        self.assertEqual(settings, evolve(BUILT_IN, config_file=str(DEFAULTS_INI)))

    def test_dev_ini_parses_once_dev_pki_exists(self) -> None:
        """conf/dev.ini, run from a folder holding the dev PKI files, listens on loopback and writes a kubeconfig."""
        folder = self.folder()
        shutil.copy(DEV_INI, os.path.join(folder, "dev.ini"))
        old = os.getcwd()
        os.chdir(folder)
        self.addCleanup(os.chdir, old)
        os.makedirs(os.path.join("data", "grafana-aggregator"))
        for name in ("ca.crt", "client.crt", "client.key"):
            self.write(os.path.join("data", "grafana-aggregator"), name, "")
        settings = load_settings("dev.ini")
        self.assertEqual(
            settings,
            Settings(
                config_file="dev.ini",
                data_dir="data",
                bind_address="127.0.0.1",
                secure_port=6443,
                listen=None,
                tls_cert_file=None,
                tls_private_key_file=None,
                cert_dir="data/grafana-apiserver/certs",
                client_ca_file="data/grafana-aggregator/ca.crt",
                token_auth_file=None,
                anonymous_auth=True,
                requestheader=RequestHeaderSettings(),
                proxy_client_cert_file="data/grafana-aggregator/client.crt",
                proxy_client_key_file="data/grafana-aggregator/client.key",
                apiservice_ca_bundle_file="data/grafana-aggregator/ca.crt",
                remote_services_file=None,
                storage_type="file",
                storage_path="data/grafana-apiserver",
                emulated_version=(1, 33),
                kubernetes_aggregator=True,
                ensure_kubectl_access=True,
                unknown_keys=(),
            ),
        )

    def test_dev_ini_without_dev_pki_names_missing_file(self) -> None:
        """conf/dev.ini run where the dev PKI was not made fails on client_ca_file, naming dev.ini."""
        folder = self.folder()
        shutil.copy(DEV_INI, os.path.join(folder, "dev.ini"))
        old = os.getcwd()
        os.chdir(folder)
        self.addCleanup(os.chdir, old)
        error = self.assertRaises(ConfigError, load_settings, "dev.ini")
        self.assertEqual(
            str(error),
            "invalid value for [grafana-apiserver] client_ca_file in dev.ini: "
            "'data/grafana-aggregator/ca.crt' does not exist",
        )


class EtcdSettingsTests(_FilesTestCase):
    """`storage_type = etcd` and its keys: endpoints, prefix, mutual TLS files; errors name the key and the file."""

    def test_defaults(self) -> None:
        """Without etcd keys the file store is used, with no endpoints and the prefix /registry."""
        settings = load_settings(None)
        self.assertEqual((settings.storage_type, settings.etcd_servers, settings.etcd_prefix, settings.etcd_cafile,
                          settings.etcd_certfile, settings.etcd_keyfile),
                         ("file", (), "/registry", None, None, None))

    def test_etcd_from_ini(self) -> None:
        """storage_type = etcd with comma-separated endpoints, a prefix and the three TLS files."""
        folder = self.folder()
        ca, cert, key = (self.write(folder, name, "") for name in ("ca.crt", "client.crt", "client.key"))
        path = self.ini(f"[grafana-apiserver]\nstorage_type = etcd\n"
                        f"etcd_servers = https://127.0.0.1:2379, https://127.0.0.2:2379\n"
                        f"etcd_prefix = /grafana\netcd_cafile = {ca}\netcd_certfile = {cert}\netcd_keyfile = {key}\n")
        settings = load_settings(path)
        self.assertEqual((settings.storage_type, settings.etcd_servers, settings.etcd_prefix, settings.etcd_cafile,
                          settings.etcd_certfile, settings.etcd_keyfile),
                         ("etcd", ("https://127.0.0.1:2379", "https://127.0.0.2:2379"), "/grafana", ca, cert, key))

    def test_flags(self) -> None:
        """Each etcd key has a flag."""
        settings = load_settings(None, {"storage-type": "etcd", "etcd-servers": "http://127.0.0.1:2379",
                                        "etcd-prefix": "/x"})
        self.assertEqual((settings.storage_type, settings.etcd_servers, settings.etcd_prefix),
                         ("etcd", ("http://127.0.0.1:2379",), "/x"))

    def test_etcd_without_servers(self) -> None:
        """storage_type = etcd without etcd_servers names both keys and the file."""
        path = self.ini("[grafana-apiserver]\nstorage_type = etcd\n")
        with self.assertRaises(ConfigError) as caught:
            load_settings(path)
        self.assertEqual(str(caught.exception),
                         f"[grafana-apiserver] storage_type in {path} is etcd but [grafana-apiserver] etcd_servers "
                         f"in {path} is empty: list the etcd endpoints (http://host:port or https://host:port)")

    def test_bad_endpoint(self) -> None:
        """An endpoint that is not an http(s) URL with a host and port is refused, naming it."""
        path = self.ini("[grafana-apiserver]\nstorage_type = etcd\netcd_servers = 127.0.0.1:2379\n")
        with self.assertRaises(ConfigError) as caught:
            load_settings(path)
        self.assertEqual(str(caught.exception),
                         f"invalid value for [grafana-apiserver] etcd_servers in {path}: '127.0.0.1:2379' is not "
                         f"an etcd endpoint (http://host:port or https://host:port)")

    def test_certfile_without_keyfile(self) -> None:
        """etcd_certfile without etcd_keyfile is refused, naming both."""
        cert = self.write(self.folder(), "client.crt", "")
        with self.assertRaises(ConfigError) as caught:
            load_settings(None, {"etcd-certfile": cert})
        self.assertEqual(str(caught.exception),
                         "--etcd-certfile is set but [grafana-apiserver] etcd_keyfile (built-in default) is not: "
                         "set both or neither")

    def test_missing_cafile(self) -> None:
        """A CA file that does not exist is refused, naming the key and the file."""
        path = self.ini("[grafana-apiserver]\netcd_cafile = /nonexistent/ca.crt\n")
        with self.assertRaises(ConfigError) as caught:
            load_settings(path)
        self.assertEqual(str(caught.exception),
                         f"invalid value for [grafana-apiserver] etcd_cafile in {path}: '/nonexistent/ca.crt' "
                         f"does not exist")
