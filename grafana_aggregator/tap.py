"""Composition root of `twistd grafana-aggregator`: options, then one MultiService wired from them.

This is the only module that touches the global reactor; everything below it receives the reactor,
clock and clients it needs.  `make_service` takes the reactor as an argument so tests build the
real service against a MemoryReactorClock.
"""

from __future__ import annotations

import datetime
import functools
import os
import shutil
import signal
import socket
import sys
import tempfile
from collections.abc import Callable, Coroutine
from typing import Any

from attrs import evolve, field, frozen
from twisted.application import service
from twisted.application.internet import StreamServerEndpointService
from twisted.internet import endpoints
from twisted.internet.defer import Deferred
from twisted.internet.endpoints import UNIXServerEndpoint
from twisted.internet.task import deferLater
from twisted.internet.interfaces import IListeningPort, IReactorCore
from twisted.logger import Logger
from twisted.python import usage
from twisted.web.client import readBody
from twisted.web.http_headers import Headers
from twisted.web.resource import Resource

from . import __version__
from .aggregation.reachability import Reachability
from .aggregation.remote_discovery import DiscoveryCache
from .aggregation.remote_openapi import RemoteOpenAPI
from .aggregation.proxy import Proxy
from .aggregation.routing import ProxyMaker, RoutingTable
from .aggregation.upstream import UpstreamClients
from .apimachinery.rest import GroupVersionResource, serve_locally
from .apimachinery.structural import structural_errors
from .apimachinery.watch import end_watches
from .apimachinery.strategy import LocalGroupVersion, wall_clock
from .config.remote_services import RemoteService, RemoteServicesError, load_remote_services
from .config.settings import KEYS, ConfigError, Settings, load_settings
from .controllers.apiservice_metrics import follow_apiservice_availability
from .controllers.autoregister import AutoRegistration
from .controllers.bundled import BundledGroup
from .controllers.crds import CRDController
from .controllers.customresources import CRD_GROUP_PRIORITY_MINIMUM, CRD_VERSION_PRIORITY, CustomResourceServing
from .controllers.availability import AvailabilityController
from .controllers.leadership import LeaderOnly, any_ready
from .controllers.local_apiservices import LocalAPIService, LocalAPIServiceRegistration
from .controllers.replica_availability import AvailabilityFromViews
from .controllers.remote_openapi import RemoteOpenAPIController
from .example import bundled as bundled_example
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
from .identity.kubeconfig import ensure_admin_token, listening_url, write_kubeconfig
from .identity.reviews import review_group_versions
from .processes.channel import ChannelRoot
from .processes.forward import OWNER, ForwardToOwner, WorkerTree
from .processes.metrics import SummedMetricsResource
from .processes.remote_store import ChannelStore, unix_agent
from .processes.replica import OwnerWorkersCheck, WorkersStatusResource, control_get
from .processes.supervisor import LISTEN_FD, STATUS_FD, WORKER_ENV, WorkerSupervisor
from .processes.worker import AdoptedEndpoint, OwnerWatch, StatusReporter, WorkerLogger, accept_one_at_a_time
from .registry.apiservice import APISERVICES, APIServiceStrategy
from .registry.externalname import EXTERNALNAMES, ExternalNameStrategy
from .registry.customresourcedefinition import CUSTOMRESOURCEDEFINITIONS, CustomResourceDefinitionStrategy
from .storage import IStore, StoreLockedError
from .storage.etcd import EtcdCheck, EtcdStore
from .storage.etcd_client import DEFAULT_TIMEOUT as ETCD_TIMEOUT
from .storage.etcd_client import make_client as make_etcd_client
from .storage.etcd_lease import EtcdSession, LeaderElection, ReplicaViews
from .storage.file import FileStore
from .storage.informer import Informer
from .storage.instrumented import InstrumentedStore
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
from .tls.reload import CertificateReloader, ReloadableVerifier
from .web.discovery import ApisResource
from .web.health import HealthChecks, ReadinessService, StorageCheck
from .web.logtext import TextLoggingService, log_file
from .web.metrics import Metrics, MetricsResource, RequestAccounting
from .web.openapi import OpenAPIResource
from .web.reviews import serve_reviews
from .web.root import AuthenticatingRoot, InFlight, build_tree
from .web.shutdown import ClosingService, GracefulServer
from .web.site import Limits, build_site

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
        #: (number, channel folder) when this process is a worker started by an owner (see processes/).
        self.worker = worker_role(os.environ.get(WORKER_ENV))
        try:
            self.settings = load_settings(self["config"], flags)
            if self.worker is not None and self.settings.storage_type == "etcd":
                # A full replica: its own etcd client and watch cache, nothing read through the owner.
                self.runtime = load_runtime(self.settings)
                return
            if self.worker is not None:
                from twisted.internet import reactor as worker_reactor

                store = ChannelStore(unix_agent(worker_reactor, channel_socket(self.worker[1])), worker_reactor)
                self.runtime = load_runtime(self.settings, store=store)
                return
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


