# -*- test-case-name: tests.test_workqueue -*-
"""Tests for L{grafana_aggregator.controllers.workqueue}: single flight per key, capped retry backoff, the rate
limit, delayed adds, forgetting, stopping and the spreading of starts over reactor turns, on a fake clock."""

from __future__ import annotations

from typing import Any

from twisted.internet.defer import CancelledError, Deferred
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from grafana_aggregator.controllers.workqueue import Retry, WorkQueue

#: A plan step: the sync waits on a Deferred the test fires (`Syncs.release`) or fails (`Syncs.fail`).
WAIT = "wait"


class TurnClock(Clock):
    """A Clock that runs each delayed call at its own time (so a sync sees when it really started), and can run
    one reactor turn: only the calls due when the turn begins, not the `callLater(0, ...)` calls they make."""

    def advance(self, amount: float) -> None:
        """Move time forward by amount, running the calls due on the way, each with the clock at its time."""
        end = self.rightNow + amount
        while True:
            due = [call for call in self.getDelayedCalls() if call.getTime() <= end]
            if not due:
                break
            call = min(due, key=lambda c: c.getTime())
            self.rightNow = max(self.rightNow, call.getTime())
            self.calls.remove(call)
            call.called = 1
            call.func(*call.args, **call.kw)
        self.rightNow = end

    def turn(self, amount: float = 0.0) -> None:
        """Move time forward by amount and run the calls due then, but none that they schedule."""
        self.rightNow += amount
        due = [call for call in self.getDelayedCalls() if call.getTime() <= self.seconds()]
        for call in due:
            if call.active():
                self.calls.remove(call)
                call.called = 1
                call.func(*call.args, **call.kw)


class Syncs:
    """The sync function under the queue: records each call and, per key, follows a plan of steps
    (None returns at once, an exception is raised at once, WAIT waits on a Deferred)."""

    def __init__(self, clock: Clock) -> None:
        self.clock = clock
        self.calls: list[tuple[str, float]] = []
        self.plans: dict[str, list[Any]] = {}
        self.waiting: dict[str, Deferred[None]] = {}
        self.cancelled: list[str] = []
        self.depth = 0
        self.max_depth = 0
        #: Called with the key at the start of every call, before any step (to act from inside a sync).
        self.on_call: Any = None

    def plan(self, key: str, *steps: Any) -> None:
        """Append steps to the key's plan; calls past the plan return at once."""
        self.plans.setdefault(key, []).extend(steps)

    async def __call__(self, key: str) -> None:
        self.calls.append((key, self.clock.seconds()))
        self.depth += 1
        self.max_depth = max(self.max_depth, self.depth)
        try:
            if self.on_call is not None:
                self.on_call(key)
            steps = self.plans.get(key)
            step = steps.pop(0) if steps else None
            if step == WAIT:
                waiting: Deferred[None] = Deferred()
                self.waiting[key] = waiting
                try:
                    await waiting
                except CancelledError:
                    self.cancelled.append(key)
                    raise
                finally:
                    if self.waiting.get(key) is waiting:
                        del self.waiting[key]
            elif isinstance(step, BaseException):
                raise step
        finally:
            self.depth -= 1

    def release(self, key: str) -> None:
        """Let the waiting call of the key return."""
        self.waiting[key].callback(None)

    def fail(self, key: str, error: Exception) -> None:
        """Make the waiting call of the key raise error."""
        self.waiting[key].errback(error)

    def keys(self) -> list[str]:
        """The key of each call, in order."""
        return [key for key, _ in self.calls]

    def times(self, key: str) -> list[float]:
        """When each call of the key began."""
        return [at for k, at in self.calls if k == key]


class QueueTestCase(SynchronousTestCase):
    """Builds a queue over a TurnClock and a Syncs recorder."""

    def make(self, **options: Any) -> WorkQueue:
        self.clock = TurnClock()
        self.syncs = Syncs(self.clock)
        self.queue = WorkQueue(self.clock, self.syncs, "test", **options)
        return self.queue


