"""Test fixtures: a small certificate authority issuing certificates at test time, and the `/apis` tree wired as served."""

from __future__ import annotations

import datetime
import ipaddress
import os
from collections.abc import Sequence

from typing import Any

from attrs import define, frozen
from twisted.internet.interfaces import IReactorTime
from twisted.internet.task import Clock
from twisted.web.resource import Resource
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from grafana_aggregator.aggregation.remote_discovery import DiscoveryCache
from grafana_aggregator.aggregation.routing import ProxyFactory, RoutingTable
from grafana_aggregator.apimachinery.rest import serve_locally
from grafana_aggregator.apimachinery.strategy import LocalGroupVersion
from grafana_aggregator.registry.apiservice import APISERVICES
from grafana_aggregator.registry.externalname import EXTERNALNAMES
from grafana_aggregator.storage import Collection, IStore
from grafana_aggregator.storage.informer import Informer
from grafana_aggregator.storage.memory import MemoryStore
from grafana_aggregator.web.discovery import ApisResource

NOW = datetime.datetime.now(datetime.timezone.utc)


@frozen
class Issued:
    """A certificate, its key, and (when written) the PEM files holding them."""

    certificate: x509.Certificate
    key: ec.EllipticCurvePrivateKey

    @property
    def cert_pem(self) -> bytes:
        return self.certificate.public_bytes(serialization.Encoding.PEM)

    @property
    def key_pem(self) -> bytes:
        return self.key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                      serialization.NoEncryption())

    def write(self, folder: str, name: str) -> tuple[str, str]:
        """Write `<name>.crt` and `<name>.key` into folder and return their paths."""
        os.makedirs(folder, exist_ok=True)
        cert_path, key_path = os.path.join(folder, f"{name}.crt"), os.path.join(folder, f"{name}.key")
        with open(cert_path, "wb") as handle:
            handle.write(self.cert_pem)
        with open(key_path, "wb") as handle:
            handle.write(self.key_pem)
        return cert_path, key_path


def _name(common_name: str, organizations: Sequence[str] = ()) -> x509.Name:
    attributes = [x509.NameAttribute(NameOID.ORGANIZATION_NAME, o) for o in organizations]
    if common_name:
        attributes.append(x509.NameAttribute(NameOID.COMMON_NAME, common_name))
    return x509.Name(attributes)


class CertificateAuthority:
    """A CA that issues leaf certificates; each test makes its own, so nothing is committed."""

    def __init__(self, common_name: str = "test-ca", valid_days: int = 30):
        self.key = ec.generate_private_key(ec.SECP256R1())
        name = _name(common_name)
        self.certificate = (
            x509.CertificateBuilder()
            .subject_name(name)
            .issuer_name(name)
            .public_key(self.key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(NOW - datetime.timedelta(days=1))
            .not_valid_after(NOW + datetime.timedelta(days=valid_days))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(self.key.public_key()), critical=False)
            .sign(self.key, hashes.SHA256())
        )

    @property
    def issued(self) -> Issued:
        return Issued(self.certificate, self.key)

    def write_ca(self, folder: str, name: str = "ca") -> str:
        """Write the CA certificate as `<name>.crt` and return its path."""
        return self.issued.write(folder, name)[0]

    def issue(
        self,
        common_name: str,
        organizations: Sequence[str] = (),
        *,
        dns: Sequence[str] = (),
        ips: Sequence[str] = (),
        usages: Sequence[x509.ObjectIdentifier] | None = (ExtendedKeyUsageOID.CLIENT_AUTH,),
        not_before: datetime.datetime | None = None,
        not_after: datetime.datetime | None = None,
    ) -> Issued:
        """Issue a leaf certificate; `usages=None` leaves out the extended key usage extension."""
        key = ec.generate_private_key(ec.SECP256R1())
        builder = (
            x509.CertificateBuilder()
            .subject_name(_name(common_name, organizations))
            .issuer_name(self.certificate.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(not_before or NOW - datetime.timedelta(days=1))
            .not_valid_after(not_after or NOW + datetime.timedelta(days=10))
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(self.key.public_key()), critical=False)
        )
        if usages is not None:
            builder = builder.add_extension(x509.ExtendedKeyUsage(list(usages)), critical=False)
        if dns or ips:
            names: list[x509.GeneralName] = [x509.DNSName(d) for d in dns]
            names += [x509.IPAddress(ipaddress.ip_address(i)) for i in ips]
            builder = builder.add_extension(x509.SubjectAlternativeName(names), critical=False)
        return Issued(builder.sign(self.key, hashes.SHA256()), key)

    def server(self) -> Issued:
        """A serving certificate for localhost and 127.0.0.1."""
        return self.issue("localhost", dns=["localhost"], ips=["127.0.0.1"], usages=[ExtendedKeyUsageOID.SERVER_AUTH])


