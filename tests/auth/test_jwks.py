"""JWKS against a real key server on loopback: rotation, floods, outages, discovery."""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from starlette.applications import Starlette

from apiguard import APIKeyAuth, JWTAuth, Principal
from apiguard.auth.jwks import RemoteKeys, cache_seconds
from apiguard.breaker import Transition, listen
from apiguard.testing import FrozenClock, SigningKey, generate_key, jwks
from tests._lifespan import startup
from tests._servers import ThreadedUvicorn, free_port
from tests.auth._helpers import AUDIENCE, bearer, call, claims, make_app
from tests.auth._keyserver import KeyServer, settle

pytestmark = [pytest.mark.anyio, pytest.mark.slow]


@pytest.fixture
def server(rs256: SigningKey) -> Iterator[KeyServer]:
    key_server = KeyServer(rs256).start()
    yield key_server
    key_server.stop()


@pytest.fixture
def frozen() -> Iterator[FrozenClock]:
    with FrozenClock() as clock:
        yield clock


def remote(url: str, **options: Any) -> JWTAuth:
    settings: dict[str, Any] = {
        "jwks_url": url,
        "algorithms": ["RS256"],
        "audience": AUDIENCE,
        "timeout": 2.0,
        **options,
    }
    return JWTAuth(**settings)


def remote_keys(auth: JWTAuth) -> RemoteKeys:
    keys = auth.keys
    assert isinstance(keys, RemoteKeys)
    return keys


async def ok(app: Starlette, key: SigningKey, **extra: Any) -> int:
    return (await call(app, headers=bearer(key.token(claims(**extra))))).status_code


async def test_keys_are_fetched_on_first_use_then_served_from_cache(
    server: KeyServer, rs256: SigningKey, frozen: FrozenClock
) -> None:
    auth = remote(server.jwks_url)
    app = make_app(auth)
    assert server.fetches == 0  # nothing at construction
    for n in range(5):
        assert await ok(app, rs256, jti=str(n)) == 200
    assert server.fetches == 1
    assert remote_keys(auth).fetches == 1


async def test_rotation_is_picked_up_with_one_fetch(
    server: KeyServer, rs256: SigningKey, other_rs256: SigningKey, frozen: FrozenClock
) -> None:
    """A token signed by a new key: its kid is fetched once, then served from cache."""
    app = make_app(remote(server.jwks_url))
    assert await ok(app, rs256) == 200
    server.keys = [rs256, other_rs256]  # the identity provider rotates
    assert await ok(app, other_rs256) == 200
    assert server.fetches == 2
    for n in range(5):
        assert await ok(app, other_rs256, jti=str(n)) == 200
        assert await ok(app, rs256, jti=str(n)) == 200
    assert server.fetches == 2


async def test_a_flood_of_unknown_kids_costs_one_fetch_per_interval(
    server: KeyServer, rs256: SigningKey, frozen: FrozenClock
) -> None:
    auth = remote(server.jwks_url, jwks_min_refresh_interval=30)
    app = make_app(auth)
    assert await ok(app, rs256) == 200
    attacker = generate_key("RS256")

    def forged(n: int) -> dict[str, str]:
        return bearer(attacker.token(claims(), headers={"kid": f"random-kid-{n}"}))

    statuses = [(await call(app, headers=forged(n))).status_code for n in range(40)]
    flood = await asyncio.gather(*(call(app, headers=forged(n)) for n in range(40, 100)))
    statuses += [response.status_code for response in flood]
    assert set(statuses) == {401}
    assert server.fetches == 2  # the first fetch, and one refresh for the whole flood
    frozen.advance(31)
    for n in range(100, 120):
        assert (await call(app, headers=forged(n))).status_code == 401
    await settle(auth)
    assert server.fetches == 3
    assert await ok(app, rs256, jti="still-good") == 200


async def test_concurrent_requests_share_one_fetch(
    server: KeyServer, rs256: SigningKey, frozen: FrozenClock
) -> None:
    server.delay = 0.3
    app = make_app(remote(server.jwks_url))
    tokens = [bearer(rs256.token(claims(jti=str(n)))) for n in range(20)]
    responses = await asyncio.gather(*(call(app, headers=headers) for headers in tokens))
    assert [r.status_code for r in responses] == [200] * 20
    assert server.fetches == 1


async def test_a_key_leaving_the_set_drops_its_cached_tokens(
    server: KeyServer, rs256: SigningKey, other_rs256: SigningKey, frozen: FrozenClock
) -> None:
    server.keys = [rs256, other_rs256]
    server.cache_control = "max-age=60"
    auth = remote(server.jwks_url)
    app = make_app(auth)
    kept, dropped = bearer(rs256.token(claims())), bearer(other_rs256.token(claims()))
    assert (await call(app, headers=kept)).status_code == 200
    assert (await call(app, headers=dropped)).status_code == 200
    server.keys = [rs256]  # other_rs256 is revoked
    frozen.advance(61)
    assert (await call(app, headers=kept)).status_code == 200  # stale: refresh in background
    await settle(auth)
    assert server.fetches == 2
    assert (await call(app, headers=dropped)).status_code == 401
    assert (await call(app, headers=kept)).status_code == 200