class SingleFlightTests(QueueTestCase):
    """A key runs at most once at a time; adds during a run fold into one more run."""

    def test_synchronous_sync_runs_at_add(self) -> None:
        """A sync that does not wait runs inside `add` and leaves nothing in flight or pending."""
        queue = self.make()
        queue.add("a")
        self.assertEqual(self.syncs.calls, [("a", 0.0)])
        self.assertIsNone(queue.running("a"))
        self.assertEqual(queue.in_flight(), {})
        self.assertFalse(queue.pending("a"))

    def test_waiting_sync_is_in_flight_until_it_returns(self) -> None:
        """A sync waiting on a Deferred is in flight and pending; its run Deferred fires with None when it returns."""
        queue = self.make()
        self.syncs.plan("a", WAIT)
        queue.add("a")
        run = queue.running("a")
        self.assertIsNotNone(run)
        assert run is not None
        self.assertNoResult(run)
        self.assertEqual(queue.in_flight(), {"a": run})
        self.assertTrue(queue.pending("a"))
        self.syncs.release("a")
        self.assertIsNone(self.successResultOf(run))
        self.assertIsNone(queue.running("a"))
        self.assertEqual(queue.in_flight(), {})
        self.assertFalse(queue.pending("a"))
        self.assertEqual(len(self.syncs.calls), 1)

    def test_adds_during_run_fold_into_one_more_run(self) -> None:
        """Several adds while a key runs give exactly one more run, started as soon as the first one returns."""
        queue = self.make()
        self.syncs.plan("a", WAIT)
        queue.add("a")
        self.clock.advance(1)
        queue.add("a")
        queue.add("a")
        queue.add("a")
        self.assertEqual(self.syncs.times("a"), [0.0])
        self.clock.advance(1)
        self.syncs.release("a")
        self.assertEqual(self.syncs.times("a"), [0.0, 2.0])
        self.clock.advance(100)
        self.assertEqual(self.syncs.times("a"), [0.0, 2.0])
        self.assertEqual(queue.in_flight(), {})

    def test_fold_in_run_is_part_of_the_same_run(self) -> None:
        """The extra run keeps the key in flight under the same run Deferred, and adds during it fold again."""
        queue = self.make()
        self.syncs.plan("a", WAIT, WAIT)
        queue.add("a")
        run = queue.running("a")
        assert run is not None
        queue.add("a")
        self.syncs.release("a")
        self.assertEqual(len(self.syncs.calls), 2)
        self.assertIs(queue.running("a"), run)
        self.assertNoResult(run)
        queue.add("a")
        self.syncs.release("a")
        self.assertEqual(len(self.syncs.calls), 3)
        self.assertIsNone(self.successResultOf(run))
        self.assertIsNone(queue.running("a"))

    def test_add_after_run_ended_runs_again(self) -> None:
        """An add once the run has returned starts a new run: nothing is deduplicated for good."""
        queue = self.make()
        queue.add("a")
        queue.add("a")
        self.syncs.plan("a", WAIT)
        queue.add("a")
        self.syncs.release("a")
        queue.add("a")
        self.assertEqual(self.syncs.keys(), ["a", "a", "a", "a"])

    def test_keys_run_independently(self) -> None:
        """One key in flight does not hold up another."""
        queue = self.make()
        self.syncs.plan("a", WAIT)
        self.syncs.plan("b", WAIT)
        queue.add("a")
        queue.add("b")
        queue.add("c")
        self.assertEqual(self.syncs.keys(), ["a", "b", "c"])
        self.assertEqual(set(queue.in_flight()), {"a", "b"})
        self.syncs.release("b")
        self.assertEqual(set(queue.in_flight()), {"a"})

    def test_add_from_inside_synchronous_sync_folds(self) -> None:
        """An add of the key from inside its own sync that does not wait (a listener called by the sync's own
        store write) runs the key once more after it, not nested inside it."""
        queue = self.make()
        self.syncs.on_call = lambda key: queue.add(key) if len(self.syncs.calls) == 1 else None
        queue.add("a")
        self.assertEqual(self.syncs.keys(), ["a", "a"])
        self.assertEqual(self.syncs.max_depth, 1)

    def test_add_from_inside_sync_before_it_waits_folds(self) -> None:
        """An add of the key from inside its sync, before the sync first waits, does not start a second run
        alongside the first."""
        queue = self.make()
        self.syncs.plan("a", WAIT)
        self.syncs.on_call = lambda key: queue.add(key) if len(self.syncs.calls) == 1 else None
        queue.add("a")
        self.assertEqual(len(self.syncs.calls), 1)
        self.syncs.release("a")
        self.assertEqual(len(self.syncs.calls), 2)


