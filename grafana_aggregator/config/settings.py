"""Settings of the daemon: a Grafana-style ini file, overridden by kube-apiserver-style flags, into frozen attrs values.

One table (`KEYS`) names every setting once: its ini section and key, its command-line flag, how its
value is checked, and its default.  `tap.Options` builds its flags from the same table, and
`conf/defaults.ini` documents it.  A wrong value raises `ConfigError` naming the key (or flag) and
the file, so a person can fix it without reading code.
"""

from __future__ import annotations

import configparser
import ipaddress
import os
import re
from collections.abc import Callable, Mapping
from typing import Any

from attrs import field, frozen

DEFAULT_EMULATED_VERSION = "1.33"
SUPPORTED_MINORS = range(27, 34)
STORAGE_TYPES = ("file", "etcd")
#: Seconds a request that is not long-running may take before it is answered 504 (kube's --request-timeout).
REQUEST_TIMEOUT = 60.0
#: Seconds in-flight requests get to finish at shutdown once the listener is closed.
SHUTDOWN_DRAIN_TIMEOUT = 60.0


class ConfigError(Exception):
    """A setting is missing, malformed or inconsistent; the message names the key and the file."""


@frozen
class Key:
    """One setting: where it lives in the ini file, its flag, and how its text becomes a value."""

    section: str
    name: str
    flag: str | None
    kind: str
    default: str | None
    help: str


def _k(section: str, name: str, flag: str | None, kind: str, default: str | None, help: str) -> Key:
    return Key(section, name, flag, kind, default, help)


_API = "grafana-apiserver"
_TOGGLES = "feature_toggles"

