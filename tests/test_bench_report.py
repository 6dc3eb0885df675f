"""The benchmark's arithmetic and table (bench/report.py, bench/harness.py): a wrong verdict would hide a missed target."""

from __future__ import annotations

import math

from twisted.trial.unittest import SynchronousTestCase

from bench.harness import percentile
from bench.report import Results, Row, render


class RowTests(SynchronousTestCase):
    """Verdicts and ratios of single rows."""

    def test_bounds(self) -> None:
        """at_most and at_least are inclusive; a row without a bound has no verdict."""
        self.assertTrue(Row("s", "f", 10.0, "ms", at_most=10.0).met)
        self.assertFalse(Row("s", "f", 10.1, "ms", at_most=10.0).met)
        self.assertTrue(Row("s", "f", 3000.0, "req/s", at_least=3000.0).met)
        self.assertFalse(Row("s", "f", 2999.0, "req/s", at_least=3000.0).met)
        self.assertIsNone(Row("s", "f", 1.0, "ms").met)

    def test_nan_misses(self) -> None:
        """A figure that could not be measured never meets its target."""
        self.assertFalse(Row("s", "f", math.nan, "ms", at_most=10.0).met)

    def test_ratio(self) -> None:
        """The ratio is value over reference, and absent without a usable reference."""
        self.assertEqual(Row("s", "f", 3.0, "ms", 2.0, "ref").ratio, 1.5)
        self.assertIsNone(Row("s", "f", 3.0, "ms", 0.0, "ref").ratio)
        self.assertIsNone(Row("s", "f", 3.0, "ms").ratio)


class ResultsTests(SynchronousTestCase):
    """The whole run: every target must hold, and the table says which do not."""

    def test_all_met_and_table(self) -> None:
        results = Results(machine={"cpu": "cpu", "cores": 2, "python": "3.11", "kernel": "6"}, seconds=8)
        results.add(Row("proxy", "requests/s", 800.0, "req/s", 11500.0, "nginx", at_least=3000))
        results.add(Row("storage", "create p99", 7.0, "ms", 4.0, "fsync", at_most=20))
        self.assertFalse(results.all_met())
        table = render(results)
        self.assertIn("MISSED", table.splitlines()[3])
        self.assertIn("met", table.splitlines()[4])
        self.assertIn("1 of 2 targets met", table)
        self.assertEqual([r["met"] for r in results.as_dict()["rows"]], [False, True])


class PercentileTests(SynchronousTestCase):
    """Nearest-rank percentiles, as reported for latencies."""

    def test_nearest_rank(self) -> None:
        samples = [float(n) for n in range(1, 101)]
        self.assertEqual(percentile(samples, 0.5), 50.0)
        self.assertEqual(percentile(samples, 0.99), 99.0)
        self.assertEqual(percentile([5.0], 0.99), 5.0)
        self.assertTrue(math.isnan(percentile([], 0.5)))


class SignedFigureTests(SynchronousTestCase):
    """Figures that can be below zero (a watch that hears of a write before its writer does) have no ratio."""

    def test_no_ratio_across_zero(self) -> None:
        """A ratio of a negative value or to a non-positive reference would read as a speed-up or nonsense: none."""
        self.assertIsNone(Row("s", "f", -0.8, "ms", 0.2, "ref").ratio)
        self.assertIsNone(Row("s", "f", 0.2, "ms", -0.19, "ref").ratio)
        self.assertEqual(Row("s", "f", 0.0, "ms", 0.5, "ref").ratio, 0.0)
        self.assertNotIn("-4.00", render(Results(machine={}, seconds=6, rows=[Row("s", "f", -0.8, "ms", 0.2, "r")])))
