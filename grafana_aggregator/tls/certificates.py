"""TLS for the listener: serving certificates (configured or self-signed), client-certificate requests, endpoints.

The listener *requests* a client certificate and accepts any during the handshake, like
kube-apiserver (tls.RequestClientCert): the authenticators verify the chain afterwards against the
client CA or the front-proxy CA, so a wrong certificate is a 401 Status rather than a bare TLS alert.
"""

from __future__ import annotations

import datetime
import ipaddress
import os
import socket
from collections.abc import Callable, Sequence
from typing import Any

from attrs import frozen
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from OpenSSL import SSL, crypto
from twisted.internet import ssl
from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IListeningPort, IOpenSSLServerConnectionCreator, IProtocolFactory, IStreamServerEndpoint
from twisted.logger import Logger
from twisted.protocols.tls import TLSMemoryBIOFactory
from zope.interface import implementer

from ..storage.files import make_private_folders, write_atomic

_log = Logger()

SELF_SIGNED_DAYS = 365
#: A self-signed certificate this close to expiry is replaced at start-up.
RENEW_BEFORE = datetime.timedelta(days=30)


class CertificateError(ValueError):
    """A certificate or key file is unusable; the message names the file."""


class KeyMismatchError(CertificateError):
    """The key file holds a key that does not belong to the certificate (both files may be mid-rotation)."""


def load_certificates(path: str) -> list[x509.Certificate]:
    """Every certificate in a PEM file, leaf first."""
    try:
        with open(path, "rb") as handle:
            data = handle.read()
    except OSError as error:
        raise CertificateError(f"{path}: cannot be read: {error.strerror}") from None
    try:
        certificates = x509.load_pem_x509_certificates(data)
    except ValueError:
        raise CertificateError(f"{path}: no PEM certificate found") from None
    return certificates


def load_private_key(path: str) -> Any:
    """The private key in a PEM file (unencrypted)."""
    try:
        with open(path, "rb") as handle:
            data = handle.read()
    except OSError as error:
        raise CertificateError(f"{path}: cannot be read: {error.strerror}") from None
    try:
        return serialization.load_pem_private_key(data, password=None)
    except (ValueError, TypeError) as error:
        raise CertificateError(f"{path}: not an unencrypted PEM private key ({error})") from None


@frozen
class KeyPair:
    """A certificate chain and its key, checked to belong together."""

    chain: tuple[x509.Certificate, ...]
    key: object
    cert_file: str
    key_file: str


def load_key_pair(cert_file: str, key_file: str) -> KeyPair:
    """Load a certificate chain and its key; refuse a key that does not match the certificate."""
    chain = load_certificates(cert_file)
    key = load_private_key(key_file)
    public = key.public_key()
    der = serialization.Encoding.DER
    info = serialization.PublicFormat.SubjectPublicKeyInfo
    if public.public_bytes(der, info) != chain[0].public_key().public_bytes(der, info):
        raise KeyMismatchError(f"{key_file}: this key does not belong to the certificate in {cert_file}")
    return KeyPair(tuple(chain), key, cert_file, key_file)


def self_signed_names() -> tuple[list[str], list[str]]:
    """DNS names and IP addresses a generated serving certificate covers: loopback and this host's name."""
    dns = ["localhost"]
    hostname = socket.gethostname()
    if hostname and hostname not in dns:
        dns.append(hostname)
    return dns, ["127.0.0.1", "::1"]


def ensure_self_signed(cert_dir: str, now: Callable[[], datetime.datetime] | None = None) -> tuple[str, str]:
    """Return the self-signed serving certificate and key in cert_dir, creating (or renewing) them if needed.

    Like kube-apiserver's --cert-dir: generated on first start and reused after, so the kubeconfig's
    CA data stays valid across restarts.
    """
    clock = now or (lambda: datetime.datetime.now(datetime.timezone.utc))
    cert_file = os.path.join(cert_dir, "apiserver.crt")
    key_file = os.path.join(cert_dir, "apiserver.key")
    if os.path.exists(cert_file) and os.path.exists(key_file):
        try:
            pair = load_key_pair(cert_file, key_file)
        except CertificateError as error:
            _log.warn("replacing unusable self-signed certificate: {error}", error=str(error))
        else:
            if pair.chain[0].not_valid_after_utc - RENEW_BEFORE > clock():
                return cert_file, key_file
            _log.info("renewing self-signed serving certificate {path}: it expires {expiry}",
                      path=cert_file, expiry=pair.chain[0].not_valid_after_utc.isoformat())
    make_private_folders(cert_dir)
    dns, ips = self_signed_names()
    issued = clock()
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, f"grafana-aggregator-ca@{int(issued.timestamp())}")])
    ca = (
        _builder(ca_name, ca_name, ca_key, ca_key, issued)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(_key_usage(cert_sign=True), critical=True)
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, f"grafana-aggregator@{int(issued.timestamp())}")])
    certificate = (
        _builder(subject, ca_name, key, ca_key, issued)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(_key_usage(cert_sign=False), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.DNSName(n) for n in dns] + [x509.IPAddress(ipaddress.ip_address(a)) for a in ips]
            ),
            critical=False,
        )
        .sign(ca_key, hashes.SHA256())
    )
    write_atomic(key_file, key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                               serialization.NoEncryption()))
    pem = serialization.Encoding.PEM
    write_atomic(cert_file, certificate.public_bytes(pem) + ca.public_bytes(pem), mode=0o644)
    _log.info("generated self-signed serving certificate {path} for {names}", path=cert_file, names=", ".join(dns + ips))
    return cert_file, key_file


