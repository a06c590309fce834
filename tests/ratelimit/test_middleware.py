"""RateLimitMiddleware through a real Starlette app: limits, headers, policies, options."""

from __future__ import annotations

import json
from typing import Any

import pytest
from starlette.applications import Starlette
from starlette.middleware import Middleware

from apiguard import ConfigError, guard
from apiguard.ratelimit import RateLimitMiddleware, RoutePolicy, by_header, by_principal
from apiguard.testing import FrozenClock
from tests.ratelimit._helpers import client, limited_app, policies, ratelimit

pytestmark = pytest.mark.anyio

QUOTA_EXCEEDED = "https://iana.org/assignments/http-problem-types#quota-exceeded"
# FrozenClock starts at 1_700_000_000: 20 s into a minute, 1,280 s into an hour.
START = 1_700_000_000.0


@pytest.mark.parametrize("store", ["memory", "redis"])
@pytest.mark.usefixtures("close_stores")
async def test_fixed_window_headers_follow_the_draft_at_each_step(
    store: str, request: pytest.FixtureRequest
) -> None:
    """Q and w constant; r counts down; t is the window's end; 429 + Retry-After past it.

    On Redis too: fixed windows are aligned on apiguard's clock there as well.
    """
    storage = "memory://"
    if store == "redis":
        storage = request.getfixturevalue("redis_url")
    app = limited_app(limit="3/minute", storage=storage)
    with FrozenClock(wall=START) as clock:
        async with client(app) as http:
            first = await http.get("/orders")
            assert policies(first) == {"default-0": (3, 60)}
            assert ratelimit(first) == {"default-0": (2, 40)}
            clock.advance(10)
            assert ratelimit(await http.get("/orders")) == {"default-0": (1, 30)}
            assert ratelimit(await http.get("/orders")) == {"default-0": (0, 30)}
            clock.advance(5.5)
            refused = await http.get("/orders")
            assert refused.status_code == 429
            assert refused.headers["retry-after"] == "25"  # 24.5 s, rounded up
            assert ratelimit(refused) == {"default-0": (0, 25)}
            assert policies(refused) == {"default-0": (3, 60)}
            clock.advance(24.5)  # the window's end: the whole quota is back
            again = await http.get("/orders")
            assert again.status_code == 200
            assert ratelimit(again) == {"default-0": (2, 60)}


async def test_rejection_is_a_quota_exceeded_problem() -> None:
    app = limited_app(limit="1/minute")
    with FrozenClock(wall=START):
        async with client(app) as http:
            await http.get("/orders")
            refused = await http.get("/orders")
    assert refused.status_code == 429
    assert refused.headers["content-type"] == "application/problem+json"
    body = refused.json()
    assert body["type"] == QUOTA_EXCEEDED
    assert body["status"] == 429
    assert body["violated-policies"] == ["default-0"]
    assert set(body) == {"type", "title", "status", "detail", "violated-policies"}


async def test_moving_window_counts_each_hit_for_a_full_window() -> None:
    app = limited_app(limit="2/minute", strategy="moving-window")
    with FrozenClock(wall=START) as clock:
        async with client(app) as http:
            assert ratelimit(await http.get("/orders")) == {"default-0": (1, 60)}
            clock.advance(30)
            assert ratelimit(await http.get("/orders")) == {"default-0": (0, 30)}
            clock.advance(20)
            refused = await http.get("/orders")
            assert refused.status_code == 429
            assert refused.headers["retry-after"] == "10"  # when the first hit leaves
            clock.advance(10)  # a fixed window would have reset at +40; this one slides
            assert ratelimit(await http.get("/orders")) == {"default-0": (0, 30)}
            assert (await http.get("/orders")).status_code == 429


async def test_sliding_window_counter_weighs_the_previous_window() -> None:
    app = limited_app(limit="4/minute", strategy="sliding-window-counter")
    with FrozenClock(wall=1_700_000_040.0) as clock:  # the start of a minute
        async with client(app) as http:
            for _ in range(4):
                assert (await http.get("/orders")).status_code == 200
            refused = await http.get("/orders")
            assert refused.status_code == 429
            # 4 in this window: at +60 they weigh 4 * 60/60; below 4 just after, so 61 s.
            assert refused.headers["retry-after"] == "61"
            clock.advance(75)  # 15 s into the next window: 4 * 45/60 = 3 weighted
            allowed = await http.get("/orders")
            assert allowed.status_code == 200
            assert ratelimit(allowed)["default-0"][0] == 0  # floor(3 + 1) = 4 used
            assert (await http.get("/orders")).status_code == 429
            clock.advance(15)  # 4 * 30/60 + 1 = 3 weighted
            assert (await http.get("/orders")).status_code == 200


