"""`errors.redact`: passwords in URIs never reach a repr, an error message or a log."""

from __future__ import annotations

import logging

import pytest

from apiguard import ConfigError, RateLimitMiddleware
from apiguard.errors import redact
from apiguard.storage import open_store
from tests._servers import free_port
from tests.ratelimit._helpers import client, limited_app


@pytest.mark.parametrize(
    ("value", "shown"),
    [
        pytest.param("redis://:hunter2@cache:6379/0", "redis://:***@cache:6379/0", id="password"),
        pytest.param("redis://user:pw@cache", "redis://user:***@cache", id="user-and-password"),
        pytest.param("redis://:p@ss@cache:6379", "redis://:***@cache:6379", id="one-at"),
        pytest.param("redis://user:a@b@cache", "redis://user:***@cache", id="user-one-at"),
        pytest.param("redis://:a@b@c@cache/0", "redis://:***@cache/0", id="two-ats"),
        pytest.param("redis://:@@@cache", "redis://:***@cache", id="only-ats"),
        pytest.param("redis://user:p:w@cache", "redis://user:***@cache", id="colon"),
        pytest.param("redis://:p%40s%2Fs%3A@cache", "redis://:***@cache", id="percent-encoded"),
        pytest.param(
            "redis+sentinel://:p@ss@s1:26379,s2:26379/mymaster",
            "redis+sentinel://:***@s1:26379,s2:26379/mymaster",
            id="sentinel-hosts",
        ),
        pytest.param(
            "redis://cache:6379?password=p@ss&db=1",
            "redis://cache:6379?password=***&db=1",
            id="query-password",
        ),
        pytest.param(
            "rediss://cache/0?db=1&ssl_password=a@b:c",
            "rediss://cache/0?db=1&ssl_password=***",
            id="query-ssl-password",
        ),
        pytest.param("redis://cache:6379/0", "redis://cache:6379/0", id="no-password"),
        pytest.param("redis://user@cache:6379", "redis://user@cache:6379", id="user-only"),
        pytest.param("https://id.example/u/@me", "https://id.example/u/@me", id="at-in-path"),
        pytest.param(
            "https://id.example/jwks?next=a@b", "https://id.example/jwks?next=a@b", id="at-in-query"
        ),
        pytest.param("memory://", "memory://", id="memory"),
    ],
)
def test_a_password_is_masked_whatever_it_holds(value: str, shown: str) -> None:
    assert redact(value) == repr(shown)


def test_several_uris_in_one_message_are_each_masked() -> None:
    message = (
        "redis://:p@ss1@a:6379,redis://u:p@ss2@b/0 and 'rediss://:p@ss3@c' "
        "then redis://d?password=p@ss4"
    )
    shown = redact(message)
    for secret in ("p@ss1", "p@ss2", "p@ss3", "p@ss4", "ss1", "ss2", "ss3", "ss4"):
        assert secret not in shown
    assert shown == repr(
        "redis://:***@a:6379,redis://u:***@b/0 and 'rediss://:***@c' then redis://d?password=***"
    )


@pytest.mark.parametrize(
    ("value", "shown"),
    [
        pytest.param(42, "42", id="int"),
        pytest.param(None, "None", id="none"),
        pytest.param(b"redis://:p@ss@cache", "b'redis://:***@cache'", id="bytes"),
        pytest.param(
            ["redis://:p@ss@a", "redis://b"], "['redis://:***@a', 'redis://b']", id="list"
        ),
        pytest.param({"url": "redis://u:p@ss@a"}, "{'url': 'redis://u:***@a'}", id="dict"),
    ],
)
def test_values_other_than_strings_are_masked_in_their_repr(value: object, shown: str) -> None:
    assert redact(value) == shown


def test_a_store_repr_hides_a_password_with_an_at() -> None:
    store = open_store("redis://:p@ss@cache:6379/0")
    assert repr(store) == "RedisStore('redis://:***@cache:6379/0')"


@pytest.mark.parametrize(
    "uri",
    [
        pytest.param("redis://:h@nter2@cache:port", id="bad-port"),
        pytest.param("nosuch://u:h@nter2@cache", id="unknown-scheme"),
    ],
)
def test_a_config_error_hides_a_password_with_an_at(uri: str) -> None:
    with pytest.raises(ConfigError, match="storage") as caught:
        RateLimitMiddleware(lambda *_: None, limit="1/second", storage=uri)
    message = str(caught.value)
    assert "h@" not in message
    assert "nter2" not in message
    assert "***@cache" in message


@pytest.mark.anyio
@pytest.mark.usefixtures("close_stores")
async def test_the_store_log_hides_a_password_with_an_at(caplog: pytest.LogCaptureFixture) -> None:
    """A store that cannot be reached is logged under its URI, password masked."""
    url = f"redis://:p@ss@127.0.0.1:{free_port()}/0"  # nothing listens there
    app = limited_app(limit="5/minute", storage=url, store_timeout=2.0)
    with caplog.at_level(logging.WARNING, logger="apiguard.storage"):
        async with client(app) as http:
            assert (await http.get("/orders")).status_code == 200  # fail-open by default
    assert "failed" in caplog.text
    assert "p@ss" not in caplog.text
    assert f"redis://:***@127.0.0.1:{url.rpartition(':')[2]}" in caplog.text
