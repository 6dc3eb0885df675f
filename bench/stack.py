"""The benchmark's processes: an nginx backend with mutual TLS, the aggregator, and nginx as the reference proxy.

The backend is nginx serving static files, so it is never the bottleneck: a ~0.5 KB JSON object, a
10 MB one, legacy discovery for its group, and WebDAV PUT for uploads.  It asks for a client
certificate and verifies any it is given (`ssl_verify_client optional`): the aggregator and the
reference nginx present the proxy client certificate, and wrk, which cannot present one, reaches it
directly with TLS alone (with keep-alive, verification happens once per connection anyway).
"""

from __future__ import annotations

import json
import os
import time
import urllib.request
from dataclasses import dataclass
from typing import Any

from .harness import (AUTHORIZATION, BIN, GROUP, LARGE_BYTES, TOKEN, VERSION, Api, Pki, Process, Processes,
                      free_port, wait_port)

_RUN_AS_ROOT = "user root root;" if os.geteuid() == 0 else ""

_COMMON = """
worker_processes 1;
{user}
daemon off;
pid {folder}/{name}.pid;
error_log {folder}/{name}.error.log warn;
events {{ worker_connections 8192; }}
http {{
  access_log off;
  default_type application/json;
  keepalive_requests 10000000;
  keepalive_timeout 120s;
  client_body_temp_path {folder}/{name}-body;
  proxy_temp_path {folder}/{name}-proxy;
  fastcgi_temp_path {folder}/{name}-fastcgi;
  uwsgi_temp_path {folder}/{name}-uwsgi;
  scgi_temp_path {folder}/{name}-scgi;
  ssl_protocols TLSv1.2 TLSv1.3;
{body}
}}
"""

_BACKEND = """
  server {{
    listen 127.0.0.1:{port} ssl;
    ssl_certificate {pki.server_cert};
    ssl_certificate_key {pki.server_key};
    ssl_client_certificate {pki.ca};
    ssl_verify_client optional;
    root {root};
    location = /apis {{ try_files /apis.json =404; }}
    location /apis/ {{ try_files $uri.json =404; }}
    location /apis/{group}/{version}/namespaces/default/uploads/ {{
      dav_methods PUT;
      create_full_put_path on;
      client_max_body_size 64m;
    }}
  }}
"""

_PROXY = """
  upstream backend {{
    server 127.0.0.1:{backend_port};
    keepalive 64;
  }}
  map $http_authorization $bench_user {{
    "{authorization}" "bench-admin";
    default "";
  }}
  server {{
    listen 127.0.0.1:{port} ssl;
    ssl_certificate {pki.server_cert};
    ssl_certificate_key {pki.server_key};
    client_max_body_size 64m;
    location / {{
      if ($bench_user = "") {{ return 401; }}
      proxy_pass https://backend;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
      proxy_set_header Authorization "";
      proxy_set_header X-Remote-User $bench_user;
      proxy_set_header X-Remote-Group system:masters;
      proxy_ssl_certificate {pki.client_cert};
      proxy_ssl_certificate_key {pki.client_key};
      proxy_ssl_trusted_certificate {pki.ca};
      proxy_ssl_verify on;
      proxy_ssl_name localhost;
      proxy_ssl_server_name on;
      proxy_ssl_session_reuse on;
      proxy_buffering off;
      proxy_request_buffering off;
    }}
  }}
"""

_AGGREGATOR_INI = """
[paths]
data = {data}

[grafana-apiserver]
listen = tcp:{port}:interface=127.0.0.1
tls_cert_file = {pki.server_cert}
tls_private_key_file = {pki.server_key}
client_ca_file = {pki.ca}
token_auth_file = {folder}/tokens.csv
proxy_client_cert_file = {pki.client_cert}
proxy_client_key_file = {pki.client_key}
apiservice_ca_bundle_file = {pki.ca}
{storage}
max_requests_inflight = 2000
workers = {workers}

[feature_toggles]
kubernetesAggregator = true
"""


def small_object(group: str = GROUP) -> dict[str, Any]:
    """A ~0.5 KB object, about what a small Kubernetes resource weighs."""
    return {
        "apiVersion": f"{group}/{VERSION}", "kind": "Thing",
        "metadata": {"name": "small", "namespace": "default", "uid": "0b5c7a1e-6a43-4cd2-9a4b-1f0f3c1d2e3f",
                     "resourceVersion": "12345", "creationTimestamp": "2026-11-23T00:00:00Z",
                     "labels": {"app": "bench", "tier": "backend"},
                     "annotations": {"bench.grafana.app/note": "a small object for the proxy benchmark"}},
        "spec": {"replicas": 3, "image": "grafana/grafana:12.3.0", "ports": [3000, 3001],
                 "settings": {"log_level": "info", "feature": "aggregation", "timeout": "30s"}},
        "status": {"phase": "Running", "observedGeneration": 7,
                   "conditions": [{"type": "Ready", "status": "True", "reason": "Serving",
                                   "lastTransitionTime": "2026-11-23T00:00:00Z"}]},
    }


