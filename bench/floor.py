"""The framework floor: bare twisted.web over TLS answering the benchmark's small object, with nothing else.

`make bench` measures it beside the aggregator, so the table shows how much of a proxied request's
cost is Twisted's HTTP server and TLS alone, on this machine, in this run.
Usage: floor.py CERT KEY PORT BODY_FILE
"""

from __future__ import annotations

import sys

from twisted.internet import reactor, ssl
from twisted.web import resource, server


class SmallObject(resource.Resource):
    isLeaf = True

    def __init__(self, body: bytes):
        super().__init__()
        self._body = body

    def render_GET(self, request: server.Request) -> bytes:
        request.setHeader(b"Content-Type", b"application/json")
        return self._body


class QuietSite(server.Site):
    noisy = False

    def log(self, request: server.Request) -> None:
        pass


def main() -> None:
    cert_file, key_file, port, body_file = sys.argv[1:5]
    with open(cert_file) as cert, open(key_file) as key:
        pair = ssl.PrivateCertificate.loadPEM(key.read() + cert.read())
    with open(body_file, "rb") as handle:
        body = handle.read()
    reactor.listenSSL(int(port), QuietSite(SmallObject(body)), pair.options(),  # type: ignore[attr-defined]
                      interface="127.0.0.1")
    reactor.run()  # type: ignore[attr-defined]


if __name__ == "__main__":
    main()