@pytest.mark.parametrize("strategy", ["fixed-window", "moving-window", "sliding-window-counter"])
async def test_a_request_refused_by_one_quota_is_counted_by_none(strategy: str) -> None:
    app = limited_app(limit="2/second; 3/hour", strategy=strategy)
    with FrozenClock(wall=START) as clock:
        async with client(app) as http:
            assert (await http.get("/orders")).status_code == 200
            assert (await http.get("/orders")).status_code == 200
            for _ in range(5):  # refused by the per-second quota
                refused = await http.get("/orders")
                assert refused.status_code == 429
                assert refused.json()["violated-policies"] == ["default-0"]
            assert ratelimit(refused)["default-1"][0] == 1  # the hour kept its third
            clock.advance(2)
            third = await http.get("/orders")
            assert third.status_code == 200
            remaining = {name: r for name, (r, _) in ratelimit(third).items()}
            assert remaining == {"default-0": 1, "default-1": 0}
            clock.advance(2)
            refused = await http.get("/orders")
            assert refused.json()["violated-policies"] == ["default-1"]


async def test_named_policies_are_listed_by_name() -> None:
    app = limited_app(limit={"burst": "10/second", "hourly": "1000/hour"})
    async with client(app) as http:
        response = await http.get("/orders")
    assert policies(response) == {"burst": (10, 1), "hourly": (1000, 3600)}
    assert set(ratelimit(response)) == {"burst", "hourly"}


async def test_route_limit_has_its_own_counter_and_name() -> None:
    app = limited_app(limit="5/minute", routes={"POST /orders": "1/minute"})
    async with client(app) as http:
        assert (await http.post("/orders")).status_code == 200
        refused = await http.post("/orders")
        assert refused.status_code == 429
        assert refused.json()["violated-policies"] == ["default-1"]
        listed = await http.get("/orders")  # the general quota is untouched
    assert listed.status_code == 200
    assert [(name, r) for name, (r, _) in ratelimit(listed).items()] == [("default-0", 4)]


async def test_cost_draws_several_units() -> None:
    app = limited_app(limit="10/minute", cost={"POST /orders": 4})
    async with client(app) as http:
        assert ratelimit(await http.post("/orders"))["default-0"][0] == 6
        assert ratelimit(await http.post("/orders"))["default-0"][0] == 2
        assert (await http.post("/orders")).status_code == 429  # 4 > 2 left
        assert ratelimit(await http.get("/orders"))["default-0"][0] == 1


async def test_route_policy_combines_cost_and_general_quota() -> None:
    app = limited_app(limit="3/minute", routes={"DELETE /orders/{order_id}": RoutePolicy(cost=3)})
    async with client(app) as http:
        assert (await http.delete("/orders/7")).status_code == 200
        assert (await http.get("/orders")).status_code == 429


async def test_exempt_routes_are_not_limited() -> None:
    app = limited_app(limit="1/minute", exempt=["/health"])
    async with client(app) as http:
        for _ in range(3):
            response = await http.get("/health")
            assert response.status_code == 200
            assert "ratelimit" not in response.headers


async def test_head_counts_against_the_get_route() -> None:
    app = limited_app(limit="10/minute", routes={"GET /orders": "1/minute"})
    async with client(app) as http:
        assert (await http.head("/orders")).status_code == 200
        assert (await http.get("/orders")).status_code == 429


@pytest.mark.parametrize(
    "path",
    ["/orders/7", "/orders/07", "/orders/%37", "/orders/../orders/7", "/orders/./7"],
)
async def test_path_variants_of_a_limited_route_share_its_limit(path: str) -> None:
    """Whatever spelling reaches the endpoint counts against the route's limit."""
    app = limited_app(limit="100/minute", routes={"GET /orders/{order_id}": "1/minute"})
    async with client(app) as http:
        assert (await http.get("/orders/7")).status_code == 200
        variant = await http.get(path)
    assert variant.status_code == 429
    assert variant.json()["violated-policies"] == ["default-1"]


