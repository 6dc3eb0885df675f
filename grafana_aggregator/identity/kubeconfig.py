"""The kubeconfig that lets kubectl reach this server (`grafanaAPIServerEnsureKubectlAccess`).

Unlike Grafana's, it verifies the server (the serving chain's root as CA data, never
insecure-skip-tls-verify) and its admin token is kept in the storage folder, so the file keeps
working across restarts.
"""

from __future__ import annotations

import base64
import ipaddress
import os
import secrets
import uuid

import yaml
from twisted.internet.interfaces import IListeningPort
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding

from .auth import MASTERS_GROUP, UserInfo
from ..storage.files import make_private_folders, write_atomic

TOKEN_FILE = "loopback-token"
ADMIN_USER = "system:apiserver"


def ensure_admin_token(storage_path: str) -> tuple[str, UserInfo]:
    """The kubeconfig's bearer token and the user it authenticates as, created once and then reused."""
    path = os.path.join(storage_path, TOKEN_FILE)
    try:
        with open(path, encoding="ascii") as handle:
            token, _, uid = handle.read().strip().partition(" ")
        if len(token) >= 32 and uid:
            return token, UserInfo(name=ADMIN_USER, uid=uid, groups=(MASTERS_GROUP,))
    except (OSError, UnicodeDecodeError):
        pass
    make_private_folders(storage_path)
    token, uid = secrets.token_urlsafe(32), str(uuid.uuid4())
    write_atomic(path, f"{token} {uid}\n".encode("ascii"))
    return token, UserInfo(name=ADMIN_USER, uid=uid, groups=(MASTERS_GROUP,))


def server_url(host: str, port: int) -> str:
    """The URL kubectl should use for a listener on host:port (loopback for wildcard addresses)."""
    address = ipaddress.ip_address(host)
    if address.is_unspecified:
        address = ipaddress.ip_address("::1" if address.version == 6 else "127.0.0.1")
    if address.version == 6:
        return f"https://[{address}]:{port}"
    return f"https://{address}:{port}"


def listening_url(port: IListeningPort, bind_address: str, secure_port: int) -> str:
    """The URL of a listening port, falling back to the configured address when it has no IP (a UNIX socket)."""
    address = port.getHost()
    try:
        return server_url(getattr(address, "host", bind_address), getattr(address, "port", secure_port))
    except ValueError:
        return server_url(bind_address, secure_port)


def kubeconfig_document(url: str, ca: x509.Certificate | None, token: str) -> dict[str, object]:
    """A kubeconfig for one cluster, one user (bearer token) and one context, namespace default."""
    cluster: dict[str, object] = {"server": url}
    if ca is not None:
        cluster["certificate-authority-data"] = base64.b64encode(ca.public_bytes(Encoding.PEM)).decode("ascii")
    return {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "grafana-aggregator", "cluster": cluster}],
        "users": [{"name": "grafana-aggregator-admin", "user": {"token": token}}],
        "contexts": [{
            "name": "grafana-aggregator",
            "context": {"cluster": "grafana-aggregator", "user": "grafana-aggregator-admin", "namespace": "default"},
        }],
        "current-context": "grafana-aggregator",
        "preferences": {},
    }


def write_kubeconfig(path: str, url: str, ca: x509.Certificate | None, token: str) -> None:
    """Write the kubeconfig atomically with mode 0600."""
    make_private_folders(os.path.dirname(path) or ".")
    text = yaml.safe_dump(kubeconfig_document(url, ca, token), default_flow_style=False, sort_keys=False)
    write_atomic(path, text.encode("utf-8"))
