# -*- test-case-name: tests.test_example_server -*-
"""Composition root of `twistd grafana-example-apiserver`: kube-apiserver-style flags, then one MultiService.

The flags are those of Grafana's `grafana apiserver` example (grafana-aggregator.md §8): a required
`--runtime-config=example.grafana.app/v0alpha1=true`, the generic serving flags and the
`--requestheader-*` family.  Without `--tls-cert-file` a self-signed serving certificate is generated
into `--cert-dir` (kube's `apiserver.local.config/certificates`) and reused.  `make_service` takes the
reactor as an argument, so tests build the real service against a MemoryReactorClock.
"""

from __future__ import annotations

import datetime
import ipaddress
import re
import sys
from collections.abc import Mapping, Sequence
from typing import Any

from attrs import field, frozen
from cryptography import x509
from twisted.application import service
from twisted.application.internet import StreamServerEndpointService
from twisted.internet import endpoints
from twisted.internet.interfaces import IListeningPort, IReactorTime
from twisted.logger import Logger
from twisted.python import usage

from .. import __version__
from ..identity.auth import Authenticator, ChainVerifier, IAuthenticator, RequestHeaderAuthenticator, load_ca_bundle
from ..config.settings import ConfigError, RequestHeaderSettings
from ..web.health import HealthChecks, ReadinessService
from ..identity.kubeconfig import listening_url
from ..web.site import build_site
from ..tls.certificates import (
    CertificateError,
    KeyPair,
    ServingTLS,
    TLSServerEndpoint,
    ensure_self_signed,
    listening_endpoint,
    load_key_pair,
)
from .server import GROUP, VERSION, BuildInfo, build_example_root, build_example_tree

_log = Logger()

TAPNAME = "grafana-example-apiserver"
DEFAULT_SECURE_PORT = 7443
DEFAULT_BIND_ADDRESS = "127.0.0.1"
#: kube's default --cert-dir for generated serving certificates, relative to the working directory.
DEFAULT_CERT_DIR = "apiserver.local.config/certificates"
#: The group-versions Grafana's standalone factory knows; only the first is served by this example server.
KNOWN_GROUP_VERSIONS = (
    (GROUP, VERSION),
    ("query.grafana.app", "v0alpha1"),
    ("featuretoggle.grafana.app", "v0alpha1"),
    ("testdata.datasource.grafana.app", "v0alpha1"),
)
RUNTIME_CONFIG_MISSING = "missing --runtime-config={apiservers}"
RUNTIME_CONFIG_MALFORMED = "expected values in the form: group/version=true"
_TRUE = ("1", "t", "T", "TRUE", "true", "True")
_FALSE = ("0", "f", "F", "FALSE", "false", "False")
_HEADER_NAME = re.compile(r"^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$")
_SERVED = f"{GROUP}/{VERSION}"


def parse_runtime_config(text: str | None) -> dict[tuple[str, str], bool]:
    """Grafana's --runtime-config: comma-separated `group/version=<bool>` (Go's ParseBool spellings), later wins."""
    if not text or not text.strip():
        raise ConfigError(RUNTIME_CONFIG_MISSING)
    entries: dict[tuple[str, str], bool] = {}
    for part in text.split(","):
        key, equals, value = part.strip().partition("=")
        group, slash, version = key.partition("/")
        if not equals or not slash or not group or not version or "/" in version or value not in _TRUE + _FALSE:
            raise ConfigError(RUNTIME_CONFIG_MALFORMED)
        entries[(group, version)] = value in _TRUE
    return entries


def served_group_versions(entries: Mapping[tuple[str, str], bool]) -> tuple[tuple[str, str], ...]:
    """The enabled group-versions, refused unless they are exactly what this example server serves."""
    enabled = [gv for gv, on in entries.items() if on]
    for group, version in enabled:
        if (group, version) == (GROUP, VERSION):
            continue
        if (group, version) in KNOWN_GROUP_VERSIONS or group == GROUP:
            raise ConfigError(f"--runtime-config: {group}/{version} is not served by this example server "
                              f"(it serves only {_SERVED})")
        raise ConfigError(f"--runtime-config: unknown API group-version {group}/{version} "
                          f"(this example server serves only {_SERVED})")
    if not enabled:
        raise ConfigError(f"--runtime-config enables nothing; use --runtime-config={_SERVED}=true")
    return tuple(enabled)


@frozen
class ExampleSettings:
    """What the example server is told, validated; paths are as given (relative to the working directory)."""

    group_versions: tuple[tuple[str, str], ...] = ((GROUP, VERSION),)
    secure_port: int = DEFAULT_SECURE_PORT
    bind_address: str = DEFAULT_BIND_ADDRESS
    listen: str | None = None
    tls_cert_file: str | None = None
    tls_private_key_file: str | None = None
    cert_dir: str = DEFAULT_CERT_DIR
    requestheader: RequestHeaderSettings = field(factory=RequestHeaderSettings)
    verbosity: int = 0


