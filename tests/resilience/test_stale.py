"""StaleIfError: the last good response, served on timeout, never to anyone it was not for."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from starlette.middleware import Middleware

from apiguard import (
    APIKeyAuth,
    AuthMiddleware,
    ConfigError,
    Principal,
    StaleIfError,
    TimeoutMiddleware,
    guard,
)
from apiguard.context import RequestContext
from apiguard.resilience._stored import cache_control, decode, primary_key, variant_key
from apiguard.storage import MemoryKeyValue
from apiguard.testing import FrozenClock
from tests._lifespan import startup
from tests._servers import RedisServer
from tests.resilience._apps import Act, Script, client, make_app, mounted_app
from tests.resilience.test_timeout import Keep

pytestmark = pytest.mark.anyio

HANG = Act(hang=True)


@pytest.fixture
def frozen() -> Iterator[FrozenClock]:
    with FrozenClock() as clock:
        yield clock


def stale_app(
    script: Script, contexts: list[RequestContext], *outer: Middleware, **options: Any
) -> Any:
    stale = options.pop("stale", None) or StaleIfError(**options)
    return guard(
        make_app(script),
        Middleware(Keep, into=contexts),
        *outer,
        Middleware(TimeoutMiddleware, timeout=0.2, fallback=stale),
    )


async def test_the_last_good_response_is_served_stale_on_timeout(frozen: FrozenClock) -> None:
    script, contexts = Script(), []
    app = stale_app(script, contexts)
    async with client(app) as http:
        fresh = await http.get("/items")
        frozen.advance(42)
        script.plan("/items", HANG)
        stale = await http.get("/items")
    assert stale.status_code == 200
    assert stale.json() == fresh.json() == {"path": "/items", "call": 1, "body": ""}
    assert stale.headers["age"] == "42"
    # RFC 9211: forwarded, the stored copy stale (freshness left -42 s), why.
    assert stale.headers["cache-status"] == "apiguard; fwd=stale; ttl=-42; detail=timeout"
    assert "warning" not in stale.headers
    served, timeout = contexts[-1].decisions[-2:]
    assert (served.layer, served.name, served.reason, served.status) == (
        "fallback",
        "stale",
        "timeout",
        200,
    )
    assert served.attributes == {"fallback.kind": "stale", "stale.age": 42}
    assert (timeout.reason, timeout.status) == ("timeout", None)


async def test_serving_a_copy_does_not_make_it_younger(frozen: FrozenClock) -> None:
    script, contexts = Script(), []
    async with client(stale_app(script, contexts)) as http:
        await http.get("/items")
        script.plan("/items", HANG)
        ages = []
        for _ in range(3):
            frozen.advance(10)
            ages.append((await http.get("/items")).headers["age"])
    assert ages == ["10", "20", "30"]


@pytest.mark.parametrize(
    ("cache_control", "served_at", "refused_at"),
    [
        pytest.param(None, 300, 301, id="default ttl"),
        pytest.param("stale-if-error=60", 60, 61, id="stale-if-error"),
        pytest.param("max-age=10, stale-if-error=60", 70, 71, id="max-age + stale-if-error"),
        pytest.param("s-maxage=20, max-age=10, stale-if-error=5", 25, 26, id="s-maxage wins"),
        pytest.param("max-age=100", 400, 401, id="max-age + default ttl"),
        pytest.param("stale-if-error=5000", 1000, 1001, id="capped by max_ttl"),
    ],
)
async def test_the_window_follows_the_response_and_the_bounds(
    frozen: FrozenClock, cache_control: str | None, served_at: int, refused_at: int
) -> None:
    script, contexts = Script(), []
    headers = {"cache-control": cache_control} if cache_control else {}
    script.plan("/items", Act(headers=headers), HANG)
    async with client(stale_app(script, contexts, ttl=300, max_ttl=1000)) as http:
        await http.get("/items")
        frozen.advance(served_at)
        assert (await http.get("/items")).status_code == 200
        frozen.advance(refused_at - served_at)
        assert (await http.get("/items")).status_code == 504


@pytest.mark.parametrize(
    "headers",
    [
        {"cache-control": "private"},
        {"cache-control": "max-age=60, private"},
        {"cache-control": 'private="x-user"'},
        {"cache-control": "no-store"},
        {"cache-control": "no-cache"},
        {"cache-control": "must-revalidate"},
        {"cache-control": "proxy-revalidate, max-age=5"},
        {"cache-control": "garbage private"},
        {"set-cookie": "session=abc; HttpOnly"},
        {"vary": "*"},
        {"vary": "accept, *"},
    ],
)
async def test_responses_that_must_not_be_shared_are_never_kept(
    frozen: FrozenClock, headers: dict[str, str]
) -> None:
    script, contexts = Script(), []
    script.plan("/items", Act(headers=headers), HANG)
    async with client(stale_app(script, contexts)) as http:
        assert (await http.get("/items")).status_code == 200
        frozen.advance(1)
        assert (await http.get("/items")).status_code == 504


async def test_only_good_statuses_are_kept(frozen: FrozenClock) -> None:
    script, contexts = Script(), []
    script.plan("/items", Act(503), HANG)
    async with client(stale_app(script, contexts)) as http:
        assert (await http.get("/items")).status_code == 503
        assert (await http.get("/items")).status_code == 504


async def test_copies_are_kept_apart_by_the_headers_vary_names(frozen: FrozenClock) -> None:
    script, contexts = Script(), []
    vary = Act(headers={"vary": "Accept-Language"})
    script.plan("/items", vary, vary, HANG)
    async with client(stale_app(script, contexts)) as http:
        english = await http.get("/items", headers={"accept-language": "en"})
        french = await http.get("/items", headers={"accept-language": "fr"})
        frozen.advance(5)
        for language, original in (("en", english), ("fr", french)):
            served = await http.get("/items", headers={"accept-language": language})
            assert (served.status_code, served.json()) == (200, original.json())
        assert (await http.get("/items", headers={"accept-language": "de"})).status_code == 504
        assert (await http.get("/items")).status_code == 504  # absent is not a value


async def test_the_query_and_the_host_are_part_of_the_key(frozen: FrozenClock) -> None:
    script, contexts = Script(), []
    script.plan("/items", Act(), HANG)
    async with client(stale_app(script, contexts)) as http:
        await http.get("/items?page=1")
        assert (await http.get("/items?page=2")).status_code == 504
        assert (await http.get("/items?page=1", headers={"host": "other.example"})).status_code == (
            504
        )
        assert (await http.get("/items?page=1")).status_code == 200


KEYS = {"k-alice-0000000001": Principal(id="alice"), "k-bob-00000000002": Principal(id="bob")}
ALICE = {"x-api-key": "k-alice-0000000001"}
BOB = {"x-api-key": "k-bob-00000000002"}


def with_auth(script: Script, contexts: list[RequestContext], **options: Any) -> Any:
    auth = Middleware(AuthMiddleware, authenticators=[APIKeyAuth(keys=KEYS)])
    return stale_app(script, contexts, auth, **options)


async def test_authenticated_responses_are_not_kept_unless_the_route_opts_in(
    frozen: FrozenClock,
) -> None:
    script, contexts = Script(), []
    script.plan("/items", Act(), HANG)
    async with client(with_auth(script, contexts)) as http:
        assert (await http.get("/items", headers=ALICE)).status_code == 200
        assert (await http.get("/items", headers=ALICE)).status_code == 504


async def test_a_copy_is_never_served_across_principals(frozen: FrozenClock) -> None:
    script, contexts = Script(), []
    script.plan("/items", Act(), HANG)
    async with client(with_auth(script, contexts, authenticated=["GET /items"])) as http:
        kept = await http.get("/items", headers=ALICE)
        assert (await http.get("/items", headers=BOB)).status_code == 504
        assert (await http.get("/items")).status_code == 401
        served = await http.get("/items", headers=ALICE)
    assert (served.status_code, served.json()) == (200, kept.json())


async def test_an_anonymous_copy_is_not_served_to_a_principal(frozen: FrozenClock) -> None:
    script, contexts = Script(), []
    script.plan("/items", Act(), HANG)
    auth = Middleware(
        AuthMiddleware, authenticators=[APIKeyAuth(keys=KEYS)], optional=["GET /items"]
    )
    app = stale_app(script, contexts, auth, authenticated=["GET /items"])
    async with client(app) as http:
        assert (await http.get("/items")).status_code == 200
        assert (await http.get("/items", headers=ALICE)).status_code == 504
        assert (await http.get("/items")).status_code == 200


@pytest.mark.parametrize("authenticated", [(), ["GET /items"]], ids=["plain", "opted-in"])
async def test_a_response_to_a_principal_found_inside_is_never_served_to_others(
    frozen: FrozenClock, authenticated: list[str]
) -> None:
    """Authentication inside the timeout: the copy is keyed before the principal exists."""
    script = Script()
    script.plan("/items", Act(headers={"x-owner": "alice"}), HANG)
    app = guard(
        make_app(script),
        Middleware(
            TimeoutMiddleware,
            timeout=0.2,
            fallback=StaleIfError(authenticated=authenticated),
        ),
        Middleware(AuthMiddleware, authenticators=[APIKeyAuth(keys=KEYS)], optional=["GET /items"]),
    )
    async with client(app) as http:
        alice = await http.get("/items", headers=ALICE)
        anonymous = await http.get("/items")
    assert (alice.status_code, alice.headers["x-owner"]) == (200, "alice")
    assert anonymous.status_code == 504
    assert "x-owner" not in anonymous.headers


async def test_a_credential_no_layer_checked_is_never_kept(frozen: FrozenClock) -> None:
    script, contexts = Script(), []
    script.plan("/items", Act(), HANG)
    async with client(stale_app(script, contexts, authenticated=["GET /items"])) as http:
        token = {"authorization": "Bearer whoever"}
        assert (await http.get("/items", headers=token)).status_code == 200
        assert (await http.get("/items", headers=token)).status_code == 504
        assert (await http.get("/items")).status_code == 504


async def test_the_request_cache_control_is_honoured(frozen: FrozenClock) -> None:
    script, contexts = Script(), []
    script.plan("/items", Act(), Act(), HANG)
    async with client(stale_app(script, contexts)) as http:
        await http.get("/items", headers={"cache-control": "no-store"})
        assert (await http.get("/items")).status_code == 200  # call 2: kept
        frozen.advance(2)
        refused = await http.get("/items", headers={"cache-control": "no-cache"})
        assert refused.status_code == 504
        assert (await http.get("/items")).json()["call"] == 2


async def test_routes_limit_where_copies_are_kept(frozen: FrozenClock) -> None:
    script, contexts = Script(), []
    script.plan("/items", Act(), HANG)
    script.plan("/items/{item_id}", Act(), HANG)
    async with client(stale_app(script, contexts, routes=["GET /items/{item_id}"])) as http:
        await http.get("/items")
        await http.get("/items/1")
        assert (await http.get("/items")).status_code == 504
        assert (await http.get("/items/1")).status_code == 200


async def test_a_body_over_the_bound_is_not_kept(frozen: FrozenClock) -> None:
    script, contexts = Script(), []
    script.plan("/items", Act(), HANG)
    async with client(stale_app(script, contexts, max_body_bytes=10)) as http:
        await http.get("/items")
        assert (await http.get("/items")).status_code == 504


async def test_head_is_served_from_the_get_copy_inside_a_mount(frozen: FrozenClock) -> None:
    script = Script()
    script.plan("/things/{thing_id}", Act(), HANG)
    stale = StaleIfError()
    app = mounted_app(script, Middleware(TimeoutMiddleware, timeout=0.2, fallback=stale))
    async with client(app) as http:
        kept = await http.get("/api/v1/things/3")
        head = await http.head("/api/v1/things/3")
        served = await http.get("/api/v1/things/3")
    assert (head.status_code, head.content) == (200, b"")
    assert head.headers["content-length"] == str(len(kept.content))
    assert served.json() == kept.json()


async def test_the_memory_store_is_bounded_in_entries(frozen: FrozenClock) -> None:
    script, contexts = Script(), []
    stale = StaleIfError(max_entries=2)
    async with client(stale_app(script, contexts, stale=stale)) as http:
        for page in range(5):
            await http.get(f"/items?page={page}")
    assert isinstance(stale.kv, MemoryKeyValue)
    assert len(stale.kv) == 2


class CountingStore(MemoryKeyValue):
    """The memory store, counting its writes."""

    def __init__(self) -> None:
        super().__init__()
        self.puts = 0

    async def put(self, key: str, value: bytes, ttl: float, **options: Any) -> bool:
        self.puts += 1
        return await super().put(key, value, ttl, **options)


async def test_a_hot_get_is_written_once_a_second(frozen: FrozenClock) -> None:
    script, contexts = Script(), []
    stale = StaleIfError()
    stale.kv = store = CountingStore()
    async with client(stale_app(script, contexts, stale=stale)) as http:
        for _ in range(10):
            await http.get("/items")
        assert store.puts == 1
        frozen.advance(1)
        await http.get("/items")
        assert store.puts == 2
        script.plan("/items", HANG)
        assert (await http.get("/items")).json()["call"] == 11


async def test_a_copy_that_is_not_a_response_is_declined(frozen: FrozenClock) -> None:
    script, contexts = Script(), []
    stale = StaleIfError()
    script.plan("/items", Act(), HANG)
    async with client(stale_app(script, contexts, stale=stale)) as http:
        await http.get("/items")
        kv = stale.kv
        assert isinstance(kv, MemoryKeyValue)
        for key in list(kv._entries):
            await kv.put(key, b"AGS1\x00\x00\x00\x05{bad}", 60)
        assert (await http.get("/items")).status_code == 504
    assert decode(b"AGS1\xff\xff\xff\xff") is None
    assert decode(b"something else") is None


async def test_copies_in_redis_are_shared_by_workers(redis_url: str) -> None:
    """Two apps (two workers) on one Redis: what one kept, the other serves."""
    keeper, server = Script(), Script()
    server.plan("/items", HANG)
    stales = [StaleIfError(storage=redis_url), StaleIfError(storage=redis_url)]
    try:
        async with client(stale_app(keeper, [], stale=stales[0])) as http:
            kept = await http.get("/items")
        async with client(stale_app(server, [], stale=stales[1])) as http:
            served = await http.get("/items")
        assert (served.status_code, served.json()) == (200, kept.json())
        assert served.headers["cache-status"].startswith("apiguard; fwd=stale;")
    finally:
        for stale in stales:
            await stale.aclose()


@pytest.mark.slow
async def test_a_frozen_store_means_the_504_not_a_hang(own_redis: RedisServer) -> None:
    script, contexts = Script(), []
    stale = StaleIfError(storage=own_redis.url, timeout=0.2)
    script.plan("/items", Act(), HANG)
    try:
        async with client(stale_app(script, contexts, stale=stale)) as http:
            await http.get("/items")
            own_redis.freeze()
            assert (await http.get("/items")).status_code == 504
    finally:
        own_redis.thaw()
        await stale.aclose()


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"storage": "async+memory://"}, "storage .* has no key-value part"),
        ({"storage": "ftp://x"}, "storage 'ftp://x' has an unknown scheme"),
        ({"ttl": -1}, "ttl -1 is not a number of seconds"),
        ({"ttl": 100, "max_ttl": 10}, "ttl 100 is not a number of seconds in \\[0, 10\\]"),
        ({"statuses": [500]}, "statuses 500 is not a whole number from 200 to 299"),
        ({"max_body_bytes": -1}, "max_body_bytes -1"),
        ({"routes": "GET /items"}, "routes 'GET /items' is not a list of strings"),
        ({"name": ""}, "name '' is not"),
    ],
)
def test_misconfiguration_fails_at_construction(options: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError, match=f"StaleIfError: {message}"):
        StaleIfError(**options)


async def test_a_route_key_naming_no_route_fails_the_start() -> None:
    app = make_app(Script())
    guard(app, Middleware(TimeoutMiddleware, fallback=StaleIfError(routes=["GET /nowhere"])))
    answer = await startup(app)
    assert answer["type"] == "lifespan.startup.failed"
    assert "route 'GET /nowhere' is not a route of the app" in answer["message"]


def test_describe_lists_what_a_copy_may_answer() -> None:
    layer = TimeoutMiddleware(make_app(Script()), fallback=StaleIfError())
    answers = layer.describe("GET", "/items").answers
    assert [(a.status, a.reason, a.headers) for a in answers] == [
        (504, "timeout", ()),
        (200, "stale-if-error", ("Cache-Status", "Age")),
    ]


def test_cache_control_is_read_leniently_where_it_matters() -> None:
    assert cache_control([b"max-age=60, stale-if-error=300", b"PUBLIC"]) == {
        "max-age": "60",
        "stale-if-error": "300",
        "public": None,
    }
    assert "private" in cache_control([b"private foo, max-age=5"])
    assert cache_control([b'no-cache="set-cookie, x"'])["no-cache"] == "set-cookie, x"
    assert cache_control([b",,  ,"]) == {}


def test_keys_leave_no_room_for_a_crafted_collision() -> None:
    assert primary_key("s", b"ab", b"/c", b"", b"-") != primary_key("s", b"a", b"b/c", b"", b"-")
    names = [b"x-a"]
    absent = variant_key("k", names, [])
    empty = variant_key("k", names, [(b"x-a", b"")])
    assert absent != empty
    assert variant_key("k", names, [(b"x-a", b"1"), (b"x-a", b"2")]) != variant_key(
        "k", names, [(b"x-a", b"1,2")]
    )
