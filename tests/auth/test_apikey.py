"""APIKeyAuth: keys by digest, bad keys refused, the lookup, constant time by construction."""

from __future__ import annotations

import asyncio
import hashlib
import sys
from collections.abc import Iterator
from types import FrameType
from typing import Any

import pytest

from apiguard import APIKeyAuth, ConfigError, Principal
from apiguard.auth import apikey as apikey_module
from apiguard.auth._base import Failure, Grant
from apiguard.auth.apikey import key_digest
from apiguard.testing import FrozenClock
from tests.auth._helpers import call, challenges, make_app, raw_call

pytestmark = pytest.mark.anyio

KEY = "k-9f2c4e7a1b8d3f6a0c5e"
PARTNER = Principal(id="partner", plan="pro", scopes=["orders:read"])


def auth(**options: Any) -> APIKeyAuth:
    return APIKeyAuth(**{"keys": {KEY: PARTNER}, **options})


async def test_valid_key_gives_its_principal_with_plan_and_method() -> None:
    response = await call(make_app(auth()), headers={"x-api-key": KEY})
    assert response.status_code == 200
    body = response.json()
    assert (body["name"], body["plan"], body["method"], body["scopes"]) == (
        "partner",
        "pro",
        "api_key",
        ["orders:read"],
    )
    assert body["decisions"] == [["auth", "allow", "auth", None, "api_key"]]


@pytest.mark.parametrize(
    "value",
    [
        pytest.param(b"k-9f2c4e7a1b8d3f6a0c5f", id="wrong-last-character"),
        pytest.param(b"x" * 22, id="wrong"),
        pytest.param(b"", id="empty"),
        pytest.param(b"k" * 257, id="overlong"),
        pytest.param("k-9f2c4e7a1b8d3f6a0c5é".encode(), id="non-ascii-utf8"),
        pytest.param(b"k-9f2c4e7a1b8d3f6a0c5\xff", id="non-ascii-byte"),
        pytest.param(b"k-9f2c4e7a1b8d3f6a0c5e\x00", id="nul"),
        pytest.param(KEY.upper().encode(), id="other-case"),
        pytest.param(KEY[:-1].encode(), id="prefix"),
        pytest.param(KEY.encode() + b"e", id="longer"),
    ],
)
async def test_bad_keys_get_401_with_the_key_challenge(value: bytes) -> None:
    status, headers, body = await raw_call(make_app(auth()), [(b"x-api-key", value)])
    assert status == 401
    assert (b"www-authenticate", b'ApiKey realm="api"') in headers
    assert KEY.encode() not in body


async def test_a_key_with_inner_whitespace_is_a_malformed_request() -> None:
    status, _, _ = await raw_call(make_app(auth()), [(b"x-api-key", b"k-9f2c4e7a 1b8d3f6a0c5e")])
    assert status == 400


async def test_a_key_sent_twice_is_a_malformed_request() -> None:
    app = make_app(auth(scheme="ApiKey"))
    twice = [("x-api-key", KEY), ("x-api-key", KEY)]
    assert (await call(app, headers=twice)).status_code == 400
    both = {"x-api-key": KEY, "authorization": f"ApiKey {KEY}"}
    assert (await call(app, headers=both)).status_code == 400


async def test_authorization_scheme() -> None:
    app = make_app(auth(header=None, scheme="ApiKey"))
    assert (await call(app, headers={"authorization": f"apikey {KEY}"})).status_code == 200
    assert (await call(app, headers={"x-api-key": KEY})).status_code == 401
    response = await call(app)
    assert challenges(response) == ['ApiKey realm="api"']


async def test_keys_as_bearer_tokens_get_rfc_6750_codes() -> None:
    """`scheme="Bearer"` for opaque keys sent as bearer tokens (no JWTAuth then)."""
    app = make_app(auth(header=None, scheme="Bearer"))
    assert (await call(app, headers={"authorization": f"Bearer {KEY}"})).status_code == 200
    response = await call(app, headers={"authorization": "Bearer nope-nope-nope"})
    assert challenges(response) == ['Bearer realm="api", error="invalid_token"']


async def test_custom_header() -> None:
    app = make_app(auth(header="X-Partner-Key"))
    assert (await call(app, headers={"x-partner-key": KEY})).status_code == 200


