"""`guard(app, *layers)`: compose layers listed outermost first."""

from __future__ import annotations

import difflib
import inspect
from collections.abc import Callable
from typing import Any, TypeVar, overload

from starlette.applications import Starlette
from starlette.middleware import Middleware

from apiguard._types import ASGIApp, Message, Receive, Scope, Send
from apiguard.errors import ConfigError

__all__ = ["StartupCheck", "checked_at_startup", "guard", "startup_error"]

S = TypeVar("S", bound=Starlette)


class _Unbuilt:
    """The placeholder app `guard()` validates options against; never called."""

    async def __call__(
        self, scope: Scope, receive: Receive, send: Send
    ) -> None:  # pragma: no cover
        raise RuntimeError("apiguard: a validation-only layer was called")


def _spec(layer: object, position: int) -> tuple[Any, tuple[Any, ...], dict[str, Any]]:
    if isinstance(layer, Middleware):
        return layer.cls, tuple(layer.args), dict(layer.kwargs)
    if isinstance(layer, type):
        return layer, (), {}
    msg = (
        f"guard(): layer {position} is {layer!r}; "
        "expected Middleware(SomeMiddleware, ...) or a middleware class"
    )
    raise ConfigError(msg)


def _validate(cls: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
    name = getattr(cls, "__name__", repr(cls))
    try:
        signature = inspect.signature(cls)
    except (TypeError, ValueError):  # pragma: no cover - no introspectable signature
        signature = None
    if signature is not None:
        parameters = signature.parameters
        takes_any = any(p.kind is p.VAR_KEYWORD for p in parameters.values())
        for option in kwargs:
            if option not in parameters and not takes_any:
                hint = difflib.get_close_matches(option, list(parameters), n=1)
                suggestion = f"; did you mean {hint[0]!r}?" if hint else ""
                msg = f"{name}: unknown option {option!r}{suggestion}"
                raise ConfigError(msg)
        try:
            signature.bind(_Unbuilt(), *args, **kwargs)
        except TypeError as exc:
            msg = f"{name}: {exc}"
            raise ConfigError(msg) from None
    cls(_Unbuilt(), *args, **kwargs)


@overload
def guard(app: S, *layers: Middleware | type) -> S: ...
@overload
def guard(app: ASGIApp, *layers: Middleware | type) -> ASGIApp: ...
def guard(app: Any, *layers: Middleware | type) -> Any:
    """Put apiguard's layers (or any ASGI middleware) around an app, outermost first.

    Every layer's options are validated now, so that a misconfiguration fails
    at import time rather than when Starlette builds its middleware stack (at
    start-up under a server, at the first request under a test client).

    On a Starlette or FastAPI app the layers are registered inside the app
    with `add_middleware` (so `scope["app"]` and the router are known when
    they run, and routes may still be added afterwards) and the app itself is
    returned. Any other ASGI app is wrapped, and the outermost layer returned.

    Note the order: layers are listed outermost first, the way a request
    meets them, which is the reverse of the order of `add_middleware` calls.

    Args:
        app: The Starlette or FastAPI app, or any ASGI app.
        *layers: `Middleware(SomeMiddleware, **options)`, outermost first.

    Returns:
        The app, with the layers registered; or the wrapped ASGI app.

    Raises:
        ConfigError: an option is unknown, missing or invalid.

    Examples:
        >>> from starlette.applications import Starlette
        >>> from starlette.middleware import Middleware
        >>> from starlette.middleware.gzip import GZipMiddleware
        >>> app = guard(Starlette(), Middleware(GZipMiddleware, minimum_size=500))
        >>> [m.cls.__name__ for m in app.user_middleware]
        ['GZipMiddleware']
    """
    specs = [_spec(layer, position) for position, layer in enumerate(layers)]
    for cls, args, kwargs in specs:
        _validate(cls, args, kwargs)
    if isinstance(app, Starlette):
        if app.middleware_stack is not None:
            msg = "guard(): the app has already started; call guard() before serving it"
            raise ConfigError(msg)
        # add_middleware inserts at the front: add innermost first.
        for cls, args, kwargs in reversed(specs):
            app.add_middleware(cls, *args, **kwargs)
        return app
    if not callable(app):
        msg = f"guard(): app {app!r} is not an ASGI application"
        raise ConfigError(msg)
    wrapped = app
    for cls, args, kwargs in reversed(specs):
        wrapped = cls(wrapped, *args, **kwargs)
    return wrapped


StartupCheck = Callable[[], None]


class _FailedStartup:
    """Stands in for the app when a start-up check failed.

    Lifespan start-up is answered `lifespan.startup.failed` with the error,
    so that the server refuses to start (uvicorn exits, in every lifespan
    mode); any request that gets this far raises the error.
    """

    def __init__(self, app: ASGIApp, error: ConfigError) -> None:
        self.app = app
        self.error = error

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "lifespan":
            raise self.error
        message: Message = await receive()
        if message["type"] == "lifespan.startup":
            await send({"type": "lifespan.startup.failed", "message": f"apiguard: {self.error}"})


def checked_at_startup(app: ASGIApp, *checks: StartupCheck) -> ASGIApp:
    """Run start-up checks (route keys against the app's routes) for a layer.

    Called from a layer's `__init__` with the app it wraps. Raising from
    `__init__` would surface as a failed middleware build, which uvicorn's
    default `--lifespan auto` logs as "lifespan unsupported" and then serves
    500s; instead, a failed check hands back an app that fails lifespan
    start-up with the error, so the server refuses to start.

    Returns:
        `app` when every check passes.
    """
    for check in checks:
        try:
            check()
        except ConfigError as error:
            return _FailedStartup(app, error)
    return app


def startup_error(app: object, *, max_depth: int = 128) -> ConfigError | None:
    """The error of the first failed start-up check in a middleware chain, if any.

    Follows `.app` links from `app` (a built middleware stack, or a layer
    wrapped around an app), as a request would pass through them, without
    running the lifespan: for tools that check an app without serving it
    (`apiguard routes`).
    """
    node: object = app
    for _ in range(max_depth):
        if isinstance(node, _FailedStartup):
            return node.error
        node = getattr(node, "app", None)
        if node is None:
            return None
    return None
