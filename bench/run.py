"""`make bench`: start a backend, the aggregator and a reference nginx on loopback, measure, print one table.

Every figure comes with a reference measured in the same run (the backend reached directly, nginx as
the same mutual-TLS proxy, a trivial endpoint of the aggregator, or a raw fsync), because timings on
a shared machine are noisy and only ratios travel.  `--json` prints the results for machines.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import sys
import tempfile
import time
from typing import Any

if __package__ in (None, ""):
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    __package__ = "bench"

from . import sections  # noqa: E402
from .harness import Processes, make_pki, require_tools  # noqa: E402
from .report import Results, render  # noqa: E402


def machine() -> dict[str, Any]:
    model = ""
    try:
        with open("/proc/cpuinfo") as handle:
            model = next((line.split(":", 1)[1].strip() for line in handle if line.startswith("model name")), "")
    except OSError:
        pass
    return {"cpu": model or platform.processor(), "cores": os.cpu_count(), "python": platform.python_version(),
            "kernel": platform.release()}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--json", action="store_true", help="print the results as JSON instead of a table")
    parser.add_argument("--seconds", type=float, default=8.0, help="length of each wrk load (default 8)")
    parser.add_argument("--only", action="append", choices=sections.NAMES, help="run only these sections")
    parser.add_argument("--keep", action="store_true", help="keep the work folder (logs, configs) afterwards")
    parser.add_argument("--strict", action="store_true", help="exit 1 when a target is missed")
    options = parser.parse_args(argv)
    require_tools("wrk", "nginx", "curl")

    folder = tempfile.mkdtemp(prefix="grafana-aggregator-bench-", dir=os.environ.get("BENCH_DIR"))
    os.chmod(folder, 0o755)
    processes = Processes(folder)
    results = Results(machine=machine(), seconds=options.seconds)
    started = time.monotonic()
    try:
        pki = make_pki(os.path.join(folder, "pki"))
        context = sections.Context(processes, pki, results, options.seconds)
        for name in options.only or sections.NAMES:
            if not options.json:
                print(f"… {name}", file=sys.stderr, flush=True)
            sections.RUNNERS[name](context)
        context.finish()
    finally:
        processes.stop_all()
        results.elapsed = time.monotonic() - started
        if options.keep:
            print(f"work folder kept: {folder}", file=sys.stderr)
        else:
            shutil.rmtree(folder, ignore_errors=True)
    if options.json:
        print(json.dumps(results.as_dict(), indent=2))
    else:
        print(render(results))
    return 1 if options.strict and not results.all_met() else 0


if __name__ == "__main__":
    raise SystemExit(main())
