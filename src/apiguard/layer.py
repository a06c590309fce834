"""The layer kit: what every layer shares, whoever wrote it.

Three things:

- [`Options`][apiguard.layer.Options]: option checks with one message form,
  naming the layer instance, the option and the value (secrets redacted):
  `RateLimitMiddleware[name='plan']: limit '10/minutes' is not like '10/minute'`.
- A `name` on every layer (by default its kind), checked by
  [`Options.layer_name`][apiguard.layer.Options.layer_name], used in
  messages, decisions, metrics and the policy report.
- [`Description`][apiguard.layer.Description]: how a layer tells, for one
  route, what it does there and what it may answer instead of the app
  (statuses, headers, security schemes). The policy report
  (`apiguard routes`) and the OpenAPI enrichment read it through the
  [`Describes`][apiguard.layer.Describes] protocol, knowing no layer's
  internals.
"""

from __future__ import annotations

import functools
import math
import re
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import (
    Any,
    Final,
    Literal,
    NoReturn,
    ParamSpec,
    Protocol,
    TypeAlias,
    TypeVar,
    runtime_checkable,
)

from apiguard._types import ASGIApp
from apiguard.compose import checked_at_startup
from apiguard.errors import ConfigError, redact

__all__ = [
    "Answer",
    "Binds",
    "Describes",
    "Description",
    "HeaderInfo",
    "JSONValue",
    "Options",
    "Security",
    "SecurityScheme",
    "check_name",
    "checked",
    "reached",
]

P = ParamSpec("P")
R = TypeVar("R")

# RFC 9651 §3.3.3: a name that fits an sf-string and a metric label as it is.
_NAME: Final = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.:+-]{0,63}$")


def check_name(name: object) -> bool:
    """Whether `name` can name a layer or a policy as written (no escaping anywhere)."""
    return isinstance(name, str) and _NAME.match(name) is not None


