"""The exceptions apiguard raises to its users."""

from __future__ import annotations

import re

__all__ = ["ConfigError", "StorageError", "redact"]


class ConfigError(ValueError):
    """An option is missing, of the wrong type, or out of range.

    Raised when a layer is configured (by [`guard`][apiguard.guard] eagerly, or
    when Starlette builds its middleware stack), never while serving a request.
    The message names the option and the offending value, with any secret in
    it redacted.
    """


class StorageError(Exception):
    """A shared store (Redis, ...) failed or timed out.

    Every backend exception is wrapped in this one type at the storage edge, so
    that a layer's fail-open / fail-closed policy is a single `except`.

    Attributes:
        retry_after: Seconds until the store will be tried again (its
            breaker is open), for a fail-closed answer's `Retry-After`;
            0 when it will be tried at the next call.
        state: The state of the breaker that guards the failed part of the
            store (`"closed"`, `"open"`, `"half-open"`), for decisions.
        failures: Consecutive failures of that part, this one included.
    """

    def __init__(
        self, message: str, *, retry_after: float = 0.0, state: str = "closed", failures: int = 0
    ) -> None:
        super().__init__(message)
        self.retry_after = retry_after
        self.state = state
        self.failures = failures


#: RFC 3986 §3.2: the authority runs from `//` to the next `/`, `?` or `#`,
#: and the userinfo ends at its *last* `@` (a password may hold a raw `@`,
#: as redis-py and `urllib.parse` read it); the greedy run backtracks there.
#: Quotes and whitespace also end it, so that a URI quoted in a message (or in
#: a repr) never swallows the text after it.
_USERINFO = re.compile(r"(?P<scheme>[a-zA-Z][a-zA-Z0-9+.-]*://)(?P<userinfo>[^/?#\s'\"<>]*)@")
#: Secrets given as URI query options (redis-py reads `password` and
#: `ssl_password` there too).
_QUERY_SECRET = re.compile(r"(?P<name>[?&](?:ssl_)?password=)[^&#\s'\"]*")


def redact(value: object) -> str:
    """Return `repr`-like text for `value` with URI passwords masked.

    The password of a URI's userinfo (up to the last `@` of the authority,
    so a password holding `@` or `:` is masked whole) and `password` /
    `ssl_password` query options are replaced by `***`. A value that is not
    a string is masked in its `repr` (bytes, a list of URIs, a mapping).

    Examples:
        >>> redact("redis://:hunter2@cache:6379/0")
        "'redis://:***@cache:6379/0'"
        >>> redact("redis://user:pw@cache")
        "'redis://user:***@cache'"
        >>> redact("redis://cache:6379?password=pw&db=1")
        "'redis://cache:6379?password=***&db=1'"
        >>> redact("redis://:p@ss@cache")
        "'redis://:***@cache'"
    """

    def _mask(match: re.Match[str]) -> str:
        user, sep, _password = match["userinfo"].partition(":")
        return f"{match['scheme']}{user}{sep}{'***' if sep else ''}@"

    def _masked(text: str) -> str:
        return _QUERY_SECRET.sub(r"\g<name>***", _USERINFO.sub(_mask, text))

    if isinstance(value, str):
        return repr(_masked(value))
    # A list of URIs, bytes, a mapping: mask what their repr shows.
    return _masked(repr(value))
