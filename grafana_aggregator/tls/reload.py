"""Certificate rotation without a restart: watch the certificate files and install what changed.

Like cert-manager's rotation of a mounted secret: every few seconds the serving certificate and key,
the client CA, the request-header CA and the proxy client certificate and key are read; when the
bytes of one changed, the new material is validated and handed to its callback (`ServingTLS.update`,
`ReloadableVerifier.replace_cas`, `UpstreamClients.replace_proxy_client`).  Established connections
keep what they were made with; new handshakes, authentications and backend connections use the new.

A certificate and its key are two files that a rotation writes one after the other, so a new
certificate seen with the old key is skipped once and retried on the next tick; a mismatched pair is
never installed.  A broken file is logged, naming it, and the previous material stays in use.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable, Iterable, Sequence
from typing import Generic, TypeVar

from attrs import define
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding
from twisted.application.service import Service
from twisted.internet.interfaces import IReactorTime
from twisted.internet.task import LoopingCall
from twisted.logger import Logger

from ..identity.auth import ChainVerifier, load_ca_bundle
from .certificates import CertificateError, KeyMismatchError, KeyPair, load_key_pair

_log = Logger()

#: Seconds between two looks at the certificate files.
RELOAD_INTERVAL = 10.0

_T = TypeVar("_T")


class ReloadableVerifier(ChainVerifier):
    """A ChainVerifier whose CA bundle can be replaced while authenticators hold it.

    Pass it wherever a ChainVerifier goes (X509Authenticator, RequestHeaderAuthenticator); each
    replacement starts with an empty per-connection cache, so a connection authenticated against the
    old bundle is verified again against the new one.
    """

    def __init__(self, cas: Iterable[x509.Certificate], clock: Callable[[], float] = time.time):
        super().__init__((), clock)
        self._verifier_clock = clock
        #: The CA bundle verified against now.
        self.cas = tuple(cas)
        self._current = ChainVerifier(self.cas, clock)

    def replace_cas(self, cas: Iterable[x509.Certificate]) -> None:
        """Verify against this bundle from now on."""
        bundle = tuple(cas)
        self._current = ChainVerifier(bundle, self._verifier_clock)
        self.cas = bundle

    def verify(self, chain: Sequence[x509.Certificate], connection: object | None = None) -> None:
        self._current.verify(chain, connection)

    def _check(self, chain: Sequence[x509.Certificate]) -> str | None:
        return self._current._check(chain)


class FileWatcher:
    """Tells when the bytes of a group of files changed, by their SHA-256 digest."""

    def __init__(self, paths: Sequence[str]):
        self.paths = tuple(paths)
        #: The digest of the contents last accepted (None before the first look).
        self.digest: bytes | None = None

    def read(self) -> bytes:
        """The digest of the files' current contents; OSError when one cannot be read."""
        digest = hashlib.sha256()
        for path in self.paths:
            with open(path, "rb") as handle:
                data = handle.read()
            digest.update(len(data).to_bytes(8, "big"))
            digest.update(data)
        return digest.digest()


@define
class _Watched(Generic[_T]):
    """One piece of material, the files it comes from, and what is installed now."""

    what: str
    watcher: FileWatcher
    load: Callable[[], _T]
    same: Callable[[_T, _T], bool]
    installed: _T
    #: Digest of a pair seen mismatched once; seen again on the next tick, it is reported as broken.
    mismatched: bytes | None = None
    #: The last problem reported, so that one problem is logged once, not on every tick.
    reported: str | None = None

    def poll(self) -> tuple[bytes, _T] | None:
        """New, valid material (and the digest to remember once installed), or None; bad files are logged, not raised."""
        try:
            digest = self.watcher.read()
        except OSError as error:
            self._report(f"{error.filename}: cannot be read: {error.strerror}")
            return None
        if digest == self.watcher.digest:
            return None
        try:
            material = self.load()
        except KeyMismatchError as error:
            if self.mismatched != digest:
                self.mismatched = digest
                _log.info("not reloading the {what} yet: {error}; retrying on the next look (a rotation may be "
                          "half-written)", what=self.what, error=str(error))
                return None
            self._report(str(error))
            self.watcher.digest = digest
            return None
        except (CertificateError, ValueError, OSError) as error:
            self._report(str(error))
            self.watcher.digest = digest
            return None
        self.mismatched = None
        self.reported = None
        if self.same(material, self.installed):
            self.watcher.digest = digest
            return None
        return digest, material

    def accept(self, digest: bytes, material: _T) -> None:
        """Record that the material is installed."""
        self.installed = material
        self.watcher.digest = digest

    def _report(self, problem: str) -> None:
        if problem != self.reported:
            self.reported = problem
            _log.warn("not reloading the {what}: {problem}; the previous one stays in use",
                      what=self.what, problem=problem)


def _der(certificates: Iterable[x509.Certificate]) -> list[bytes]:
    return [c.public_bytes(Encoding.DER) for c in certificates]


def _same_pair(a: KeyPair, b: KeyPair) -> bool:
    # load_key_pair checks that the key belongs to the leaf, so equal chains mean equal pairs.
    return _der(a.chain) == _der(b.chain)


def _same_bundle(a: Sequence[x509.Certificate], b: Sequence[x509.Certificate]) -> bool:
    return _der(a) == _der(b)


def _pair_loader(cert_file: str, key_file: str) -> Callable[[], KeyPair]:
    return lambda: load_key_pair(cert_file, key_file)


def _bundle_loader(path: str) -> Callable[[], tuple[x509.Certificate, ...]]:
    return lambda: tuple(load_ca_bundle(path))