class RetryTests(QueueTestCase):
    """A failed sync runs again after a per-key backoff that doubles up to a cap and resets on success."""

    def assertRunsAt(self, key: str, gaps: list[float], step: float = 0.25) -> None:
        """Each next run of key comes exactly gap seconds after the previous one, not a step sooner."""
        for gap in gaps:
            before = len(self.syncs.times(key))
            self.clock.advance(gap - step)
            self.assertEqual(len(self.syncs.times(key)), before, f"ran before the gap of {gap} s")
            self.clock.advance(step)
            self.assertEqual(len(self.syncs.times(key)), before + 1, f"did not run after the gap of {gap} s")

    def test_retry_runs_again_after_initial_backoff(self) -> None:
        """A sync raising Retry runs again initial_backoff later, without logging an error."""
        self.make(initial_backoff=0.5)
        self.syncs.plan("a", Retry())
        self.queue.add("a")
        self.assertTrue(self.queue.pending("a"))
        self.assertRunsAt("a", [0.5], step=0.125)
        self.assertEqual(self.syncs.times("a"), [0.0, 0.5])
        self.assertFalse(self.queue.pending("a"))
        self.assertEqual(self.flushLoggedErrors(), [])

    def test_other_exception_is_logged_and_retried(self) -> None:
        """A sync raising anything else is logged and also runs again after the backoff."""
        self.make(initial_backoff=1.0)
        self.syncs.plan("a", ValueError("boom"))
        self.queue.add("a")
        self.assertEqual(len(self.flushLoggedErrors(ValueError)), 1)
        self.assertRunsAt("a", [1.0])
        self.assertEqual(self.flushLoggedErrors(), [])

    def test_storage_unavailable_is_one_line_and_retried(self) -> None:
        """A sync that finds the storage unavailable (etcd down) is logged in one line, no traceback, and retried."""
        from twisted.internet.testing import EventLoggingObserver
        from twisted.logger import globalLogPublisher

        from grafana_aggregator.storage import StorageUnavailableError

        events = EventLoggingObserver.createWithCleanup(self, globalLogPublisher)
        self.make(initial_backoff=1.0)
        self.syncs.plan("a", StorageUnavailableError("etcd cannot be reached"))
        self.queue.add("a")
        self.assertEqual(self.flushLoggedErrors(), [])
        self.assertEqual([e.get("error") for e in events if "log_failure" not in e and e.get("key") == "a"],
                         ["etcd cannot be reached"])
        self.assertRunsAt("a", [1.0])

    def test_failure_after_waiting_is_retried(self) -> None:
        """A sync that fails after waiting on a Deferred is retried as one that fails at once."""
        self.make(initial_backoff=1.0)
        self.syncs.plan("a", WAIT)
        self.queue.add("a")
        self.clock.advance(3)
        self.syncs.fail("a", Retry())
        self.assertRunsAt("a", [1.0])
        self.assertEqual(self.syncs.times("a"), [0.0, 4.0])

    def test_backoff_doubles_up_to_max(self) -> None:
        """Consecutive failures wait initial_backoff, then twice as long each time, never more than max_backoff."""
        self.make(initial_backoff=1.0, max_backoff=8.0)
        self.syncs.plan("a", *[Retry() for _ in range(8)])
        self.queue.add("a")
        self.assertRunsAt("a", [1.0, 2.0, 4.0, 8.0, 8.0, 8.0])
        self.assertEqual(self.syncs.times("a"), [0.0, 1.0, 3.0, 7.0, 15.0, 23.0, 31.0])

    def test_success_resets_backoff(self) -> None:
        """After a sync returns, the next failure waits initial_backoff again."""
        self.make(initial_backoff=1.0, max_backoff=60.0)
        self.syncs.plan("a", Retry(), Retry(), Retry(), None, Retry())
        self.queue.add("a")
        self.assertRunsAt("a", [1.0, 2.0, 4.0])
        self.assertFalse(self.queue.pending("a"))
        self.clock.advance(10)
        self.queue.add("a")
        self.assertRunsAt("a", [1.0])
        self.assertFalse(self.queue.pending("a"))

    def test_last_run_of_fold_in_decides(self) -> None:
        """When an add folded a second run into the first, only the outcome of the second one counts."""
        self.make(initial_backoff=1.0)
        self.syncs.plan("a", WAIT, None)
        self.queue.add("a")
        self.queue.add("a")
        self.syncs.fail("a", Retry())
        self.assertEqual(len(self.syncs.calls), 2)
        self.clock.advance(100)
        self.assertEqual(len(self.syncs.calls), 2)

        self.syncs.plan("b", WAIT, Retry())
        self.queue.add("b")
        self.queue.add("b")
        self.syncs.release("b")
        self.assertEqual(len(self.syncs.times("b")), 2)
        self.assertTrue(self.queue.pending("b"))
        self.assertRunsAt("b", [1.0])

    def test_add_while_retry_pending_runs_now(self) -> None:
        """An add during the backoff runs the key at once, and the retry it replaces does not run as well."""
        self.make(initial_backoff=4.0)
        self.syncs.plan("a", Retry())
        self.queue.add("a")
        self.clock.advance(1)
        self.queue.add("a")
        self.assertEqual(self.syncs.times("a"), [0.0, 1.0])
        self.clock.advance(10)
        self.assertEqual(self.syncs.times("a"), [0.0, 1.0])
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_backoff_is_per_key(self) -> None:
        """One key's failures do not lengthen another key's backoff."""
        self.make(initial_backoff=1.0)
        self.syncs.plan("a", Retry(), Retry(), Retry())
        self.syncs.plan("b", Retry())
        self.queue.add("a")
        self.clock.advance(1)
        self.clock.advance(2)
        self.queue.add("b")
        self.assertRunsAt("b", [1.0])


