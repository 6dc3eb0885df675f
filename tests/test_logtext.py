"""The fast text log observer writes exactly what twistd's stock observer writes, for every kind of event."""

from __future__ import annotations

import io
import os
import sys
import time

from twisted.application.service import Application
from twisted.logger import ILogObserver, Logger, LogLevel, eventAsJSON, eventFromJSON, formatEventAsClassicLogText
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase

from grafana_aggregator.web.logtext import (
    TextLoggingService,
    TextLogObserver,
    install_log_observer,
    log_file,
    parse_template,
)


def stock(event: dict) -> str:
    """What twistd's own text observer writes for the event."""
    return formatEventAsClassicLogText(event) or ""



class Captured:
    def __init__(self) -> None:
        self.out = io.StringIO()
        self.observer = TextLogObserver(self.out)

    def text(self, event: dict) -> str:
        self.out.seek(0)
        self.out.truncate()
        self.observer(event)
        return self.out.getvalue()


def event(log_format: object, **fields: object) -> dict:
    return {"log_format": log_format, "log_time": 1764770000.25, "log_namespace": "grafana_aggregator.access",
            "log_level": LogLevel.info, **fields}


class SameBytesTests(SynchronousTestCase):
    """Every event comes out byte for byte as twistd's observer would write it."""

    def assertSame(self, logged: dict) -> None:
        self.assertEqual(Captured().text(logged), stock(logged))

    def test_access_line(self) -> None:
        """The access log's line, with named fields, specs and conversions."""
        self.assertSame(event("{method} {uri!r} {status} {seconds:.3f}s user={user} {agent!s} {weird!a}",
                              method="GET", uri="/apis/x?y=1", status=200, seconds=0.0123, user="admin",
                              agent="kubectl/v1.33", weird="é"))

    def test_access_event_takes_the_fast_path(self) -> None:
        """The access log's own event is rendered from a template, not by Twisted's formatter."""
        logged = event("{method} {path} {code} {bytes}B {latency_ms}ms user={user}", method="GET", path="/apis",
                       query="", code=200, bytes=812, latency_ms=1.234, user="admin", impersonator=None, verb="get",
                       upstream="v0alpha1.example.grafana.app", log_access=True)
        captured = Captured()
        self.assertIsNotNone(captured.observer.format(logged))
        self.assertEqual(captured.text(logged), stock(logged))

    def test_plain_text_and_braces(self) -> None:
        """Literal text, escaped braces and non-ASCII pass through."""
        self.assertSame(event("serving on {url} {{literal}} ✓", url="https://127.0.0.1:6443"))

    def test_multiline_is_indented(self) -> None:
        """Continuation lines are indented by a tab, as twistd does."""
        self.assertSame(event("first\nsecond {x}", x="third\nfourth"))

    def test_log_system_and_defaults(self) -> None:
        """log_system wins over namespace#level; missing parts are '-'."""
        self.assertSame(event("x", log_system="worker-1"))
        self.assertSame({"log_format": "no time, no namespace"})
        self.assertSame({"log_format": "level only", "log_level": LogLevel.warn, "log_time": 1.5})

    def test_unusual_fields_fall_back(self) -> None:
        """Attribute, index and call fields go through Twisted's formatter and still come out right."""
        self.assertIsNone(parse_template("{a.b}"))
        self.assertIsNone(parse_template("{a[0]}"))
        self.assertIsNone(parse_template("{f()}"))
        self.assertSame(event("{a[0]} {f()} {s.real}", a=["zero"], f=lambda: "called", s=3))

    def test_missing_field_falls_back(self) -> None:
        """A format naming a field the event lacks is rendered by Twisted (its 'Unable to format' text)."""
        self.assertSame(event("hello {nobody}"))

    def test_failure_and_flattened(self) -> None:
        """Failures keep their traceback; flattened (JSON round-tripped) events are rendered by Twisted."""
        try:
            1 / 0
        except ZeroDivisionError:
            failure = Failure()
        self.assertSame(event("it broke: {what}", what="division", log_failure=failure))
        flattened = eventFromJSON(eventAsJSON(event("flat {x}", x=1)))
        self.assertSame(flattened)

    def test_no_format_writes_nothing(self) -> None:
        """An event without a format, or with empty text, writes nothing, as twistd."""
        self.assertEqual(Captured().text({"log_time": 1.0}), "")
        self.assertEqual(Captured().text(event("")), "")

    def test_timestamp_cached_per_second_is_right(self) -> None:
        """Events in the same second share a stamp; the next second gets its own, each as twistd formats it."""
        captured = Captured()
        now = time.time()
        for when in (now, now + 0.4, now + 1.01, now + 3600.0):
            logged = event("tick", log_time=when)
            self.assertEqual(captured.text(logged), stock(logged))

    def test_through_a_logger(self) -> None:
        """A real Logger's event (with its extra keys) is written as twistd writes it."""
        events: list[dict] = []
        Logger(namespace="grafana_aggregator.access", observer=events.append).info(
            "{method} {path} {code}", method="PUT", path="/apis", code=409)
        self.assertSame(events[0])

    def test_templates_bounded(self) -> None:
        """Distinct format strings do not grow the template cache without bound."""
        captured = Captured()
        for number in range(3000):
            logged = event(f"message {number} {{x}}", x=number)
            self.assertEqual(captured.text(logged), stock(logged))
        self.assertLessEqual(len(captured.observer._templates), 1024)


class InstallTests(SynchronousTestCase):
    """twistd is given the observer through the application, and writes where it would have written."""

    def test_component_on_application(self) -> None:
        """The top service, set under an application, makes the observer its ILogObserver."""
        application = Application("grafana-aggregator")
        TextLoggingService(io.StringIO()).setServiceParent(application)
        self.assertIsInstance(application.getComponent(ILogObserver), TextLogObserver)

    def test_left_alone_without_output(self) -> None:
        """With no file (syslog, a --logger of the operator's), twistd keeps its own observer."""
        application = Application("grafana-aggregator")
        self.assertIsNone(install_log_observer(application, None))
        self.assertIsNone(application.getComponent(ILogObserver))

    def test_where_to_write(self) -> None:
        """stdout in the foreground, twistd.log-style files otherwise, nothing for syslog or --logger."""
        self.assertIs(log_file({"nodaemon": True, "logfile": None}), sys.stdout)
        self.assertIs(log_file({"nodaemon": True, "logfile": "-"}), sys.stdout)
        self.assertIsNone(log_file({"syslog": True, "nodaemon": False}))
        self.assertIsNone(log_file({"logger": "my.observer", "nodaemon": True}))
        self.assertIsNone(log_file(None))
        self.assertIsNone(log_file({"logfile": None}))  # twist's options, not twistd's
        path = os.path.join(self.mktemp())
        os.makedirs(path)
        target = log_file({"nodaemon": False, "logfile": os.path.join(path, "daemon.log")})
        self.addCleanup(target.close)
        target.write("line\n")
        target.flush()
        with open(os.path.join(path, "daemon.log")) as handle:
            self.assertEqual(handle.read(), "line\n")
