"""Where the bench's workers section says the cores went (bench/sections.py `CpuUse`): a wrong split would misread
the `workers = auto` gain."""

from __future__ import annotations

import os
import subprocess
import sys
import time

from twisted.trial.unittest import SynchronousTestCase

from bench.harness import cpu_seconds
from bench.sections import CpuUse, _machine_ticks, _process_tree, _tree_cpu

_BURN = "import time\nend = time.process_time() + 0.3\nwhile time.process_time() < end: pass\n"


class CoresTests(SynchronousTestCase):
    """Real processes, real /proc."""

    def test_process_tree_has_children(self) -> None:
        """An aggregator's workers are its children: the tree of a process holds them."""
        child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
        self.addCleanup(child.wait)
        self.addCleanup(child.kill)
        tree = _process_tree(os.getpid())
        self.assertEqual(tree[0], os.getpid())
        self.assertIn(child.pid, tree)

    def test_tree_cpu_counts_a_busy_child(self) -> None:
        """CPU a child spends counts for its parent's tree while the child runs."""
        child = subprocess.Popen([sys.executable, "-c", _BURN + "time.sleep(30)\n"])
        self.addCleanup(child.wait)
        self.addCleanup(child.kill)
        def children() -> float:
            return _tree_cpu(os.getpid()) - cpu_seconds(os.getpid())

        deadline = time.monotonic() + 20
        while children() < 0.25 and time.monotonic() < deadline:
            time.sleep(0.05)
        self.assertGreaterEqual(children(), 0.25)

    def test_machine_ticks(self) -> None:
        """Busy and stolen ticks are parts of the total, and burning CPU makes the machine busier."""
        busy, stolen, total = _machine_ticks()
        self.assertLessEqual(busy + stolen, total)
        end = time.process_time() + 0.3
        while time.process_time() < end:
            pass
        later_busy, _, later_total = _machine_ticks()
        self.assertGreater(later_busy, busy)
        self.assertGreater(later_total, total)

    def test_load_generator_counted_once_ended(self) -> None:
        """A child run to its end inside `measuring` (as wrk is) is the load's CPU; the measured process's own CPU
        is the daemon's, and the machine was busy at least that much."""
        use = CpuUse()
        with use.measuring(os.getpid()):
            subprocess.run([sys.executable, "-c", _BURN], check=True)
            end = time.process_time() + 0.2
            while time.process_time() < end:
                pass
        self.assertGreater(use.seconds, 0)
        self.assertGreaterEqual(use.load, 0.25)
        self.assertGreaterEqual(use.daemon, 0.15)
        self.assertGreater(use.busy_cores, 0)
        self.assertAlmostEqual(use.wrk_cores, use.load / use.seconds)
        self.assertAlmostEqual(use.daemon_cores, use.daemon / use.seconds)