#: Every setting the daemon reads.  Kinds: str, path (an existing file), dir, port, bool, address,
#: list (comma separated), headers (comma separated HTTP header names), storage, version, count (a whole
#: number ≥ 1), workers (a count, or auto), duration (seconds, or a number with ms, s, m or h).
KEYS: tuple[Key, ...] = (
    _k("paths", "data", "data-dir", "str", "data",
       "Folder for everything the daemon keeps: storage, the self-signed serving certificate, the kubeconfig."),
    _k(_API, "bind_address", "bind-address", "address", "0.0.0.0",
       "IP address to listen on (0.0.0.0 or :: for all interfaces)."),
    _k(_API, "secure_port", "secure-port", "port", "6443", "TCP port of the HTTPS listener."),
    _k(_API, "listen", "listen", "str", None,
       "A Twisted server endpoint description (for example systemd:domain=INET6:index=0 for socket "
       "activation); wrapped in TLS and used instead of bind_address and secure_port."),
    _k(_API, "tls_cert_file", "tls-cert-file", "path", None,
       "Serving certificate (PEM, leaf first, intermediates after).  Unset: a self-signed certificate "
       "is generated into cert_dir on first start and reused."),
    _k(_API, "tls_private_key_file", "tls-private-key-file", "path", None, "Key of tls_cert_file (PEM)."),
    _k(_API, "cert_dir", "cert-dir", "str", None,
       "Where the self-signed serving certificate is kept (default: <storage_path>/certs)."),
    _k(_API, "client_ca_file", "client-ca-file", "path", None,
       "CA bundle that signs client certificates; a verified certificate authenticates as CN, groups O."),
    _k(_API, "token_auth_file", "token-auth-file", "path", None,
       "Static bearer tokens, one per line: token,user,uid,\"group1,group2\" (kube-apiserver format)."),
    _k(_API, "anonymous_auth", "anonymous-auth", "bool", "true",
       "Let unauthenticated requests through as system:anonymous (they may reach only health and version)."),
    _k(_API, "requestheader_client_ca_file", "requestheader-client-ca-file", "path", None,
       "CA bundle of front proxies: only a client certificate from it may assert identity headers."),
    _k(_API, "requestheader_allowed_names", "requestheader-allowed-names", "list", "",
       "Common names a front proxy's certificate may have (empty: any certificate from that CA)."),
    _k(_API, "requestheader_username_headers", "requestheader-username-headers", "headers", "X-Remote-User",
       "Headers carrying the user name from a front proxy; the first non-empty one wins."),
    _k(_API, "requestheader_uid_headers", "requestheader-uid-headers", "headers", "X-Remote-Uid",
       "Headers carrying the user's uid from a front proxy."),
    _k(_API, "requestheader_group_headers", "requestheader-group-headers", "headers", "X-Remote-Group",
       "Headers carrying the user's groups from a front proxy (every value is a group)."),
    _k(_API, "requestheader_extra_headers_prefix", "requestheader-extra-headers-prefix", "headers",
       "X-Remote-Extra-", "Header name prefixes carrying extra user attributes from a front proxy."),
    _k(_API, "proxy_client_cert_file", "proxy-client-cert-file", "path", None,
       "Client certificate the aggregator presents to backend API servers."),
    _k(_API, "proxy_client_key_file", "proxy-client-key-file", "path", None, "Key of proxy_client_cert_file."),
    _k(_API, "apiservice_ca_bundle_file", "apiservice-ca-bundle-file", "path", None,
       "CA bundle for backends whose APIService has no caBundle; also the caBundle of auto-registered ones."),
    _k(_API, "remote_services_file", "remote-services-file", "path", None,
       "YAML list of remote services to register at startup."),
    _k(_API, "storage_type", "storage-type", "storage", "file", "Where objects are kept: file or etcd."),
    _k(_API, "storage_path", "storage-path", "str", None,
       "Folder of the file storage (default: <data>/grafana-apiserver)."),
    _k(_API, "etcd_servers", "etcd-servers", "endpoints", None,
       "With storage_type = etcd: the etcd endpoints, comma separated (http://host:port or https://host:port)."),
    _k(_API, "etcd_prefix", "etcd-prefix", "str", "/registry", "The prefix of every key kept in etcd."),
    _k(_API, "etcd_cafile", "etcd-cafile", "path", None, "CA bundle that etcd's serving certificates chain to."),
    _k(_API, "etcd_certfile", "etcd-certfile", "path", None, "Client certificate presented to etcd (mutual TLS)."),
    _k(_API, "etcd_keyfile", "etcd-keyfile", "path", None, "Key of etcd_certfile."),
    _k(_API, "etcd_lease_ttl", "etcd-lease-ttl", "count", "15",
       "With storage_type = etcd: seconds of the lease that makes one replica the leader (the one writing "
       "statuses) and keeps each replica's availability view; a leader cut off from etcd stops writing within "
       "it, another takes over within twice it.  At least 2."),
    _k(_API, "replica_name", "replica-name", "str", None,
       "This replica's name among those sharing one etcd (default: host name and port, or host name and "
       "process id when the port is 0); it must differ between replicas."),
    _k(_API, "emulated_version", "emulated-version", "version", DEFAULT_EMULATED_VERSION,
       "Kubernetes version reported by /version, 1.27 to 1.33: it selects the kubectl binary of a "
       "version-dispatching kubectl."),
    _k(_API, "max_requests_inflight", "max-requests-inflight", "count", "400",
       "Concurrent read-only requests before new ones get 429 (watches and health probes are not limited; system:masters is)."),
    _k(_API, "max_mutating_requests_inflight", "max-mutating-requests-inflight", "count", "200",
       "Concurrent mutating requests before new ones get 429."),
    _k(_API, "request_timeout", "request-timeout", "duration", f"{REQUEST_TIMEOUT:g}s",
       "How long a non-watch request may take before it is answered 504 (a number of seconds, or 90s, 2m)."),
    _k(_API, "shutdown_delay_duration", "shutdown-delay-duration", "duration", "0s",
       "After SIGTERM, keep serving this long with /readyz failing, so load balancers stop sending traffic."),
    _k(_API, "shutdown_drain_timeout", "shutdown-drain-timeout", "duration", f"{SHUTDOWN_DRAIN_TIMEOUT:g}s",
       "After the listener closes, how long in-flight requests may take to finish before the daemon exits."),
    _k(_API, "max_request_body_bytes", "max-request-body-bytes", "count", "67108864",
       "Request bodies larger than this are refused with 413 before being read (local kinds allow 3 MiB)."),
    _k(_API, "max_connections", "max-connections", "count", "8192",
       "Open client connections in all; past it a new connection is closed at once, before the TLS handshake "
       "(refusals are logged once per burst).  Keep the process's file limit (LimitNOFILE) above twice this: "
       "each proxied request also holds a connection to its backend."),
    _k(_API, "max_connections_per_client", "max-connections-per-client", "count", "1024",
       "Open connections from one client IP address; past it a new connection from that address is closed at "
       "once.  Behind a load balancer that does not keep client addresses, every client shares one."),
    _k(_API, "workers", "workers", "workers", "1",
       "Processes serving the one listening address: a number, or auto for one per CPU this process may use.  "
       "The first owns the storage and the controllers; see docs/operations.md, Workers."),
    _k(_TOGGLES, "kubernetesAggregator", None, "bool", "true",
       "Proxy registered remote API groups (off: only the local groups are served)."),
    _k(_TOGGLES, "grafanaAPIServerEnsureKubectlAccess", "ensure-kubectl-access", "bool", "false",
       "Write <storage_path>/grafana.kubeconfig with the server's CA and an admin token, at every start."),
    _k(_TOGGLES, "grafanaAPIServerWithExperimentalAPIs", "with-experimental-apis", "bool", "false",
       "Serve the example group example.grafana.app/v0alpha1 in this process, as a Local APIService; a remote "
       "APIService of that name, when one exists, wins (see docs/operations.md, The bundled example group)."),
)