async def test_cached_keys_keep_working_when_the_key_server_stops(
    server: KeyServer, rs256: SigningKey, frozen: FrozenClock
) -> None:
    auth = remote(server.jwks_url)
    app = make_app(auth)
    assert await ok(app, rs256) == 200
    server.stop()
    frozen.advance(3600)  # long past the cache TTL
    for n in range(3):
        assert await ok(app, rs256, jti=f"new-{n}") == 200  # never seen: verified anew
        await settle(auth)
    assert remote_keys(auth).failures >= 1


@pytest.mark.parametrize(
    "breakage",
    [
        pytest.param({"status": 500}, id="http-500"),
        pytest.param({"body": b"<html>"}, id="not-json"),
        pytest.param({"body": b'{"keys": []}'}, id="no-keys"),
        pytest.param({"body": b'{"keys": [{"kty": "RSA", "use": "enc"}]}'}, id="no-usable-key"),
        pytest.param({"body": b'{"keys": [], "keys": []}'}, id="duplicate-members"),
        pytest.param({"body": b" " * 1_100_000}, id="too-large"),
    ],
)
async def test_a_broken_key_set_keeps_the_last_good_one(
    server: KeyServer, rs256: SigningKey, frozen: FrozenClock, breakage: dict[str, Any]
) -> None:
    auth = remote(server.jwks_url)
    app = make_app(auth)
    assert await ok(app, rs256) == 200
    for name, value in breakage.items():
        setattr(server, name, value)
    frozen.advance(301)
    assert await ok(app, rs256, jti="1") == 200
    await settle(auth)
    assert await ok(app, rs256, jti="2") == 200
    assert (server.fetches, remote_keys(auth).failures) == (2, 1)


async def test_a_key_set_with_a_lone_surrogate_is_refused(
    server: KeyServer, rs256: SigningKey, frozen: FrozenClock
) -> None:
    """Not I-JSON (RFC 7493 §2.1): refused like any broken set; the last good one stays."""
    auth = remote(server.jwks_url)
    app = make_app(auth)
    assert await ok(app, rs256) == 200
    document = jwks(rs256)
    document["keys"][0]["x-note"] = "\ud800"
    server.body = json.dumps(document).encode()  # ASCII: the surrogate as an escape
    assert b"\\ud800" in server.body
    frozen.advance(301)
    assert await ok(app, rs256, jti="1") == 200
    await settle(auth)
    assert (server.fetches, remote_keys(auth).failures) == (2, 1)


async def test_the_service_starts_and_serves_while_the_key_server_is_down(
    rs256: SigningKey, frozen: FrozenClock
) -> None:
    port = free_port()  # nothing listens there yet
    jwt_auth = remote(f"http://127.0.0.1:{port}/jwks.json")
    app = make_app(jwt_auth, APIKeyAuth(keys={"k-123456789": Principal(id="partner")}))
    assert (await startup(app))["type"] == "lifespan.startup.complete"
    assert (await call(app, headers={"x-api-key": "k-123456789"})).status_code == 200
    refused = await call(app, headers=bearer(rs256.token(claims())))
    assert refused.status_code == 503  # fail closed: no keys to verify with, not a 401
    assert refused.headers["retry-after"] == "5"
    key_server = KeyServer(rs256, port=port).start()
    try:
        frozen.advance(1)  # a failed first fetch is retried at most once a second
        assert await ok(app, rs256) == 200
    finally:
        key_server.stop()


async def test_a_failing_key_server_is_asked_less_and_less_often_and_logged_once(
    rs256: SigningKey, frozen: FrozenClock, caplog: pytest.LogCaptureFixture
) -> None:
    """The fetcher's breaker: 1, 2, 4 s between fetches; a warning when it fails and when back."""
    caplog.set_level(logging.WARNING, "apiguard.auth")
    port = free_port()  # nothing listens there yet
    auth = remote(f"http://127.0.0.1:{port}/jwks.json")
    keys = remote_keys(auth)
    app = make_app(auth)
    heard: list[Transition] = []
    stop = listen(heard.append)
    try:
        assert await ok(app, rs256) == 503
        fetched = [keys.fetches]
        for wait in (1.0, 2.0):
            frozen.advance(wait / 2)
            assert await ok(app, rs256) == 503  # the breaker is open: no fetch
            frozen.advance(wait / 2)
            assert await ok(app, rs256) == 503  # its probe: one fetch, failing
            fetched.append(keys.fetches)
        assert fetched == [1, 2, 3]
        assert keys.breaker.retry_after() == 4.0
        key_server = KeyServer(rs256, port=port).start()
        try:
            frozen.advance(4.0)
            assert await ok(app, rs256) == 200
        finally:
            key_server.stop()
    finally:
        stop()
    assert [(t.layer, t.state) for t in heard] == [
        ("jwks", "open"),
        ("jwks", "half-open"),
        ("jwks", "open"),
        ("jwks", "half-open"),
        ("jwks", "open"),
        ("jwks", "half-open"),
        ("jwks", "closed"),
    ]
    lines = [r.getMessage() for r in caplog.records]
    assert len(lines) == 2  # once when the outage starts, once when it ends
    assert "failed (ConnectError" in lines[0]
    assert "again after 3 failed fetches" in lines[1]


