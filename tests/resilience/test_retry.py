"""RetryMiddleware: what is retried, what never is, the budget, the body, the scope."""

from __future__ import annotations

from email.utils import formatdate
from typing import Any

import httpx
import pytest
from starlette.middleware import Middleware

from apiguard import ConfigError, RetryMiddleware, TimeoutMiddleware, guard
from apiguard.context import RequestContext
from apiguard.resilience import RetryBudget
from apiguard.resilience.retry import _retry_after
from apiguard.testing import FrozenClock
from tests._lifespan import startup
from tests.resilience._apps import Act, Script, Watch, client, make_app, mounted_app
from tests.resilience.test_timeout import Keep

pytestmark = pytest.mark.anyio


def retried(
    script: Script, contexts: list[RequestContext], *inner: Middleware, **options: Any
) -> Any:
    app = make_app(script)
    return guard(
        app,
        Middleware(Keep, into=contexts),
        Middleware(RetryMiddleware, **{"backoff": 0.001, **options}),
        *inner,
    )


def decision(contexts: list[RequestContext]) -> Any:
    (found,) = contexts[-1].decisions_of("retry")
    return found


async def test_a_get_is_retried_until_it_succeeds() -> None:
    script, contexts = Script(), []
    script.plan("/items", Act(503), Act(502), Act())
    async with client(retried(script, contexts)) as http:
        response = await http.get("/items")
    assert (response.status_code, response.json()["call"]) == (200, 3)
    assert script.calls["/items"] == 3
    made = decision(contexts)
    assert (made.outcome, made.reason, made.status, made.retries) == ("allow", None, 200, 2)
    assert made.attributes == {"retry.statuses": "503,502"}


async def test_an_answer_in_time_is_one_call_and_one_decision() -> None:
    script, contexts = Script(), []
    async with client(retried(script, contexts)) as http:
        assert (await http.get("/items")).status_code == 200
    assert script.calls["/items"] == 1
    assert decision(contexts).retries == 0


@pytest.mark.parametrize(("method", "path"), [("POST", "/orders"), ("PATCH", "/items/1")])
async def test_a_non_idempotent_request_is_never_re_run(method: str, path: str) -> None:
    script, contexts = Script(), []
    script.plan("POST /orders", Act(503))
    async with client(retried(script, contexts)) as http:
        response = await http.request(method, path, json={"sku": "A-1"})
    assert response.status_code in (503, 405)
    assert sum(script.calls.values()) <= 1
    assert decision(contexts).outcome == "skip"


async def test_a_post_that_raises_is_not_re_run_either() -> None:
    script, contexts = Script(), []
    script.plan("POST /orders", Act(fail=True))
    async with client(retried(script, contexts)) as http:
        with pytest.raises(RuntimeError, match="failed on command"):
            await http.post("/orders", json={})
    assert script.calls["POST /orders"] == 1


async def test_an_opted_in_post_route_is_retried_with_its_body() -> None:
    script, contexts = Script(), []
    script.plan("POST /search", Act(503), Act())
    app = retried(script, contexts, routes={"POST /search": True})
    async with client(app) as http:
        response = await http.post("/search", content=b'{"q": "chairs"}')
    assert response.status_code == 200
    assert script.bodies == [b'{"q": "chairs"}'] * 2


async def test_an_opted_out_route_is_not_retried() -> None:
    script, contexts = Script(), []
    script.plan("/items", Act(503))
    async with client(retried(script, contexts, routes={"GET /items": False})) as http:
        assert (await http.get("/items")).status_code == 503
    assert script.calls["/items"] == 1


@pytest.mark.parametrize("method", ["PUT", "DELETE", "get"])
async def test_idempotent_methods_are_retried(method: str) -> None:
    script, contexts = Script(), []
    path = {"get": "/items"}.get(method, "/items/1")
    plan = {"PUT": "PUT /items/{item_id}", "DELETE": "DELETE /items/{item_id}"}.get(method, path)
    script.plan(plan, Act(503), Act())
    async with client(retried(script, contexts)) as http:
        response = await http.request(method, path)
    assert response.status_code == 200
    assert script.calls[plan] == 2