class RateLimitTests(QueueTestCase):
    """add_rate_limited runs a key at most once per min_interval."""

    def test_runs_now_when_never_started(self) -> None:
        """A key that never ran runs at once."""
        self.make(min_interval=5.0)
        self.clock.advance(1)
        self.queue.add_rate_limited("a")
        self.assertEqual(self.syncs.times("a"), [1.0])

    def test_right_after_a_run_waits_until_start_plus_min_interval(self) -> None:
        """Right after a run, the key runs again only min_interval after that run started."""
        self.make(min_interval=2.0)
        self.queue.add("a")
        self.clock.advance(0.5)
        self.queue.add_rate_limited("a")
        self.assertTrue(self.queue.pending("a"))
        self.clock.advance(1.25)
        self.assertEqual(self.syncs.times("a"), [0.0])
        self.clock.advance(0.25)
        self.assertEqual(self.syncs.times("a"), [0.0, 2.0])

    def test_min_interval_defaults_to_initial_backoff(self) -> None:
        """Without min_interval, the interval is initial_backoff."""
        self.make(initial_backoff=3.0)
        self.queue.add("a")
        self.queue.add_rate_limited("a")
        self.clock.advance(2.75)
        self.assertEqual(self.syncs.times("a"), [0.0])
        self.clock.advance(0.25)
        self.assertEqual(self.syncs.times("a"), [0.0, 3.0])

    def test_burst_runs_once(self) -> None:
        """A burst of rate-limited adds within the interval gives one run at its end."""
        self.make(min_interval=1.0)
        self.queue.add_rate_limited("a")
        for _ in range(10):
            self.clock.advance(0.0625)
            self.queue.add_rate_limited("a")
        self.clock.advance(10)
        self.assertEqual(self.syncs.times("a"), [0.0, 1.0])

    def test_runs_now_once_interval_has_passed(self) -> None:
        """Once min_interval has passed since the last start, a rate-limited add runs at once."""
        self.make(min_interval=1.0)
        self.queue.add("a")
        self.clock.advance(1.0)
        self.queue.add_rate_limited("a")
        self.assertEqual(self.syncs.times("a"), [0.0, 1.0])

    def test_interval_counts_from_start_of_a_long_run(self) -> None:
        """The interval counts from when the run started: after a run longer than it, the key runs at once."""
        self.make(min_interval=1.0)
        self.syncs.plan("a", WAIT)
        self.queue.add("a")
        self.clock.advance(5)
        self.syncs.release("a")
        self.queue.add_rate_limited("a")
        self.assertEqual(self.syncs.times("a"), [0.0, 5.0])

    def test_during_a_run_folds_after_it(self) -> None:
        """A rate-limited add during a long run, once the interval has passed, folds into one more run."""
        self.make(min_interval=1.0)
        self.syncs.plan("a", WAIT)
        self.queue.add("a")
        self.clock.advance(2)
        self.queue.add_rate_limited("a")
        self.assertEqual(len(self.syncs.calls), 1)
        self.clock.advance(1)
        self.syncs.release("a")
        self.assertEqual(self.syncs.times("a"), [0.0, 3.0])

    def test_interval_counts_from_start_of_fold_in_run(self) -> None:
        """The extra run that an add folded in counts as a start: a rate-limited add right after it waits."""
        self.make(min_interval=1.0)
        self.syncs.plan("a", WAIT)
        self.queue.add("a")
        self.queue.add("a")
        self.clock.advance(5)
        self.syncs.release("a")
        self.assertEqual(self.syncs.times("a"), [0.0, 5.0])
        self.queue.add_rate_limited("a")
        self.assertEqual(self.syncs.times("a"), [0.0, 5.0])
        self.clock.advance(1)
        self.assertEqual(self.syncs.times("a"), [0.0, 5.0, 6.0])