@pytest.mark.parametrize("path", ["/orders/7/", "/ORDERS/7", "//orders/7"])
async def test_path_variants_that_miss_the_route_never_reach_its_endpoint(path: str) -> None:
    """Case, doubled or trailing slashes: the router answers 404 or redirects, unlimited there."""
    app = limited_app(limit="100/minute", routes={"GET /orders/{order_id}": "1/minute"})
    async with client(app) as http:
        assert (await http.get("/orders/7")).status_code == 200
        variant = await http.get(path, follow_redirects=False)
        assert variant.status_code in (307, 404)
        assert (await http.get(path, follow_redirects=True)).status_code in (404, 429)


async def test_plans_limit_by_the_principals_plan() -> None:
    app = limited_app(
        principals=True,
        key=by_principal(),
        limit="1/minute",
        plans={"free": "2/minute", "pro": "5/minute"},
    )
    async with client(app) as http:
        pro = await http.get("/orders", headers={"x-test-user": "ada:pro"})
        free = await http.get("/orders", headers={"x-test-user": "bob:free"})
        anonymous = await http.get("/orders")
        other = await http.get("/orders", headers={"x-test-user": "eve:gold"})
    assert policies(pro) == {"default-2": (5, 60)}
    assert policies(free) == {"default-1": (2, 60)}
    assert policies(anonymous) == {"default-0": (1, 60)}
    assert policies(other) == {"default-0": (1, 60)}  # an unlisted plan gets `limit`


async def test_plans_without_a_limit_leave_unplanned_callers_unlimited() -> None:
    app = limited_app(principals=True, key=by_principal(), plans={"free": "1/minute"})
    async with client(app) as http:
        for _ in range(3):
            response = await http.get("/orders")
            assert response.status_code == 200
        decision = response.json()["decisions"][0]
    assert (decision["outcome"], decision["reason"]) == ("skip", "no-policy")


async def test_principals_are_counted_apart_from_each_other_and_from_addresses() -> None:
    app = limited_app(principals=True, key=by_principal(), limit="1/minute")
    async with client(app) as http:
        assert (await http.get("/orders", headers={"x-test-user": "ada"})).status_code == 200
        assert (await http.get("/orders", headers={"x-test-user": "bob"})).status_code == 200
        assert (await http.get("/orders")).status_code == 200
        assert (await http.get("/orders", headers={"x-test-user": "ada"})).status_code == 429


async def test_overrides_give_one_consumer_its_own_limit() -> None:
    app = limited_app(
        principals=True,
        key=by_principal(),
        plans={"free": "1/minute"},
        overrides={"partner": "3/minute"},
    )
    async with client(app) as http:
        for _ in range(3):
            response = await http.get("/orders", headers={"x-test-user": "partner:free"})
            assert response.status_code == 200
        assert (await http.get("/orders", headers={"x-test-user": "partner:free"})).is_error
    assert policies(response) == {"default-1": (3, 60)}


async def test_shadow_mode_counts_and_records_but_never_refuses() -> None:
    app = limited_app(limit="1/minute", shadow=True)
    async with client(app) as http:
        first = await http.get("/orders")
        second = await http.get("/orders")
    assert second.status_code == 200
    assert "ratelimit" not in second.headers  # headers are off by default in shadow mode
    assert first.json()["decisions"][0]["reason"] is None
    decision = second.json()["decisions"][0]
    assert (decision["outcome"], decision["reason"]) == ("allow", "shadow")
    assert decision["remaining"] == 0
    assert decision["attributes"] == {"shadow.violated": "default-0"}


async def test_shadow_mode_can_send_headers() -> None:
    app = limited_app(limit="1/minute", shadow=True, headers=True)
    async with client(app) as http:
        await http.get("/orders")
        second = await http.get("/orders")
    assert second.status_code == 200
    assert ratelimit(second)["default-0"][0] == 0


async def test_headers_can_be_turned_off() -> None:
    app = limited_app(limit="1/minute", headers=False)
    async with client(app) as http:
        assert "ratelimit" not in (await http.get("/orders")).headers
        refused = await http.get("/orders")
    assert refused.status_code == 429
    assert "retry-after" in refused.headers  # RFC 6585: 429 may say when to retry; we always do
    assert "ratelimit" not in refused.headers
    assert "ratelimit-policy" not in refused.headers