def _builder(subject: x509.Name, issuer: x509.Name, key: ec.EllipticCurvePrivateKey,
             issuer_key: ec.EllipticCurvePrivateKey, issued: datetime.datetime) -> x509.CertificateBuilder:
    return (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(issued - datetime.timedelta(hours=1))
        .not_valid_after(issued + datetime.timedelta(days=SELF_SIGNED_DAYS))
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(issuer_key.public_key()), critical=False)
    )


def _key_usage(cert_sign: bool) -> x509.KeyUsage:
    return x509.KeyUsage(digital_signature=True, key_encipherment=False, key_cert_sign=cert_sign,
                         content_commitment=False, data_encipherment=False, key_agreement=False,
                         crl_sign=cert_sign, encipher_only=False, decipher_only=False)


def trust_anchor(chain: Sequence[x509.Certificate]) -> x509.Certificate | None:
    """The self-signed root at the end of a serving chain, which clients must trust; None if it is not there."""
    last = chain[-1]
    return last if last.issuer == last.subject else None


def _accept_any_certificate(connection: SSL.Connection, certificate: crypto.X509, errno: int, depth: int, ok: int) -> bool:
    return True


@implementer(IOpenSSLServerConnectionCreator)
class ServingTLS:
    """Server-side TLS (1.2 and later, HTTP/1.1) with the serving certificate; requests a client certificate.

    The CAs named in the certificate request are the client CA and the front-proxy CA, so clients
    holding several certificates pick the right one.
    """

    def __init__(self, pair: KeyPair, client_cas: Sequence[x509.Certificate] = ()):
        self._context = _serving_context(pair, client_cas)
        self.pair = pair

    def update(self, pair: KeyPair, client_cas: Sequence[x509.Certificate]) -> None:
        """Serve new handshakes with this certificate and client-CA list; established connections keep theirs.

        Each connection holds a reference to the context it was made with, so swapping the context
        leaves them untouched.  A context that cannot be built raises and the previous one stays.
        """
        context = _serving_context(pair, client_cas)
        self._context = context
        self.pair = pair

    def serverConnectionForTLS(self, tlsProtocol: object) -> SSL.Connection:
        return SSL.Connection(self._context, None)


def _serving_context(pair: KeyPair, client_cas: Sequence[x509.Certificate]) -> SSL.Context:
    options = ssl.CertificateOptions(
        privateKey=crypto.PKey.from_cryptography_key(pair.key),  # type: ignore[arg-type]
        certificate=crypto.X509.from_cryptography(pair.chain[0]),
        extraCertChain=[crypto.X509.from_cryptography(c) for c in pair.chain[1:]],
        raiseMinimumTo=ssl.TLSVersion.TLSv1_2,
        acceptableProtocols=[b"http/1.1"],
    )
    context: SSL.Context = options.getContext()
    context.set_verify(SSL.VERIFY_PEER, _accept_any_certificate)
    for ca in client_cas:
        context.add_client_ca(crypto.X509.from_cryptography(ca))
    return context


@implementer(IStreamServerEndpoint)
class TLSServerEndpoint:
    """Any stream endpoint (TCP, a systemd-passed socket, …) with TLS in front of the protocol."""

    def __init__(self, endpoint: IStreamServerEndpoint, tls: ServingTLS,
                 on_listening: Callable[[IListeningPort], object] | None = None):
        self._endpoint = endpoint
        self._tls = tls
        self._on_listening = on_listening
        #: The listening port, once listening.
        self.port: IListeningPort | None = None

    def listen(self, protocolFactory: IProtocolFactory) -> Deferred[IListeningPort]:
        listening = self._endpoint.listen(TLSMemoryBIOFactory(self._tls, False, protocolFactory))

        def listened(port: IListeningPort) -> IListeningPort:
            self.port = port
            if self._on_listening is not None:
                self._on_listening(port)
            return port

        return listening.addCallback(listened)


def peer_chain(transport: object) -> list[x509.Certificate]:
    """The client certificate chain of a TLS connection, leaf first (empty without TLS or certificate)."""
    get_handle = getattr(transport, "getHandle", None)
    if get_handle is None:
        return []
    connection = get_handle()
    if not isinstance(connection, SSL.Connection):
        return []
    leaf = connection.get_peer_certificate(as_cryptography=True)
    if leaf is None:
        return []
    chain = [leaf]
    for certificate in connection.get_peer_cert_chain(as_cryptography=True) or []:
        if certificate != leaf:
            chain.append(certificate)
    return chain


def listening_endpoint(reactor: Any, listen: str | None, bind_address: str, port: int) -> IStreamServerEndpoint:
    """The plain endpoint to wrap in TLS: a `--listen` endpoint description, else TCP on bind_address:port."""
    from twisted.internet import endpoints

    if listen:
        endpoint: IStreamServerEndpoint = endpoints.serverFromString(reactor, listen)
        return endpoint
    if ":" in bind_address:
        return endpoints.TCP6ServerEndpoint(reactor, port, interface=bind_address)
    return endpoints.TCP4ServerEndpoint(reactor, port, interface=bind_address)
