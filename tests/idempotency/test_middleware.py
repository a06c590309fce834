"""The layer through a real app: run once, replay, refuse what the draft refuses."""

from __future__ import annotations

from typing import Any

import anyio
import pytest
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.responses import JSONResponse, Response
from starlette.routing import Host, Router

from apiguard import (
    APIKeyAuth,
    AuthMiddleware,
    IdempotencyMiddleware,
    JWTAuth,
    Principal,
    TimeoutMiddleware,
    guard,
)
from apiguard.idempotency import RoutePolicy
from apiguard.testing import generate_key
from tests.idempotency._apps import Orders, client, keyed, new_key, orders_app

pytestmark = pytest.mark.anyio


async def test_a_retry_after_completion_gets_the_stored_response() -> None:
    app, orders = orders_app()
    key = new_key()
    async with client(app) as http:
        first = await http.post("/orders", content=b'{"sku":"A-1"}', headers=keyed(key))
        again = await http.post("/orders", content=b'{"sku":"A-1"}', headers=keyed(key))
    assert orders.runs["orders"] == 1
    assert (first.status_code, again.status_code) == (201, 201)
    assert again.content == first.content
    assert again.json()["run"] == 1
    assert again.headers["idempotent-replayed"] == "true"
    assert "idempotent-replayed" not in first.headers
    assert again.headers["x-run"] == "1"
    assert again.headers["content-type"] == first.headers["content-type"]
    assert int(again.headers["content-length"]) == len(first.content)


async def test_the_replay_leaves_out_cookies_and_the_date() -> None:
    """Set-Cookie (a credential) and Date (per message) are never stored."""
    app, _ = orders_app()
    key = new_key()
    async with client(app) as http:
        first = await http.post("/orders", headers=keyed(key))
        again = await http.post("/orders", headers=keyed(key))
    assert first.headers["set-cookie"] == "session=s3cr3t"
    assert first.headers["date"] == "then"
    assert "set-cookie" not in again.headers
    assert "date" not in again.headers


async def test_the_endpoint_sees_the_claim_and_tracing_sees_the_outcome() -> None:
    app, _ = orders_app()
    key = new_key()
    async with client(app) as http:
        first = await http.post("/orders", headers=keyed(key))
        without = await http.post("/orders")
    assert first.json()["decisions"] == [["claimed", "allow"]]
    assert without.json()["decisions"] == [["no-key", "skip"]]


@pytest.mark.parametrize(
    ("second", "why"),
    [
        ({"url": "/orders", "content": b'{"sku":"B-2"}'}, "another body"),
        ({"url": "/orders?coupon=1", "content": b'{"sku":"A-1"}'}, "another query"),
        ({"url": "/webhooks", "content": b'{"sku":"A-1"}'}, "another path"),
    ],
)
async def test_the_same_key_with_another_payload_is_422(second: dict[str, Any], why: str) -> None:
    app, orders = orders_app()
    key = new_key()
    async with client(app) as http:
        first = await http.post("/orders", content=b'{"sku":"A-1"}', headers=keyed(key))
        refused = await http.post(**second, headers=keyed(key))
    assert first.status_code == 201
    assert refused.status_code == 422, why
    assert refused.headers["content-type"] == "application/problem+json"
    assert refused.json()["status"] == 422
    assert orders.runs["orders"] == 1


async def test_a_key_replays_for_its_own_path_only() -> None:
    """PATCH /orders/2 with the key of PATCH /orders/1 is 422, never /orders/1's response."""
    app, orders = orders_app()
    key = new_key()
    async with client(app) as http:
        one = await http.patch("/orders/1", headers=keyed(key))
        two = await http.patch("/orders/2", headers=keyed(key))
    assert one.json() == {"id": 1, "run": 1}
    assert two.status_code == 422
    assert orders.runs["update"] == 1


async def test_a_key_replays_for_its_own_host_only() -> None:
    """Host routes share paths: another host's endpoint with the key is 422, not a replay."""
    payments = Orders()
    refunds = Orders()
    app = guard(
        Starlette(
            routes=[
                Host("pay.example", Router(payments.routes())),
                Host("refund.example", Router(refunds.routes())),
            ]
        ),
        Middleware(IdempotencyMiddleware),
    )
    key = new_key()
    async with client(app) as http:
        paid = await http.post("http://pay.example/orders", headers=keyed(key))
        other = await http.post("http://refund.example/orders", headers=keyed(key))
        again = await http.post("http://pay.example/orders", headers=keyed(key))
    assert paid.status_code == 201
    assert other.status_code == 422
    assert again.headers["idempotent-replayed"] == "true"
    assert (payments.runs["orders"], refunds.runs["orders"]) == (1, 0)