# --- the lookup -----------------------------------------------------------------------


class Store:
    """A database of API keys held as digests, as the docs recommend."""

    def __init__(self) -> None:
        self.rows = {key_digest(KEY): PARTNER}
        self.queries = 0

    async def find(self, key: str) -> Principal | None:
        self.queries += 1
        await asyncio.sleep(0)
        return self.rows.get(key_digest(key))


async def test_lookup_finds_keys_and_caches_them_for_cache_ttl() -> None:
    store = Store()
    app = make_app(APIKeyAuth(lookup=store.find, cache_ttl=60))
    with FrozenClock() as frozen:
        for _ in range(3):
            assert (await call(app, headers={"x-api-key": KEY})).status_code == 200
        assert store.queries == 1
        frozen.advance(61)
        assert (await call(app, headers={"x-api-key": KEY})).status_code == 200
        assert store.queries == 2


async def test_lookup_misses_are_401_and_not_cached() -> None:
    store = Store()
    app = make_app(APIKeyAuth(lookup=store.find))
    for _ in range(2):
        assert (await call(app, headers={"x-api-key": "k-unknown-0000"})).status_code == 401
    assert store.queries == 2


async def test_static_keys_are_tried_before_the_lookup() -> None:
    store = Store()
    app = make_app(APIKeyAuth(keys={"k-static-123": Principal(id="admin")}, lookup=store.find))
    assert (await call(app, headers={"x-api-key": "k-static-123"})).json()["name"] == "admin"
    assert store.queries == 0
    assert (await call(app, headers={"x-api-key": KEY})).json()["name"] == "partner"


async def test_sync_lookup_works_too() -> None:
    app = make_app(APIKeyAuth(lookup=lambda key: PARTNER if key == KEY else None))
    assert (await call(app, headers={"x-api-key": KEY})).status_code == 200


@pytest.mark.parametrize(
    "lookup",
    [
        pytest.param(lambda key: 1 / 0, id="raises"),
        pytest.param(lambda key: asyncio.sleep(10), id="hangs"),
        pytest.param(lambda key: "partner", id="returns-a-string"),
    ],
)
async def test_failing_lookup_is_503_fail_closed(
    lookup: Any, caplog: pytest.LogCaptureFixture
) -> None:
    app = make_app(APIKeyAuth(lookup=lookup, timeout=0.05))
    response = await call(app, headers={"x-api-key": KEY})
    assert response.status_code == 503
    assert response.headers["retry-after"] == "5"
    assert KEY not in caplog.text


async def test_invalid_keys_never_reach_the_lookup() -> None:
    store = Store()
    app = make_app(APIKeyAuth(lookup=store.find, max_key_bytes=32))
    for value in [b"", b"k" * 33, "clé".encode()]:
        status, _, _ = await raw_call(app, [(b"x-api-key", value)])
        assert status == 401
    assert store.queries == 0


async def test_clear_cache_forgets_looked_up_keys() -> None:
    store = Store()
    authenticator = APIKeyAuth(lookup=store.find)
    app = make_app(authenticator)
    await call(app, headers={"x-api-key": KEY})
    store.rows.clear()  # revoked
    authenticator.clear_cache()
    assert (await call(app, headers={"x-api-key": KEY})).status_code == 401


# --- constant time, by construction ---------------------------------------------------


def _objects(root: object) -> Iterator[object]:
    """Everything reachable from `root`'s attributes and containers."""
    seen: set[int] = set()
    stack = [root]
    while stack:
        item = stack.pop()
        if id(item) in seen:
            continue
        seen.add(id(item))
        yield item
        if isinstance(item, dict):
            stack += [*item.keys(), *item.values()]
        elif isinstance(item, list | tuple | set | frozenset):
            stack += list(item)
        elif hasattr(item, "__slots__") or hasattr(item, "__dict__"):
            names = list(getattr(item, "__dict__", {}))
            for cls in type(item).__mro__:
                names += list(getattr(cls, "__slots__", ()))
            stack += [getattr(item, name) for name in names if hasattr(item, name)]