def write_backend_root(root: str, groups: list[str]) -> None:
    """Static files: legacy discovery for each group, the small and the 10 MB objects of the first."""
    def put(path: str, content: bytes) -> None:
        full = os.path.join(root, path.lstrip("/"))
        os.makedirs(os.path.dirname(full), exist_ok=True)
        with open(full, "wb") as handle:
            handle.write(content)

    group_list = {"kind": "APIGroupList", "apiVersion": "v1", "groups": [
        {"name": g, "versions": [{"groupVersion": f"{g}/{VERSION}", "version": VERSION}],
         "preferredVersion": {"groupVersion": f"{g}/{VERSION}", "version": VERSION}} for g in groups]}
    put("/apis.json", json.dumps(group_list).encode())
    for group in groups:
        resources = {"kind": "APIResourceList", "apiVersion": "v1", "groupVersion": f"{group}/{VERSION}",
                     "resources": [{"name": "things", "singularName": "thing", "namespaced": True, "kind": "Thing",
                                    "verbs": ["get", "list"]}]}
        put(f"/apis/{group}/{VERSION}.json", json.dumps(resources).encode())
    small = small_object(groups[0])
    put(f"/apis/{groups[0]}/{VERSION}/namespaces/default/things/small.json", json.dumps(small).encode())
    large = dict(small, spec={"blob": "x" * (LARGE_BYTES - 1024)})
    text = json.dumps(large).encode()
    put(f"/apis/{groups[0]}/{VERSION}/namespaces/default/things/large.json", text + b" " * (LARGE_BYTES - len(text)))
    os.makedirs(os.path.join(root, "apis", groups[0], VERSION, "namespaces", "default", "uploads"), exist_ok=True)


@dataclass
class Nginx:
    process: Process
    port: int
    started: float
    listening: float


def start_nginx(processes: Processes, name: str, body: str, port: int) -> Nginx:
    folder = processes.folder
    config = os.path.join(folder, f"{name}.conf")
    with open(config, "w") as handle:
        handle.write(_COMMON.format(user=_RUN_AS_ROOT, folder=folder, name=name, body=body))
    started = time.monotonic()
    process = processes.start(name, ["nginx", "-c", config, "-p", folder, "-e", os.path.join(folder, f"{name}.error.log")])
    listening = wait_port(port)
    return Nginx(process, port, started, listening)


def start_backend(processes: Processes, pki: Pki, name: str = "backend", port: int | None = None,
                  groups: list[str] | None = None) -> Nginx:
    port = port or free_port()
    root = os.path.join(processes.folder, f"{name}-root")
    if not os.path.isdir(root):
        write_backend_root(root, groups or [GROUP])
    body = _BACKEND.format(port=port, pki=pki, root=root, group=(groups or [GROUP])[0], version=VERSION)
    return start_nginx(processes, name, body, port)


def start_reference_proxy(processes: Processes, pki: Pki, backend_port: int) -> Nginx:
    port = free_port()
    body = _PROXY.format(port=port, pki=pki, backend_port=backend_port, authorization=AUTHORIZATION)
    return start_nginx(processes, "nginx-proxy", body, port)


@dataclass
class Etcd:
    process: Process
    port: int

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"


def start_etcd(processes: Processes, name: str = "etcd", within: float = 30.0) -> Etcd:
    """One etcd member (Debian's etcd-server) on free loopback ports, its data in the work folder, once healthy."""
    port, peer = free_port(), f"http://127.0.0.1:{free_port()}"
    url = f"http://127.0.0.1:{port}"
    process = processes.start(name, ["etcd", "--name", name, "--data-dir", os.path.join(processes.folder, f"{name}-data"),
                                     "--listen-client-urls", url, "--advertise-client-urls", url,
                                     "--listen-peer-urls", peer, "--initial-advertise-peer-urls", peer,
                                     "--initial-cluster", f"{name}={peer}", "--log-level", "warn", "--logger", "zap"])
    deadline = time.monotonic() + within
    while True:
        try:
            with urllib.request.urlopen(f"{url}/health", timeout=1) as answer:
                if b'"true"' in answer.read():
                    return Etcd(process, port)
        except OSError:
            pass
        if process.popen.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError(f"etcd did not become healthy within {within:g} s:\n{process.output()[-2000:]}")
        time.sleep(0.05)