def worker_role(value: str | None) -> tuple[int, str, int] | None:
    """The worker number, channel folder and owner's pid an owner gave its worker in the environment (None: not
    a worker)."""
    if not value:
        return None
    number, _, rest = value.partition(":")
    owner, _, folder = rest.partition(":")
    return int(number), folder, int(owner)


def channel_socket(folder: str) -> str:
    """The owner's end of the channel: the Unix socket the workers forward to."""
    return os.path.join(folder, "owner.sock")


def control_socket(folder: str, worker: int) -> str:
    """A worker's control socket, where the owner reads its metrics."""
    return os.path.join(folder, f"worker-{worker}.sock")


def worker_command(options: Options, folder: str) -> Callable[[int], tuple[str, list[str], dict[str, str]]]:
    """What starts worker n: this Python running `twistd grafana-aggregator` in the foreground with the owner's
    config and flags; it logs to the owner's stdout, or, when the owner is a daemon with a log file, to
    `<log file>.worker-<n>` (two processes must not write one twistd log file)."""
    parent = getattr(options, "parent", None)
    twistd: dict[str, Any] = parent if isinstance(parent, dict) else {}
    logfile = twistd.get("logfile")
    daemon_log = None
    if "nodaemon" in twistd and not twistd.get("nodaemon") and logfile != "-":
        daemon_log = os.path.abspath(logfile or "twistd.log")
    flags = [f"--config={options['config']}"] if options["config"] else []
    flags.extend(f"--{key.flag}={options[key.flag]}" for key in KEYS if key.flag and options[key.flag] is not None)
    env = {name: value for name, value in os.environ.items() if not name.startswith("LISTEN_")}

    def command(worker: int) -> tuple[str, list[str], dict[str, str]]:
        log = f"{daemon_log}.worker-{worker}" if daemon_log else "-"
        argv = [sys.executable, "-c", "from twisted.scripts.twistd import run; run()", "--nodaemon", "--pidfile=",
                f"--logfile={log}", "grafana-aggregator", *flags]
        return sys.executable, argv, {**env, WORKER_ENV: f"{worker}:{os.getpid()}:{folder}"}

    return command


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


def load_runtime(settings: Settings, store: IStore | None = None) -> Runtime:
    """Load every file the settings name; a problem becomes a ConfigError naming the key and the file.

    A worker passes the `store` it reads through the owner: it never opens (or locks) the file storage.
    """
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
        local_names = {local.name for local in (*LOCAL_APISERVICES, *REVIEW_APISERVICES)}
        for remote_service in remote_services:
            if remote_service.name in local_names:
                raise ConfigError(f"remote_services_file {settings.remote_services_file}: {remote_service.group}/"
                                  f"{remote_service.version} is served by this process and cannot be remote")
    pem = None
    if settings.apiservice_ca_bundle_file:
        with open(settings.apiservice_ca_bundle_file, "rb") as handle:
            pem = handle.read()
    try:
        if store is None:
            store = _etcd_store(settings, where) if settings.storage_type == "etcd" else FileStore.open(settings.storage_path)
    except StoreLockedError as error:
        raise ConfigError(str(error)) from None
    except OSError as error:
        raise ConfigError(f"storage_path{where}: cannot open the file storage in {settings.storage_path}: "
                          f"{error}") from None
    return Runtime(serving, client_ca, requestheader_ca, tokens, admin_token, store, proxy_client,
                   apiservice_ca_bundle, pem, remote_services)