async def test_a_bare_key_and_its_sf_string_are_one_key() -> None:
    app, orders = orders_app()
    key = new_key()
    async with client(app) as http:
        bare = await http.post("/orders", headers=keyed(key, quoted=False))
        quoted = await http.post("/orders", headers=keyed(key))
    assert quoted.headers["idempotent-replayed"] == "true"
    assert quoted.content == bare.content
    assert orders.runs["orders"] == 1


@pytest.mark.parametrize(
    "value",
    [
        '""',  # empty
        '"' + "k" * 256 + '"',  # longer than 255
        "k" * 256,
        '"unterminated',
        '"a", "b"',  # a list: two keys
        "a, b",
        '"tab\tinside"',
        "sp ace",
        '"bad \\escape"',  # RFC 9651 escapes only \" and \\
        "caf\u00e9",  # not ASCII
    ],
)
async def test_a_malformed_key_is_400(value: str) -> None:
    app, orders = orders_app()
    async with client(app) as http:
        refused = await http.post("/orders", headers={"idempotency-key": value.encode()})
    assert refused.status_code == 400
    assert refused.headers["content-type"] == "application/problem+json"
    assert "Idempotency-Key" in refused.json()["detail"]
    assert orders.runs["orders"] == 0


async def test_two_key_fields_are_400() -> None:
    app, orders = orders_app()
    headers = [("idempotency-key", '"a"'), ("idempotency-key", '"b"')]
    async with client(app) as http:
        refused = await http.post("/orders", headers=headers)
    assert refused.status_code == 400
    assert orders.runs["orders"] == 0


async def test_a_key_of_255_characters_with_parameters_is_accepted() -> None:
    app, orders = orders_app()
    key = "k" * 255
    async with client(app) as http:
        first = await http.post("/orders", headers={"idempotency-key": f'"{key}";v=1'})
        again = await http.post("/orders", headers={"idempotency-key": key})
    assert first.status_code == 201
    assert again.headers["idempotent-replayed"] == "true"
    assert orders.runs["orders"] == 1


async def test_a_missing_key_is_400_where_required_and_passes_elsewhere() -> None:
    app, orders = orders_app(routes={"POST /orders": RoutePolicy(required=True)})
    async with client(app) as http:
        refused = await http.post("/orders")
        webhook = await http.post("/webhooks")
    assert refused.status_code == 400
    assert refused.json()["detail"] == "This resource needs an Idempotency-Key header."
    assert webhook.status_code == 201
    assert orders.runs["orders"] == 1  # the webhook's run; the refused one never ran


async def test_requests_without_a_key_run_every_time() -> None:
    app, _ = orders_app()
    async with client(app) as http:
        answers = [await http.post("/orders") for _ in range(3)]
    assert [a.json()["run"] for a in answers] == [1, 2, 3]


@pytest.mark.parametrize(
    ("options", "method", "url", "runs"),
    [
        ({}, "GET", "/orders", ("list", 2)),  # a safe method: never covered
        ({}, "PUT", "/orders/1", ("update", 2)),  # not in methods
        ({"exempt": ["POST /webhooks"]}, "POST", "/webhooks", ("orders", 2)),
        ({"methods": ["POST"]}, "PATCH", "/orders/1", ("update", 2)),
        ({"routes": {"PUT /orders/{order_id}": RoutePolicy()}}, "PUT", "/orders/1", ("update", 1)),
        ({"methods": ["PUT"]}, "put", "/orders/1", ("update", 1)),  # a lowercase method folds
    ],
)
async def test_which_requests_are_covered(
    options: dict[str, Any], method: str, url: str, runs: tuple[str, int]
) -> None:
    app, orders = orders_app(**options)
    key = new_key()
    async with client(app) as http:
        for _ in range(2):
            await http.request(method, url, headers=keyed(key))
    assert orders.runs[runs[0]] == runs[1]


async def test_a_body_over_the_bound_is_413_and_never_runs() -> None:
    app, orders = orders_app(max_body_bytes=16)
    async with client(app) as http:
        refused = await http.post("/orders", content=b"x" * 17, headers=keyed(new_key()))
        unkeyed = await http.post("/orders", content=b"x" * 17)
    assert refused.status_code == 413
    assert unkeyed.status_code == 201  # without a key the body is never read by the layer
    assert orders.runs["orders"] == 1


