# -*- test-case-name: tests.test_migrate -*-
"""`grafana-aggregator-migrate`: copy every stored object from file storage to etcd, or back.

    grafana-aggregator-migrate --from file:/var/lib/grafana-aggregator --to etcd:https://10.0.0.5:2379 \\
        --etcd-cafile ca.crt --etcd-certfile client.crt --etcd-keyfile client.key [--overwrite] [--dry-run]

The stores are opened as the daemon opens them (`FileStore.open`, which takes the folder's lock, so it never runs
beside a daemon using it; `EtcdStore` over `make_client`), with the daemon's setting keys and checks
(`config.settings`); `--config` reads the etcd settings (and `file:` without a path, the storage path) from the
daemon's ini file.  The copying is `storage.migrate`.  Errors are one line on stderr and exit 1; a usage error
exits 2.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
from collections.abc import Sequence
from typing import IO, Any, NoReturn

from attrs import frozen
from twisted.internet.defer import Deferred
from twisted.internet.task import react
from twisted.logger import (
    FilteringLogObserver,
    LogLevel,
    LogLevelFilterPredicate,
    globalLogBeginner,
    textFileLogObserver,
)

from .config.settings import ConfigError, Settings, load_settings
from .storage import StorageError, StoreLockedError
from .storage.etcd import EtcdStore
from .storage.etcd_client import DEFAULT_TIMEOUT, make_client
from .storage.file import FileStore
from .storage.migrate import MigratableStore, migrate

PROGRAM = "grafana-aggregator-migrate"
KINDS = ("file", "etcd")


class CommandError(Exception):
    """What went wrong, as the one line the command prints."""


@frozen
class StoreSpec:
    """One side of the copy: `file:<storage_path>` or `etcd:<endpoint>[,<endpoint>...]`."""

    kind: str
    location: str

    def __str__(self) -> str:
        return f"{self.kind}:{self.location}"


def parse_spec(text: str) -> StoreSpec:
    """A StoreSpec from `--from`/`--to`'s text (argparse turns the ValueError into a usage error)."""
    kind, colon, location = text.partition(":")
    if not colon or kind not in KINDS:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not a store: use file:<storage_path> or etcd:<endpoint>[,<endpoint>...]")
    return StoreSpec(kind, location.strip())


def parser() -> argparse.ArgumentParser:
    """The command's options; the etcd ones are the daemon's flags of the same names."""
    options = argparse.ArgumentParser(
        prog=PROGRAM,
        description="Copy every stored object (every collection) from one store to another: file storage to etcd, "
                    "or back.  Stop the daemons using the source and the target first.  Objects keep everything "
                    "but their resourceVersion, which the target assigns.")
    options.add_argument("--from", dest="source", required=True, type=parse_spec, metavar="STORE",
                         help="file:<storage_path> or etcd:<endpoint>[,<endpoint>...] (http://host:port or https://)")
    options.add_argument("--to", dest="target", required=True, type=parse_spec, metavar="STORE",
                         help="where to copy to, in the same form")
    options.add_argument("--config", metavar="INI",
                         help="the daemon's ini file: etcd_* settings (and the storage path of a bare file:) from it")
    options.add_argument("--etcd-prefix", help="the prefix of the keys in etcd (default /registry)")
    options.add_argument("--etcd-cafile", help="CA bundle that etcd's serving certificates chain to")
    options.add_argument("--etcd-certfile", help="client certificate presented to etcd (mutual TLS)")
    options.add_argument("--etcd-keyfile", help="key of --etcd-certfile")
    options.add_argument("--etcd-timeout", type=float, default=DEFAULT_TIMEOUT, metavar="SECONDS",
                         help=f"how long one etcd call may take (default {DEFAULT_TIMEOUT:g})")
    options.add_argument("--overwrite", action="store_true",
                         help="replace objects of the same name the target already holds (the others are kept)")
    options.add_argument("--dry-run", action="store_true", help="report what would be copied; write nothing")
    return options