class AddAfterTests(QueueTestCase):
    """add_after runs a key later, unless it is already due sooner."""

    def test_runs_after_delay(self) -> None:
        """The key runs delay seconds later, not before, and is pending meanwhile."""
        self.make()
        self.queue.add_after("a", 3.0)
        self.assertTrue(self.queue.pending("a"))
        self.clock.advance(2.75)
        self.assertEqual(self.syncs.calls, [])
        self.clock.advance(0.25)
        self.assertEqual(self.syncs.calls, [("a", 3.0)])
        self.assertFalse(self.queue.pending("a"))

    def test_sooner_one_is_kept(self) -> None:
        """A later add_after does not push back one due sooner; the key runs once."""
        self.make()
        self.queue.add_after("a", 1.0)
        self.queue.add_after("a", 5.0)
        self.clock.advance(10)
        self.assertEqual(self.syncs.times("a"), [1.0])

    def test_later_one_is_replaced(self) -> None:
        """A sooner add_after replaces one due later; the key runs once, at the sooner time."""
        self.make()
        self.queue.add_after("a", 5.0)
        self.queue.add_after("a", 1.0)
        self.clock.advance(10)
        self.assertEqual(self.syncs.times("a"), [1.0])

    def test_sooner_than_retry_replaces_it(self) -> None:
        """An add_after due before the retry of a failed sync replaces that retry."""
        self.make(initial_backoff=4.0)
        self.syncs.plan("a", Retry())
        self.queue.add("a")
        self.queue.add_after("a", 1.0)
        self.clock.advance(10)
        self.assertEqual(self.syncs.times("a"), [0.0, 1.0])

    def test_due_during_run_folds_after_it(self) -> None:
        """An add_after that comes due while the key runs gives one more run after it."""
        self.make()
        self.syncs.plan("a", WAIT)
        self.queue.add("a")
        self.queue.add_after("a", 1.0)
        self.clock.advance(2)
        self.assertEqual(len(self.syncs.calls), 1)
        self.syncs.release("a")
        self.assertEqual(self.syncs.times("a"), [0.0, 2.0])