KEYS_BY_FLAG = {k.flag: k for k in KEYS if k.flag}


@frozen
class RequestHeaderSettings:
    """How identity asserted by a front proxy is recognised (kube-apiserver's --requestheader-* flags)."""

    client_ca_file: str | None = None
    allowed_names: tuple[str, ...] = ()
    username_headers: tuple[str, ...] = ("X-Remote-User",)
    uid_headers: tuple[str, ...] = ("X-Remote-Uid",)
    group_headers: tuple[str, ...] = ("X-Remote-Group",)
    extra_headers_prefixes: tuple[str, ...] = ("X-Remote-Extra-",)


@frozen
class Settings:
    """Everything the daemon is told, validated.  Paths are as given (relative to the working directory)."""

    config_file: str | None
    data_dir: str
    bind_address: str
    secure_port: int
    listen: str | None
    tls_cert_file: str | None
    tls_private_key_file: str | None
    cert_dir: str
    client_ca_file: str | None
    token_auth_file: str | None
    anonymous_auth: bool
    requestheader: RequestHeaderSettings
    proxy_client_cert_file: str | None
    proxy_client_key_file: str | None
    apiservice_ca_bundle_file: str | None
    remote_services_file: str | None
    storage_type: str
    storage_path: str
    emulated_version: tuple[int, int]
    kubernetes_aggregator: bool
    ensure_kubectl_access: bool
    unknown_keys: tuple[str, ...] = field(default=())
    max_requests_inflight: int = 400
    max_mutating_requests_inflight: int = 200
    request_timeout: float = REQUEST_TIMEOUT
    shutdown_delay_duration: float = 0.0
    shutdown_drain_timeout: float = SHUTDOWN_DRAIN_TIMEOUT
    max_request_body_bytes: int = 64 * 1024 * 1024
    max_connections: int = 8192
    max_connections_per_client: int = 1024
    etcd_servers: tuple[str, ...] = ()
    etcd_prefix: str = "/registry"
    etcd_cafile: str | None = None
    etcd_certfile: str | None = None
    etcd_keyfile: str | None = None
    etcd_lease_ttl: int = 15
    replica_name: str | None = None
    #: Processes serving the listening address (1: this process alone).
    workers: int = 1
    #: Serve the bundled example group in process (feature toggle grafanaAPIServerWithExperimentalAPIs).
    experimental_apis: bool = False

    @property
    def kubeconfig_path(self) -> str:
        """Where the kubectl kubeconfig is written (Grafana's place for it)."""
        return os.path.join(self.storage_path, "grafana.kubeconfig")