def expired(ca: CertificateAuthority, common_name: str, organizations: Sequence[str] = ()) -> Issued:
    """A client certificate that expired yesterday."""
    return ca.issue(common_name, organizations, not_before=NOW - datetime.timedelta(days=10),
                    not_after=NOW - datetime.timedelta(days=1))


@define
class ServedApis:
    """The `/apis` tree as the daemon wires it, and the parts behind it."""

    apis: ApisResource
    informer: Informer
    routing: RoutingTable
    discovery: DiscoveryCache
    watches: set[Any]


def serve_apis(store: IStore, clock: IReactorTime, groups: Sequence[LocalGroupVersion] = (), *,
               emulated_minor: int = 33, proxy_for: ProxyFactory | None = None,
               discovery: DiscoveryCache | None = None, start: bool = True, **routing_options: Any) -> ServedApis:
    """The `/apis` tree over a store: the informer (started, unless told not to), the routing table and the
    local groups' handlers, wired as `tap.make_service` wires them (`routing_options` go to the RoutingTable)."""
    informer = Informer(store, (APISERVICES, EXTERNALNAMES), clock)
    watches: set[Any] = set()
    discovery = discovery if discovery is not None else DiscoveryCache()
    routing = RoutingTable(informer, serve_locally(groups, store, clock, watches), discovery, proxy_for,
                           **routing_options)
    if start:
        informer.startService()
    return ServedApis(ApisResource(routing, emulated_minor), informer, routing, discovery, watches)


def empty_apis() -> Resource:
    """An /apis tree over an empty memory store, serving no local groups."""
    return serve_apis(MemoryStore(), Clock()).apis


class RacingStore(MemoryStore):
    """A store where, while `racing`, another writer sets `metadata.<touched_field>` just before the next update."""

    racing = False
    touched_field = "labels"

    async def update(self, collection: Collection, namespace: str, name: str, obj: dict[str, Any],
                     expected_resource_version: int | None = None) -> dict[str, Any]:
        if self.racing:
            self.racing = False
            current = await self.get(collection, namespace, name)
            current["metadata"][self.touched_field] = {"touched": "yes"}
            await super().update(collection, namespace, name, current)
        return await super().update(collection, namespace, name, obj, expected_resource_version)



class CycleCheck:
    """Counts the objects of some types, made inside the `with` block, that only the cycle collector could free.

    A finished request must be freed by reference counting: objects of it left in reference cycles cost a
    collection of every generation they reach (the daemon's largest pauses, docs/performance.md).  The collector
    is off inside the block, and objects that existed before it (earlier tests' leftovers) are not counted.
    """

    def __init__(self, *type_names: str):
        self._names = frozenset(type_names)
        self._before: set[int] = set()
        self.counts: dict[str, int] = {}

    def __enter__(self) -> CycleCheck:
        import gc

        gc.collect()
        gc.disable()
        self._before = {id(o) for o in gc.get_objects() if type(o).__name__ in self._names}
        return self

    def __exit__(self, *exc: object) -> None:
        import gc

        flags = gc.get_debug()
        gc.set_debug(gc.DEBUG_SAVEALL)
        try:
            gc.collect()
            self.counts = {name: sum(1 for o in gc.garbage if type(o).__name__ == name and id(o) not in self._before)
                           for name in sorted(self._names)}
        finally:
            gc.garbage.clear()
            gc.set_debug(flags)
            gc.enable()
