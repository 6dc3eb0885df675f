# -*- test-case-name: tests.test_health -*-
"""Tests for L{grafana_aggregator.web.health}: /healthz, /livez and /readyz answer exactly as kube-apiserver does.

Checks are plain callables whose state the tests flip through a variable.
"""

from __future__ import annotations

from treq.testing import StubTreq
from twisted.trial.unittest import SynchronousTestCase
from twisted.web.resource import Resource

from grafana_aggregator.web.health import ENDPOINTS, HealthChecks, HealthResource

NOT_FOUND = (b'{"kind":"Status","apiVersion":"v1","metadata":{},"status":"Failure",'
             b'"message":"the server could not find the requested resource","reason":"NotFound","details":{},'
             b'"code":404}\n')


class HealthChecksTests(SynchronousTestCase):
    """HealthChecks keeps the checks of each endpoint in the order they were added."""

    def test_default_registers_on_all_endpoints(self) -> None:
        """A check added without endpoints is on /healthz, /livez and /readyz."""
        checks = HealthChecks()
        ping = lambda: None  # noqa: E731
        checks.add("ping", ping)
        self.assertEqual({endpoint: checks.checks(endpoint) for endpoint in ENDPOINTS},
                         {"healthz": {"ping": ping}, "livez": {"ping": ping}, "readyz": {"ping": ping}})

    def test_endpoint_subset(self) -> None:
        """A check added for readyz only is not on /healthz or /livez."""
        checks = HealthChecks()
        ready = lambda: None  # noqa: E731
        checks.add("ready", ready, ("readyz",))
        self.assertEqual({endpoint: checks.checks(endpoint) for endpoint in ENDPOINTS},
                         {"healthz": {}, "livez": {}, "readyz": {"ready": ready}})

    def test_order_is_kept(self) -> None:
        """Checks are listed in the order they were added, not sorted."""
        checks = HealthChecks()
        for name in ("zeta", "alpha", "mid"):
            checks.add(name, lambda: None)
        self.assertEqual(list(checks.checks("readyz")), ["zeta", "alpha", "mid"])

    def test_duplicate_name_raises(self) -> None:
        """Adding the same name twice on one endpoint raises ValueError naming the check and endpoint."""
        checks = HealthChecks()
        checks.add("ping", lambda: None, ("readyz",))
        error = self.assertRaises(ValueError, checks.add, "ping", lambda: None, ("readyz",))
        self.assertEqual(str(error), "health check 'ping' is already registered on /readyz")

    def test_same_name_on_different_endpoints(self) -> None:
        """The same name may be added separately to different endpoints."""
        checks = HealthChecks()
        first, second = (lambda: None), (lambda: None)
        checks.add("x", first, ("livez",))
        checks.add("x", second, ("readyz",))
        self.assertEqual((checks.checks("livez"), checks.checks("readyz")), ({"x": first}, {"x": second}))

    def test_checks_returns_a_copy(self) -> None:
        """Changing the mapping returned by checks() does not change the registered checks."""
        checks = HealthChecks()
        checks.add("ping", lambda: None)
        checks.checks("readyz").clear()
        self.assertEqual(list(checks.checks("readyz")), ["ping"])


