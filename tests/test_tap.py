"""The composition root: options, loading of the files settings name, and the service built on a memory reactor."""

from __future__ import annotations

import base64
import datetime
import os
import socket
from typing import Any

import yaml
from cryptography import x509
from twisted.internet.testing import MemoryReactorClock
from twisted.protocols.tls import TLSMemoryBIOFactory
from twisted.python import usage
from twisted.trial.unittest import SynchronousTestCase
from twisted.web.server import Site

from grafana_aggregator.config.settings import load_settings
from grafana_aggregator.identity.kubeconfig import TOKEN_FILE, ensure_admin_token, server_url
from grafana_aggregator.controllers.availability import AvailabilityController
from grafana_aggregator.processes.remote_store import ChannelStore
from grafana_aggregator.processes.supervisor import WORKER_ENV
from grafana_aggregator.processes.worker import OwnerWatch
from grafana_aggregator.storage.etcd import EtcdStore
from grafana_aggregator.tap import Options, load_runtime, make_service, make_worker_service, replica_name
from grafana_aggregator.tls.certificates import ensure_self_signed, load_key_pair, trust_anchor

from .support import CertificateAuthority


class OptionsTests(SynchronousTestCase):
    """`twistd grafana-aggregator` flags, parsed into settings and loaded files."""

    def setUp(self) -> None:
        self.folder = os.path.abspath(self.mktemp())
        os.makedirs(self.folder)

    def parse(self, *argv: str) -> Options:
        options = Options()
        options.parseOptions(["--data-dir", os.path.join(self.folder, "data"), *argv])
        return options

    def test_flags_override_ini(self) -> None:
        """A flag wins over the ini key of the same setting."""
        ini = os.path.join(self.folder, "a.ini")
        with open(ini, "w") as handle:
            handle.write("[grafana-apiserver]\nsecure_port = 7000\nbind_address = 127.0.0.1\n")
        options = self.parse("--config", ini, "--secure-port", "7001")
        self.assertEqual((options.settings.secure_port, options.settings.bind_address), (7001, "127.0.0.1"))

    def test_bad_flag_value_is_usage_error(self) -> None:
        """A bad flag value is a UsageError naming the flag."""
        error = self.assertRaises(usage.UsageError, self.parse, "--secure-port", "http")
        self.assertEqual(str(error), "invalid value for --secure-port: 'http' is not a port number (1-65535)")

    def test_bad_listen_description(self) -> None:
        """A --listen value that is not an endpoint description is refused at startup."""
        error = self.assertRaises(usage.UsageError, self.parse, "--listen", "carrier-pigeon:7")
        self.assertIn("--listen / [grafana-apiserver] listen", str(error))
        self.assertIn("'carrier-pigeon:7' is not a server endpoint description", str(error))

    def test_unreadable_certificate_names_key_and_file(self) -> None:
        """A serving certificate file that holds no certificate is refused naming the keys and the file."""
        junk = os.path.join(self.folder, "junk.pem")
        with open(junk, "w") as handle:
            handle.write("not a certificate")
        error = self.assertRaises(usage.UsageError, self.parse, "--tls-cert-file", junk, "--tls-private-key-file", junk)
        self.assertEqual(str(error), f"serving certificate (tls_cert_file / tls_private_key_file): {junk}: no PEM certificate found")

    def test_key_not_matching_certificate(self) -> None:
        """A key that does not belong to the serving certificate is refused."""
        ca = CertificateAuthority()
        cert, _ = ca.server().write(self.folder, "one")
        _, key = ca.server().write(self.folder, "two")
        error = self.assertRaises(usage.UsageError, self.parse, "--tls-cert-file", cert, "--tls-private-key-file", key)
        self.assertIn(f"{key}: this key does not belong to the certificate in {cert}", str(error))

    def test_bad_client_ca(self) -> None:
        """A client CA file without certificates is refused naming client_ca_file."""
        empty = os.path.join(self.folder, "empty.crt")
        open(empty, "w").close()
        error = self.assertRaises(usage.UsageError, self.parse, "--client-ca-file", empty)
        self.assertIn("[grafana-apiserver] client_ca_file", str(error))

    def test_bad_token_file(self) -> None:
        """A malformed token file is refused naming token_auth_file and the line."""
        tokens = os.path.join(self.folder, "tokens.csv")
        with open(tokens, "w") as handle:
            handle.write("justatoken\n")
        error = self.assertRaises(usage.UsageError, self.parse, "--token-auth-file", tokens)
        self.assertIn(f"[grafana-apiserver] token_auth_file: {tokens}, line 1", str(error))

    def test_self_signed_generated_when_no_certificate(self) -> None:
        """Without a serving certificate one is generated into the cert dir, with the loopback names."""
        options = self.parse()
        chain = options.runtime.serving.chain
        names = chain[0].extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        self.assertIn("localhost", names.get_values_for_type(x509.DNSName))
        self.assertEqual({str(a) for a in names.get_values_for_type(x509.IPAddress)}, {"127.0.0.1", "::1"})
        self.assertEqual(options.runtime.serving.cert_file,
                         os.path.join(self.folder, "data", "grafana-apiserver", "certs", "apiserver.crt"))
        self.assertEqual(trust_anchor(chain), chain[-1])