async def test_legacy_headers_report_the_quota_nearest_its_end() -> None:
    app = limited_app(limit="5/second; 2/minute", legacy_headers=True)
    with FrozenClock(wall=START):
        async with client(app) as http:
            response = await http.get("/orders")
    assert response.headers["x-ratelimit-limit"] == "2"
    assert response.headers["x-ratelimit-remaining"] == "1"
    assert response.headers["x-ratelimit-reset"] == str(int(START) + 40)


async def test_decision_records_the_binding_quota() -> None:
    app = limited_app(name="ip", limit="5/second; 2/minute")
    with FrozenClock(wall=START):
        async with client(app) as http:
            decision = (await http.get("/orders")).json()["decisions"][0]
    assert decision["name"] == "ip"
    assert (decision["policy"], decision["limit"], decision["remaining"]) == ("ip-1", 2, 1)
    assert decision["reset_after"] == 40.0


async def test_two_limiters_with_different_names_never_collide() -> None:
    app = guard(
        Starlette(routes=limited_app(limit="1/minute").routes),
        Middleware(RateLimitMiddleware, name="outer", limit="2/minute"),
        Middleware(RateLimitMiddleware, name="inner", limit="3/minute"),
    )
    with FrozenClock(wall=START):
        async with client(app) as http:
            response = await http.get("/orders")
    assert policies(response) == {"outer-0": (2, 60), "inner-0": (3, 60)}
    assert ratelimit(response) == {"outer-0": (1, 40), "inner-0": (2, 40)}


async def test_clients_are_counted_apart() -> None:
    app = limited_app(limit="1/minute")
    async with client(app, ("198.51.100.1", 1)) as one, client(app, ("198.51.100.2", 1)) as two:
        assert (await one.get("/orders")).status_code == 200
        assert (await two.get("/orders")).status_code == 200
        assert (await one.get("/orders")).status_code == 429


async def test_request_without_a_key_is_not_limited() -> None:
    app = limited_app(limit="1/minute", key=by_header("X-Tenant"))
    async with client(app) as http:
        for _ in range(3):
            response = await http.get("/orders")
            assert response.status_code == 200
    decision = response.json()["decisions"][0]
    assert (decision["outcome"], decision["reason"]) == ("skip", "no-key")


async def test_websocket_handshakes_are_counted_and_refused_with_1013() -> None:
    """Without the denial extension, a refused handshake is closed with 1013 before accept."""
    seen: list[str] = []
    sent: list[dict[str, Any]] = []

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    layer = RateLimitMiddleware(lambda s, r, se: _record(seen, s), limit="1/minute")
    scope = {"type": "websocket", "path": "/ws", "headers": [], "client": ("203.0.113.9", 1)}
    for _ in range(2):
        await layer(dict(scope), _never, send)
    await layer({"type": "lifespan"}, _never, _never)
    assert seen == ["websocket", "lifespan"]
    assert sent == [{"type": "websocket.close", "code": 1013, "reason": ""}]


async def _record(seen: list[str], scope: Any) -> None:
    seen.append(scope["type"])


async def _never(*args: Any) -> Any:
    raise AssertionError("not called")