ServingCallback = Callable[[KeyPair, Sequence[x509.Certificate]], object]
BundleCallback = Callable[[Sequence[x509.Certificate]], object]
PairCallback = Callable[[KeyPair], object]


class CertificateReloader(Service):
    """Looks at the certificate files every `interval` seconds and installs the ones that changed.

    Each kind of material is optional: give its current value (a KeyPair names its own files; a CA
    bundle needs its path) and the callback that installs a new one.  The serving callback receives
    the serving pair and the client-certificate CAs to name in handshakes (client CA, then
    request-header CA); it is called again when only those CAs changed.
    """

    def __init__(
        self,
        clock: IReactorTime,
        *,
        interval: float = RELOAD_INTERVAL,
        serving: KeyPair | None = None,
        on_serving: ServingCallback | None = None,
        client_ca_file: str | None = None,
        client_ca: Sequence[x509.Certificate] = (),
        on_client_ca: BundleCallback | None = None,
        requestheader_ca_file: str | None = None,
        requestheader_ca: Sequence[x509.Certificate] = (),
        on_requestheader_ca: BundleCallback | None = None,
        proxy_client: KeyPair | None = None,
        on_proxy_client: PairCallback | None = None,
    ):
        self._clock = clock
        self.interval = interval
        self._serving = None if serving is None else _Watched(
            "serving certificate", FileWatcher([serving.cert_file, serving.key_file]),
            _pair_loader(serving.cert_file, serving.key_file), _same_pair, serving)
        self._on_serving = on_serving
        self._client_ca = None if client_ca_file is None else _Watched(
            "client CA bundle", FileWatcher([client_ca_file]), _bundle_loader(client_ca_file), _same_bundle,
            tuple(client_ca))
        self._on_client_ca = on_client_ca
        self._requestheader_ca = None if requestheader_ca_file is None else _Watched(
            "request-header CA bundle", FileWatcher([requestheader_ca_file]), _bundle_loader(requestheader_ca_file),
            _same_bundle, tuple(requestheader_ca))
        self._on_requestheader_ca = on_requestheader_ca
        self._proxy_client = None if proxy_client is None else _Watched(
            "proxy client certificate", FileWatcher([proxy_client.cert_file, proxy_client.key_file]),
            _pair_loader(proxy_client.cert_file, proxy_client.key_file), _same_pair, proxy_client)
        self._on_proxy_client = on_proxy_client
        #: The client CAs the serving callback last installed.
        self._serving_cas = self._client_cas()
        self._loop: LoopingCall | None = None

    def startService(self) -> None:
        super().startService()
        self._loop = LoopingCall(self.tick)
        self._loop.clock = self._clock
        self._loop.start(self.interval, now=True).addErrback(
            lambda failure: _log.failure("the certificate reload loop stopped", failure))

    def stopService(self) -> None:
        if self._loop is not None and self._loop.running:
            self._loop.stop()
        self._loop = None
        super().stopService()

    def tick(self) -> None:
        """Look at every file once and install what changed; never raises."""
        try:
            self._tick()
        except Exception:
            _log.failure("reloading certificates failed; the previous ones stay in use")

    def _client_cas(self) -> tuple[x509.Certificate, ...]:
        cas: list[x509.Certificate] = []
        for watched in (self._client_ca, self._requestheader_ca):
            if watched is not None:
                cas.extend(watched.installed)
        return tuple(cas)

    def _tick(self) -> None:
        self._bundle(self._client_ca, self._on_client_ca)
        self._bundle(self._requestheader_ca, self._on_requestheader_ca)
        if self._serving is not None:
            self._reload_serving(self._serving)
        if self._proxy_client is not None:
            self._reload_proxy_client(self._proxy_client)

    def _reload_serving(self, watched: _Watched[KeyPair]) -> None:
        found = watched.poll()
        cas = self._client_cas()
        install = self._on_serving
        if install is None or (found is None and _same_bundle(cas, self._serving_cas)):
            if found is not None:
                watched.accept(*found)
            return
        pair = watched.installed if found is None else found[1]
        if not self._install(watched.what, lambda: install(pair, cas)):
            return
        self._serving_cas = cas
        if found is not None:
            watched.accept(*found)
            _log.info("reloaded the serving certificate from {path}: serial {serial}, subject {subject}",
                      path=pair.cert_file, serial=f"{pair.chain[0].serial_number:x}",
                      subject=pair.chain[0].subject.rfc4514_string())

    def _reload_proxy_client(self, watched: _Watched[KeyPair]) -> None:
        found = watched.poll()
        if found is None:
            return
        digest, pair = found
        install = self._on_proxy_client
        if install is None or self._install(watched.what, lambda: install(pair)):
            watched.accept(digest, pair)
            _log.info("reloaded the proxy client certificate from {path}: serial {serial}",
                      path=pair.cert_file, serial=f"{pair.chain[0].serial_number:x}")

    def _bundle(self, watched: _Watched[tuple[x509.Certificate, ...]] | None, install: BundleCallback | None) -> None:
        if watched is None:
            return
        found = watched.poll()
        if found is None:
            return
        digest, cas = found
        if install is None or self._install(watched.what, lambda: install(cas)):
            watched.accept(digest, cas)
            _log.info("reloaded the {what} from {path}: {count} certificates", what=watched.what,
                      path=watched.watcher.paths[0], count=len(cas))

    @staticmethod
    def _install(what: str, install: Callable[[], object]) -> bool:
        try:
            install()
        except Exception:
            _log.failure("installing the new {what} failed; the previous one stays in use", what=what)
            return False
        return True