class Options:
    """Checks a layer's options; every error names the layer, the option and the value.

    Args:
        owner: How the layer instance is named in messages:
            `"RateLimitMiddleware[name='plan']"` (see [`of`][apiguard.layer.Options.of]),
            or a component's class name (`"JWTAuth"`). Empty for checks
            shared by several owners: the owner's [`checked`][apiguard.layer.checked]
            `__init__` puts itself in front of their messages.

    Examples:
        >>> options = Options.of("Retry", "r")
        >>> options.seconds("timeout", 0.25)
        0.25
        >>> options.integer("retries", 99, low=0, high=10)
        Traceback (most recent call last):
        ...
        apiguard.errors.ConfigError: Retry[name='r']: retries 99 is not a whole number from 0 to 10
    """

    __slots__ = ("owner",)

    def __init__(self, owner: str = "") -> None:
        self.owner = owner

    @classmethod
    def of(cls, layer: str, name: str) -> Options:
        """The options of layer class `layer` named `name`."""
        return cls(f"{layer}[name={name!r}]")

    # --- errors ----------------------------------------------------------------------

    def error(self, option: str, value: object, what: str, *, secret: bool = False) -> ConfigError:
        """`<owner>: <option> <value> <what>`: `what` reads on from the value ("is not ...").

        A `secret` value is never shown; other values are shown with URI
        passwords redacted.
        """
        shown = "(hidden)" if secret else redact(value)
        return ConfigError(f"{self._prefix}{option} {shown} {what}")

    def invalid(self, option: str, text: str) -> ConfigError:
        """`<owner>: <option>: <text>`, for what one value cannot say (two options clash)."""
        return ConfigError(f"{self._prefix}{option}: {text}")

    @property
    def _prefix(self) -> str:
        return f"{self.owner}: " if self.owner else ""

    def fail(self, option: str, value: object, what: str, *, secret: bool = False) -> NoReturn:
        """Raise [`error`][apiguard.layer.Options.error]."""
        raise self.error(option, value, what, secret=secret)

    @contextmanager
    def checking(self) -> Iterator[None]:
        """Name the layer in a `ConfigError` raised by a helper that does not know it.

        Route keys, limits and nested components are checked by code shared by
        every layer; their messages start with the option. Inside this block
        such an error is re-raised with the layer instance in front.
        """
        try:
            yield
        except ConfigError as exc:
            message = str(exc)
            if not self.owner or message.startswith(self.owner + ":"):
                raise
            raise ConfigError(f"{self.owner}: {message}") from None

    def bind_at_startup(self, app: ASGIApp, *targets: Binds | None) -> ASGIApp:
        """`app`, with each of `targets` (route policies, a fallback) bound to it at start-up.

        Binding checks the targets' route keys against the app's routes, with
        the layer named in any `ConfigError` (see
        [`checked_at_startup`][apiguard.compose.checked_at_startup]).
        """

        def bind() -> None:
            with self.checking():
                for target in targets:
                    if target is not None:
                        target.bind(app)

        return checked_at_startup(app, bind)

    # --- checks ----------------------------------------------------------------------

    def layer_name(self, value: object) -> str:
        """A layer's `name`: 1-64 letters, digits and `_.:+-`, starting with a letter or digit."""
        if not check_name(value):
            self.fail(
                "name", value, "is not 1-64 letters, digits and _.:+- (a letter or digit first)"
            )
        return value  # type: ignore[return-value]

    def flag(self, option: str, value: object) -> bool:
        """`True` or `False` (not a truthy value: a string `"false"` is a classic slip)."""
        if not isinstance(value, bool):
            self.fail(option, value, "is not True or False")
        return value

    def seconds(
        self,
        option: str,
        value: object,
        *,
        low: float = 0.0,
        high: float = math.inf,
        zero: bool = False,
    ) -> float:
        """A finite number of seconds in `(low, high]`; `[low, high]` when `zero` allows `low`."""
        if (
            isinstance(value, bool)
            or not isinstance(value, int | float)
            or not math.isfinite(value)
            or not (low <= value if zero else low < value)
            or value > high
        ):
            bounds = f"{'[' if zero else '('}{low:g}, {high:g}]"
            self.fail(
                option, value, f"is not a number of seconds in {bounds.replace('inf]', 'inf)')}"
            )
        return float(value)

    def integer(self, option: str, value: object, *, low: int, high: int) -> int:
        """An `int` (not a `bool`) in `[low, high]`."""
        if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
            self.fail(option, value, f"is not a whole number from {low} to {high}")
        return value

    def choice(self, option: str, value: object, choices: Iterable[str]) -> str:
        """One of `choices` (a closed set of strings)."""
        allowed = tuple(choices)
        if value not in allowed:
            listed = ", ".join(repr(choice) for choice in allowed)
            self.fail(option, value, f"is not one of {listed}")
        return value

    def strings(self, option: str, value: object, *, allow_empty: bool = True) -> tuple[str, ...]:
        """A list of non-empty strings (a lone string is refused: `"GET /a"` is not a list)."""
        if isinstance(value, str | bytes) or not isinstance(value, Iterable):
            self.fail(option, value, "is not a list of strings")
        items = tuple(value)
        if not items and not allow_empty:
            self.fail(option, value, "is empty")
        for item in items:
            if not isinstance(item, str) or not item:
                self.fail(option, item, "is not a non-empty string")
        return items

    def mapping(self, option: str, value: object) -> Mapping[Any, Any]:
        """A mapping; `None` is an empty one."""
        if value is None:
            return {}
        if not isinstance(value, Mapping):
            self.fail(option, value, "is not a mapping")
        return value

    def function(self, option: str, value: object, what: str) -> Callable[..., Any]:
        """A callable, described as `what` in the error (`"a key function (by_ip(), ...)"`)."""
        if not callable(value):
            self.fail(option, value, f"is not {what}")
        return value


def checked(owner: str, *, name: str | None = None) -> Callable[[Callable[P, R]], Callable[P, R]]:
    """Decorate an `__init__` so that every `ConfigError` it raises names its owner.

    `owner` is the class (`"JWTAuth"`); for a layer, `name` is its default
    name, and the `name=` given wins: errors then start with
    `AuthMiddleware[name='auth']: `.

    Examples:
        >>> class Layer:
        ...     @checked("Layer", name="x")
        ...     def __init__(self, app, *, name="x", tries=3):
        ...         Options().integer("tries", tries, low=0, high=10)
        >>> Layer(None, tries=99)
        Traceback (most recent call last):
        ...
        apiguard.errors.ConfigError: Layer[name='x']: tries 99 is not a whole number from 0 to 10
    """

    def decorate(init: Callable[P, R]) -> Callable[P, R]:
        @functools.wraps(init)
        def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
            given = kwargs.get("name", name)
            label = f"{owner}[name={given!r}]" if name is not None and check_name(given) else owner
            with Options(label).checking():
                return init(*args, **kwargs)

        return wrapper

    return decorate


# --- how a layer describes itself for a route --------------------------------------