def settings_for(arguments: argparse.Namespace) -> Settings:
    """The daemon's settings from --config and the etcd flags, checked as the daemon checks them."""
    endpoints = next((spec.location for spec in (arguments.source, arguments.target)
                      if spec.kind == "etcd" and spec.location), None)
    flags = {"etcd-servers": endpoints, "etcd-prefix": arguments.etcd_prefix, "etcd-cafile": arguments.etcd_cafile,
             "etcd-certfile": arguments.etcd_certfile, "etcd-keyfile": arguments.etcd_keyfile}
    if any(spec.kind == "etcd" for spec in (arguments.source, arguments.target)):
        if endpoints is None and arguments.config is None:
            raise CommandError("etcd: needs its endpoints (etcd:http://host:port[,...]), or --config with etcd_servers")
        flags["storage-type"] = "etcd"
    try:
        return load_settings(arguments.config, flags)
    except ConfigError as error:
        message = str(error).replace("--etcd-servers", "the etcd endpoints of --from/--to")
        raise CommandError(message.replace("--storage-type", "--from/--to etcd:")) from None


def open_store(spec: StoreSpec, settings: Settings, reactor: Any, timeout: float, *, source: bool) -> MigratableStore:
    """The store a spec names, opened as the daemon opens it; CommandError naming what is wrong."""
    if spec.kind == "file":
        path = spec.location or settings.storage_path
        if source and not os.path.isdir(path):
            raise CommandError(f"--from file:{path}: there is no such folder")
        try:
            return FileStore.open(path)
        except StoreLockedError as error:
            raise CommandError(f"{error}: stop the daemon first") from None
        except (OSError, StorageError) as error:
            raise CommandError(f"cannot open the file storage in {path}: {error}") from None
    try:
        client = make_client(reactor, spec.location.split(",") if spec.location else settings.etcd_servers,
                             cafile=settings.etcd_cafile, certfile=settings.etcd_certfile,
                             keyfile=settings.etcd_keyfile, timeout=timeout)
    except (OSError, ValueError) as error:
        raise CommandError(f"etcd TLS files (--etcd-cafile, --etcd-certfile, --etcd-keyfile): {error}") from None
    return EtcdStore(client, reactor, settings.etcd_prefix)


async def run(reactor: Any, argv: Sequence[str], out: IO[str], err: IO[str]) -> int:
    """Parse argv, copy, and print the report (stdout) or the one-line error (stderr); the exit code."""
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            arguments = parser().parse_args(list(argv))
    except SystemExit as usage:  # --help (0), or a usage error (2), printed to out or err
        return int(usage.code or 0)
    stores: list[MigratableStore] = []
    try:
        if arguments.source == arguments.target:
            raise CommandError(f"--from and --to are the same store ({arguments.source})")
        settings = settings_for(arguments)
        for spec, source in ((arguments.source, True), (arguments.target, False)):
            stores.append(open_store(spec, settings, reactor, arguments.etcd_timeout, source=source))
        report = await migrate(stores[0], stores[1], overwrite=arguments.overwrite, dry_run=arguments.dry_run)
    except CommandError as error:
        err.write(f"{PROGRAM}: {error}\n")
        return 1
    except StorageError as error:
        err.write(f"{PROGRAM}: {error}\n")
        return 1
    except Exception as error:  # a bug: still one line, with the error's type to report it by
        err.write(f"{PROGRAM}: unexpected {type(error).__name__}: {error}\n")
        return 1
    finally:
        for store in stores:
            try:
                await store.close()
            except Exception as error:
                err.write(f"{PROGRAM}: closing {store}: {error}\n")
    out.write(f"{arguments.source} -> {arguments.target}\n")
    for line in report.lines():
        out.write(line + "\n")
    return 0


def main(argv: Sequence[str] | None = None) -> NoReturn:
    """The console script: warnings (a file skipped in the source, say) on stderr, then `run` on the reactor."""
    globalLogBeginner.beginLoggingTo(
        [FilteringLogObserver(textFileLogObserver(sys.stderr),
                              [LogLevelFilterPredicate(defaultLogLevel=LogLevel.warn)])],
        redirectStandardIO=False)

    async def finish(reactor: Any) -> None:
        code = await run(reactor, sys.argv[1:] if argv is None else argv, sys.stdout, sys.stderr)
        if code:
            raise SystemExit(code)

    react(lambda reactor: Deferred.fromCoroutine(finish(reactor)))


if __name__ == "__main__":
    main()