@pytest.mark.parametrize("lifespan", ["on", "auto"])
def test_uvicorn_starts_while_the_key_server_is_down(lifespan: str) -> None:
    app = make_app(
        remote(f"http://127.0.0.1:{free_port()}/jwks.json"),
        APIKeyAuth(keys={"k-123456789": Principal(id="partner")}),
    )
    with ThreadedUvicorn(app, lifespan=lifespan) as server:
        response = httpx.get(server.url + "/me", headers={"x-api-key": "k-123456789"})
        assert response.status_code == 200


async def test_a_hanging_key_server_costs_at_most_the_timeout(
    server: KeyServer, rs256: SigningKey
) -> None:
    server.delay = 1.5  # answers, but long after the timeout
    app = make_app(remote(server.jwks_url, timeout=0.2))
    started = time.monotonic()
    assert await ok(app, rs256) == 503
    assert time.monotonic() - started < 1


async def test_cache_control_max_age_is_honoured_within_bounds(
    server: KeyServer, rs256: SigningKey, frozen: FrozenClock
) -> None:
    server.cache_control = "public, max-age=600"
    auth = remote(server.jwks_url)
    app = make_app(auth)
    assert await ok(app, rs256) == 200
    frozen.advance(599)
    assert await ok(app, rs256, jti="1") == 200
    await settle(auth)
    assert server.fetches == 1
    frozen.advance(2)
    assert await ok(app, rs256, jti="2") == 200
    await settle(auth)
    assert server.fetches == 2


@pytest.mark.parametrize(
    ("header", "seconds"),
    [
        (None, 300.0),
        ("max-age=600", 600.0),
        ('public, max-age="120"', 120.0),
        ("max-age=5", 30.0),
        ("no-store", 30.0),
        ("no-cache, max-age=600", 30.0),
        ("max-age=99999999", 86_400.0),
        ("s-maxage=600", 300.0),
    ],
)
def test_cache_seconds(header: str | None, seconds: float) -> None:
    assert cache_seconds(header, 300.0, 30.0) == seconds


async def test_openid_connect_discovery_from_the_issuer(
    server: KeyServer, rs256: SigningKey, frozen: FrozenClock
) -> None:
    auth = JWTAuth(issuer=server.issuer, algorithms=["RS256"], audience=AUDIENCE)
    app = make_app(auth)
    for n in range(3):
        assert await ok(app, rs256, iss=server.issuer, jti=str(n)) == 200
    assert (server.discoveries, server.fetches) == (1, 1)
    assert await ok(app, rs256, iss="https://elsewhere.example/") == 401


async def test_discovery_naming_another_issuer_is_refused(
    server: KeyServer, rs256: SigningKey, frozen: FrozenClock
) -> None:
    """OIDC Discovery §4.3: the document's issuer must be the one asked for."""
    server.discovered_issuer = "https://evil.example/"
    app = make_app(JWTAuth(issuer=server.issuer, algorithms=["RS256"], audience=AUDIENCE))
    assert await ok(app, rs256, iss=server.issuer) == 503
    assert server.fetches == 0


async def test_use_key_ops_and_alg_of_each_jwk_are_respected(
    server: KeyServer, keys: dict[str, SigningKey], frozen: FrozenClock,
    caplog: pytest.LogCaptureFixture,
) -> None:  # fmt: skip
    for_encryption = generate_key("RS256", kid="enc")
    sign_only = generate_key("RS256", kid="sign-only")
    ps_only = generate_key("RS256", kid="ps-only")
    good = generate_key("RS256", kid="good")
    document = {
        "keys": [
            {**for_encryption.public_jwk(), "use": "enc"},
            {**sign_only.public_jwk(), "key_ops": ["sign"]},
            {**ps_only.public_jwk(), "alg": "PS256"},
            {**good.public_jwk(), "key_ops": ["verify"]},
        ]
    }
    server.document = document
    app = make_app(remote(server.jwks_url, algorithms=["RS256", "PS256"]))
    assert await ok(app, good) == 200
    assert await ok(app, for_encryption) == 401
    assert await ok(app, sign_only) == 401
    assert await ok(app, ps_only) == 401  # an RS256 token; the JWK allows PS256 only
    assert "use is 'enc'" in caplog.text
    assert "key_ops does not include 'verify'" in caplog.text