_BOOLEANS = {"1": True, "yes": True, "true": True, "on": True, "0": False, "no": False, "false": False, "off": False}
_HEADER_NAME = re.compile(r"^[!#$%&'*+.^_`|~0-9A-Za-z-]+$")


def _parse_bool(text: str) -> bool:
    try:
        return _BOOLEANS[text.strip().lower()]
    except KeyError:
        raise ValueError(f"{text!r} is not a boolean (use true or false)") from None


def _parse_port(text: str) -> int:
    try:
        port = int(text.strip())
    except ValueError:
        raise ValueError(f"{text!r} is not a port number (1-65535)") from None
    if not 1 <= port <= 65535:
        raise ValueError(f"{port} is not a port number (1-65535)")
    return port


def _parse_address(text: str) -> str:
    text = text.strip()
    try:
        return str(ipaddress.ip_address(text))
    except ValueError:
        raise ValueError(f"{text!r} is not an IP address (for example 0.0.0.0, 127.0.0.1 or ::)") from None


def _parse_list(text: str) -> tuple[str, ...]:
    return tuple(item.strip() for item in text.split(",") if item.strip())


def _parse_headers(text: str) -> tuple[str, ...]:
    names = _parse_list(text)
    for name in names:
        if not _HEADER_NAME.match(name):
            raise ValueError(f"{name!r} is not an HTTP header name")
    return names


def _parse_path(text: str) -> str:
    path = text.strip()
    if not os.path.isfile(path):
        reason = "is a folder, not a file" if os.path.isdir(path) else "does not exist"
        raise ValueError(f"{path!r} {reason}")
    if not os.access(path, os.R_OK):
        raise ValueError(f"{path!r} is not readable by this process")
    return path


def _parse_count(text: str) -> int:
    try:
        value = int(text.strip())
    except ValueError:
        raise ValueError(f"{text!r} is not a whole number") from None
    if value < 1:
        raise ValueError(f"{value} must be at least 1")
    return value