class SelfSignedTests(SynchronousTestCase):
    """The generated serving certificate is kept across restarts and renewed before it expires."""

    def test_reused(self) -> None:
        """A second start reuses the same certificate and key."""
        folder = self.mktemp()
        first = load_key_pair(*ensure_self_signed(folder)).chain
        second = load_key_pair(*ensure_self_signed(folder)).chain
        self.assertEqual(first, second)
        self.assertEqual(os.stat(os.path.join(folder, "apiserver.key")).st_mode & 0o777, 0o600)

    def test_renewed_near_expiry(self) -> None:
        """A certificate within 30 days of expiry is replaced by a new one."""
        folder = self.mktemp()
        first = load_key_pair(*ensure_self_signed(folder)).chain
        later = datetime.datetime.now(datetime.timezone.utc) + datetime.timedelta(days=340)
        second = load_key_pair(*ensure_self_signed(folder, now=lambda: later)).chain
        self.assertNotEqual(first[0].serial_number, second[0].serial_number)

    def test_leaf_signed_by_included_root(self) -> None:
        """The file holds the leaf then its self-signed root, which is what clients are told to trust."""
        chain = load_key_pair(*ensure_self_signed(self.mktemp())).chain
        self.assertEqual(len(chain), 2)
        chain[0].verify_directly_issued_by(chain[1])
        self.assertIsNone(trust_anchor(chain[:1]))


class KubeconfigTests(SynchronousTestCase):
    """The kubectl kubeconfig and its admin token."""

    def test_token_kept_across_restarts(self) -> None:
        """The admin token and uid are created once, kept with mode 0600, and reused."""
        folder = self.mktemp()
        token, user = ensure_admin_token(folder)
        self.assertEqual(ensure_admin_token(folder), (token, user))
        self.assertEqual((user.name, user.groups), ("system:apiserver", ("system:masters",)))
        self.assertEqual(os.stat(os.path.join(folder, TOKEN_FILE)).st_mode & 0o777, 0o600)
        self.assertGreaterEqual(len(token), 40)

    def test_corrupt_token_file_replaced(self) -> None:
        """A token file that holds no usable token is replaced."""
        folder = self.mktemp()
        os.makedirs(folder)
        with open(os.path.join(folder, TOKEN_FILE), "w") as handle:
            handle.write("short")
        token, _ = ensure_admin_token(folder)
        self.assertNotEqual(token, "short")

    def test_server_url(self) -> None:
        """Wildcard listen addresses become loopback URLs; IPv6 is bracketed."""
        self.assertEqual(server_url("0.0.0.0", 6443), "https://127.0.0.1:6443")
        self.assertEqual(server_url("::", 6443), "https://[::1]:6443")
        self.assertEqual(server_url("10.1.2.3", 1), "https://10.1.2.3:1")


class MakeServiceTests(SynchronousTestCase):
    """make_service wires a TLS listener on the configured address and writes the kubeconfig once listening."""

    def setUp(self) -> None:
        self.folder = os.path.abspath(self.mktemp())
        self.reactor = MemoryReactorClock()

    def build(self, **flags: str) -> Any:
        settings = load_settings(None, {"data-dir": os.path.join(self.folder, "data"), **flags})
        return settings, make_service(settings, load_runtime(settings), self.reactor)

    def test_listens_with_tls_on_bind_address(self) -> None:
        """Starting the service listens on bind_address:secure_port with TLS around the web site."""
        settings, top = self.build(**{"bind-address": "127.0.0.1", "secure-port": "16443"})
        top.startService()
        self.addCleanup(top.stopService)
        port, factory, _, interface = self.reactor.tcpServers[0]
        self.assertEqual((port, interface), (16443, "127.0.0.1"))
        self.assertIsInstance(factory, TLSMemoryBIOFactory)
        self.assertIsInstance(factory.wrappedFactory, Site)
        self.assertFalse(os.path.exists(settings.kubeconfig_path))

    def test_kubeconfig_written(self) -> None:
        """With kubectl access on, the kubeconfig names the server, trusts its root and carries the admin token."""
        settings, top = self.build(**{"bind-address": "0.0.0.0", "secure-port": "16443", "ensure-kubectl-access": "true"})
        top.startService()
        self.addCleanup(top.stopService)
        self.assertEqual(os.stat(settings.kubeconfig_path).st_mode & 0o777, 0o600)
        with open(settings.kubeconfig_path) as handle:
            document = yaml.safe_load(handle)
        cluster = document["clusters"][0]["cluster"]
        self.assertEqual(cluster["server"], "https://127.0.0.1:16443")
        self.assertNotIn("insecure-skip-tls-verify", cluster)
        ca = x509.load_pem_x509_certificate(base64.b64decode(cluster["certificate-authority-data"]))
        chain = load_key_pair(os.path.join(settings.cert_dir, "apiserver.crt"),
                              os.path.join(settings.cert_dir, "apiserver.key")).chain
        self.assertEqual(ca, chain[-1])
        token, _ = ensure_admin_token(settings.storage_path)
        self.assertEqual(document["users"][0]["user"], {"token": token})
        self.assertEqual(document["contexts"][0]["context"]["namespace"], "default")
        self.assertEqual(document["current-context"], document["contexts"][0]["name"])

    def test_ipv6_bind(self) -> None:
        """An IPv6 bind address listens on IPv6."""
        _, top = self.build(**{"bind-address": "::1", "secure-port": "16443"})
        top.startService()
        self.addCleanup(top.stopService)
        self.assertEqual(self.reactor.tcpServers[0][3], "::1")

    def test_readiness_fails_when_stopping(self) -> None:
        """Once the service stops, the shutdown readiness check fails."""
        _, top = self.build()
        top.startService()
        readiness = [s for s in top if type(s).__name__ == "ReadinessService"][0]
        self.assertIsNone(readiness.check())
        top.stopService()
        self.assertEqual(readiness.check(), "the server is shutting down")