class ForgetTests(QueueTestCase):
    """forget drops a key's timer, place in line, backoff and run in progress."""

    def test_cancels_run_in_flight(self) -> None:
        """The sync in flight sees CancelledError, its run Deferred fires with None, and nothing is retried or
        logged."""
        queue = self.make()
        self.syncs.plan("a", WAIT)
        queue.add("a")
        run = queue.running("a")
        assert run is not None
        queue.forget("a")
        self.assertEqual(self.syncs.cancelled, ["a"])
        self.assertIsNone(self.successResultOf(run))
        self.assertIsNone(queue.running("a"))
        self.assertEqual(queue.in_flight(), {})
        self.assertFalse(queue.pending("a"))
        self.clock.advance(0)
        self.assertEqual(self.clock.getDelayedCalls(), [])
        self.clock.advance(100)
        self.assertEqual(len(self.syncs.calls), 1)
        self.assertEqual(self.flushLoggedErrors(), [])

    def test_cancelled_sync_that_fails_is_not_retried(self) -> None:
        """A sync that turns the cancellation into another failure is neither retried nor run again."""
        self.make()

        async def sync(key: str) -> None:
            self.syncs.calls.append((key, self.clock.seconds()))
            try:
                await Deferred()
            except CancelledError:
                raise Retry() from None

        queue = WorkQueue(self.clock, sync, "test")
        queue.add("a")
        queue.forget("a")
        self.clock.advance(100)
        self.assertEqual(len(self.syncs.calls), 1)
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_drops_fold_in(self) -> None:
        """A run folded in by an add during the cancelled run does not happen."""
        queue = self.make()
        self.syncs.plan("a", WAIT)
        queue.add("a")
        queue.add("a")
        queue.forget("a")
        self.clock.advance(100)
        self.assertEqual(len(self.syncs.calls), 1)

    def test_cancels_retry(self) -> None:
        """A retry waiting for its backoff does not run."""
        queue = self.make(initial_backoff=1.0)
        self.syncs.plan("a", Retry())
        queue.add("a")
        self.assertTrue(queue.pending("a"))
        queue.forget("a")
        self.assertFalse(queue.pending("a"))
        self.clock.advance(0)
        self.assertEqual(self.clock.getDelayedCalls(), [])
        self.clock.advance(100)
        self.assertEqual(len(self.syncs.calls), 1)

    def test_cancels_add_after(self) -> None:
        """A delayed add does not run."""
        queue = self.make()
        queue.add_after("a", 1.0)
        queue.forget("a")
        self.clock.advance(100)
        self.assertEqual(self.syncs.calls, [])

    def test_resets_backoff(self) -> None:
        """A key added again after forget starts from initial_backoff."""
        queue = self.make(initial_backoff=1.0)
        self.syncs.plan("a", Retry(), Retry(), Retry(), Retry())
        queue.add("a")
        self.clock.advance(1)
        self.clock.advance(2)
        self.assertEqual(len(self.syncs.calls), 3)
        queue.forget("a")
        queue.add("a")
        self.clock.advance(0.75)
        self.assertEqual(len(self.syncs.calls), 4)
        self.clock.advance(0.25)
        self.assertEqual(len(self.syncs.calls), 5)

    def test_removes_key_from_line(self) -> None:
        """A key waiting for a later reactor turn does not start in it."""
        queue = self.make(per_turn=1)
        queue.add("a")
        queue.add("b")
        self.assertTrue(queue.pending("b"))
        queue.forget("b")
        self.assertFalse(queue.pending("b"))
        self.clock.advance(0)
        self.clock.advance(0)
        self.assertEqual(self.syncs.keys(), ["a"])

    def test_key_added_again_goes_to_back_of_line(self) -> None:
        """A waiting key that is forgotten and added again waits behind the keys that were added since."""
        queue = self.make(per_turn=1)
        for key in "abc":
            queue.add(key)
        queue.forget("b")
        queue.add("b")
        self.clock.turn()
        self.clock.turn()
        self.assertEqual(self.syncs.keys(), ["a", "c", "b"])

    def test_key_added_again_runs_anew(self) -> None:
        """After forget cancelled a run, an add starts a new one at once."""
        queue = self.make()
        self.syncs.plan("a", WAIT, WAIT)
        queue.add("a")
        first = queue.running("a")
        queue.forget("a")
        queue.add("a")
        second = queue.running("a")
        self.assertEqual(len(self.syncs.calls), 2)
        self.assertIsNotNone(second)
        self.assertIsNot(second, first)

    def test_unknown_key(self) -> None:
        """Forgetting a key never added does nothing."""
        queue = self.make()
        queue.forget("a")
        queue.add("a")
        self.assertEqual(self.syncs.keys(), ["a"])