async def test_head_is_retried() -> None:
    script = Script()
    script.plan("/things/{thing_id}", Act(503), Act())
    app = mounted_app(script, Middleware(RetryMiddleware, backoff=0.001))
    async with client(app) as http:
        assert (await http.head("/api/v1/things/7")).status_code == 200
    assert script.calls["/things/{thing_id}"] == 2


async def test_an_exception_is_retried_and_the_last_one_raised() -> None:
    script, contexts = Script(), []
    script.plan("/items", Act(fail=True))
    async with client(retried(script, contexts)) as http:
        with pytest.raises(RuntimeError, match="failed on command"):
            await http.get("/items")
    assert script.calls["/items"] == 3
    made = decision(contexts)
    assert (made.reason, made.retries, made.status) == ("attempts", 2, None)
    assert made.attributes == {"retry.statuses": "RuntimeError,RuntimeError,RuntimeError"}


async def test_exceptions_not_listed_are_not_retried() -> None:
    script, contexts = Script(), []
    script.plan("/items", Act(fail=True))
    async with client(retried(script, contexts, exceptions=[ConnectionError])) as http:
        with pytest.raises(RuntimeError):
            await http.get("/items")
    assert script.calls["/items"] == 1


async def test_a_response_that_started_is_never_retried() -> None:
    script, contexts = Script(), []
    script.plan("/items", Act(fail_after_start=True), Act())
    async with client(retried(script, contexts)) as http:
        with pytest.raises(RuntimeError, match="after the response started"):
            await http.get("/items")
    assert script.calls["/items"] == 1


async def test_a_streaming_503_is_decided_at_its_start() -> None:
    """The body of a retryable streaming answer is never read nor sent."""
    script, contexts = Script(), []
    script.plan("/items", Act(503, stream=True, stream_sleep=30), Act())
    async with client(retried(script, contexts)) as http:
        clock = Watch()
        response = await http.get("/items")
    assert clock.elapsed < 10
    assert (response.status_code, response.json()["call"]) == (200, 2)


async def test_the_last_failure_is_answered_as_the_app_said() -> None:
    script, contexts = Script(), []
    script.plan("/items", Act(503, headers={"x-upstream": "down"}))
    async with client(retried(script, contexts, attempts=2)) as http:
        response = await http.get("/items")
    assert (response.status_code, response.headers["x-upstream"]) == (503, "down")
    assert script.calls["/items"] == 2
    assert decision(contexts).reason == "attempts"


async def test_the_budget_bounds_retries_when_every_attempt_fails() -> None:
    """Retries across requests: 10 % of them plus a reserve of 3, never 2 per request."""
    script, contexts = Script(), []
    script.plan("/items", Act(503))
    budget = RetryBudget(ratio=0.1, min_per_second=0.3, window=10.0)
    with FrozenClock():
        async with client(retried(script, contexts, budget=budget)) as http:
            for _ in range(50):
                assert (await http.get("/items")).status_code == 503
    # 50 requests; 3 + 0.1 x 50 = 8 retries in the window, not 100.
    assert script.calls["/items"] == 50 + 8
    assert decision(contexts).reason == "budget"


async def test_the_budget_refills_as_the_window_moves() -> None:
    budget = RetryBudget(ratio=0.0, min_per_second=0.2, window=10.0)
    with FrozenClock() as frozen:
        assert [budget.withdraw() for _ in range(3)] == [True, True, False]
        frozen.advance(5)
        assert not budget.withdraw()
        frozen.advance(5)
        assert budget.withdraw()
        budget.deposit()
        frozen.advance(3600)
        assert budget.remaining == 2


async def test_a_huge_retry_after_means_no_retry() -> None:
    script, contexts = Script(), []
    script.plan("/items", Act(503, headers={"retry-after": "86400"}), Act())
    async with client(retried(script, contexts)) as http:
        clock = Watch()
        response = await http.get("/items")
    assert clock.elapsed < 5
    assert (response.status_code, response.headers["retry-after"]) == (503, "86400")
    assert script.calls["/items"] == 1
    assert decision(contexts).reason == "deadline"