def test_keys_are_held_only_as_sha256_digests() -> None:
    """Nothing reachable from the authenticator is the key, in any form."""
    authenticator = auth()
    reachable = list(_objects(authenticator))
    assert KEY not in reachable
    assert KEY.encode() not in reachable
    assert hashlib.sha256(KEY.encode()).digest() in reachable
    assert all(len(d) == 32 for d in authenticator._grants)


def _trace(authenticator: APIKeyAuth, value: bytes) -> list[int]:
    """The lines of apikey.py executed while checking `value`."""
    lines: list[int] = []
    target = apikey_module.__file__

    def tracer(frame: FrameType, event: str, arg: Any) -> Any:
        if frame.f_code.co_filename == target and event == "line":
            lines.append(frame.f_lineno)
        return tracer

    sys.settrace(tracer)
    try:
        result = authenticator.check(value)
    finally:
        sys.settrace(None)
    assert isinstance(result, Failure)
    return lines


def test_near_and_far_misses_take_the_same_code_path() -> None:
    """No per-key loop, no early-exit compare: a one-character miss runs what a far miss runs.

    A statistical timing test would be flaky on a shared machine; this checks
    the mechanism. What remains is one SHA-256 of the presented key and one
    dict lookup of its digest, whose cost does not depend on any stored key.
    """
    authenticator = APIKeyAuth(keys={KEY: PARTNER, "k-" + "0" * 20: Principal(id="other")})
    near = _trace(authenticator, KEY[:-1].encode() + b"f")
    far = _trace(authenticator, b"z" * len(KEY))
    assert near == far
    assert near  # the tracer saw the lines it compares
    assert isinstance(authenticator.check(KEY.encode()), Grant)


class _NoIteration(dict[bytes, Grant]):
    """A dict that fails the test if anyone walks its keys."""

    def __iter__(self) -> Any:
        raise AssertionError("walked the stored keys")

    keys = values = items = __iter__  # type: ignore[assignment]


def test_a_key_is_found_by_one_lookup_never_a_walk_over_the_keys() -> None:
    authenticator = auth()
    authenticator._grants = _NoIteration(authenticator._grants)
    assert isinstance(authenticator.check(KEY.encode()), Grant)
    assert isinstance(authenticator.check(KEY[:-1].encode() + b"f"), Failure)
    assert isinstance(authenticator.check(b"z" * 40), Failure)


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"keys": None}, "keys or lookup: give the keys"),
        ({"keys": [KEY]}, "keys: expected a mapping of key to Principal"),
        ({"keys": {KEY: "partner"}}, "the principal of key #0 is not a Principal"),
        ({"keys": {"": PARTNER}}, "key #0 is not a non-empty string of visible ASCII"),
        ({"keys": {"with space": PARTNER}}, "key #0 is not a non-empty string"),
        ({"keys": {"clé-secrète": PARTNER}}, "key #0 is not a non-empty string"),
        ({"keys": {"k" * 300: PARTNER}}, "key #0 is longer than max_key_bytes=256"),
        ({"keys": {KEY: PARTNER}, "lookup": 42}, "lookup: expected a callable"),
        ({"keys": {KEY: PARTNER}, "header": "Authorization"}, "use scheme='ApiKey'"),
        ({"keys": {KEY: PARTNER}, "header": "X Key"}, "header: 'X Key' is not a header name"),
        ({"keys": {KEY: PARTNER}, "scheme": "Api Key"}, "scheme: 'Api Key' is not an auth-scheme"),
        ({"keys": {KEY: PARTNER}, "header": None}, "header or scheme: give where"),
        ({"keys": {KEY: PARTNER}, "timeout": -1}, "timeout -1 is not a number of seconds"),
        ({"keys": {KEY: PARTNER}, "max_key_bytes": 4}, "max_key_bytes .* is not a whole number"),
    ],
)
def test_bad_options_are_refused_without_echoing_keys(
    options: dict[str, Any], message: str
) -> None:
    with pytest.raises(ConfigError, match=message) as raised:
        APIKeyAuth(**options)
    assert KEY not in str(raised.value)
    assert "secrète" not in str(raised.value)


def test_key_digest_is_the_hex_sha256() -> None:
    assert key_digest(KEY) == hashlib.sha256(KEY.encode()).hexdigest()
    assert key_digest(KEY.encode()) == key_digest(KEY)