class HealthResourceTests(SynchronousTestCase):
    """HealthResource answers /healthz, /livez, /readyz and /<endpoint>/<check>."""

    def setUp(self) -> None:
        self.problem: str | None = None
        self.checks = HealthChecks()
        self.checks.add("ping", lambda: None)
        self.checks.add("other", lambda: None, ("readyz",))
        self.checks.add("bad", lambda: self.problem, ("readyz",))
        root = Resource()
        for endpoint in ENDPOINTS:
            root.putChild(endpoint.encode(), HealthResource(endpoint, self.checks))
        self.client = StubTreq(root)

    def request(self, path: str, method: str = "GET") -> tuple[int, dict[bytes, list[bytes]], bytes]:
        """Request path and return the status code, the headers and the body."""
        response = self.successResultOf(self.client.request(method, f"https://a.test{path}"))
        body = self.successResultOf(self.client.content(response))
        return response.code, dict(response.headers.getAllRawHeaders()), body

    def assertPlain(self, path: str, code: int, body: bytes, method: str = "GET") -> None:
        """path answers code with body as kube-apiserver's plain text (charset and nosniff headers)."""
        got_code, headers, got_body = self.request(path, method)
        self.assertEqual(
            (got_code, got_body, headers.get(b"Content-Type"), headers.get(b"X-Content-Type-Options")),
            (code, body, [b"text/plain; charset=utf-8"], [b"nosniff"]),
        )

    def test_readyz_ok(self) -> None:
        """GET /readyz with every check healthy is 200 'ok' in plain text."""
        self.assertPlain("/readyz", 200, b"ok")

    def test_readyz_verbose(self) -> None:
        """?verbose lists every check in order and ends with 'readyz check passed'."""
        self.assertPlain("/readyz?verbose", 200, b"[+]ping ok\n[+]other ok\n[+]bad ok\nreadyz check passed\n")

    def test_readyz_verbose_with_value(self) -> None:
        """?verbose=1 is verbose too: only the presence of the parameter counts."""
        self.assertPlain("/readyz?verbose=1", 200, b"[+]ping ok\n[+]other ok\n[+]bad ok\nreadyz check passed\n")

    def test_readyz_failing(self) -> None:
        """A failing check makes /readyz 500 with every line and the reason withheld."""
        self.problem = "backend down"
        self.assertPlain(
            "/readyz", 500,
            b"[+]ping ok\n[+]other ok\n[-]bad failed: reason withheld\nreadyz check failed\n",
        )

    def test_readyz_failing_verbose(self) -> None:
        """?verbose does not change the failing answer: the reason is still withheld."""
        self.problem = "backend down"
        self.assertPlain(
            "/readyz?verbose", 500,
            b"[+]ping ok\n[+]other ok\n[-]bad failed: reason withheld\nreadyz check failed\n",
        )

    def test_readyz_recovers(self) -> None:
        """The check is asked on every request, so /readyz is 200 again once it recovers."""
        self.problem = "backend down"
        self.assertEqual(self.request("/readyz")[0], 500)
        self.problem = None
        self.assertPlain("/readyz", 200, b"ok")

    def test_single_check_ok(self) -> None:
        """/readyz/ping asks only that check and is 200 'ok'."""
        self.problem = "backend down"
        self.assertPlain("/readyz/ping", 200, b"ok")

    def test_single_check_failing_shows_reason(self) -> None:
        """/readyz/bad on a failing check is 500 with its reason."""
        self.problem = "backend down"
        self.assertPlain("/readyz/bad", 500, b"internal server error: backend down\n")

    def test_single_check_healthy(self) -> None:
        """/readyz/bad while that check is healthy is 200 'ok'."""
        self.assertPlain("/readyz/bad", 200, b"ok")

    def test_unknown_check_not_found(self) -> None:
        """/readyz/nope is a 404 NotFound Status in JSON."""
        code, headers, body = self.request("/readyz/nope")
        self.assertEqual((code, headers[b"Content-Type"], body), (404, [b"application/json"], NOT_FOUND))

    def test_check_path_too_deep_not_found(self) -> None:
        """/readyz/ping/x is a 404 NotFound Status."""
        code, _, body = self.request("/readyz/ping/x")
        self.assertEqual((code, body), (404, NOT_FOUND))

    def test_exclude_failing_check(self) -> None:
        """?exclude=bad leaves the failing check out, so /readyz is 200 'ok'."""
        self.problem = "backend down"
        self.assertPlain("/readyz?exclude=bad", 200, b"ok")

    def test_exclude_verbose(self) -> None:
        """With ?verbose an excluded check is listed as '[+]bad excluded: ok'."""
        self.problem = "backend down"
        self.assertPlain("/readyz?exclude=bad&verbose", 200,
                         b"[+]ping ok\n[+]other ok\n[+]bad excluded: ok\nreadyz check passed\n")

    def test_exclude_unknown_name_warns(self) -> None:
        """Excluding a name no check has adds a warning line after the checks."""
        self.assertPlain(
            "/readyz?exclude=nope&verbose", 200,
            b'[+]ping ok\n[+]other ok\n[+]bad ok\n'
            b'warn: some health checks cannot be excluded: no matches for "nope"\nreadyz check passed\n',
        )

    def test_exclude_unknown_names_sorted_and_quoted(self) -> None:
        """Several unknown exclusions are quoted, sorted and joined by commas in one warning."""
        self.assertPlain(
            "/readyz?exclude=zz&exclude=aa&exclude=ping&verbose", 200,
            b'[+]ping excluded: ok\n[+]other ok\n[+]bad ok\n'
            b'warn: some health checks cannot be excluded: no matches for "aa","zz"\nreadyz check passed\n',
        )

    def test_exclude_unknown_name_on_failure(self) -> None:
        """The warning also appears in a failing answer."""
        self.problem = "backend down"
        self.assertPlain(
            "/readyz?exclude=nope", 500,
            b'[+]ping ok\n[+]other ok\n[-]bad failed: reason withheld\n'
            b'warn: some health checks cannot be excluded: no matches for "nope"\nreadyz check failed\n',
        )

    def test_exclude_unknown_name_without_verbose(self) -> None:
        """Without ?verbose a passing answer is just 'ok', even with an unknown exclusion."""
        self.assertPlain("/readyz?exclude=nope", 200, b"ok")

    def test_raising_check_fails(self) -> None:
        """A check that raises counts as failed, and its error is logged."""
        def broken() -> str | None:
            raise RuntimeError("no state yet")

        self.checks.add("broken", broken, ("readyz",))
        self.assertPlain(
            "/readyz?verbose", 500,
            b"[+]ping ok\n[+]other ok\n[+]bad ok\n[-]broken failed: reason withheld\nreadyz check failed\n",
        )
        self.assertEqual(len(self.flushLoggedErrors(RuntimeError)), 1)

    def test_raising_single_check(self) -> None:
        """/readyz/broken on a check that raises is 500 naming the exception type, not its message."""
        def broken() -> str | None:
            raise RuntimeError("secret detail")

        self.checks.add("broken", broken, ("readyz",))
        self.assertPlain("/readyz/broken", 500, b"internal server error: check raised RuntimeError\n")
        self.assertEqual(len(self.flushLoggedErrors(RuntimeError)), 1)

    def test_readyz_only_checks_not_on_healthz(self) -> None:
        """Checks registered only for readyz do not appear on /healthz or /livez, even failing."""
        self.problem = "backend down"
        self.assertPlain("/healthz?verbose", 200, b"[+]ping ok\nhealthz check passed\n")
        self.assertPlain("/livez?verbose", 200, b"[+]ping ok\nlivez check passed\n")
        self.assertPlain("/healthz", 200, b"ok")

    def test_readyz_only_check_not_found_on_livez(self) -> None:
        """/livez/bad is 404 because bad is a readyz check only."""
        code, _, body = self.request("/livez/bad")
        self.assertEqual((code, body), (404, NOT_FOUND))

    def test_endpoint_without_checks(self) -> None:
        """An endpoint with no checks at all passes, listing nothing."""
        root = Resource()
        root.putChild(b"livez", HealthResource("livez", HealthChecks()))
        client = StubTreq(root)
        response = self.successResultOf(client.get("https://a.test/livez?verbose"))
        self.assertEqual((response.code, self.successResultOf(client.content(response))),
                         (200, b"livez check passed\n"))

    def test_post_answered_like_get(self) -> None:
        """POST /readyz is answered like GET, since kube-apiserver's health handlers ignore the method."""
        self.assertEqual(self.request("/readyz", "POST")[::2], (200, b"ok"))
        self.assertEqual(self.request("/readyz/ping", "POST")[::2], (200, b"ok"))

    def test_failed_add_changes_nothing(self) -> None:
        """Adding a name already on one of the endpoints raises and registers it on none of them."""
        self.assertRaises(ValueError, self.checks.add, "other", lambda: None)
        self.assertNotIn("other", self.checks.checks("healthz"))
        self.assertNotIn("other", self.checks.checks("livez"))

    def test_trailing_slash_is_not_found(self) -> None:
        """/readyz/ is not a path kube-apiserver serves: a 404 Status."""
        self.assertEqual(self.request("/readyz/")[0], 404)

    def test_exclude_is_not_comma_split(self) -> None:
        """?exclude=bad,ping names one (unknown) check, as in kube; repeat the parameter to exclude several."""
        self.problem = "broken"
        self.assertEqual(self.request("/readyz?exclude=bad,ping")[0], 500)
        self.assertEqual(self.request("/readyz?exclude=bad&exclude=ping&verbose")[::2], (
            200, b"[+]ping excluded: ok\n[+]other ok\n[+]bad excluded: ok\nreadyz check passed\n"))

    def test_head_ok(self) -> None:
        """HEAD /readyz is 200 with the plain-text headers, the length of 'ok', and no body."""
        code, headers, body = self.request("/readyz", "HEAD")
        self.assertEqual(
            (code, body, headers[b"Content-Type"], headers[b"X-Content-Type-Options"], headers[b"Content-Length"]),
            (200, b"", [b"text/plain; charset=utf-8"], [b"nosniff"], [b"2"]),
        )

    def test_head_failing(self) -> None:
        """HEAD /readyz with a failing check is 500 with no body."""
        self.problem = "backend down"
        code, _, body = self.request("/readyz", "HEAD")
        self.assertEqual((code, body), (500, b""))

    def test_no_cache(self) -> None:
        """Health answers are not cached."""
        _, headers, _ = self.request("/readyz")
        self.assertEqual(headers[b"Cache-Control"], [b"no-cache, private"])