def _etcd_store(settings: Settings, where: str) -> IStore:
    """The etcd store the settings describe (nothing is read from etcd until the informer lists)."""
    from twisted.internet import reactor

    try:
        client = make_etcd_client(reactor, settings.etcd_servers, cafile=settings.etcd_cafile,
                                  certfile=settings.etcd_certfile, keyfile=settings.etcd_keyfile,
                                  timeout=min(ETCD_TIMEOUT, settings.request_timeout / 2))
    except (OSError, ValueError) as error:
        raise ConfigError(f"[grafana-apiserver] etcd_cafile / etcd_certfile / etcd_keyfile{where}: {error}") from None
    return EtcdStore(client, reactor, settings.etcd_prefix)


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


#: The group-versions served in this process, and their Local APIServices' priorities.
LOCAL_APISERVICES = (
    LocalAPIService("apiregistration.k8s.io", "v1", 18000, 15),
    LocalAPIService("apiextensions.k8s.io", "v1", 16700, 15),
    LocalAPIService("service.grafana.app", "v0alpha1", 15000, 1),
)
#: The self-review group-versions served in this process (kubectl auth can-i / whoami), with kube's priorities.
REVIEW_APISERVICES = (
    LocalAPIService("authentication.k8s.io", "v1", 17700, 15),
    LocalAPIService("authentication.k8s.io", "v1beta1", 17700, 9),
    LocalAPIService("authorization.k8s.io", "v1", 17600, 15),
)


def local_groups(now: Callable[[], datetime.datetime]) -> tuple[APIServiceStrategy, list[LocalGroupVersion]]:
    """The kinds served here, grouped by group-version."""
    apiservices = APIServiceStrategy(clock=now)
    return apiservices, [
        LocalGroupVersion("apiregistration.k8s.io", "v1", (apiservices,)),
        LocalGroupVersion("apiextensions.k8s.io", "v1", (CustomResourceDefinitionStrategy(structural_errors),)),
        LocalGroupVersion("service.grafana.app", "v0alpha1", (ExternalNameStrategy(),)),
    ]


def serving_tls(settings: Settings, runtime: Runtime, clock: Any, client_verifier: ReloadableVerifier,
                header_verifier: ReloadableVerifier, clients: UpstreamClients, top: service.MultiService) -> ServingTLS:
    """The listener's TLS, kept current with the certificate files by a CertificateReloader under `top`."""
    tls = ServingTLS(runtime.serving, [*runtime.client_ca, *runtime.requestheader_ca])
    CertificateReloader(
        clock, serving=runtime.serving, on_serving=tls.update,
        client_ca_file=settings.client_ca_file, client_ca=runtime.client_ca,
        on_client_ca=client_verifier.replace_cas,
        requestheader_ca_file=settings.requestheader.client_ca_file, requestheader_ca=runtime.requestheader_ca,
        on_requestheader_ca=header_verifier.replace_cas,
        proxy_client=runtime.proxy_client, on_proxy_client=clients.replace_proxy_client,
    ).setServiceParent(top)
    return tls


def replica_name(settings: Settings, worker: int | None = None) -> str:
    """This process's stable name among the replicas on one etcd: `replica_name`, else `<host>:<port>` (the port
    the settings listen on: the `--listen` description's, else `secure_port`; `<host>/pid-<n>` on port 0), with
    `/worker-<n>` for a worker."""
    name = settings.replica_name
    if not name:
        port = str(settings.secure_port)
        if settings.listen:
            fields = settings.listen.split(":")
            port = fields[1] if len(fields) > 1 and fields[1].isdigit() else "0"
        host = socket.gethostname()
        name = f"{host}:{port}" if port != "0" else f"{host}/pid-{os.getpid()}"
    return f"{name}/worker-{worker}" if worker else name


@frozen
class Replication:
    """What makes this process one of several replicas on one etcd: its lease, the election, the views board."""

    name: str
    session: EtcdSession
    election: LeaderElection
    views: ReplicaViews
    reachability: Reachability


def replication(settings: Settings, store: EtcdStore, clock: Any, name: str) -> Replication:
    """The replica's session, leader election and availability board on the store's etcd client."""
    session = EtcdSession(store.client, clock, settings.etcd_lease_ttl)
    election = LeaderElection(store.client, session, clock, settings.etcd_prefix, name)
    views = ReplicaViews(store.client, session, clock, settings.etcd_prefix, "availability", name)
    return Replication(name, session, election, views, Reachability(name))


