"""Keys fetched from a JWKS URL (or found by OpenID Connect discovery).

Fetched lazily with `httpx`, never in a constructor: the service starts (and
serves API keys and public routes) while the identity provider is down.
One fetch at a time: concurrent requests share it (single flight). The key
set is cached for the response's `Cache-Control: max-age` within bounds,
then refreshed in the background while the old set keeps serving. A token
with an unknown `kid` may trigger a refresh at most once per
`min_refresh_interval`, so a flood of random `kid`s costs the identity
provider one request per interval. When a fetch fails, the last good key set
stays in force, and the key server is asked again only when the fetcher's
breaker (the core's state machine, [`apiguard.breaker`][]) lets a probe
through: one second after the failure, doubling while it keeps failing, up
to 30 seconds; the outage is logged when it starts and when it ends.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import math
import re
from typing import Any, Final
from urllib.parse import urlsplit

import httpx

from apiguard._clock import clock
from apiguard.auth._jose import strict_loads
from apiguard.auth._keys import KeySet, parse_jwks
from apiguard.breaker import Breaker, BreakerPolicy
from apiguard.errors import ConfigError, redact

__all__ = ["RemoteKeys", "StaticKeys", "check_url"]

logger = logging.getLogger("apiguard.auth")

#: A JWK Set larger than this is refused (Entra's is ~10 KiB).
MAX_DOCUMENT_BYTES: Final = 1_048_576
#: Cache-Control max-age is honoured up to this many seconds.
MAX_CACHE_SECONDS: Final = 86_400.0
#: After a failed fetch the key server is asked again no sooner than this
#: (the breaker's first open time), doubled while fetches keep failing...
RETRY_WITHOUT_KEYS: Final = 1.0
#: ... up to this (a key server that is back is asked within it).
RETRY_CAP: Final = 30.0
_MAX_AGE: Final = re.compile(r"(?:^|[,\s])max-age\s*=\s*\"?(\d{1,10})", re.IGNORECASE)
_NO_CACHE: Final = re.compile(r"(?:^|[,\s])no-(?:store|cache)\b", re.IGNORECASE)


def check_url(option: str, url: object, *, allow_http: bool) -> str:
    """An https URL (http only on loopback, or when allowed), without credentials.

    Raises:
        ConfigError: anything else.
    """
    if not isinstance(url, str) or not url:
        msg = f"{option}: expected an https URL, got {redact(url)}"
        raise ConfigError(msg)
    parts = urlsplit(url)
    if parts.scheme not in ("https", "http") or not parts.hostname:
        msg = f"{option}: {redact(url)} is not an https URL"
        raise ConfigError(msg)
    if parts.username is not None or parts.password is not None:
        msg = f"{option}: {redact(url)} carries credentials; the key server must be public"
        raise ConfigError(msg)
    if parts.scheme == "http" and not allow_http and not _is_loopback(parts.hostname):
        msg = (
            f"{option}: {redact(url)} is plain http; keys fetched without TLS can be forged "
            "(use https, or allow_insecure_http=True inside a trusted network)"
        )
        raise ConfigError(msg)
    return url


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def cache_seconds(cache_control: str | None, default: float, low: float) -> float:
    """How long to keep a key set: its `max-age`, within `[low, MAX_CACHE_SECONDS]`."""
    seconds = default
    if cache_control:
        if _NO_CACHE.search(cache_control):
            seconds = 0.0
        else:
            found = _MAX_AGE.search(cache_control)
            if found is not None:
                seconds = float(found.group(1))
    return min(max(seconds, low), MAX_CACHE_SECONDS)


class StaticKeys:
    """Keys given in the configuration: always there, never refreshed."""

    remote = False
    expires_at = math.inf

    def __init__(self, keys: KeySet) -> None:
        self.current: KeySet | None = keys

    def poll(self) -> None:
        """Nothing to refresh."""


class RemoteKeys:
    """A JWK Set fetched from a URL, cached, refreshed, shared by one fetch at a time.

    Attributes:
        current: The key set in force, `None` until the first fetch succeeds.
        fetches: Requests made to the key server (JWKS and discovery),
            successful or not; for tests and telemetry.
        failures: Fetches that failed.
        breaker: The fetcher's breaker ([`Breaker`][apiguard.breaker.Breaker],
            layer `"jwks"`, named by the URL): a fetch goes only when it allows.
    """

    remote = True

    def __init__(
        self,
        *,
        algorithms: frozenset[str],
        jwks_url: str | None,
        issuer: str | None,
        timeout: float,
        cache_ttl: float,
        min_refresh_interval: float,
        allow_http: bool,
    ) -> None:
        self._algorithms = algorithms
        self._jwks_url = jwks_url
        self._issuer = issuer
        self._timeout = timeout
        self._cache_ttl = cache_ttl
        self._min_interval = min_refresh_interval
        self._allow_http = allow_http
        self.current: KeySet | None = None
        self.expires_at = -math.inf
        self._last_attempt = -math.inf
        self._last_kid_refresh = -math.inf
        self._inflight: asyncio.Task[None] | None = None
        self.fetches = 0
        self.failures = 0
        self._outage_started = 0.0
        # One failure opens it: a fetch that failed (or hung for `timeout`)
        # is not retried per request, whatever the traffic.
        policy = BreakerPolicy(
            window=None,
            consecutive_failures=1,
            open_seconds=RETRY_WITHOUT_KEYS,
            open_growth=2.0,
            max_open_seconds=RETRY_CAP,
            half_open_calls=1,
            probe_timeout=timeout + 1.0,
        )
        shown = redact(jwks_url or issuer)[1:-1]
        self.breaker = Breaker(policy, layer="jwks", name=shown, log=False)

    # -- the request path --------------------------------------------------------

    def poll(self) -> None:
        """Start a background refresh if the key set is stale and none was tried lately."""
        now = clock.monotonic()
        if now >= self.expires_at and now - self._last_attempt >= self._min_interval:
            self._start()

    async def load(self) -> KeySet | None:
        """The key set, fetching it first if none was ever fetched (`None` if that fails)."""
        if self.current is None:
            task = self._start()
            if task is not None:
                await asyncio.shield(task)
        return self.current

    def may_refresh_for_unknown_kid(self) -> bool:
        """Whether a token with an unknown `kid` would get a refresh now."""
        task = self._inflight
        if task is not None and not task.done():
            return True
        return (
            clock.monotonic() - self._last_kid_refresh >= self._min_interval
            and self.breaker.retry_after() == 0.0
        )

    async def refresh_for_unknown_kid(self) -> KeySet | None:
        """Refresh for a `kid` not in the set: join a fetch under way, or start one if allowed.

        Returns the key set after the refresh, or `None` when no refresh was
        allowed (the last one triggered by an unknown `kid` is too recent).
        """
        task = self._inflight
        if task is not None and not task.done():
            await asyncio.shield(task)
            return self.current
        now = clock.monotonic()
        if now - self._last_kid_refresh < self._min_interval:
            return None
        task = self._start()
        if task is None:  # the key server is failing: not asked again yet
            return None
        self._last_kid_refresh = now
        await asyncio.shield(task)
        return self.current

    # -- fetching ----------------------------------------------------------------

    def _start(self) -> asyncio.Task[None] | None:
        """The fetch under way, or a new one if the breaker allows it (else `None`)."""
        task = self._inflight
        loop = asyncio.get_running_loop()
        if task is not None and not task.done() and task.get_loop() is loop:
            return task
        if not self.breaker.allow():
            return None
        self._last_attempt = clock.monotonic()
        task = loop.create_task(self._refresh())
        self._inflight = task
        return task

    async def _refresh(self) -> None:
        url = self._jwks_url
        try:
            if url is None:
                url = await self._discover()
            document, cache_control = await self._get_json(url)
            keys, skipped = parse_jwks(document, self._algorithms)
            for note in skipped:
                logger.warning("apiguard.auth: JWKS %s: %s; key left out", redact(url), note)
            if not keys:
                raise ValueError("no usable key")
        except Exception as exc:  # whatever happens, keep the last good set; never a 500
            self.failures += 1
            breaker = self.breaker
            # Once per outage; never the response body, nor a token: the URL
            # and the error type.
            level = logging.DEBUG if breaker.failures else logging.WARNING
            if not breaker.failures:
                self._outage_started = clock.monotonic()
            breaker.failure(exc)
            logger.log(
                level,
                "apiguard.auth: fetching keys from %s failed (%s: %s); %s; asking again in %.3g s",
                redact(url or self._issuer),
                type(exc).__name__,
                exc if isinstance(exc, ValueError) else "",
                "keeping the last good key set" if self.current else "no keys yet",
                breaker.retry_after(),
            )
            return
        if self.breaker.failures:
            logger.warning(
                "apiguard.auth: keys fetched from %s again after %d failed fetches (%.1f s)",
                redact(url),
                self.breaker.failures,
                clock.monotonic() - self._outage_started,
            )
        self.breaker.success()
        current = self.current
        self.current = current.replaced_by(keys) if current is not None else KeySet(keys)
        self.expires_at = clock.monotonic() + cache_seconds(
            cache_control, self._cache_ttl, self._min_interval
        )

    async def _discover(self) -> str:
        """OpenID Connect Discovery 1.0 §4: the JWKS URL from the issuer's configuration."""
        issuer = self._issuer or ""
        document, _ = await self._get_json(issuer.rstrip("/") + "/.well-known/openid-configuration")
        if not isinstance(document, dict) or document.get("issuer") != issuer:
            # §4.3: the issuer in the document MUST be identical to the one asked.
            raise ValueError("the discovery document names another issuer")
        try:
            url = check_url("jwks_uri", document.get("jwks_uri"), allow_http=self._allow_http)
        except ConfigError as exc:
            raise ValueError(str(exc)) from None
        self._jwks_url = url
        return url

    async def _get_json(self, url: str) -> tuple[Any, str | None]:
        self.fetches += 1
        async with asyncio.timeout(self._timeout):
            async with (
                httpx.AsyncClient(timeout=self._timeout, follow_redirects=False) as client,
                client.stream("GET", url, headers={"accept": "application/json"}) as response,
            ):
                if response.status_code != 200:
                    raise ValueError(f"HTTP {response.status_code}")
                body = bytearray()
                async for chunk in response.aiter_bytes():
                    body += chunk
                    if len(body) > MAX_DOCUMENT_BYTES:
                        raise ValueError(f"response over {MAX_DOCUMENT_BYTES} bytes")
                cache_control = response.headers.get("cache-control")
        return strict_loads(body.decode("utf-8")), cache_control