@pytest.mark.parametrize(
    ("options", "match"),
    [
        ({}, "give a limit"),
        ({"limit": "lots"}, "limit 'lots' is not a limit"),
        ({"limit": "0/minute"}, "allows no request"),
        ({"limit": 100}, "limit 100 is not a limit"),
        ({"limit": {"bad name": "1/second"}}, "policy name 'bad name'"),
        ({"limit": {"a": "1/second; 2/hour"}}, "must be one limit"),
        ({"limit": "1/second", "name": "a b"}, "name 'a b'"),
        (
            {"limit": "1/second", "strategy": "token-bucket"},
            "strategy 'token-bucket' is not one of",
        ),
        (
            {"limit": "1/second", "on_store_error": "ignore"},
            "on_store_error 'ignore' is not one of",
        ),
        ({"limit": "1/second", "store_timeout": 0}, "store_timeout 0 is not a number of seconds"),
        (
            {"limit": "1/second", "store_timeout": float("inf")},
            "store_timeout inf is not a number of seconds",
        ),
        ({"limit": "1/second", "shadow": "yes"}, "shadow 'yes' is not True or False"),
        ({"limit": "1/second", "headers": 1}, "headers 1 is not True or False"),
        ({"limit": "1/second", "key": "ip"}, "key 'ip' is not a key function"),
        ({"limit": "1/second", "storage": "postgres://db"}, "unknown scheme 'postgres'"),
        ({"limit": "1/second", "storage": "redis+sentinel://h:26379"}, "names no sentinel"),
        ({"limit": "1/second", "storage": "redis://:hunter2@h:x"}, r"\*\*\*"),
        ({"limit": "1/second", "storage": "redis://h:6379/x?password=hunter2"}, r"=\*\*\*"),
        (
            {"limit": "1/second", "cost": {"/orders": 0}},
            "cost\\['/orders'\\] 0 is not a whole number",
        ),
        ({"limit": "2/second", "cost": {"/orders": 3}}, "could never be admitted"),
        ({"limit": "1/second", "exempt": "/health"}, "exempt '/health' is not a list"),
        ({"limit": "1/second", "plans": ["free"]}, "plans \\['free'\\] is not a mapping"),
        ({"limit": "1/second", "exempt": ["/x y z"]}, "route key"),
    ],
)
def test_bad_options_fail_at_configuration(options: dict[str, Any], match: str) -> None:
    with pytest.raises(ConfigError, match=match) as raised:
        guard(
            Starlette(routes=limited_app(limit="1/second").routes),
            Middleware(RateLimitMiddleware, **options),
        )
    assert "hunter2" not in str(raised.value)


async def test_unknown_route_key_fails_the_first_request() -> None:
    """Route keys are checked against the app when the stack is built (contract 3)."""
    app = limited_app(limit="1/second", routes={"/nowhere": "1/minute"})
    with pytest.raises(
        ConfigError,
        match=r"RateLimitMiddleware\[name='default'\]: routes: route '/nowhere' is not a route",
    ):
        async with client(app) as http:
            await http.get("/orders")


def test_option_errors_name_the_layer_instance_the_option_and_the_value() -> None:
    """One message form for every layer: the instance, the option, the value."""
    with pytest.raises(ConfigError) as raised:
        RateLimitMiddleware(_never, name="plan", limit="10/minuets")
    assert str(raised.value).startswith(
        "RateLimitMiddleware[name='plan']: limit '10/minuets' is not a limit like '100/minute'"
    )


async def test_two_limiters_of_one_name_in_one_app_fail_at_startup() -> None:
    """Both would count each request in one set of counters: refused when the stack is built."""
    app = guard(
        Starlette(routes=limited_app(limit="1/second").routes),
        Middleware(RateLimitMiddleware, limit="10/second"),
        Middleware(RateLimitMiddleware, limit="100/minute"),
    )
    with pytest.raises(ConfigError, match="another RateLimitMiddleware in this app is named"):
        async with client(app) as http:
            await http.get("/orders")


def test_init_has_no_side_effects_on_a_redis_uri() -> None:
    """A Redis URI is checked, not connected to: nothing listens on port 1."""
    layer = RateLimitMiddleware(_never, limit="1/second", storage="redis://127.0.0.1:1/0")
    assert repr(layer.store) == "RedisStore('redis://127.0.0.1:1/0')"


async def test_problem_body_is_valid_json_with_every_violated_policy() -> None:
    app = limited_app(limit="1/second; 1/hour")
    with FrozenClock(wall=START):
        async with client(app) as http:
            await http.get("/orders")
            refused = await http.get("/orders")
    assert json.loads(refused.content)["violated-policies"] == ["default-0", "default-1"]
    assert refused.headers["retry-after"] == "2800"  # admitted only once both have room


async def test_a_flood_of_new_clients_cannot_grow_the_memory_store_past_max_keys() -> None:
    """Review finding 8: one entry per new client per quota, with no cap."""
    from apiguard.storage import MemoryStorage

    store = MemoryStorage(max_keys=500)
    app = limited_app(limit="100/hour; 1000/day", storage=store)
    for i in range(300):  # 300 clients x 2 quotas: 600 entries wanted
        async with client(app, (f"2001:db8:0:{i:x}::1", 4000)) as http:
            assert (await http.get("/orders")).status_code == 200
    assert len(store) == 500