def usable_cpus() -> int:
    """The CPUs this process may run on (its affinity, which a container or systemd may narrow)."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def _parse_workers(text: str) -> int:
    if text.strip().lower() == "auto":
        return usable_cpus()
    try:
        return _parse_count(text)
    except ValueError as error:
        raise ValueError(f"{error}; use a number of processes (1 or more) or auto") from None


_DURATION_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}


def _parse_duration(text: str) -> float:
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h)?\s*", text)
    if not match:
        raise ValueError(f"{text!r} is not a duration (for example 60, 60s, 2m or 500ms)")
    return float(match.group(1)) * _DURATION_UNITS[match.group(2) or "s"]


def _parse_storage(text: str) -> str:
    value = text.strip().lower()
    if value not in STORAGE_TYPES:
        raise ValueError(f"{text!r} is not a storage type; supported: {', '.join(STORAGE_TYPES)}")
    return value


def _parse_endpoints(text: str) -> tuple[str, ...]:
    endpoints = _parse_list(text)
    for endpoint in endpoints:
        if not re.fullmatch(r"https?://[^/\s:]+(:\d{1,5})/?|https?://\[[0-9a-fA-F:.]+\](:\d{1,5})/?", endpoint):
            raise ValueError(f"{endpoint!r} is not an etcd endpoint (http://host:port or https://host:port)")
    return endpoints


def _parse_version(text: str) -> tuple[int, int]:
    match = re.fullmatch(r"\s*v?1\.(\d+)(?:\.\d+)?\s*", text)
    if not match or int(match.group(1)) not in SUPPORTED_MINORS:
        raise ValueError(
            f"{text!r} is not a supported Kubernetes version "
            f"(1.{SUPPORTED_MINORS.start} to 1.{SUPPORTED_MINORS.stop - 1})"
        )
    return (1, int(match.group(1)))


_PARSERS: Mapping[str, Callable[[str], Any]] = {
    "str": lambda text: text.strip() or None,
    "path": _parse_path,
    "port": _parse_port,
    "bool": _parse_bool,
    "address": _parse_address,
    "list": _parse_list,
    "headers": _parse_headers,
    "storage": _parse_storage,
    "endpoints": _parse_endpoints,
    "count": _parse_count,
    "workers": _parse_workers,
    "duration": _parse_duration,
    "version": _parse_version,
}


def _where(key: Key, config_file: str | None, from_flag: bool) -> str:
    if from_flag:
        return f"--{key.flag}"
    place = f"[{key.section}] {key.name}"
    return f"{place} in {config_file}" if config_file else f"{place} (built-in default)"


def read_ini(config_file: str) -> configparser.ConfigParser:
    """Parse an ini file the way Grafana reads its own (keys are case-sensitive, no interpolation)."""
    parser = configparser.ConfigParser(interpolation=None, inline_comment_prefixes=(";", "#"), strict=True)
    parser.optionxform = str  # type: ignore[assignment,method-assign]
    try:
        with open(config_file, encoding="utf-8") as handle:
            parser.read_file(handle)
    except FileNotFoundError:
        raise ConfigError(f"config file {config_file!r} does not exist") from None
    except (OSError, UnicodeDecodeError) as error:
        raise ConfigError(f"config file {config_file!r} cannot be read: {error}") from None
    except configparser.Error as error:
        raise ConfigError(f"config file {config_file!r} is not a valid ini file: {error}") from None
    return parser


def load_settings(config_file: str | None, flags: Mapping[str, str | None] | None = None) -> Settings:
    """Merge built-in defaults, the ini file and command-line flags (in that order of strength)."""
    flags = flags or {}
    parser = read_ini(config_file) if config_file else None
    values: dict[str, Any] = {}
    for key in KEYS:
        text: str | None = key.default
        from_flag = False
        if parser is not None and parser.has_option(key.section, key.name):
            text = parser.get(key.section, key.name)
        if key.flag is not None and flags.get(key.flag) is not None:
            text = flags[key.flag]
            from_flag = True
        if text is not None and text.strip() == "" and key.kind == "bool":
            text = key.default
        if text is None or (text.strip() == "" and key.kind not in ("list",)):
            values[key.name] = None
            continue
        try:
            values[key.name] = _PARSERS[key.kind](text)
        except ValueError as error:
            raise ConfigError(f"invalid value for {_where(key, config_file, from_flag)}: {error}") from None

    def where(name: str) -> str:
        key = next(k for k in KEYS if k.name == name)
        from_flag = key.flag is not None and flags.get(key.flag) is not None
        return _where(key, config_file, from_flag)

    for cert, private_key in (("tls_cert_file", "tls_private_key_file"), ("proxy_client_cert_file", "proxy_client_key_file"),
                              ("etcd_certfile", "etcd_keyfile")):
        if (values[cert] is None) != (values[private_key] is None):
            given, missing = (cert, private_key) if values[cert] is not None else (private_key, cert)
            raise ConfigError(f"{where(given)} is set but {where(missing)} is not: set both or neither")

    for name in ("secure_port", "bind_address", "storage_type", "emulated_version", "data", "max_requests_inflight",
                 "max_mutating_requests_inflight", "request_timeout", "shutdown_delay_duration",
                 "shutdown_drain_timeout", "max_request_body_bytes", "max_connections",
                 "max_connections_per_client", "workers"):
        if values[name] is None:
            raise ConfigError(f"{where(name)} must not be empty")

    if values["etcd_lease_ttl"] is None or values["etcd_lease_ttl"] < 2:
        raise ConfigError(f"{where('etcd_lease_ttl')} must be at least 2 (seconds), not {values['etcd_lease_ttl']}")
    if values["storage_type"] == "etcd" and not values["etcd_servers"]:
        raise ConfigError(f"{where('storage_type')} is etcd but {where('etcd_servers')} is empty: "
                          f"list the etcd endpoints (http://host:port or https://host:port)")

    unknown: list[str] = []
    if parser is not None and parser.has_section(_API):
        known = {k.name for k in KEYS if k.section == _API}
        unknown = [f"[{_API}] {name}" for name in parser.options(_API) if name not in known]

    data_dir: str = values["data"]
    storage_path = values["storage_path"] or os.path.join(data_dir, "grafana-apiserver")
    defaults = RequestHeaderSettings()
    return Settings(
        config_file=config_file,
        data_dir=data_dir,
        bind_address=values["bind_address"],
        secure_port=values["secure_port"],
        listen=values["listen"],
        tls_cert_file=values["tls_cert_file"],
        tls_private_key_file=values["tls_private_key_file"],
        cert_dir=values["cert_dir"] or os.path.join(storage_path, "certs"),
        client_ca_file=values["client_ca_file"],
        token_auth_file=values["token_auth_file"],
        anonymous_auth=values["anonymous_auth"] if values["anonymous_auth"] is not None else True,
        requestheader=RequestHeaderSettings(
            client_ca_file=values["requestheader_client_ca_file"],
            allowed_names=values["requestheader_allowed_names"] or (),
            username_headers=values["requestheader_username_headers"] or defaults.username_headers,
            uid_headers=values["requestheader_uid_headers"] or defaults.uid_headers,
            group_headers=values["requestheader_group_headers"] or defaults.group_headers,
            extra_headers_prefixes=values["requestheader_extra_headers_prefix"] or defaults.extra_headers_prefixes,
        ),
        proxy_client_cert_file=values["proxy_client_cert_file"],
        proxy_client_key_file=values["proxy_client_key_file"],
        apiservice_ca_bundle_file=values["apiservice_ca_bundle_file"],
        remote_services_file=values["remote_services_file"],
        storage_type=values["storage_type"],
        storage_path=storage_path,
        emulated_version=values["emulated_version"],
        kubernetes_aggregator=bool(values["kubernetesAggregator"]),
        ensure_kubectl_access=bool(values["grafanaAPIServerEnsureKubectlAccess"]),
        experimental_apis=bool(values["grafanaAPIServerWithExperimentalAPIs"]),
        unknown_keys=tuple(unknown),
        max_requests_inflight=values["max_requests_inflight"],
        max_mutating_requests_inflight=values["max_mutating_requests_inflight"],
        request_timeout=values["request_timeout"],
        shutdown_delay_duration=values["shutdown_delay_duration"],
        shutdown_drain_timeout=values["shutdown_drain_timeout"],
        max_request_body_bytes=values["max_request_body_bytes"],
        max_connections=values["max_connections"],
        max_connections_per_client=values["max_connections_per_client"],
        etcd_servers=values["etcd_servers"] or (),
        etcd_prefix=values["etcd_prefix"] or "/registry",
        etcd_cafile=values["etcd_cafile"],
        etcd_certfile=values["etcd_certfile"],
        etcd_keyfile=values["etcd_keyfile"],
        etcd_lease_ttl=values["etcd_lease_ttl"],
        replica_name=values["replica_name"] or None,
        workers=values["workers"],
    )