@frozen
class Material:
    """The files the settings name, loaded: the serving key pair and the request-header CA bundle."""

    serving: KeyPair
    requestheader_ca: tuple[x509.Certificate, ...] = ()


def load_material(settings: ExampleSettings) -> Material:
    """Load (or generate) the serving certificate and load the request-header CA; errors name the flag."""
    try:
        if settings.tls_cert_file and settings.tls_private_key_file:
            serving = load_key_pair(settings.tls_cert_file, settings.tls_private_key_file)
        elif settings.tls_cert_file or settings.tls_private_key_file:
            raise ConfigError("--tls-cert-file and --tls-private-key-file must be given together")
        else:
            serving = load_key_pair(*ensure_self_signed(settings.cert_dir))
    except (CertificateError, OSError) as error:
        raise ConfigError(f"serving certificate (--tls-cert-file / --tls-private-key-file / --cert-dir): "
                          f"{error}") from None
    path = settings.requestheader.client_ca_file
    cas: list[x509.Certificate] = []
    if path:
        hint = " (the value starts with '=': was the flag written with '=='?)" if path.startswith("=") else ""
        try:
            cas = load_ca_bundle(path)
        except OSError as error:
            raise ConfigError(f"--requestheader-client-ca-file {path}: cannot be read: {error.strerror}{hint}") from None
        except ValueError as error:
            raise ConfigError(f"--requestheader-client-ca-file: {error}") from None
    return Material(serving, tuple(cas))


def _split(value: str) -> list[str]:
    return [item.strip() for item in value.split(",") if item.strip()]


def _alias_klog_flags(argv: Sequence[str]) -> list[str]:
    """klog's `--v` is spelled `--verbosity` here (getopt cannot tell a one-letter long option from `--version`)."""
    out: list[str] = []
    rest = iter(argv)
    for arg in rest:
        if arg == "--":
            out.append(arg)
            out.extend(rest)
            break
        if arg == "--v" or arg.startswith("--v="):
            arg = "--verbosity" + arg[3:]
        out.append(arg)
    return out


class Options(usage.Options):
    """Command line of `twistd grafana-example-apiserver`, with Grafana's `grafana apiserver` flag names."""

    synopsis = f"--runtime-config={_SERVED}=true [options]"
    longdesc = (
        "Serve the example.grafana.app/v0alpha1 API (dummy, dummy/sub, runtime) over TLS, to be aggregated "
        "behind grafana-aggregator.  Callers are identified only by request-header (front-proxy) authentication; "
        "anonymous callers may read /healthz, /livez, /readyz and /version."
    )
    optParameters: list[list[Any]] = [
        ["runtime-config", None, None, f"Comma-separated group/version=true|false; must enable {_SERVED}."],
        ["secure-port", None, DEFAULT_SECURE_PORT, "The port to serve HTTPS on.", usage.portCoerce],
        ["bind-address", None, DEFAULT_BIND_ADDRESS, "The IP address to listen on (0.0.0.0 or :: for all)."],
        ["listen", None, None, "A Twisted server endpoint description (for example systemd:domain=INET:index=0) "
                               "to serve on instead of --bind-address/--secure-port; TLS is added."],
        ["tls-cert-file", None, None, "The serving certificate chain (PEM). Without it a self-signed one is "
                                      "generated into --cert-dir."],
        ["tls-private-key-file", None, None, "The key of --tls-cert-file (PEM, unencrypted)."],
        ["cert-dir", None, DEFAULT_CERT_DIR, "Where a generated self-signed serving certificate is kept."],
        ["requestheader-client-ca-file", None, None, "CA bundle a front proxy's client certificate must chain to "
                                                     "before its X-Remote-* headers are trusted."],
    ]

    def __init__(self) -> None:
        super().__init__()
        self["verbosity"] = 0
        self._slices: dict[str, list[str]] = {}

    def parseOptions(self, options: Sequence[str] | None = None) -> None:
        super().parseOptions(_alias_klog_flags(sys.argv[1:] if options is None else options))

    def _add(self, name: str, value: str) -> None:
        self._slices.setdefault(name, []).extend(_split(value))

    def opt_requestheader_allowed_names(self, value: str) -> None:
        """Client certificate common names a front proxy may have (comma-separated, repeatable); empty: any."""
        self._add("allowed_names", value)

    def opt_requestheader_username_headers(self, value: str) -> None:
        """Headers holding the user name, first non-empty wins [default: X-Remote-User]."""
        self._add("username_headers", value)

    def opt_requestheader_uid_headers(self, value: str) -> None:
        """Headers holding the user's uid [default: X-Remote-Uid]."""
        self._add("uid_headers", value)

    def opt_requestheader_group_headers(self, value: str) -> None:
        """Headers holding the user's groups, every value counts [default: X-Remote-Group]."""
        self._add("group_headers", value)

    def opt_requestheader_extra_headers_prefix(self, value: str) -> None:
        """Header name prefixes of the user's extra attributes [default: X-Remote-Extra-]."""
        self._add("extra_headers_prefixes", value)

    def opt_verbosity(self, value: str) -> None:
        """klog verbosity (also -v and --v); accepted for compatibility, requests are always logged at info."""
        try:
            level = int(value)
        except ValueError:
            raise usage.UsageError(f"invalid value for -v/--v/--verbosity: {value!r} is not a number") from None
        if level < 0:
            raise usage.UsageError(f"invalid value for -v/--v/--verbosity: {value!r} is negative")
        self["verbosity"] = level

    opt_v = opt_verbosity

    def opt_version(self) -> None:
        """Print the version and exit."""
        print(f"{TAPNAME} {__version__}")  # noqa: T201 - command-line output, not logging
        raise SystemExit(0)

    def postOptions(self) -> None:
        try:
            self.settings = self._settings()
            if self.settings.listen:
                from twisted.internet import reactor

                try:
                    endpoints.serverFromString(reactor, self.settings.listen)
                except (ValueError, KeyError, TypeError) as error:
                    raise ConfigError(f"invalid value for --listen: {self.settings.listen!r} is not a server "
                                      f"endpoint description ({error})") from None
            self.material = load_material(self.settings)
        except ConfigError as error:
            raise usage.UsageError(str(error)) from None

    def _settings(self) -> ExampleSettings:
        group_versions = served_group_versions(parse_runtime_config(self["runtime-config"]))
        address = self["bind-address"].strip()
        try:
            address = str(ipaddress.ip_address(address))
        except ValueError:
            raise ConfigError(f"invalid value for --bind-address: {address!r} is not an IP address") from None
        defaults = RequestHeaderSettings()
        headers: dict[str, tuple[str, ...]] = {}
        for name in ("username_headers", "uid_headers", "group_headers", "extra_headers_prefixes"):
            given = self._slices.get(name)
            for header in given or ():
                if not _HEADER_NAME.match(header):
                    flag = "--requestheader-" + name.replace("_prefixes", "_prefix").replace("_", "-")
                    raise ConfigError(f"invalid value for {flag}: {header!r} is not an HTTP header name")
            headers[name] = tuple(given) if given else getattr(defaults, name)
        requestheader = RequestHeaderSettings(
            client_ca_file=self["requestheader-client-ca-file"] or None,
            allowed_names=tuple(self._slices.get("allowed_names", ())),
            **headers,
        )
        return ExampleSettings(
            group_versions=group_versions,
            secure_port=int(self["secure-port"]),
            bind_address=address,
            listen=self["listen"] or None,
            tls_cert_file=self["tls-cert-file"] or None,
            tls_private_key_file=self["tls-private-key-file"] or None,
            cert_dir=self["cert-dir"] or DEFAULT_CERT_DIR,
            requestheader=requestheader,
            verbosity=self["verbosity"],
        )


