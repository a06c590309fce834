"""The policy report: every route of an app, and what each layer does there.

Built from [`routes_of`][apiguard.routing.routes_of] and each layer's
[`describe`][apiguard.layer.Describes]; nothing here knows a layer's
internals. A layer is named in the report as `kind` or `kind:name` when its
name is not its kind (`ratelimit:ip`).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Literal

from apiguard.errors import ConfigError
from apiguard.layer import Describes, Description, reached
from apiguard.report._stack import Layered, layers_of, mounted_layers
from apiguard.routing import WEBSOCKET, parse_route_key, routes_of

__all__ = ["Finding", "Report", "RouteReport", "build_report", "label"]

#: The order methods are listed in; others follow, sorted.
_METHOD_ORDER = ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "TRACE", "CONNECT")
#: How a route that takes any method (a mounted app without routes) is listed.
ANY_METHOD = "*"

Rule = Literal["start-up", "no-routes", "unauthenticated", "required-layer", "unknown-route"]


def label(description: Description) -> str:
    """How the report names a layer: its kind, and its name when that differs."""
    if description.name == description.layer:
        return description.layer
    return f"{description.layer}:{description.name}"


@dataclass(frozen=True, slots=True)
class RouteReport:
    """One route and method, and every layer's description there, outermost first.

    Attributes:
        method: The method (`"GET"`), `"WEBSOCKET"`, or `"*"` for a route
            that takes any method.
        key: The route key, as per-route options name it.
        kind: `"http"` or `"websocket"`.
        descriptions: What each layer in front of the route does there.
    """

    method: str
    key: str
    kind: Literal["http", "websocket"]
    descriptions: tuple[Description, ...]

    @property
    def name(self) -> str:
        """`"GET /orders"`: the route key with its method, as findings name it."""
        return f"{self.method} {self.key}"

    @property
    def reached(self) -> tuple[Description, ...]:
        """The descriptions of the layers a request reaches: up to one that answers it itself."""
        return reached(self.descriptions)

    @property
    def security(self) -> str | None:
        """The authentication decision (`"public"`, `"optional"`, `"required"`), if any."""
        modes = [d.security.mode for d in self.reached if d.security is not None]
        if not modes:
            return None
        # Several authentication layers: the strictest decides.
        for mode in ("required", "optional", "public"):
            if mode in modes:
                return mode
        return modes[0]  # pragma: no cover - a mode outside the three


@dataclass(frozen=True, slots=True)
class Finding:
    """Something `--check` refuses, naming the route it is about.

    Attributes:
        rule: Which check: `"start-up"` (a start-up check failed),
            `"no-routes"` (no route was found: nothing could be checked),
            `"unauthenticated"` (no authentication decision),
            `"required-layer"` (a route escapes a required layer) or
            `"unknown-route"` (an exemption names no route).
        route: `"GET /orders"`, or `None` for the app as a whole.
        message: What is wrong, for people.
    """

    rule: Rule
    route: str | None
    message: str

    def __str__(self) -> str:
        return f"{self.route}: {self.message}" if self.route else self.message


@dataclass(slots=True)
class Report:
    """What every layer does on every route of one app.

    Attributes:
        app: What the app was loaded as (`"examples.orders:app"`).
        layers: Every layer in front of the app's routes, outermost first
            (a mounted app's after the outer app's): `(kind, name)`.
        routes: Every route and method, in dispatch order.
        error: The start-up check that failed, if one did: then the app
            would not start, and `routes` is empty.
    """

    app: str
    layers: list[tuple[str, str]] = field(default_factory=list)
    routes: list[RouteReport] = field(default_factory=list)
    error: str | None = None

    def check(self, *, require: Sequence[str] = (), exempt: Sequence[str] = ()) -> list[Finding]:
        """Every route that breaks a rule: no authentication decision, a required layer escaped.

        Args:
            require: Layers every route must pass through, applying there:
                a kind (`"ratelimit"`) or `kind:name` (`"ratelimit:ip"`).
            exempt: Route keys (`"GET /health"`, `"/metrics"`) excused from
                `require` (not from authentication: declare those public).

        Returns:
            The findings, in route order; empty when every rule holds. An
            app with no route found fails: nothing could be checked.
        """
        if self.error is not None:
            return [Finding("start-up", None, f"the app would not start: {self.error}")]
        if not self.routes:
            # Nothing checked is no pass: the router is hidden (a wrapper that
            # keeps the app other than as `.app`), or this is not the app.
            return [
                Finding(
                    "no-routes",
                    None,
                    "no route found, so nothing was checked: name the app itself, and give "
                    "any middleware wrapped around it an `.app` attribute holding what it wraps",
                )
            ]
        findings: list[Finding] = []
        excused = _exemptions(exempt)
        matched: set[tuple[str | None, str]] = set()
        for route in self.routes:
            if route.security is None:
                findings.append(
                    Finding(
                        "unauthenticated",
                        route.name,
                        "no authentication decision (neither public nor behind an authenticator)",
                    )
                )
            hits = {(m, k) for (m, k) in excused if k == route.key and m in (None, route.method)}
            matched |= hits
            if hits:
                continue
            findings += [
                Finding("required-layer", route.name, message)
                for wanted in require
                if (message := _escapes(route, wanted)) is not None
            ]
        for method, key in excused:
            if (method, key) not in matched:
                shown = f"{method} {key}" if method else key
                findings.append(
                    Finding("unknown-route", shown, "is exempted but is not a route of the app")
                )
        return findings


def _exemptions(exempt: Iterable[str]) -> set[tuple[str | None, str]]:
    keys = set()
    for raw in exempt:
        method, key = parse_route_key("--exempt", raw)
        keys.add((method, key))
    return keys


def _escapes(route: RouteReport, wanted: str) -> str | None:
    """Why `route` escapes the required layer `wanted` (`kind` or `kind:name`), or `None`."""
    kind, _, name = wanted.partition(":")
    found = [d for d in route.reached if d.layer == kind and (not name or d.name == name)]
    if not found:
        handler = route.reached[-1] if route.reached and route.reached[-1].handles else None
        if handler is not None and len(route.reached) < len(route.descriptions):
            return (
                f"answered by {label(handler)} before any {wanted} layer (required for every route)"
            )
        return f"no {wanted} layer in front of it (required for every route)"
    if not any(d.applies for d in found):
        return f"{label(found[0])} does not apply here (required for every route)"
    return None


def build_report(app: object, *, name: str = "app") -> Report:
    """The policy report of `app`, without serving it.

    Builds the app's middleware stack (which runs the layers' start-up
    checks), finds every layer that describes itself, outermost first
    (mounted apps' own layers too, for the routes under their mount), and
    asks each what it does on every route of the app and method. Nothing is
    connected to: stores connect at lifespan start-up.

    Args:
        app: A Starlette or FastAPI app, or middleware around one.
        name: How the report names the app.

    Returns:
        The report; its `error` is set when a start-up check fails.
    """
    report = Report(name)
    try:
        layers = layers_of(app)
        mounted = mounted_layers(app)
    except ConfigError as exc:
        report.error = str(exc)
        return report
    seen: set[tuple[str, str]] = set()
    for info in routes_of(app):
        for method in _methods(info.kind, info.methods):
            if (method, info.key) in seen:
                continue  # shadowed by an earlier route: never dispatched to
            seen.add((method, info.key))
            inner = mounted.get((method, info.key), [])
            described = _describe(layers, inner, method, info.key)
            get = mounted.get(("GET", info.key), [])
            if method == "HEAD" and described == _describe(layers, get, "GET", info.key):
                continue  # HEAD as GET: one line says both
            report.routes.append(RouteReport(method, info.key, info.kind, described))
    named: dict[tuple[str, str], None] = {}
    for route in report.routes or [
        RouteReport("GET", "/", "http", _describe(layers, [], "GET", "/"))
    ]:
        named.update(((d.layer, d.name), None) for d in route.descriptions)
    report.layers = list(named)
    return report


def _describe(
    layers: Sequence[Describes], inner: Sequence[Layered], method: str, key: str
) -> tuple[Description, ...]:
    outer = [layer.describe(method, key) for layer in layers]
    return (*outer, *(entry.layer.describe(method, entry.key) for entry in inner))


def _methods(kind: str, methods: frozenset[str] | None) -> list[str]:
    if kind == "websocket":
        return [WEBSOCKET]
    if methods is None:
        return [ANY_METHOD]
    known = [m for m in _METHOD_ORDER if m in methods]
    return known + sorted(methods.difference(_METHOD_ORDER))
