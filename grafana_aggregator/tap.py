"""Composition root of `twistd grafana-aggregator`: options, then one MultiService wired from them.

This is the only module that touches the global reactor; everything below it receives the reactor,
clock and clients it needs.  `make_service` takes the reactor as an argument so tests build the
real service against a MemoryReactorClock.
"""

from __future__ import annotations

import datetime
import os
import signal
from collections.abc import Callable, Coroutine
from typing import Any, cast

from attrs import field, frozen
from twisted.application import service
from twisted.application.internet import StreamServerEndpointService
from twisted.internet import endpoints
from twisted.internet.defer import CancelledError, Deferred, DeferredSemaphore
from twisted.internet.task import deferLater
from twisted.internet.interfaces import IListeningPort, IReactorCore
from twisted.logger import Logger
from twisted.python import usage
from twisted.web.resource import IResource

from . import __version__
from .identity.auth import (
    Authenticator,
    ChainVerifier,
    IAuthenticator,
    RequestHeaderAuthenticator,
    TokenAuthenticator,
    TokenFileError,
    UserInfo,
    X509Authenticator,
    load_ca_bundle,
    parse_token_file,
)
from .config.settings import KEYS, ConfigError, Settings, load_settings
from .web.discovery import ApisResource, LocalGroupVersion
from .controllers.apiservice_index import APISERVICES, APIServiceIndex
from .controllers.autoregister import AutoRegistration
from .controllers.availability import AvailabilityController
from .controllers.local_apiservices import LocalAPIService, LocalAPIServiceRegistration
from .controllers.remote_discovery import RemoteDiscovery
from .controllers.remote_openapi import RemoteOpenAPI
from .web.health import HealthChecks, ReadinessService
from .web.openapi import OpenAPIResource
from .web.metrics import Metrics, MetricsResource, RequestAccounting
from .aggregation.proxy import ProxyResource
from .tls.reload import CertificateReloader, ReloadableVerifier
from .config.remote_services import RemoteService, RemoteServicesError, load_remote_services
from .registry.apiservice import APIServiceStrategy, available_condition, is_local
from .registry.externalname import ExternalNameStrategy
from .storage import IStore, StoreLockedError, WatchEvent
from .storage.file import FileStore
from .storage.instrumented import InstrumentedStore
from .aggregation.upstream import MAX_CONNECTIONS_PER_BACKEND, UpstreamClients
from .identity.kubeconfig import ensure_admin_token, listening_url, write_kubeconfig
from .web.site import AuthenticatingRoot, InFlight, Limits, build_site, build_tree, request_user
from .tls.certificates import (
    CertificateError,
    KeyPair,
    ServingTLS,
    TLSServerEndpoint,
    ensure_self_signed,
    listening_endpoint,
    load_key_pair,
    trust_anchor,
)

_log = Logger()


class Options(usage.Options):
    """Command line of `twistd grafana-aggregator`: --config plus kube-apiserver-style flags that override it."""

    synopsis = "[options]"
    longdesc = (
        "Serve a Kubernetes-style aggregated API over TLS. Settings come from the ini file given with "
        "--config (see conf/defaults.ini); each flag overrides the matching ini key."
    )
    optParameters: list[list[Any]] = [
        ["config", "c", None, "Grafana-style ini file with the daemon's settings."],
        *([key.flag, None, None, f"{key.help} (ini: [{key.section}] {key.name})"] for key in KEYS if key.flag),
    ]

    def opt_version(self) -> None:
        """Print the version and exit."""
        print(f"grafana-aggregator {__version__}")  # noqa: T201 - command-line output, not logging
        raise SystemExit(0)

    def postOptions(self) -> None:
        flags = {key.flag: self[key.flag] for key in KEYS if key.flag}
        try:
            self.settings = load_settings(self["config"], flags)
            if self.settings.listen:
                from twisted.internet import reactor

                try:
                    endpoints.serverFromString(reactor, self.settings.listen)
                except (ValueError, KeyError, TypeError, IndexError) as error:
                    raise ConfigError(f"invalid value for {_where_listen(self.settings)}: "
                                      f"{self.settings.listen!r} is not a server endpoint description ({error})")
            self.runtime = load_runtime(self.settings)
        except ConfigError as error:
            raise usage.UsageError(str(error)) from None