class StopTests(QueueTestCase):
    """stop forgets every key and refuses later adds."""

    def test_cancels_runs_timers_and_turns(self) -> None:
        """Runs in flight are cancelled, and no retry, delayed add or waiting key starts later."""
        queue = self.make(per_turn=3, initial_backoff=1.0)
        self.syncs.plan("a", WAIT)
        self.syncs.plan("b", Retry())
        queue.add("a")
        queue.add("b")
        queue.add_after("c", 1.0)
        queue.add("d")
        queue.add("e")
        self.assertEqual(self.syncs.keys(), ["a", "b", "d"])
        self.assertTrue(queue.pending("e"))
        queue.stop()
        self.assertEqual(self.syncs.cancelled, ["a"])
        self.assertEqual(queue.in_flight(), {})
        self.assertEqual(self.clock.getDelayedCalls(), [])
        self.clock.advance(100)
        self.assertEqual(self.syncs.keys(), ["a", "b", "d"])
        for key in "abcde":
            self.assertFalse(queue.pending(key))

    def test_refuses_later_adds(self) -> None:
        """After stop, add, add_all, add_after and add_rate_limited start and schedule nothing."""
        queue = self.make()
        queue.stop()
        queue.add("a")
        queue.add_all(["b", "c"])
        queue.add_after("d", 1.0)
        queue.add_rate_limited("e")
        self.assertEqual(self.clock.getDelayedCalls(), [])
        self.clock.advance(100)
        self.assertEqual(self.syncs.calls, [])
        self.assertEqual(queue.in_flight(), {})

    def test_sync_ignoring_cancellation_does_not_run_again(self) -> None:
        """A sync that returns normally despite the cancellation by stop is not run again for an add folded in
        before the stop."""
        self.make()

        async def sync(key: str) -> None:
            self.syncs.calls.append((key, self.clock.seconds()))
            if len(self.syncs.calls) == 1:
                try:
                    await Deferred()
                except CancelledError:
                    pass

        queue = WorkQueue(self.clock, sync, "test")
        queue.add("a")
        queue.add("a")
        queue.stop()
        self.clock.advance(100)
        self.assertEqual(len(self.syncs.calls), 1)

    def test_add_from_cancelled_sync_is_refused(self) -> None:
        """A sync that adds its key again while being cancelled by stop starts nothing."""
        self.make()

        async def sync(key: str) -> None:
            self.syncs.calls.append((key, self.clock.seconds()))
            try:
                await Deferred()
            finally:
                queue.add(key)
                queue.add_after(key, 1.0)

        queue = WorkQueue(self.clock, sync, "test")
        queue.add("a")
        queue.stop()
        self.clock.advance(100)
        self.assertEqual(len(self.syncs.calls), 1)
        self.assertEqual(self.clock.getDelayedCalls(), [])


