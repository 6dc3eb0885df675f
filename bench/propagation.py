"""Watch streams read in threads, noting when each marked object first arrives: the replica propagation figures.

A `StreamWatch` opens one streaming request (an aggregator's HTTPS watch, or etcd's JSON gateway `/v3/watch`)
and records `time.monotonic()` at the first sighting of every mark it is told to look for; the harness writes
objects whose names (or etcd keys) carry the marks and compares those moments with the moments its writes were
sent and answered.  The parsing is kept in pure functions (`aggregator_marks`, `etcd_marks`) so it is tested.
"""

from __future__ import annotations

import base64
import http.client
import json
import re
import socket
import ssl
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

#: How a mark looks: the name of a written object, e.g. "prop-seq-0042".
MARK = re.compile(rb"prop-[a-z0-9]+-\d+")


def aggregator_marks(line: bytes) -> list[str]:
    """The marks named by one line of a Kubernetes watch stream (one JSON event): its object's name, if an ADDED
    event's name is a mark."""
    try:
        event = json.loads(line)
    except ValueError:
        return []
    if not isinstance(event, dict) or event.get("type") != "ADDED":
        return []
    name = ((event.get("object") or {}).get("metadata") or {}).get("name", "")
    return [name] if isinstance(name, str) and MARK.fullmatch(name.encode()) else []


def etcd_marks(line: bytes) -> list[str]:
    """The marks among the keys of one line of etcd's gateway watch stream (a JSON `{"result": {"events": …}}`);
    a key's last path segment is its mark."""
    try:
        message = json.loads(line)
    except ValueError:
        return []
    marks = []
    for event in (message.get("result") or {}).get("events") or [] if isinstance(message, dict) else []:
        key = base64.b64decode((event.get("kv") or {}).get("key", "")).rsplit(b"/", 1)[-1]
        if MARK.fullmatch(key):
            marks.append(key.decode())
    return marks


def lines(buffer: bytes) -> tuple[list[bytes], bytes]:
    """The complete lines of buffer and what is left after the last newline."""
    *complete, rest = buffer.split(b"\n")
    return [line for line in complete if line.strip()], rest


@dataclass
class StreamWatch:
    """One watch stream read in a thread until `stop()` or its deadline: the moment each mark first arrived."""

    name: str
    connect: Callable[[], http.client.HTTPConnection]
    method: str
    path: str
    body: bytes | None
    headers: dict[str, str]
    marks_of: Callable[[bytes], list[str]]
    deadline: float
    arrived: dict[str, float] = field(default_factory=dict)
    error: str = ""
    _open: threading.Event = field(default_factory=threading.Event)
    _stopped: bool = False
    _connection: http.client.HTTPConnection | None = None
    _thread: threading.Thread | None = None

    def start(self, within: float = 10.0) -> None:
        """Open the stream and wait until its answer's headers arrived (the watch exists then)."""
        self._thread = threading.Thread(target=self._run, name=f"watch-{self.name}", daemon=True)
        self._thread.start()
        if not self._open.wait(within) or self.error:
            self.stop()
            raise RuntimeError(f"the {self.name} watch did not open: {self.error or 'no answer'}")

    def _run(self) -> None:
        try:
            self._connection = connection = self.connect()
            connection.request(self.method, self.path, body=self.body, headers=self.headers)
            response = connection.getresponse()
            if response.status != 200:
                self.error = f"HTTP {response.status}: {response.read(500)!r}"
                return
            self._open.set()
            rest = b""
            while not self._stopped and time.monotonic() < self.deadline:
                data = response.read1(65536)
                now = time.monotonic()
                if not data:
                    break
                complete, rest = lines(rest + data)
                for line in complete:
                    for mark in self.marks_of(line):
                        self.arrived.setdefault(mark, now)
        except Exception as error:  # noqa: BLE001 - the stream ends with whatever http.client raises
            if not self._stopped:
                self.error = f"{type(error).__name__}: {error}"
        finally:
            self._open.set()
            if self._connection is not None:
                self._connection.close()

    def wait_for(self, marks: Iterable[str], within: float) -> None:
        """Wait (bounded) until every mark arrived."""
        wanted = set(marks)
        deadline = min(self.deadline, time.monotonic() + within)
        while not wanted <= self.arrived.keys() and time.monotonic() < deadline and not self.error:
            time.sleep(0.01)

    def stop(self) -> None:
        """End the stream (its thread closes the connection once its read returns) and the thread."""
        self._stopped = True
        sock = self._connection.sock if self._connection is not None else None
        if sock is not None:
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        if self._thread is not None:
            self._thread.join(5)


def https_to(port: int) -> Callable[[], http.client.HTTPConnection]:
    """Connections to the aggregator on port (its bench certificate is not checked: loopback only)."""
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    return lambda: http.client.HTTPSConnection("127.0.0.1", port, context=context, timeout=30)


def http_to(port: int) -> Callable[[], http.client.HTTPConnection]:
    """Plain HTTP connections to etcd's client port on loopback."""
    return lambda: http.client.HTTPConnection("127.0.0.1", port, timeout=30)


def latencies(sent: dict[str, float], arrived: dict[str, float]) -> list[float]:
    """Milliseconds from each mark's moment in sent to its arrival; marks that never arrived are left out (the
    harness counts them separately)."""
    return [1000 * (arrived[mark] - moment) for mark, moment in sent.items() if mark in arrived]