def make_service(settings: Settings, runtime: Runtime, reactor: IReactorCore,
                 worker_command: Callable[[str], Callable[[int], tuple[str, list[str], dict[str, str]]]] | None = None,
                 *, worker: int | None = None, worker_folder: str = "", owner_pid: int | None = None,
                 status_fd: int | None = STATUS_FD, listen_fd: int = LISTEN_FD) -> service.MultiService:
    """Wire the daemon: storage, the informer, controllers, the routing table, the served tree and the listener.

    With `workers` above 1 (and `worker_command`, which makes the command of a worker from the channel
    folder), this process is the owner: it also starts the workers on its listening socket and serves
    them the owner channel (file storage) or its control socket (etcd storage).  With `worker` (etcd
    storage only), this process is that full-replica worker: the same wiring on its own store, accepting
    on the owner's socket (`listen_fd`), reporting readiness on `status_fd`, its metrics and the owner's
    in `worker_folder`, and stopping when the owner (`owner_pid`) is gone.
    """
    clock: Any = reactor
    top = service.MultiService()
    metrics = Metrics()
    supervisor: WorkerSupervisor | None = None
    folder = ""
    if settings.workers > 1 and worker_command is not None:
        folder = tempfile.mkdtemp(prefix="grafana-aggregator-")  # 0700: only this user reaches the channel
        supervisor = WorkerSupervisor(reactor, settings.workers, worker_command(folder), metrics.registry,
                                      stop_timeout=settings.shutdown_delay_duration + settings.shutdown_drain_timeout
                                      + 10)
    if worker is not None:
        folder = worker_folder
    #: Every process on one etcd serves everything itself (no owner channel): the workers are full replicas.
    full_replicas = settings.storage_type == "etcd"
    #: This process's stable name among the replicas sharing the store (leader election's holder identity).
    replica = replica_name(settings, worker)
    status = StatusReporter(status_fd if worker is not None else None)

    store: IStore = InstrumentedStore(runtime.store, metrics.observe_storage, clock)
    readiness = ReadinessService()
    readiness.setServiceParent(top)

    now = wall_clock(clock)
    # With etcd, this process is one replica of several: one leader runs the controllers that write.
    replicas = replication(settings, runtime.store, clock, replica) if isinstance(runtime.store, EtcdStore) else None
    if replicas is not None:
        for replica_part in (replicas.session, replicas.views, replicas.election):
            replica_part.setServiceParent(top)
        replicas.election.add_listener(functools.partial(_leadership_changed, metrics))
    # Storage and the one shared view of the APIServices and ExternalNames.
    informer = Informer(store, (APISERVICES, EXTERNALNAMES, CUSTOMRESOURCEDEFINITIONS), clock)
    follow_apiservice_availability(informer, metrics)
    apiservice_strategy, groups = local_groups(now)
    registration = LocalAPIServiceRegistration(store, informer, apiservice_strategy,
                                               (*LOCAL_APISERVICES, *REVIEW_APISERVICES), now, clock)
    autoregistration = AutoRegistration(store, informer, apiservice_strategy, runtime.remote_services,
                                        runtime.apiservice_ca_bundle_pem, now, clock)

    # Backends: clients, what they answered, and the controllers that keep asking.
    clients = UpstreamClients(clock, runtime.proxy_client, runtime.apiservice_ca_bundle)
    discovery = DiscoveryCache()
    availability = AvailabilityController(store, informer, clients.client_for, clock, now, discovery,
                                          observe_probe=metrics.observe_probe, close_idle=clients.close_idle,
                                          reachability=replicas.reachability if replicas else None,
                                          views=replicas.views if replicas else None)
    clients.add_closed_listener(availability.backend_closed)
    if supervisor is not None:
        supervisor.on_unreachable_hint(availability.recheck, availability.backend_closed)
    remote_openapi = RemoteOpenAPI()
    openapi_controller = RemoteOpenAPIController(informer, remote_openapi, clients.client_for, clock,
                                                 on_unreachable=availability.recheck)

    # The routing table and the served tree.
    watches: set[Any] = set()
    reviews = review_group_versions()
    local = [*serve_locally(groups, store, clock, watches), *serve_reviews(reviews, clock)]
    stripped = frozenset(h.lower() for h in (*settings.requestheader.username_headers,
                                             *settings.requestheader.uid_headers,
                                             *settings.requestheader.group_headers,
                                             *settings.requestheader.extra_headers_prefixes))
    proxies = ProxyMaker(clock, clients.agent_for, meter_for=metrics.upstream_meter,
                         on_unreachable=availability.recheck, extra_stripped=stripped)
    routing = RoutingTable(informer, local, discovery, proxies if settings.kubernetes_aggregator else None,
                           reachability=replicas.reachability if replicas else None,
                           refused_here=lambda name: metrics.unreachable_here.labels(apiservice=name).inc())
    apis = ApisResource(routing, settings.emulated_version[1])
    openapi = OpenAPIResource([*groups, *reviews], settings.emulated_version,
                              remote=remote_openapi if settings.kubernetes_aggregator else None, clock=clock)
    health = HealthChecks()
    health.add("ping", lambda: None)
    storage_check = StorageCheck(store, clock)
    storage_check.setServiceParent(top)
    health.add("storage", storage_check.check, endpoints=("readyz",))
    if isinstance(runtime.store, EtcdStore):
        etcd_check = EtcdCheck(runtime.store, clock)
        etcd_check.setServiceParent(top)
        health.add("etcd", etcd_check.check, endpoints=("readyz",))
    health.add("shutdown", readiness.check, endpoints=("readyz",))
    if replicas is None:
        health.add("poststarthook/local-apiservice-registration", registration.check)
        health.add("autoregister-completion", autoregistration.check, endpoints=("healthz", "readyz"))
    else:
        # The leader registers; every replica is ready once what it registers is stored.
        health.add("poststarthook/local-apiservice-registration", any_ready(registration.check, registration.present))
        health.add("autoregister-completion", any_ready(autoregistration.check, autoregistration.present),
                   endpoints=("healthz", "readyz"))
    health.add("poststarthook/apiservice-status-available-controller", availability.check, endpoints=("readyz",))
    health.add("poststarthook/apiservice-discovery-controller", availability.check, endpoints=("readyz",))
    metrics_resource: Any = MetricsResource(metrics)
    if supervisor is not None:
        workers = supervisor
        health.add("workers", workers.check, endpoints=("readyz",))
        metrics_resource = SummedMetricsResource(metrics, lambda: [
            functools.partial(_metrics_of, reactor, control_socket(folder, n)) for n in workers.running_workers()])
    if worker is not None:
        # A replica worker answers /readyz and /metrics itself: the owner's workers check, every process's metrics.
        owner_workers = OwnerWorkersCheck(functools.partial(control_get, reactor, control_socket(folder, 0),
                                                            b"/workers"), clock)
        owner_workers.setServiceParent(top)
        health.add("workers", owner_workers.check, endpoints=("readyz",))
        metrics_resource = SummedMetricsResource(metrics, lambda: [
            functools.partial(_metrics_of, reactor, control_socket(folder, n)) for n in range(settings.workers)
            if n != worker and os.path.exists(control_socket(folder, n))])
    # The bundled example group (grafanaAPIServerWithExperimentalAPIs): installed once the store is listed,
    # unless a remote APIService of its name wins.
    bundled_gv, bundled_handler = bundled_example.bundled_example(clock, now())

    def install_bundled() -> None:
        routing.add_local(bundled_gv, bundled_handler)
        openapi.add_group(bundled_gv)
        registration.add(LocalAPIService(bundled_gv.group, bundled_gv.version, bundled_example.GROUP_PRIORITY_MINIMUM,
                                         bundled_example.VERSION_PRIORITY))

    bundled = BundledGroup(store, informer, bundled_example.NAME, f"{bundled_gv.group}/{bundled_gv.version}",
                           settings.experimental_apis, install_bundled,
                           frozenset(remote.name for remote in runtime.remote_services),
                           lambda name: metrics.bundled_conflicts.labels(apiservice=name).inc(), now)
    tree = build_tree(health=health, emulated_version=settings.emulated_version, apis=apis, openapi=openapi,
                      metrics=metrics_resource)

    # CustomResourceDefinitions: their status controllers, and the kinds of the established ones served here.
    crd_controller = CRDController(store, informer, clock, now)

    def install_custom_resources(gv: LocalGroupVersion) -> None:
        end_watches(watches, gv.group, gv.version, keep={info.plural for info in gv.infos})
        routing.add_local(gv, GroupVersionResource(gv.group, gv.version, list(gv.kinds), store, clock,
                                                   watches=watches))
        openapi.add_group(gv)
        registration.add(LocalAPIService(gv.group, gv.version, CRD_GROUP_PRIORITY_MINIMUM, CRD_VERSION_PRIORITY))

    def uninstall_custom_resources(group: str, version: str) -> None:
        end_watches(watches, group, version)
        routing.remove_local(group, version)
        openapi.remove_group(group, version)
        registration.remove(f"{version}.{group}")

    built_in = frozenset((gv.group, gv.version) for gv in [*groups, *reviews, *([bundled_gv] if
                                                                               settings.experimental_apis else [])])
    custom_resources = CustomResourceServing(informer, install_custom_resources, uninstall_custom_resources,
                                             lambda: built_in)

    if replicas is None:
        for part in (informer, bundled, custom_resources, registration, autoregistration, availability,
                     crd_controller):
            part.setServiceParent(top)
    else:
        informer.setServiceParent(top)
        bundled.setServiceParent(top)
        custom_resources.setServiceParent(top)
        availability.setServiceParent(top)
        leader_only = LeaderOnly(replicas.election)
        for leader_part in (registration, autoregistration, crd_controller,
                            AvailabilityFromViews(store, informer, replicas.views, now, clock, replicas.name)):
            leader_part.setServiceParent(leader_only)
        leader_only.setServiceParent(top)
    if settings.kubernetes_aggregator:
        openapi_controller.setServiceParent(top)
    ClosingService(clients.close).setServiceParent(top)

    # Authentication, limits and the TLS listener.
    limits = _limits(settings)
    in_flight = InFlight(limits)
    client_verifier = ReloadableVerifier(runtime.client_ca)
    header_verifier = ReloadableVerifier(runtime.requestheader_ca)
    root = AuthenticatingRoot(tree, build_authenticator(settings, runtime, client_verifier, header_verifier),
                              in_flight=in_flight)
    site = build_site(root, limits, clock, RequestAccounting(metrics, clock, WorkerLogger("grafana_aggregator.access",
                                                                            worker or 0, in_text=supervisor is not None or worker is not None)))
    if supervisor is not None:
        # The owner channel: the same tree, identity from the workers' headers (trusted on this socket only).
        # Requests are counted and logged by the worker that accepted them, not again here.
        channel_site = build_site(ChannelRoot(tree, in_flight), evolve(limits, max_connections_per_client=limits.max_connections),
                                  clock, RequestAccounting(Metrics(), clock, _Quiet()))
        channel = _ChannelService(supervisor, folder)
        if full_replicas:
            # No channel: the owner's control socket, where replica workers read its metrics and workers check.
            control_tree = Resource()
            control_tree.putChild(b"metrics", MetricsResource(metrics))
            control_tree.putChild(b"workers", WorkersStatusResource(supervisor.check))
            _control_service(reactor, clock, control_socket(folder, 0), control_tree).setServiceParent(channel)
        else:
            StreamServerEndpointService(UNIXServerEndpoint(reactor, channel_socket(folder), mode=0o600),
                                        channel_site).setServiceParent(channel)
        channel.setServiceParent(top)
        supervisor.setServiceParent(top)
    graceful = GracefulServer(readiness, in_flight, watches, store, clock,
                              settings.shutdown_delay_duration, settings.shutdown_drain_timeout,
                              before_close=supervisor.exited if supervisor is not None else None)
    graceful.setName("graceful")
    graceful.setServiceParent(top)

    def on_listening(port: IListeningPort) -> None:
        if supervisor is not None:
            accept_one_at_a_time(port)
            supervisor.start_workers(port.fileno())  # type: ignore[attr-defined]
        if worker is not None:
            informer.ready.addCallback(lambda _: status.report("ready"))
            _log.info("worker {worker} accepting on the owner's socket as replica {replica}", worker=worker,
                      replica=replica)
            return
        url = listening_url(port, settings.bind_address, settings.secure_port)
        if runtime.admin_token is not None:
            write_kubeconfig(settings.kubeconfig_path, url, trust_anchor(runtime.serving.chain), runtime.admin_token)
            _log.info("kubectl access: export KUBECONFIG={path}", path=os.path.abspath(settings.kubeconfig_path))
        _log.info("grafana-aggregator {version} serving on {url}", version=__version__, url=url)

    tls = serving_tls(settings, runtime, clock, client_verifier, header_verifier, clients, top)
    server: Any = (AdoptedEndpoint(reactor, listen_fd) if worker is not None
                   else listening_endpoint(reactor, settings.listen, settings.bind_address, settings.secure_port))
    endpoint = TLSServerEndpoint(server, tls, on_listening)
    listener = StreamServerEndpointService(endpoint, site)
    listener._raiseSynchronously = True
    listener.setName("https")
    listener.setServiceParent(graceful)
    if worker is not None:
        # What a worker adds: its metrics on its control socket, not-ready first at shutdown, the owner watch.
        _control_service(reactor, clock, control_socket(folder, worker), MetricsResource(metrics)).setServiceParent(top)
        ClosingService(_report(status, "not-ready")).setServiceParent(top)
        OwnerWatch(clock, reactor.stop, owner_pid if owner_pid is not None else os.getppid()).setServiceParent(top)
    for unknown in settings.unknown_keys:
        _log.warn("ignoring unknown setting {key} in {file}", key=unknown, file=settings.config_file)
    return top