class ReplicaWorkerTests(SynchronousTestCase):
    """With etcd storage a worker is a full replica: its own store and the owner's whole wiring, no owner channel."""

    def setUp(self) -> None:
        self.folder = os.path.abspath(self.mktemp())
        os.makedirs(self.folder)
        self.etcd = {"data-dir": os.path.join(self.folder, "data"), "storage-type": "etcd",
                     "etcd-servers": "http://127.0.0.1:2379", "workers": "3"}

    def as_worker(self) -> None:
        os.environ[WORKER_ENV] = f"2:{os.getppid()}:{self.folder}"
        self.addCleanup(os.environ.pop, WORKER_ENV)

    def test_worker_opens_its_own_etcd_store(self) -> None:
        """A worker's options give it an etcd store of its own (with file storage, it reads through the owner)."""
        self.as_worker()
        options = Options()
        options.parseOptions([f"--{flag}={value}" for flag, value in self.etcd.items()])
        self.assertIsInstance(options.runtime.store, EtcdStore)
        options = Options()
        options.parseOptions(["--data-dir", os.path.join(self.folder, "data")])
        self.assertIsInstance(options.runtime.store, ChannelStore)

    def test_worker_runs_the_controllers_and_watches_its_owner(self) -> None:
        """An etcd worker's service is make_service's wiring (controllers included) plus the owner watch."""
        settings = load_settings(None, self.etcd)
        top = make_worker_service(settings, load_runtime(settings), MemoryReactorClock(), 2, self.folder, os.getppid())
        kinds = {type(part) for part in top}
        self.assertIn(AvailabilityController, kinds)
        self.assertIn(OwnerWatch, kinds)

    def test_owner_serves_no_channel_but_a_control_socket(self) -> None:
        """The etcd owner listens on its control socket (worker-0.sock), not on the owner channel."""
        settings = load_settings(None, {**self.etcd, "bind-address": "127.0.0.1", "secure-port": "16443"})
        reactor = MemoryReactorClock()
        top = make_service(settings, load_runtime(settings), reactor,
                           worker_command=lambda folder: lambda n: ("python", ["python"], {}))
        channel = [part for part in top if type(part).__name__ == "_ChannelService"][0]
        channel.startService()
        self.addCleanup(channel.stopService)
        sockets = {os.path.basename(server[0]) for server in reactor.unixServers}
        self.assertEqual(sockets, {"worker-0.sock"})

    def test_replica_names(self) -> None:
        """The owner is `<host>:<port>`, a worker `<host>:<port>/worker-<n>`; the port is the listening one."""
        settings = load_settings(None, {"data-dir": self.folder, "secure-port": "16443"})
        host = socket.gethostname()
        self.assertEqual(replica_name(settings, None), f"{host}:16443")
        self.assertEqual(replica_name(settings, 2), f"{host}:16443/worker-2")
        listen = load_settings(None, {"data-dir": self.folder, "listen": "tcp:7443:interface=127.0.0.1"})
        self.assertEqual(replica_name(listen, 1), f"{host}:7443/worker-1")
        named = load_settings(None, {"data-dir": self.folder, "replica-name": "eu-1"})
        self.assertEqual((replica_name(named, None), replica_name(named, 3)), ("eu-1", "eu-1/worker-3"))
        anywhere = load_settings(None, {"data-dir": self.folder, "listen": "tcp:0:interface=127.0.0.1"})
        self.assertEqual(replica_name(anywhere, None), f"{host}/pid-{os.getpid()}")


class PackagingTests(SynchronousTestCase):
    """setup.cfg ships every package of the source tree."""

    def test_every_package_listed(self) -> None:
        """Each folder of grafana_aggregator with an __init__.py is in setup.cfg's packages."""
        import configparser

        root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
        parser = configparser.ConfigParser()
        parser.read(os.path.join(root, "setup.cfg"))
        listed = set(parser.get("options", "packages").split())
        found = {
            os.path.relpath(folder, root).replace(os.sep, ".")
            for folder, _, files in os.walk(os.path.join(root, "grafana_aggregator"))
            if "__init__.py" in files
        }
        self.assertEqual(found - listed, set())
