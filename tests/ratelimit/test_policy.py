"""Limits as written to policies: quotas and windows that the header fields can carry."""

from __future__ import annotations

from typing import Any

import pytest

from apiguard import ConfigError
from apiguard.ratelimit import RateLimitMiddleware
from tests.ratelimit._helpers import client, limited_app, parse_list

pytestmark = pytest.mark.anyio

#: RFC 9651 §3.3.1: a Structured Field integer has at most 15 digits.
LARGEST = 999_999_999_999_999


async def _never(*args: Any) -> Any:
    raise AssertionError("not called")


@pytest.mark.parametrize(
    ("options", "match"),
    [
        pytest.param(
            {"limit": "1000000000000000/second"},
            r"RateLimitMiddleware\[name='default'\]: limit '1000000000000000/second' allows \d+",
            id="quota",
        ),
        pytest.param(
            {"limit": "10/second; 10000000000000000000/hour"},
            r"limit '10/second; 10000000000000000000/hour' allows 10000000000000000000 requests",
            id="second-of-two",
        ),
        pytest.param(
            {"limit": "1/1000000000000000 seconds"},
            r"limit '1/1000000000000000 seconds' has a window of 1000000000000000 seconds",
            id="window",
        ),
        pytest.param(
            {"limit": "1/100000000 years"},
            r"limit '1/100000000 years' has a window of \d{16,} seconds",
            id="window-in-years",
        ),
        pytest.param(
            {"limit": "1/second", "plans": {"pro": "1000000000000000/day"}},
            r"plans\['pro'\] '1000000000000000/day' allows",
            id="plan",
        ),
        pytest.param(
            {"limit": "1/second", "routes": {"/orders": "1000000000000000/minute"}},
            r"routes\['/orders'\] '1000000000000000/minute' allows",
            id="route",
        ),
    ],
)
def test_a_quota_or_window_over_15_digits_fails_at_construction(
    options: dict[str, Any], match: str
) -> None:
    """RateLimit-Policy's `q` and `w` are sf-integers: at most 15 digits (RFC 9651 §3.3.1)."""
    with pytest.raises(ConfigError, match=match) as raised:
        RateLimitMiddleware(_never, **options)
    assert "15 digits" in str(raised.value)


async def test_the_largest_quota_and_window_are_served_as_sf_integers() -> None:
    app = limited_app(limit=f"{LARGEST}/{LARGEST} seconds")
    async with client(app) as http:
        response = await http.get("/orders")
    assert response.status_code == 200
    policy = parse_list(response.headers["ratelimit-policy"])
    assert policy == {"default-0": {"q": LARGEST, "w": LARGEST}}
    assert parse_list(response.headers["ratelimit"])["default-0"]["r"] == LARGEST - 1