@dataclass
class Aggregator:
    process: Process
    port: int
    api: Api

    @property
    def url(self) -> str:
        return f"https://127.0.0.1:{self.port}"


def start_aggregator(processes: Processes, pki: Pki, extra_ini: str = "", name: str = "aggregator",
                     workers: str = "1", etcd: Etcd | None = None, etcd_prefix: str = "/registry") -> Aggregator:
    """The daemon with the bench's settings (plus `extra_ini`); another `name` gets its own ini and data folder.

    With `etcd` its objects are kept there under `etcd_prefix` (daemons given the same etcd and prefix are
    replicas of one another), otherwise in file storage.
    """
    folder = processes.folder
    port = free_port()
    data = os.path.join(folder, "data" if name == "aggregator" else f"{name}-data")
    with open(os.path.join(folder, "tokens.csv"), "w") as handle:
        handle.write(f'{TOKEN},bench-admin,bench-admin-uid,"system:masters"\n')
    ini = os.path.join(folder, f"{name}.ini")
    with open(ini, "w") as handle:
        storage = (f"storage_type = etcd\netcd_servers = {etcd.url}\netcd_prefix = {etcd_prefix}" if etcd
                   else "storage_type = file")
        handle.write(_AGGREGATOR_INI.format(folder=folder, data=data, port=port, pki=pki, workers=workers,
                                            storage=storage) + extra_ini)
    twistd = os.path.join(BIN, "twistd")
    process = processes.start(name, [twistd, "--nodaemon", "--pidfile=", "grafana-aggregator", "--config", ini],
                              env={"PYTHONUNBUFFERED": "1"})
    deadline = time.monotonic() + 60
    while "serving on" not in process.output():
        if process.popen.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError(f"the aggregator did not start:\n{process.output()}")
        time.sleep(0.05)
    api = Api(port)
    while api.request("GET", "/readyz")[0] != 200:
        if time.monotonic() > deadline:
            raise RuntimeError(f"the aggregator never became ready:\n{process.output()}")
        time.sleep(0.05)
    return Aggregator(process, port, api)


def register(api: Api, pki: Pki, group: str, port: int, *, labels: dict[str, str] | None = None,
             service: str | None = None) -> str:
    """Register group/v0alpha1 as served by https://localhost:port (an ExternalName plus an APIService)."""
    service = service or group.split(".")[0] + "-backend"
    status, _, data = api.request("POST", "/apis/service.grafana.app/v0alpha1/namespaces/bench/externalnames",
                                  {"apiVersion": "service.grafana.app/v0alpha1", "kind": "ExternalName",
                                   "metadata": {"name": service, "namespace": "bench", "labels": labels or {}},
                                   "spec": {"host": "localhost"}})
    if status not in (201, 409):
        raise RuntimeError(f"creating ExternalName {service} answered {status}: {data!r}")
    name = f"{VERSION}.{group}"
    api.json("POST", "/apis/apiregistration.k8s.io/v1/apiservices", {
        "apiVersion": "apiregistration.k8s.io/v1", "kind": "APIService",
        "metadata": {"name": name, "labels": labels or {}},
        "spec": {"group": group, "version": VERSION, "groupPriorityMinimum": 1000, "versionPriority": 15,
                 "caBundle": pki.ca_bundle_b64(),
                 "service": {"namespace": "bench", "name": service, "port": port}}})
    return name


def available(api: Api, name: str) -> str:
    """The APIService's Available condition status ("True", "False", "Unknown", or "" when none)."""
    apiservice = api.json("GET", f"/apis/apiregistration.k8s.io/v1/apiservices/{name}")
    for condition in apiservice.get("status", {}).get("conditions", []):
        if condition.get("type") == "Available":
            return str(condition.get("status"))
    return ""


def wait_available(api: Api, name: str, wanted: str, within: float, poll: float = 0.01) -> float:
    """Poll until the APIService's Available condition is `wanted`; return the moment it was seen."""
    deadline = time.monotonic() + within
    while True:
        if available(api, name) == wanted:
            return time.monotonic()
        if time.monotonic() > deadline:
            raise RuntimeError(f"APIService {name} did not become Available={wanted} within {within}s")
        time.sleep(poll)