async def test_a_short_retry_after_is_waited_for() -> None:
    script, contexts = Script(), []
    script.plan("/items", Act(503, headers={"retry-after": "1"}), Act())
    async with client(retried(script, contexts)) as http:
        clock = Watch()
        response = await http.get("/items")
    assert response.status_code == 200
    assert clock.elapsed >= 0.95  # a lower bound: no load makes it shorter


@pytest.mark.parametrize(
    "date",
    [
        "Mon, 01 Jan 99999999999999999999 00:00:00 GMT",
        "01 Jan 2020 00:00:00 +99999999999999999999",
        "Mon, 01 Jan 2020 99999999999999999999:00:00 GMT",
    ],
)
async def test_a_retry_after_date_out_of_range_is_ignored_not_a_500(date: str) -> None:
    """An upstream's absurd `Retry-After` (an app that relays one) never turns into a 500."""
    script, contexts = Script(), []
    script.plan("/items", Act(503, headers={"retry-after": date}))
    app = httpx.ASGITransport(retried(script, contexts, attempts=2), raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=app, base_url="http://api.example.com") as http:
        response = await http.get("/items")
    assert (response.status_code, response.headers["retry-after"]) == (503, date)
    assert script.calls["/items"] == 2  # retried after the usual backoff
    assert decision(contexts).reason == "attempts"


def test_retry_after_reads_seconds_and_dates() -> None:
    with FrozenClock(wall=1_700_000_000.0):
        assert _retry_after([(b"retry-after", b"120")]) == 120.0
        date = formatdate(1_700_000_030.0, usegmt=True).encode()
        assert _retry_after([(b"Retry-After", date)]) == 30.0
        assert _retry_after([(b"retry-after", b"soon")]) is None
        assert _retry_after([(b"retry-after", b"-5")]) is None
        assert _retry_after([]) is None


async def test_the_deadline_bounds_the_backoff() -> None:
    """An outer timeout of 0.3 s: a retry that would wait 1 s does not start."""
    script, contexts = Script(), []
    script.plan("/items", Act(503, headers={"retry-after": "1"}), Act())
    app = make_app(script)
    guard(
        app,
        Middleware(Keep, into=contexts),
        Middleware(TimeoutMiddleware, timeout=0.3),
        Middleware(RetryMiddleware),
    )
    async with client(app) as http:
        response = await http.get("/items")
    assert response.status_code == 503
    assert script.calls["/items"] == 1
    assert decision(contexts).reason == "deadline"


async def test_total_timeout_bounds_the_retries() -> None:
    script, contexts = Script(), []
    script.plan("/items", Act(503, sleep=0.2))
    async with client(retried(script, contexts, attempts=10, total_timeout=0.5)) as http:
        assert (await http.get("/items")).status_code == 503
    assert script.calls["/items"] < 10  # 0.2 s each: no more than fit in 0.5 s
    assert decision(contexts).reason == "deadline"


async def test_an_inner_timeout_makes_a_per_attempt_budget() -> None:
    """Envoy's per-try timeout: the first attempt hangs, its 504 is retried."""
    script, contexts = Script(), []
    script.plan("/items", Act(hang=True), Act())
    app = retried(script, contexts, Middleware(TimeoutMiddleware, timeout=0.2))
    async with client(app) as http:
        response = await http.get("/items")
    assert (response.status_code, response.json()["call"]) == (200, 2)
    assert script.cancelled["/items"] == 1
    assert decision(contexts).attributes == {"retry.statuses": "504"}


async def test_an_attempt_whose_thread_still_runs_is_not_retried() -> None:
    """An inner timeout answered a `def` endpoint still running: retrying would queue on it."""
    script, contexts = Script(), []
    app = retried(script, contexts, Middleware(TimeoutMiddleware, timeout=0.2))
    async with client(app) as http:
        response = await http.get("/sync/slow")
    assert response.status_code == 504
    assert script.calls["/sync/slow"] == 1
    assert decision(contexts).reason == "overdue"


async def test_each_attempt_gets_a_fresh_scope_inside_a_mount() -> None:
    """The sub-app's router rewrites root_path at each mount: every attempt routes alike."""
    script = Script()
    script.plan("/things/{thing_id}", Act(503), Act(503), Act())
    app = mounted_app(script, Middleware(RetryMiddleware, backoff=0.001))
    async with client(app) as http:
        response = await http.get("/api/v1/things/7")
    assert response.status_code == 200
    assert script.calls["/things/{thing_id}"] == 3
    assert [seen["root_path"] for seen in script.seen] == ["/api/v1"] * 3
    assert [seen["path_params"] for seen in script.seen] == [{"thing_id": 7}] * 3
    # What an attempt put in request.state is not seen by the next.
    assert all("touched" not in seen["state"] for seen in script.seen)