def _where_listen(settings: Settings) -> str:
    return "--listen / [grafana-apiserver] listen" + (f" in {settings.config_file}" if settings.config_file else "")


@frozen
class Runtime:
    """What the settings point at, loaded and checked: certificates, CA bundles, tokens."""

    serving: KeyPair
    client_ca: list[Any]
    requestheader_ca: list[Any]
    tokens: dict[str, UserInfo]
    admin_token: str | None
    store: IStore
    proxy_client: KeyPair | None = None
    apiservice_ca_bundle: list[Any] | None = None
    apiservice_ca_bundle_pem: bytes | None = None
    remote_services: list[RemoteService] = field(factory=list)


def load_runtime(settings: Settings) -> Runtime:
    """Load every file the settings name; a problem becomes a ConfigError naming the key and the file."""
    where = f" in {settings.config_file}" if settings.config_file else ""
    try:
        if settings.tls_cert_file and settings.tls_private_key_file:
            serving = load_key_pair(settings.tls_cert_file, settings.tls_private_key_file)
        else:
            serving = load_key_pair(*ensure_self_signed(settings.cert_dir))
    except (CertificateError, OSError) as error:
        raise ConfigError(f"serving certificate (tls_cert_file / tls_private_key_file{where}): {error}") from None

    def bundle(path: str | None, name: str) -> list[Any]:
        if path is None:
            return []
        try:
            return load_ca_bundle(path)
        except (ValueError, OSError) as error:
            raise ConfigError(f"[grafana-apiserver] {name}{where}: {error}") from None

    client_ca = bundle(settings.client_ca_file, "client_ca_file")
    requestheader_ca = bundle(settings.requestheader.client_ca_file, "requestheader_client_ca_file")
    bundle(settings.proxy_client_cert_file, "proxy_client_cert_file")
    apiservice_ca_bundle = bundle(settings.apiservice_ca_bundle_file, "apiservice_ca_bundle_file") or None
    proxy_client = None
    if settings.proxy_client_cert_file and settings.proxy_client_key_file:
        try:
            proxy_client = load_key_pair(settings.proxy_client_cert_file, settings.proxy_client_key_file)
        except CertificateError as error:
            raise ConfigError(f"[grafana-apiserver] proxy_client_cert_file / proxy_client_key_file{where}: {error}") from None

    tokens: dict[str, UserInfo] = {}
    if settings.token_auth_file:
        try:
            tokens = parse_token_file(settings.token_auth_file)
        except (TokenFileError, OSError, UnicodeDecodeError) as error:
            raise ConfigError(f"[grafana-apiserver] token_auth_file{where}: {error}") from None
    admin_token = None
    if settings.ensure_kubectl_access:
        try:
            admin_token, admin = ensure_admin_token(settings.storage_path)
        except OSError as error:
            raise ConfigError(f"storage_path{where}: cannot keep the kubectl token: {error}") from None
        tokens[admin_token] = admin
    remote_services: list[RemoteService] = []
    if settings.remote_services_file:
        try:
            remote_services = load_remote_services(settings.remote_services_file)
        except (RemoteServicesError, OSError) as error:
            raise ConfigError(str(error)) from None
        local_names = {local.name for local in LOCAL_APISERVICES}
        for remote_service in remote_services:
            if remote_service.name in local_names:
                raise ConfigError(f"remote_services_file {settings.remote_services_file}: {remote_service.group}/"
                                  f"{remote_service.version} is served by this process and cannot be remote")
    pem = None
    if settings.apiservice_ca_bundle_file:
        with open(settings.apiservice_ca_bundle_file, "rb") as handle:
            pem = handle.read()
    try:
        store = FileStore.open(settings.storage_path)
    except StoreLockedError as error:
        raise ConfigError(str(error)) from None
    except OSError as error:
        raise ConfigError(f"storage_path{where}: cannot open the file storage in {settings.storage_path}: "
                          f"{error}") from None
    return Runtime(serving, client_ca, requestheader_ca, tokens, admin_token, store, proxy_client,
                   apiservice_ca_bundle, pem, remote_services)