class PerTurnTests(QueueTestCase):
    """At most per_turn keys start in one reactor turn; the rest start in the turns that follow."""

    def test_spreads_starts_over_turns(self) -> None:
        """With per_turn=2, five keys start two now, two in the next turn and the last in the one after, in order."""
        queue = self.make(per_turn=2)
        for key in "abcde":
            queue.add(key)
        self.assertEqual(self.syncs.keys(), ["a", "b"])
        self.assertEqual([queue.pending(key) for key in "abcde"], [False, False, True, True, True])
        self.clock.turn()
        self.assertEqual(self.syncs.keys(), ["a", "b", "c", "d"])
        self.clock.turn()
        self.assertEqual(self.syncs.keys(), ["a", "b", "c", "d", "e"])
        self.assertFalse(queue.pending("e"))
        self.clock.turn()
        self.clock.advance(100)
        self.assertEqual(len(self.syncs.calls), 5)

    def test_add_all_spreads(self) -> None:
        """add_all starts its keys per_turn at a time."""
        queue = self.make(per_turn=3)
        queue.add_all(str(i) for i in range(7))
        started = [len(self.syncs.calls)]
        for _ in range(3):
            self.clock.turn()
            started.append(len(self.syncs.calls))
        self.assertEqual(started, [3, 6, 7, 7])
        self.assertEqual(self.syncs.keys(), [str(i) for i in range(7)])

    def test_share_renews_each_turn(self) -> None:
        """Once a turn has passed, per_turn more keys start at once."""
        queue = self.make(per_turn=2)
        queue.add("a")
        queue.add("b")
        self.clock.turn()
        queue.add("c")
        queue.add("d")
        queue.add("e")
        self.assertEqual(self.syncs.keys(), ["a", "b", "c", "d"])
        self.clock.turn()
        self.assertEqual(self.syncs.keys(), ["a", "b", "c", "d", "e"])

    def test_waiting_key_added_again_starts_once(self) -> None:
        """Adding a key that already waits for a turn does not start it twice."""
        queue = self.make(per_turn=1)
        queue.add("a")
        queue.add("b")
        queue.add("b")
        queue.add_all(["b", "b"])
        for _ in range(3):
            self.clock.turn()
        self.assertEqual(self.syncs.keys(), ["a", "b"])

    def test_counts_keys_in_flight_and_finished_alike(self) -> None:
        """Both syncs that return at once and syncs that wait use up the turn's share."""
        queue = self.make(per_turn=2)
        self.syncs.plan("a", WAIT)
        queue.add("a")
        queue.add("b")
        queue.add("c")
        self.assertEqual(self.syncs.keys(), ["a", "b"])
        self.clock.turn()
        self.assertEqual(self.syncs.keys(), ["a", "b", "c"])

    def test_due_retries_share_the_turn(self) -> None:
        """Retries that come due together start per_turn at a time too."""
        queue = self.make(per_turn=1, initial_backoff=1.0)
        self.syncs.plan("a", Retry())
        self.syncs.plan("b", Retry())
        queue.add("a")
        self.clock.turn()
        queue.add("b")
        self.clock.turn()
        self.assertEqual(self.syncs.keys(), ["a", "b"])
        self.clock.turn(1.0)
        self.assertEqual(self.syncs.keys(), ["a", "b", "a"])
        self.clock.turn()
        self.assertEqual(self.syncs.keys(), ["a", "b", "a", "b"])

    def test_clock_advance_runs_every_turn(self) -> None:
        """With a plain Clock, advance(0) runs the turns one after another until every key has started."""
        clock = Clock()
        calls: list[str] = []

        async def sync(key: str) -> None:
            calls.append(key)

        queue = WorkQueue(clock, sync, "test", per_turn=2)
        queue.add_all("abcde")
        self.assertEqual(calls, ["a", "b"])
        clock.advance(0)
        self.assertEqual(calls, ["a", "b", "c", "d", "e"])
        self.assertEqual(clock.getDelayedCalls(), [])


class InspectionTests(QueueTestCase):
    """running, in_flight and pending describe the queue without changing it."""

    def test_unknown_key(self) -> None:
        """A key never added is neither running nor pending."""
        queue = self.make()
        self.assertIsNone(queue.running("a"))
        self.assertFalse(queue.pending("a"))
        self.assertEqual(queue.in_flight(), {})

    def test_pending_covers_timers_line_and_runs(self) -> None:
        """pending is true while a key runs, waits for a turn, or waits for a timer, and false after."""
        queue = self.make(per_turn=1)
        self.syncs.plan("a", WAIT)
        queue.add("a")
        queue.add("b")
        queue.add_after("c", 1.0)
        self.assertEqual([queue.pending(key) for key in "abc"], [True, True, True])
        self.assertEqual(set(queue.in_flight()), {"a"})
        self.syncs.release("a")
        self.clock.advance(1)
        self.assertEqual([queue.pending(key) for key in "abc"], [False, False, False])
        self.assertEqual(self.syncs.keys(), ["a", "b", "c"])

    def test_in_flight_is_a_copy(self) -> None:
        """Changing the dict in_flight returned does not change the queue."""
        queue = self.make()
        self.syncs.plan("a", WAIT)
        queue.add("a")
        queue.in_flight().clear()
        self.assertEqual(set(queue.in_flight()), {"a"})