async def test_a_body_over_the_bound_is_not_retried() -> None:
    script, contexts = Script(), []
    script.plan("PUT /items/{item_id}", Act(503), Act())
    async with client(retried(script, contexts, max_body_bytes=10)) as http:
        response = await http.put("/items/1", content=b"x" * 11)
    assert response.status_code == 503
    assert decision(contexts).reason == "body-too-large"


async def test_the_body_replayed_is_what_was_read_whatever_its_length_says() -> None:
    """Content-Length says 1000; the app read 12 bytes: those 12 are replayed."""
    script, contexts = Script(), []
    script.plan("PUT /items/{item_id}", Act(503), Act())
    async with client(retried(script, contexts, max_body_bytes=100)) as http:
        response = await http.put(
            "/items/1", content=b"twelve bytes", headers={"content-length": "1000"}
        )
    assert response.status_code == 200
    assert script.bodies == [b"twelve bytes", b"twelve bytes"]


async def test_a_chunked_body_is_replayed_whole() -> None:
    async def chunks() -> Any:
        for part in (b"one,", b"two,", b"three"):
            yield part

    script, contexts = Script(), []
    script.plan("PUT /items/{item_id}", Act(502), Act())
    async with client(retried(script, contexts)) as http:
        response = await http.put("/items/1", content=chunks())
    assert response.status_code == 200
    assert script.bodies == [b"one,two,three"] * 2


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"attempts": 0}, "attempts 0 is not a whole number from 1 to 10"),
        ({"statuses": [404]}, "statuses 404 is not a whole number from 500 to 599"),
        ({"statuses": "503"}, "statuses '503' is not a list"),
        ({"exceptions": [KeyboardInterrupt]}, "exceptions .* is not an Exception subclass"),
        ({"exceptions": ValueError}, "exceptions .* is not a list of exception types"),
        ({"methods": "GET"}, "methods 'GET' is not a list of strings"),
        ({"routes": {"GET /items": "yes"}}, "routes\\['GET /items'\\] 'yes' is not True or False"),
        ({"backoff": -1}, "backoff -1 is not a number of seconds"),
        ({"total_timeout": 0}, "total_timeout 0 is not a number of seconds"),
        ({"budget": 0.2}, "budget 0.2 is not a RetryBudget"),
        ({"max_body_bytes": -1}, "max_body_bytes -1 is not a whole number"),
    ],
)
def test_misconfiguration_fails_at_construction(options: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError, match=f"RetryMiddleware\\[name='retry'\\]: {message}"):
        guard(make_app(Script()), Middleware(RetryMiddleware, **options))


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"ratio": -0.1}, "ratio -0.1 is not"),
        ({"min_per_second": "1"}, "min_per_second '1' is not"),
        ({"window": 0}, "window 0 is not"),
    ],
)
def test_a_bad_budget_fails_at_construction(options: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError, match=f"RetryBudget: {message}"):
        RetryBudget(**options)


async def test_a_route_key_naming_no_route_fails_the_start() -> None:
    app = make_app(Script())
    guard(app, Middleware(RetryMiddleware, routes={"POST /nowhere": True}))
    answer = await startup(app)
    assert answer["type"] == "lifespan.startup.failed"
    assert "route 'POST /nowhere' is not a route of the app" in answer["message"]


def test_describe_says_where_retries_apply_and_answers_nothing() -> None:
    layer = RetryMiddleware(make_app(Script()), routes={"POST /search": True})
    described = layer.describe("GET", "/items")
    assert described.applies
    assert described.answers == ()
    assert described.summary["attempts"] == 3
    assert described.summary["statuses"] == [502, 503, 504]
    assert layer.describe("POST", "/search").applies
    assert not layer.describe("POST", "/orders").applies
    assert not layer.describe("WEBSOCKET", "/items").applies
