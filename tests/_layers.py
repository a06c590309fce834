"""Small layers built on the core, for the tests of the core."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from apiguard import ConfigError, Decision, get_context
from apiguard.compose import checked_at_startup
from apiguard.routing import RoutePolicies


class TagLayer:
    """Records a decision naming itself and the route's tag, then calls the app."""

    def __init__(self, app: Any, *, name: str, routes: Mapping[str, str] | None = None) -> None:
        if not isinstance(name, str) or not name:
            msg = f"TagLayer: name {name!r} is not a non-empty string"
            raise ConfigError(msg)
        self.name = name
        self.routes: RoutePolicies[str | None] = RoutePolicies("routes", routes, None)
        self.app = checked_at_startup(app, lambda: self.routes.bind(app))

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        tag = self.routes.lookup(scope)
        get_context(scope).record(Decision("tag", "allow", name=self.name, policy=tag))
        await self.app(scope, receive, send)


class DeadlineLayer:
    """Gives each request a deadline `seconds` from now, and keeps its context for the test.

    A stand-in for an outer `TimeoutMiddleware` without its timer: what a
    layer inside does when the deadline comes is then the layer's alone.
    """

    def __init__(self, app: Any, *, seconds: float) -> None:
        self.app = app
        self.seconds = seconds
        self.contexts: list[Any] = []

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "http":
            from apiguard._clock import clock

            context = get_context(scope)
            context.deadline = clock.monotonic() + self.seconds
            self.contexts.append(context)
        await self.app(scope, receive, send)