def build_authenticator(settings: ExampleSettings, material: Material) -> Authenticator:
    """Request-header authentication only (when a CA is configured), then anonymous."""
    chain: list[IAuthenticator] = []
    if material.requestheader_ca:
        chain.append(RequestHeaderAuthenticator(ChainVerifier(material.requestheader_ca), settings.requestheader))
    return Authenticator(chain, anonymous=True)


def make_service(settings: ExampleSettings, reactor: IReactorTime, material: Material | None = None,
                 build: BuildInfo = BuildInfo()) -> service.MultiService:
    """Wire the example server: health, the authenticated tree, and the TLS listener named `https`."""
    if material is None:
        material = load_material(settings)
    top = service.MultiService()
    readiness = ReadinessService()
    readiness.setServiceParent(top)
    health = HealthChecks()
    health.add("ping", lambda: None)
    health.add("shutdown", readiness.check, endpoints=("readyz",))

    started = datetime.datetime.fromtimestamp(reactor.seconds(), datetime.timezone.utc)
    tree = build_example_tree(health=health, clock=reactor, started=started, build=build)
    site = build_site(build_example_root(tree, build_authenticator(settings, material)))
    if not material.requestheader_ca:
        _log.warn("no --requestheader-client-ca-file: every caller is anonymous, so only /healthz, /livez, "
                  "/readyz and /version will answer")

    def on_listening(port: IListeningPort) -> None:
        url = listening_url(port, settings.bind_address, settings.secure_port)
        _log.info("{tapname} {version} serving {group_version} on {url}", tapname=TAPNAME, version=__version__,
                  group_version=_SERVED, url=url)

    tls = ServingTLS(material.serving, material.requestheader_ca)
    endpoint = TLSServerEndpoint(listening_endpoint(reactor, settings.listen, settings.bind_address, settings.secure_port), tls, on_listening)
    listener = StreamServerEndpointService(endpoint, site)
    listener._raiseSynchronously = True
    listener.setName("https")
    listener.setServiceParent(top)
    return top


def makeService(options: Options) -> service.MultiService:
    """twistd's entry point."""
    from twisted.internet import reactor

    return make_service(options.settings, reactor, options.material)