def build_authenticator(settings: Settings, runtime: Runtime, client_verifier: ChainVerifier | None = None,
                        header_verifier: ChainVerifier | None = None) -> Authenticator:
    """The authenticator chain in kube-apiserver's order: front proxy, client certificate, bearer token."""
    chain: list[IAuthenticator] = []
    if runtime.requestheader_ca:
        chain.append(RequestHeaderAuthenticator(header_verifier or ChainVerifier(runtime.requestheader_ca),
                                                settings.requestheader))
    if runtime.client_ca:
        chain.append(X509Authenticator(client_verifier or ChainVerifier(runtime.client_ca)))
    if runtime.tokens:
        chain.append(TokenAuthenticator(runtime.tokens))
    return Authenticator(chain, anonymous=settings.anonymous_auth)


#: Seconds given to finished responses and ended watch streams to flush their last bytes at shutdown.
FLUSH_GRACE = 0.5


class GracefulServer(service.MultiService):
    """Owns the listener and the store, and stops them in kube-apiserver's order on SIGTERM.

    `/readyz` fails at once; requests keep being served for the shutdown delay; then the listener
    closes, in-flight requests get up to the drain timeout to finish, open watches are ended cleanly,
    and only then is the store flushed and its lock released.
    """

    def __init__(self, readiness: ReadinessService, in_flight: InFlight, watches: set[Any], store: IStore,
                 clock: Any, delay: float, drain_timeout: float):
        super().__init__()
        self._readiness = readiness
        self._in_flight = in_flight
        self._watches = watches
        self._store = store
        self._clock = clock
        self._delay = delay
        self._drain_timeout = drain_timeout

    def stopService(self) -> Deferred[None]:
        self._readiness.shutting_down = True
        return Deferred.fromCoroutine(self._stop())

    async def _stop(self) -> None:
        _log.info("shutting down: not ready; serving for {delay} more seconds", delay=self._delay)
        if self._delay > 0:
            await deferLater(self._clock, self._delay, lambda: None)
        await super().stopService()
        drained = self._in_flight.idle()
        timer = self._clock.callLater(self._drain_timeout, drained.cancel)
        try:
            await drained
        except CancelledError:
            _log.warn("shutting down with requests still in flight after {seconds} seconds",
                      seconds=self._drain_timeout)
        else:
            if timer.active():
                timer.cancel()
        for stream in list(self._watches):
            stream.end()
        # Let the last responses and the ends of the watch streams reach their clients before the reactor
        # stops and drops the connections.
        await deferLater(self._clock, FLUSH_GRACE, lambda: None)
        await self._store.close()
        _log.info("shut down cleanly")


class ClosingService(service.Service):
    """Runs a coroutine function when the daemon stops (closing pools, for example)."""

    def __init__(self, close: Callable[[], Coroutine[Any, Any, None]]):
        self._close = close

    def stopService(self) -> Deferred[None]:
        super().stopService()
        return Deferred.fromCoroutine(self._close())


#: The group-versions served in this process, and their Local APIServices' priorities.
LOCAL_APISERVICES = (
    LocalAPIService("apiregistration.k8s.io", "v1", 18000, 15),
    LocalAPIService("service.grafana.app", "v0alpha1", 15000, 1),
)


def local_groups(now: Callable[[], datetime.datetime]) -> tuple[APIServiceStrategy, list[LocalGroupVersion]]:
    """The kinds served here, grouped by group-version."""
    apiservices = APIServiceStrategy(clock=now)
    return apiservices, [
        LocalGroupVersion("apiregistration.k8s.io", "v1", (apiservices,)),
        LocalGroupVersion("service.grafana.app", "v0alpha1", (ExternalNameStrategy(),)),
    ]