def _leadership_changed(metrics: Metrics, leading: bool) -> None:
    metrics.leader.set(1 if leading else 0)
    metrics.leader_changes.inc()


def _control_service(reactor: Any, clock: Any, path: str, resource: Any) -> StreamServerEndpointService:
    """A control socket (mode 0600, in the private folder) serving `resource`; a socket left by a killed
    process of the same number is removed first, or the new one could not listen."""
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass
    return StreamServerEndpointService(UNIXServerEndpoint(reactor, path, mode=0o600),
                                       build_site(resource, Limits(), clock, RequestAccounting(Metrics(), clock, _Quiet())))


class _Quiet(Logger):
    """A logger that drops its events (the owner channel's access log: the worker logs each request)."""

    def emit(self, level: Any, format: str | None = None, **kwargs: Any) -> None:
        return None


class _ChannelService(service.MultiService):
    """The owner channel's listener: it closes only after every worker has exited (they forward while draining)."""

    def __init__(self, supervisor: WorkerSupervisor, folder: str):
        super().__init__()
        self._supervisor = supervisor
        self._folder = folder

    def stopService(self) -> Any:
        return Deferred.fromCoroutine(self._stop())

    async def _stop(self) -> None:
        await self._supervisor.exited()
        await super().stopService()
        shutil.rmtree(self._folder, ignore_errors=True)