JSONValue: TypeAlias = str | int | float | bool | list["JSONValue"] | dict[str, "JSONValue"] | None


@dataclass(frozen=True, slots=True)
class Answer:
    """A response a layer may give on a route instead of the app's.

    Attributes:
        status: The HTTP status.
        reason: The layer's reason code (`"quota-exceeded"`, `"invalid_token"`).
        headers: The response headers that come with it (`"Retry-After"`).
        type: The problem type URI of its body (`about:blank` by default).
        description: One sentence for humans (OpenAPI's response description).
    """

    status: int
    reason: str
    headers: tuple[str, ...] = ()
    type: str = "about:blank"
    description: str = ""


@dataclass(frozen=True, slots=True)
class SecurityScheme:
    """A way a credential is presented, as OpenAPI names it.

    Attributes:
        name: The scheme's name in the schema's `components.securitySchemes`
            (an authenticator's method: `"jwt"`, `"api_key"`).
        type: OpenAPI's scheme type: `"http"` or `"apiKey"`.
        scheme: For `http`: the auth-scheme (`"bearer"`).
        bearer_format: For `http` bearer: what the token is (`"JWT"`).
        location: For `apiKey`: `"header"`, `"query"` or `"cookie"`.
        parameter: For `apiKey`: the header, parameter or cookie name.
    """

    name: str
    type: Literal["http", "apiKey"]
    scheme: str | None = None
    bearer_format: str | None = None
    location: Literal["header", "query", "cookie"] | None = None
    parameter: str | None = None


@dataclass(frozen=True, slots=True)
class Security:
    """What an authentication layer asks of a route's callers.

    Attributes:
        mode: `"public"` (nothing is checked), `"optional"` (a credential may
            be left out, one sent must be valid) or `"required"`.
        schemes: The accepted ways to present a credential, any one of them.
        scopes: The scopes a credential must all carry there.
    """

    mode: Literal["public", "optional", "required"]
    schemes: tuple[SecurityScheme, ...] = ()
    scopes: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class HeaderInfo:
    """A request header a layer reads on a route (`Idempotency-Key`).

    Attributes:
        name: The header's name.
        required: Whether a request without it is refused.
        description: One sentence for humans.
    """

    name: str
    required: bool = False
    description: str = ""


@dataclass(frozen=True, slots=True)
class Description:
    """What one layer does on one route, for the policy report and OpenAPI.

    Attributes:
        layer: The layer's kind (`"ratelimit"`), as in its decisions.
        name: The layer instance's name.
        applies: Whether the layer does anything on the route (an exempt
            route, a route without rules: `False`).
        summary: What it does there, JSON-ready, for the report
            (`{"policies": ["ip-0: 100/60s"], "key": "by_ip()"}`).
        answers: The responses it may give there instead of the app's.
        security: For an authentication layer: what it asks of callers.
        request_headers: Request headers it reads there.
        response_headers: Headers it adds to the app's responses there
            (`"RateLimit"`).
        handles: Whether the layer answers every request on the route
            itself (a health endpoint): the layers inside it and the app
            never see them, so the report and OpenAPI stop at it.
    """

    layer: str
    name: str
    applies: bool = True
    summary: Mapping[str, JSONValue] = field(default_factory=dict)
    answers: tuple[Answer, ...] = ()
    security: Security | None = None
    request_headers: tuple[HeaderInfo, ...] = ()
    response_headers: tuple[str, ...] = ()
    handles: bool = False


def reached(descriptions: Sequence[Description]) -> tuple[Description, ...]:
    """The descriptions (outermost first) of the layers a request on the route reaches.

    Every one up to the first that [`handles`][apiguard.layer.Description]
    the route itself, that one included.
    """
    for index, description in enumerate(descriptions):
        if description.handles:
            return tuple(descriptions[: index + 1])
    return tuple(descriptions)


class Binds(Protocol):
    """Something bound to the app a layer wraps at start-up (route policies, a fallback)."""

    def bind(self, app: ASGIApp) -> None:
        """Check against `app`'s routes, and remember its router."""


@runtime_checkable
class Describes(Protocol):
    """A layer that can tell what it does on a route (every apiguard layer can).

    `method` is the route's method (`"GET"`, ...; `"WEBSOCKET"` for a
    WebSocket route) and `key` its route key (`"/orders/{order_id}"`,
    `"api.example.com/status"`), as [`apiguard.routing`][] names them.
    """

    def describe(self, method: str, key: str) -> Description:
        """What the layer does for requests of `method` on route `key`."""
        ...