async def test_a_streamed_response_is_stored_whole() -> None:
    app, orders = orders_app()
    key = new_key()
    async with client(app) as http:
        first = await http.post("/stream", headers=keyed(key))
        again = await http.post("/stream", headers=keyed(key))
    assert first.text == again.text == "one,two,three"
    assert again.headers["idempotent-replayed"] == "true"
    assert orders.runs["stream"] == 1


# --- what is not stored ---------------------------------------------------------------


@pytest.mark.parametrize("status", [500, 503, 429, 408])
async def test_a_retry_later_response_is_not_stored(status: int) -> None:
    """5xx, 408 and 429 release the claim: the retry runs again."""
    app, orders = orders_app()
    key = new_key()
    async with client(app) as http:
        first = await http.post(f"/orders?status={status}", headers=keyed(key))
        again = await http.post(f"/orders?status={status}", headers=keyed(key))
    assert first.status_code == again.status_code == status
    assert "idempotent-replayed" not in again.headers
    assert orders.runs["orders"] == 2


async def test_server_errors_are_stored_when_asked() -> None:
    app, orders = orders_app(store_server_errors=True)
    key = new_key()
    async with client(app) as http:
        await http.post("/orders?status=500", headers=keyed(key))
        again = await http.post("/orders?status=500", headers=keyed(key))
    assert again.headers["idempotent-replayed"] == "true"
    assert orders.runs["orders"] == 1


async def test_a_client_error_is_stored_and_replayed() -> None:
    app, orders = orders_app()
    key = new_key()
    async with client(app) as http:
        await http.post("/orders?status=409", headers=keyed(key))
        again = await http.post("/orders?status=409", headers=keyed(key))
    assert (again.status_code, again.headers["idempotent-replayed"]) == (409, "true")
    assert orders.runs["orders"] == 1


@pytest.mark.parametrize(
    ("options", "fallback", "status"),
    [
        pytest.param({}, None, 504, id="504"),
        pytest.param({"store_server_errors": True}, None, 504, id="504-server-errors-kept"),
        pytest.param({}, JSONResponse({"queued": True}, 202), 202, id="fallback"),
    ],
)
async def test_a_request_that_timed_out_inside_is_not_stored(
    options: dict[str, Any], fallback: Response | None, status: int
) -> None:
    """An inner timeout's 504 or fallback is not the operation's result: the retry runs it."""
    orders = Orders()
    app = guard(
        Starlette(routes=orders.routes()),
        Middleware(IdempotencyMiddleware, **options),
        Middleware(TimeoutMiddleware, timeout=0.2, fallback=fallback),
    )
    orders.hold(runs=1)  # the first run never finishes: it times out
    key = new_key()
    async with client(app) as http:
        first = await http.post("/orders", headers=keyed(key))
        again = await http.post("/orders", headers=keyed(key))
    assert first.status_code == status
    assert again.status_code == 201
    assert "idempotent-replayed" not in again.headers
    assert orders.runs["orders"] == 2


async def test_a_204_is_replayed_without_content_length() -> None:
    """RFC 9110 §8.6: a server MUST NOT send Content-Length in a 204."""
    app, orders = orders_app()
    key = new_key()
    async with client(app) as http:
        first = await http.post("/orders?status=204&size=0", headers=keyed(key))
        again = await http.post("/orders?status=204&size=0", headers=keyed(key))
    assert (first.status_code, again.status_code) == (204, 204)
    assert again.headers["idempotent-replayed"] == "true"
    assert "content-length" not in first.headers
    assert "content-length" not in again.headers
    assert orders.runs["orders"] == 1


async def test_a_response_over_the_bound_is_passed_through_and_not_stored() -> None:
    app, orders = orders_app(max_response_bytes=1000)
    key = new_key()
    async with client(app) as http:
        big = await http.post("/orders?size=5000", headers=keyed(key))
        again = await http.post("/orders?size=5000", headers=keyed(key))
        small_key = new_key()
        small = await http.post("/orders?size=500", headers=keyed(small_key))
        replayed = await http.post("/orders?size=500", headers=keyed(small_key))
    assert big.content == b"x" * 5000  # passed through whole
    assert "idempotent-replayed" not in again.headers  # ... not stored: the retry ran again
    assert orders.runs["orders"] == 3
    assert replayed.headers["idempotent-replayed"] == "true"
    assert small.content == replayed.content