def make_service(settings: Settings, runtime: Runtime, reactor: IReactorCore) -> service.MultiService:
    """Wire the daemon: storage, TLS listener, authentication, the served tree and health checks."""
    clock: Any = reactor
    top = service.MultiService()
    metrics = Metrics()
    store: IStore = InstrumentedStore(runtime.store, metrics.observe_storage, clock)
    readiness = ReadinessService()
    readiness.setServiceParent(top)

    def now() -> datetime.datetime:
        return datetime.datetime.fromtimestamp(clock.seconds(), datetime.timezone.utc)

    apiservice_strategy, groups = local_groups(now)
    registration = LocalAPIServiceRegistration(store, apiservice_strategy, LOCAL_APISERVICES, now)
    registration.setServiceParent(top)
    autoregistration = AutoRegistration(store, apiservice_strategy, runtime.remote_services,
                                        runtime.apiservice_ca_bundle_pem, now, clock)
    autoregistration.setServiceParent(top)

    health = HealthChecks()
    health.add("ping", lambda: None)
    health.add("shutdown", readiness.check, endpoints=("readyz",))
    health.add("poststarthook/local-apiservice-registration",
               lambda: None if registration.done else "the Local APIServices are not registered yet")
    health.add("autoregister-completion", autoregistration.check, endpoints=("healthz", "readyz"))

    index = APIServiceIndex(store)
    index.setServiceParent(top)
    index.listeners.append(lambda event: apiservice_metrics(metrics, event))
    clients = UpstreamClients(clock, runtime.proxy_client, runtime.apiservice_ca_bundle)
    ClosingService(clients.close).setServiceParent(top)
    stripped = frozenset(h.lower() for h in (*settings.requestheader.username_headers,
                                             *settings.requestheader.uid_headers,
                                             *settings.requestheader.group_headers))

    availability = AvailabilityController(store, lambda backend: cast(Any, clients.client_for(backend)), clock, now,
                                          observe_probe=metrics.observe_probe)
    availability.setServiceParent(top)
    health.add("poststarthook/apiservice-status-available-controller",
               lambda: None if availability.synced else "the availability of remote APIServices is not known yet",
               endpoints=("readyz",))

    limiters: dict[str, DeferredSemaphore] = {}
    # The proxy of each APIService, reused while neither it nor its ExternalName changes in the index.
    proxies: dict[str, ProxyResource] = {}

    def forget_proxy(event: WatchEvent) -> None:
        if event.type == "DELETED" and event.collection == APISERVICES:
            proxies.pop(event.name, None)

    index.listeners.append(forget_proxy)

    def remote(group: str, version: str) -> IResource | None:
        apiservice = index.apiservice_for(group, version)
        if apiservice is None or is_local(apiservice) or not settings.kubernetes_aggregator:
            return None
        name = apiservice["metadata"]["name"]
        externalname = index.externalname_for(apiservice)
        cached = proxies.get(name)
        if cached is not None and cached.serves(apiservice, externalname):
            return cached
        limiter = limiters.get(name)
        if limiter is None:
            limiter = limiters[name] = DeferredSemaphore(MAX_CONNECTIONS_PER_BACKEND)
        proxy = ProxyResource(apiservice, externalname, clients.agent_for, clock, request_user,
                              on_unreachable=availability.recheck, extra_stripped=stripped,
                              request_timeout=settings.request_timeout, metrics=metrics, limiter=limiter)
        proxies[name] = proxy
        return proxy

    remote_discovery = RemoteDiscovery(index, clients.client_for, clock)
    remote_discovery.setServiceParent(top)
    health.add("poststarthook/apiservice-discovery-controller",
               lambda: None if remote_discovery.synced else "the discovery of remote APIServices is not done yet",
               endpoints=("readyz",))
    remote_openapi = None
    if settings.kubernetes_aggregator:
        remote_openapi = RemoteOpenAPI(index, clients.client_for, clock)
        remote_openapi.setServiceParent(top)
    apis = ApisResource(store, groups, clock, settings.emulated_version[1], remote=remote,
                        remote_resources=remote_discovery.resources_for,
                        installed=lambda: registration.done and index.synced(),
                        generation=lambda: (index.generation, remote_discovery.generation) if index.synced() else None,
                        indexed=index.apiservices)
    tree = build_tree(health=health, emulated_version=settings.emulated_version, apis=apis,
                      openapi=OpenAPIResource(groups, settings.emulated_version, remote=remote_openapi),
                      metrics=MetricsResource(metrics))
    limits = Limits(
        max_read_only_in_flight=settings.max_requests_inflight,
        max_mutating_in_flight=settings.max_mutating_requests_inflight,
        request_timeout=settings.request_timeout,
        max_body_bytes=settings.max_request_body_bytes,
    )
    in_flight = InFlight(limits)
    client_verifier = ReloadableVerifier(runtime.client_ca)
    header_verifier = ReloadableVerifier(runtime.requestheader_ca)
    root = AuthenticatingRoot(tree, build_authenticator(settings, runtime, client_verifier, header_verifier),
                              in_flight=in_flight)
    site = build_site(root, limits, clock, RequestAccounting(metrics, clock, Logger("grafana_aggregator.access")))
    graceful = GracefulServer(readiness, in_flight, apis.watches, store, clock,
                              settings.shutdown_delay_duration, settings.shutdown_drain_timeout)
    graceful.setName("graceful")
    graceful.setServiceParent(top)

    def on_listening(port: IListeningPort) -> None:
        url = listening_url(port, settings.bind_address, settings.secure_port)
        if runtime.admin_token is not None:
            write_kubeconfig(settings.kubeconfig_path, url, trust_anchor(runtime.serving.chain), runtime.admin_token)
            _log.info("kubectl access: export KUBECONFIG={path}", path=os.path.abspath(settings.kubeconfig_path))
        _log.info("grafana-aggregator {version} serving on {url}", version=__version__, url=url)

    tls = ServingTLS(runtime.serving, [*runtime.client_ca, *runtime.requestheader_ca])
    CertificateReloader(
        clock, serving=runtime.serving, on_serving=tls.update,
        client_ca_file=settings.client_ca_file, client_ca=runtime.client_ca,
        on_client_ca=client_verifier.replace_cas,
        requestheader_ca_file=settings.requestheader.client_ca_file, requestheader_ca=runtime.requestheader_ca,
        on_requestheader_ca=header_verifier.replace_cas,
        proxy_client=runtime.proxy_client, on_proxy_client=clients.replace_proxy_client,
    ).setServiceParent(top)
    endpoint = TLSServerEndpoint(listening_endpoint(reactor, settings.listen, settings.bind_address, settings.secure_port), tls, on_listening)
    listener = StreamServerEndpointService(endpoint, site)
    listener._raiseSynchronously = True
    listener.setName("https")
    listener.setServiceParent(graceful)
    for unknown in settings.unknown_keys:
        _log.warn("ignoring unknown setting {key} in {file}", key=unknown, file=settings.config_file)
    return top


