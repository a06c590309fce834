"""The request's deadline bounds the waits of authentication: a JWKS fetch, a key lookup."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from typing import Any

import pytest
from starlette.applications import Starlette

from apiguard import APIKeyAuth, AuthMiddleware, JWTAuth, Principal
from apiguard.testing import SigningKey
from tests._layers import DeadlineLayer
from tests.auth._helpers import AUDIENCE, bearer, call, claims, routes
from tests.auth._keyserver import KeyServer, settle

pytestmark = [pytest.mark.anyio, pytest.mark.slow]


@pytest.fixture
def slow_keys(rs256: SigningKey) -> Iterator[KeyServer]:
    """A key server that takes 3 s to answer."""
    server = KeyServer(rs256).start()
    server.delay = 3.0
    yield server
    server.stop()


def behind_deadline(seconds: float, *authenticators: Any) -> DeadlineLayer:
    app = AuthMiddleware(Starlette(routes=routes()), authenticators=list(authenticators))
    return DeadlineLayer(app, seconds=seconds)


def cause(app: DeadlineLayer) -> Any:
    (decision,) = app.contexts[-1].decisions_of("auth")
    return decision.status, (decision.attributes or {}).get("auth.cause")


async def test_a_jwks_fetch_is_cut_at_the_deadline_and_goes_on_for_others(
    slow_keys: KeyServer, rs256: SigningKey
) -> None:
    """This request waits 0.3 s, not 3 (or the fetch's 5 s timeout); the fetch ends anyway."""
    auth = JWTAuth(
        jwks_url=slow_keys.jwks_url, algorithms=["RS256"], audience=AUDIENCE, timeout=5.0
    )
    app = behind_deadline(0.3, auth)
    token = bearer(rs256.token(claims()))
    started = time.monotonic()
    response = await call(app, headers=token)
    assert time.monotonic() - started < 2.5  # before the key server answers
    assert response.status_code == 503
    assert cause(app) == (503, "deadline")
    await settle(auth)  # the shared fetch was not cancelled with the request
    assert (await call(app, headers=token)).status_code == 200
    assert slow_keys.fetches == 1


async def test_a_cached_token_is_served_whatever_the_deadline(
    slow_keys: KeyServer, rs256: SigningKey
) -> None:
    auth = JWTAuth(
        jwks_url=slow_keys.jwks_url, algorithms=["RS256"], audience=AUDIENCE, timeout=5.0
    )
    token = bearer(rs256.token(claims()))
    assert (await call(behind_deadline(10.0, auth), headers=token)).status_code == 200
    assert (await call(behind_deadline(0.0, auth), headers=token)).status_code == 200


async def test_an_api_key_lookup_is_cut_at_the_deadline() -> None:
    async def lookup(key: str) -> Principal:
        await asyncio.sleep(5)
        return Principal(id="partner")

    app = behind_deadline(0.3, APIKeyAuth(lookup=lookup, timeout=10.0))
    started = time.monotonic()
    response = await call(app, headers={"x-api-key": "k-0123456789"})
    assert time.monotonic() - started < 3.0
    assert response.status_code == 503
    assert cause(app) == (503, "deadline")


async def test_the_lookup_timeout_applies_when_it_is_shorter() -> None:
    async def lookup(key: str) -> Principal:
        await asyncio.sleep(5)
        return Principal(id="partner")

    app = behind_deadline(30.0, APIKeyAuth(lookup=lookup, timeout=0.2))
    response = await call(app, headers={"x-api-key": "k-0123456789"})
    assert response.status_code == 503
    assert cause(app) == (503, "lookup_failed")