async def _metrics_of(reactor: Any, path: str) -> bytes:
    """One worker's metrics exposition, read from its control socket (within two seconds)."""
    agent = unix_agent(reactor, path, persistent=False)
    request = agent.request(b"GET", b"http://worker/metrics", Headers())
    timer = reactor.callLater(2, request.cancel)
    try:
        response = await request
        body: bytes = await readBody(response)
    finally:
        if timer.active():
            timer.cancel()
    return body


def make_worker_service(settings: Settings, runtime: Runtime, reactor: Any, worker: int, folder: str, owner_pid: int,
                        status_fd: int | None = STATUS_FD, listen_fd: int = LISTEN_FD) -> service.MultiService:
    """Wire a worker on the socket its owner passed down; it reloads its certificates and logs its requests itself.

    With file storage: authentication, its own routing table of the owner's APIServices, the proxy,
    and everything else forwarded to the owner over the owner channel.  With etcd storage: a full
    replica, `make_service` on its own etcd store, which serves everything itself.
    """
    if settings.storage_type == "etcd":
        return make_service(settings, runtime, reactor, worker=worker, worker_folder=folder, owner_pid=owner_pid,
                            status_fd=status_fd, listen_fd=listen_fd)
    clock: Any = reactor
    top = service.MultiService()
    metrics = Metrics()
    readiness = ReadinessService()
    readiness.setServiceParent(top)
    store = runtime.store
    informer = Informer(store, (APISERVICES, EXTERNALNAMES), clock)
    if isinstance(store, ChannelStore):
        store.on_broken = informer.relist
    clients = UpstreamClients(clock, runtime.proxy_client, runtime.apiservice_ca_bundle)
    stripped = frozenset(h.lower() for h in (*settings.requestheader.username_headers,
                                             *settings.requestheader.uid_headers,
                                             *settings.requestheader.group_headers,
                                             *settings.requestheader.extra_headers_prefixes))
    status = StatusReporter(status_fd)
    # The owner's availability controller re-probes a backend a proxied request could not reach.
    proxies = ProxyMaker(clock, clients.agent_for, meter_for=metrics.upstream_meter, extra_stripped=stripped,
                         on_unreachable=lambda name: status.report(f"unreachable {name}"))
    clients.add_closed_listener(lambda host, port: status.report(f"closed {host} {port}"))
    routing = RoutingTable(informer, [], DiscoveryCache(), proxies if settings.kubernetes_aggregator else None)
    forwarded_watches: set[Any] = set()
    owner = Proxy("owner", OWNER, unix_agent(reactor, channel_socket(folder)), clock, extra_stripped=stripped)
    tree = WorkerTree(routing, ForwardToOwner(owner, forwarded_watches))
    informer.setServiceParent(top)
    ClosingService(clients.close).setServiceParent(top)

    limits = _limits(settings)
    in_flight = InFlight(limits)
    client_verifier = ReloadableVerifier(runtime.client_ca)
    header_verifier = ReloadableVerifier(runtime.requestheader_ca)
    root = AuthenticatingRoot(tree, build_authenticator(settings, runtime, client_verifier, header_verifier),
                              in_flight=in_flight)
    site = build_site(root, limits, clock,
                      RequestAccounting(metrics, clock, WorkerLogger("grafana_aggregator.access", worker, in_text=True)))

    async def watches_ended() -> None:
        """At shutdown, wait (up to the drain timeout) for the owner to end the watches this worker forwarded."""
        waited = 0.0
        while forwarded_watches and waited < settings.shutdown_drain_timeout:
            await deferLater(clock, 0.1, lambda: None)
            waited += 0.1

    graceful = GracefulServer(readiness, in_flight, set(), store, clock, settings.shutdown_delay_duration,
                              settings.shutdown_drain_timeout,
                              before_close=lambda: Deferred.fromCoroutine(watches_ended()))
    graceful.setName("graceful")
    graceful.setServiceParent(top)
    tls = serving_tls(settings, runtime, clock, client_verifier, header_verifier, clients, top)

    def on_listening(port: IListeningPort) -> None:
        informer.ready.addCallback(lambda _: status.report("ready"))
        _log.info("worker {worker} accepting on the owner's socket", worker=worker)

    listener = StreamServerEndpointService(TLSServerEndpoint(AdoptedEndpoint(reactor, listen_fd), tls, on_listening),
                                           site)
    listener._raiseSynchronously = True
    listener.setName("https")
    listener.setServiceParent(graceful)
    control = StreamServerEndpointService(UNIXServerEndpoint(reactor, control_socket(folder, worker), mode=0o600),
                                          build_site(MetricsResource(metrics), Limits(), clock,
                                                     RequestAccounting(Metrics(), clock, _Quiet())))
    control.setServiceParent(top)
    ClosingService(_report(status, "not-ready")).setServiceParent(top)
    OwnerWatch(clock, reactor.stop, owner_pid).setServiceParent(top)
    return top


def _report(status: StatusReporter, line: str) -> Callable[[], Coroutine[Any, Any, None]]:
    async def report() -> None:
        status.report(line)

    return report


def _limits(settings: Settings) -> Limits:
    return Limits(
        max_read_only_in_flight=settings.max_requests_inflight,
        max_mutating_in_flight=settings.max_mutating_requests_inflight,
        request_timeout=settings.request_timeout,
        max_body_bytes=settings.max_request_body_bytes,
        max_connections=settings.max_connections,
        max_connections_per_client=settings.max_connections_per_client,
    )


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
    """twistd's entry point: the daemon (the owner, with workers), or one worker when an owner started this process."""
    from twisted.internet import reactor

    exit_cleanly_on_sigterm(reactor)
    top = TextLoggingService(log_file(getattr(options, "parent", None)))
    if options.worker is not None:
        make_worker_service(options.settings, options.runtime, reactor, *options.worker).setServiceParent(top)
    else:
        make_service(options.settings, options.runtime, reactor,
                     worker_command=lambda folder: worker_command(options, folder)).setServiceParent(top)
    return top