async def test_an_endpoint_that_raises_releases_its_key() -> None:
    app, orders = orders_app()
    key = new_key()
    async with client(app, raise_app_exceptions=False) as http:
        first = await http.post("/boom", headers=keyed(key))
        again = await http.post("/boom", headers=keyed(key))
    assert first.status_code == again.status_code == 500
    assert orders.runs["boom"] == 2


class _Deadline:
    """A timeout layer: cancels the app after `seconds` and answers 504."""

    def __init__(self, app: Any, seconds: float) -> None:
        self.app = app
        self.seconds = seconds

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        with anyio.move_on_after(self.seconds) as scope_:
            await self.app(scope, receive, send)
        if scope_.cancelled_caught:
            await send({"type": "http.response.start", "status": 504, "headers": []})
            await send({"type": "http.response.body", "body": b""})


async def test_a_timed_out_request_releases_its_key() -> None:
    """A cancelled request (a timeout layer outside) releases the claim: the retry runs."""
    app, orders = orders_app(Middleware(_Deadline, seconds=0.2))
    orders.hold()
    key = new_key()
    async with client(app) as http:
        timed_out = await http.post("/orders", headers=keyed(key))
        orders.release()
        for _ in range(100):  # the release runs beside the cancelled request
            retry = await http.post("/orders", headers=keyed(key))
            if retry.status_code != 409:
                break
            await anyio.sleep(0.02)
    assert timed_out.status_code == 504
    assert retry.status_code == 201
    assert retry.json()["run"] == 2


# --- whose key it is ------------------------------------------------------------------


async def test_two_addresses_never_share_a_key() -> None:
    app, _ = orders_app()
    key = new_key()
    async with client(app, ("198.51.100.1", 1)) as one, client(app, ("198.51.100.2", 1)) as two:
        first = await one.post("/orders", headers=keyed(key))
        second = await two.post("/orders", headers=keyed(key))
    assert (first.json()["run"], second.json()["run"]) == (1, 2)
    assert "idempotent-replayed" not in second.headers


JWT_KEY = generate_key("HS256", kid=None)


def _authenticated() -> Middleware:
    return Middleware(
        AuthMiddleware,
        authenticators=[
            APIKeyAuth(
                keys={
                    "k-acme-000001": Principal(id="acme"),
                    "k-bob-0000001": Principal(id="bob"),
                    "k-addr-000001": Principal(id="203.0.113.9"),
                }
            ),
            JWTAuth(key=JWT_KEY.verification_key, algorithms=["HS256"], audience="orders"),
        ],
    )


@pytest.mark.parametrize(
    ("one", "two"),
    [
        ({"x-api-key": "k-acme-000001"}, {"x-api-key": "k-bob-0000001"}),
        # The same id by two methods: an API key's "acme" and a token's "acme".
        ({"x-api-key": "k-acme-000001"}, "jwt:acme"),
    ],
)
async def test_two_principals_never_share_a_key(one: Any, two: Any) -> None:
    app, orders = orders_app(_authenticated())
    if two == "jwt:acme":
        token = JWT_KEY.token({"sub": "acme", "aud": "orders"})
        two = {"authorization": f"Bearer {token}"}
    key = new_key()
    async with client(app) as http:
        first = await http.post("/orders", headers=keyed(key, **one))
        second = await http.post("/orders", headers=keyed(key, **two))
        replay = await http.post("/orders", headers=keyed(key, **two))
    assert (first.json()["run"], second.json()["run"]) == (1, 2)
    assert replay.json()["run"] == 2  # each principal replays its own
    assert orders.runs["orders"] == 2


async def test_a_principal_named_like_an_address_never_meets_that_address() -> None:
    """Principal '203.0.113.9' and the anonymous caller at 203.0.113.9 keep apart."""
    app, orders = orders_app(
        Middleware(
            AuthMiddleware,
            authenticators=[APIKeyAuth(keys={"k-addr-000001": Principal(id="203.0.113.9")})],
            optional=["POST /orders"],
        )
    )
    key = new_key()
    async with client(app, ("203.0.113.9", 1)) as http:
        anonymous = await http.post("/orders", headers=keyed(key))
        principal = await http.post("/orders", headers=keyed(key, **{"x-api-key": "k-addr-000001"}))
    assert (anonymous.json()["run"], principal.json()["run"]) == (1, 2)
    assert orders.runs["orders"] == 2