def apiservice_metrics(metrics: Metrics, event: WatchEvent) -> None:
    """Keep kube's aggregator_unavailable_apiservice metrics in step with stored APIService conditions."""
    if event.collection != APISERVICES:
        return
    if event.type == "DELETED":
        metrics.forget_apiservice(event.name)
        return
    condition = available_condition(event.object) or {}
    metrics.set_apiservice_available(event.name, condition.get("status") == "True", condition.get("reason", ""))


def listening_port(top: service.MultiService) -> Any:
    """The listening port of a started daemon service (for tests and tools), or None before it listens."""
    graceful: Any = top.getServiceNamed("graceful")
    return graceful.getServiceNamed("https").endpoint.port


def exit_cleanly_on_sigterm(reactor: Any) -> None:
    """Make SIGTERM a clean stop (exit status 0), not death by signal: systemd and tests see success."""

    def stop(signum: int, frame: object) -> None:
        _log.info("received SIGTERM, shutting down")
        reactor.callFromThread(reactor.stop)

    reactor.callWhenRunning(signal.signal, signal.SIGTERM, stop)


def makeService(options: Options) -> service.MultiService:
    """twistd's entry point."""
    from twisted.internet import reactor

    exit_cleanly_on_sigterm(reactor)

    return make_service(options.settings, options.runtime, reactor)
