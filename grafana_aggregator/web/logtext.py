"""The daemon's text log observer: twistd's classic line format, without the per-event formatting cost.

twistd's stock observer renders every event with `string.Formatter` and a timestamp through `datetime`
and `strftime`; at a thousand access-log lines a second that was 8–9 % of the daemon's CPU
(docs/performance.md).  This observer writes the same bytes (`<time> [<system>] <text>`, continuation
lines indented by a tab) but formats the timestamp once per second and renders each format string
from a template parsed once.  Anything unusual (attribute or index lookups, `{call()}` fields,
failures, flattened or malformed events) goes through Twisted's own formatter, so nothing is lost.

`install_log_observer` makes twistd use it: a twistd plugin returns a service, and twistd asks the
application for an `ILogObserver` component before making its own observer.
"""

from __future__ import annotations

import signal
import string
import sys
from collections.abc import Callable
from typing import IO, Any

from twisted.application.service import MultiService
from twisted.logger import FileLogObserver, ILogObserver, LogEvent, formatEventAsClassicLogText, formatTime
from twisted.python import logfile

#: A template: (literal text, field name or None, conversion or None, format spec) per part.
Template = tuple[tuple[str, str | None, str | None, str], ...]

_MAX_TEMPLATES = 1024


def parse_template(log_format: str) -> Template | None:
    """The parts of a format string, or None when it needs Twisted's formatter (attribute, index or call
    fields, nested specs, positional fields)."""
    parts = []
    for literal, field, spec, conversion in string.Formatter().parse(log_format):
        if field is not None:
            if not field.isidentifier() or (spec and "{" in spec):
                return None
        parts.append((literal, field, conversion, spec or ""))
    return tuple(parts)


class TextLogObserver:
    """Writes events as twistd's classic text lines to a file, flushing each."""

    def __init__(self, out: IO[Any]):
        self._out = out
        self._templates: dict[str, Template | None] = {}
        self._second = -1
        self._stamp = ""
        self._slow = FileLogObserver(out, formatEventAsClassicLogText)

    def __call__(self, event: LogEvent) -> None:
        text = self.format(event)
        if text is None:
            self._slow(event)
            return
        self._out.write(text)
        self._out.flush()

    def format(self, event: LogEvent) -> str | None:
        """The event's line, or None when Twisted's formatter must render it."""
        log_format = event.get("log_format")
        if type(log_format) is not str or "log_failure" in event or "log_flattened" in event:
            return None
        templates = self._templates
        if log_format in templates:
            template = templates[log_format]
        else:
            if len(templates) >= _MAX_TEMPLATES:
                templates.clear()
            template = templates[log_format] = parse_template(log_format)
        if template is None:
            return None
        rendered = []
        try:
            for literal, field, conversion, spec in template:
                rendered.append(literal)
                if field is None:
                    continue
                value = event[field]
                if conversion == "r":
                    value = repr(value)
                elif conversion == "s":
                    value = str(value)
                elif conversion == "a":
                    value = ascii(value)
                rendered.append(format(value, spec))
        except Exception:
            return None
        text = "".join(rendered)
        if not text:
            return ""
        when = event.get("log_time")
        stamp = self._timestamp(when) if when is not None else "-"
        system = event.get("log_system")
        if system is None:
            level = event.get("log_level")
            system = f"{event.get('log_namespace', '-')}#{level.name if level is not None else '-'}"
        return f"{stamp} [{system}] {text}".replace("\n", "\n\t") + "\n"

    def _timestamp(self, when: float) -> str:
        second = int(when)
        if second != self._second:
            self._second = second
            self._stamp = formatTime(second)
        return self._stamp


def log_file(options: Any) -> IO[Any] | None:
    """Where twistd would write its log for these twistd options (stdout or the log file, rotated on SIGUSR1),
    or None when it logs elsewhere (syslog) and should keep its own observer."""
    if options is None or "nodaemon" not in options or options.get("syslog") or options.get("logger"):
        return None  # not twistd (twist, a test), or logging elsewhere
    filename = options.get("logfile")
    if filename == "-" or (options.get("nodaemon") and not filename):
        return sys.stdout
    target: IO[Any] = logfile.LogFile.fromFullPath(filename or "twistd.log")
    if not signal.getsignal(signal.SIGUSR1):
        def rotate(signum: int, frame: object) -> None:
            from twisted.internet import reactor
            reactor.callFromThread(target.rotate)  # type: ignore[attr-defined]
        signal.signal(signal.SIGUSR1, rotate)
    return target


def install_log_observer(application: Any, out: IO[Any] | None) -> Callable[[LogEvent], None] | None:
    """Make twistd log through a `TextLogObserver` to `out` (None: leave twistd's observer)."""
    if out is None or not hasattr(application, "setComponent"):
        return None
    observer = TextLogObserver(out)
    application.setComponent(ILogObserver, observer)
    return observer


class TextLoggingService(MultiService):
    """The daemon's top service: set under a twistd application, it gives twistd the `TextLogObserver`."""

    def __init__(self, out: IO[Any] | None):
        super().__init__()
        self._out = out

    def setServiceParent(self, parent: Any) -> None:
        install_log_observer(parent, self._out)
        super().setServiceParent(parent)
