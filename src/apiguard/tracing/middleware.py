"""`TracingMiddleware`: OpenTelemetry spans and metrics, every decision, an audit log."""

from __future__ import annotations

from collections.abc import Iterable
from importlib.metadata import PackageNotFoundError, version
from typing import Any, Final, Literal

from opentelemetry import context as context_api
from opentelemetry import propagate
from opentelemetry import trace as trace_api
from opentelemetry.metrics import MeterProvider
from opentelemetry.trace import Span, SpanKind, TracerProvider

from apiguard._asgi import lifespan_hooks
from apiguard._types import ASGIApp, Receive, Scope, Send
from apiguard.address import ClientAddress
from apiguard.breaker import Transition, listen
from apiguard.compose import checked_at_startup
from apiguard.context import CONTEXT_KEY, AttributeValue, RequestContext
from apiguard.layer import Description, JSONValue, Options, checked
from apiguard.routing import WEBSOCKET, RoutePolicies
from apiguard.tracing._audit import AuditLog
from apiguard.tracing._coexist import metrics_recorded_outside, outer_span
from apiguard.tracing._credentials import query_credentials
from apiguard.tracing._decisions import DecisionAttributes
from apiguard.tracing._exchange import CountingReceive, Exchange
from apiguard.tracing._metrics import SCHEMA_URL, ConsumerLabels, Instruments, StateChanges
from apiguard.tracing._providers import (
    Live,
    global_meter_provider,
    global_tracer_provider,
    is_noop_meter_provider,
    is_noop_proxy,
    is_noop_tracer_provider,
    load_from_environment,
)
from apiguard.tracing._request import (
    DEFAULT_REDACTED_QUERY,
    OTHER,
    RAW_GETTER,
    QueryRedactor,
    known_methods,
)
from apiguard.tracing._start import PropagationFields, start_attributes

__all__ = ["TracingMiddleware"]

QueryMode = Literal["redact", "drop"]
HTTPMetrics = Literal["auto", "on", "off"]
Consumer = Literal["principal", "plan"]

_LAYER: Final = "tracing"
_SERVER: Final = SpanKind.SERVER

try:
    _VERSION = version("apiguard")
except PackageNotFoundError:  # pragma: no cover - run from a source tree
    _VERSION = "0"


class TracingMiddleware:
    """OpenTelemetry server spans and HTTP metrics, every guard decision, and an audit log.

    Put it outermost: it sees every request, the refused ones included. With
    no OpenTelemetry SDK configured it costs next to nothing (it notices the
    API's no-op providers on each request, so an SDK set up after the app is
    built is picked up). Otherwise, per HTTP request:

    - one SERVER span by the stable HTTP semantic conventions, named
      `{method} {http.route}`, its parent taken from `traceparent` /
      `tracestate` / `baggage` through the global propagator; or, where a
      server span for the request is already active (FastAPI's native
      telemetry, Starlette's `OpenTelemetryMiddleware`, otel-asgi outside),
      that span enriched instead: apiguard's attributes, and `http.route`
      and the name where it lacks them;
    - every layer's decision as `apiguard.*` attributes (see the telemetry
      guide for the mapping);
    - `http.server.request.duration` (unless the outer instrumentation
      records it), refusals, store errors, state transitions and requests
      per route, status class and (opt-in) consumer;
    - one audit record per refused request on the `apiguard.audit` logger,
      at most `audit_limit` per route and reason per `audit_window` seconds,
      the rest folded into a summary record.

    WebSocket connections pass through untraced.

    Args:
        app: The ASGI app.
        name: The layer's name, in the policy report.
        tracer_provider: The tracer provider to use (default: the global one,
            read on each request).
        meter_provider: The meter provider to use (default: the global one).
        exclude: Route keys (`"GET /health"`) that get no span, no metrics
            and no audit record.
        trusted_proxies: Proxies whose `proxy_header` is believed for
            `client.address` (`apiguard.address.ClientAddress`):
            without them, proxy headers are ignored, since any client can send them.
        proxy_header: `"X-Forwarded-For"` or `"Forwarded"`.
        query: `"redact"` records `url.query` with the values of credential
            and signature parameters replaced by `REDACTED`; `"drop"` leaves
            `url.query` out.
        redact_query: More query parameter names to redact (besides `sig`,
            `Signature`, `X-Goog-Signature`, `AWSAccessKeyId`, `access_token`,
            `api_key`, ... and the names authenticators below read).
        record_principal: Record the principal's id on the span and in the
            audit log. Off by default: it may be personal data.
        consumer: Label `apiguard.requests` by consumer: `"principal"` (its
            id) or `"plan"`; `None` (the default) for no consumer label.
        max_consumers: Distinct consumer values kept before the rest are
            counted as `other`.
        active_requests: Record `http.server.active_requests` (its
            convention is still in development).
        body_sizes: Record `http.server.request.body.size` and
            `http.server.response.body.size` (in development too).
        http_metrics: `"auto"` records the HTTP metrics unless an outer
            instrumentation does (FastAPI's native telemetry with metrics
            on, otel-asgi); `"on"` always; `"off"` never.
        audit: Write the audit log of refusals.
        audit_logger: The audit log's logger name.
        audit_limit: Records per route, layer and reason per window (0:
            summaries only).
        audit_window: The audit window, in seconds.

    Raises:
        ConfigError: an option is of the wrong type or out of range.

    Examples:
        >>> from starlette.applications import Starlette
        >>> from starlette.middleware import Middleware
        >>> from apiguard import guard
        >>> app = guard(Starlette(), Middleware(TracingMiddleware, exclude=[]))
    """

    @checked("TracingMiddleware", name=_LAYER)
    def __init__(
        self,
        app: ASGIApp,
        *,
        name: str = _LAYER,
        tracer_provider: TracerProvider | None = None,
        meter_provider: MeterProvider | None = None,
        exclude: Iterable[str] = (),
        trusted_proxies: Iterable[str] = (),
        proxy_header: str = "X-Forwarded-For",
        query: QueryMode = "redact",
        redact_query: Iterable[str] = (),
        record_principal: bool = False,
        consumer: Consumer | None = None,
        max_consumers: int = 100,
        active_requests: bool = False,
        body_sizes: bool = False,
        http_metrics: HTTPMetrics = "auto",
        audit: bool = True,
        audit_logger: str = "apiguard.audit",
        audit_limit: int = 10,
        audit_window: float = 60.0,
    ) -> None:
        self.name = Options().layer_name(name)
        options = Options.of("TracingMiddleware", name)
        if tracer_provider is not None and not isinstance(tracer_provider, TracerProvider):
            options.fail("tracer_provider", tracer_provider, "is not a TracerProvider")
        if meter_provider is not None and not isinstance(meter_provider, MeterProvider):
            options.fail("meter_provider", meter_provider, "is not a MeterProvider")
        # A proxy provider follows the global one: the same as giving none.
        self._tracer_provider = None if is_noop_proxy(tracer_provider) else tracer_provider
        self._meter_provider = None if is_noop_proxy(meter_provider) else meter_provider
        self.query: QueryMode = options.choice("query", query, ("redact", "drop"))  # type: ignore[assignment]
        self._redacted = DEFAULT_REDACTED_QUERY | {
            item.lower() for item in options.strings("redact_query", redact_query)
        }
        self.redact: QueryRedactor | None = (
            QueryRedactor(self._redacted) if self.query == "redact" else None
        )
        self.record_principal = options.flag("record_principal", record_principal)
        self.consumer: Consumer | None = None
        if consumer is not None:
            self.consumer = options.choice("consumer", consumer, ("principal", "plan"))  # type: ignore[assignment]
        cap = options.integer("max_consumers", max_consumers, low=1, high=100_000)
        self.consumer_label = ConsumerLabels(self.consumer, cap) if self.consumer else None
        self.active_requests = options.flag("active_requests", active_requests)
        self.body_sizes = options.flag("body_sizes", body_sizes)
        self.http_metrics: HTTPMetrics = options.choice(  # type: ignore[assignment]
            "http_metrics", http_metrics, ("auto", "on", "off")
        )
        self.audit: AuditLog | None = None
        if options.flag("audit", audit):
            if not isinstance(audit_logger, str) or not audit_logger:
                options.fail("audit_logger", audit_logger, "is not a logger name")
            self.audit = AuditLog(
                audit_logger,
                limit=options.integer("audit_limit", audit_limit, low=0, high=1_000_000),
                window=options.seconds("audit_window", audit_window, high=86_400.0),
            )
        with options.checking():
            self.client = ClientAddress(
                trusted_proxies=trusted_proxies,
                proxy_header=proxy_header,
                owner=options.owner,
            )
            self.trusted = bool(self.client.trusted_proxies)
            keys = options.strings("exclude", exclude)
            self.routes: RoutePolicies[bool] = RoutePolicies(
                "exclude", dict.fromkeys(keys, True), False
            )
        self.known_methods = known_methods()
        self.decision_attributes = DecisionAttributes()
        self.states = StateChanges()
        self._listening = False
        self._names: dict[tuple[str, str], str] = {}
        self._fields = PropagationFields()
        load_from_environment()
        self._live = Live(_UNSET, _UNSET, None, None)

        def bind() -> None:
            with options.checking():
                self.routes.bind(app)
            self._redact_credentials_of(app)

        self.app = checked_at_startup(app, bind)

    # --- start-up --------------------------------------------------------------------

    def _redact_credentials_of(self, app: ASGIApp) -> None:
        """Add the query parameters that authenticators below read credentials from."""
        found = query_credentials(app, skip=TracingMiddleware)
        if found - self._redacted:
            self._redacted |= found
            if self.redact is not None:
                self.redact = QueryRedactor(self._redacted)

    def describe(self, method: str, key: str) -> Description:
        """Whether requests of `method` on route `key` are traced, and what is recorded."""
        if method == WEBSOCKET:
            return Description(_LAYER, self.name, False, {"websocket": "passes through"})
        excluded = self.routes.get(method, key)
        summary: dict[str, JSONValue] = {
            "excluded": excluded,
            "http_metrics": self.http_metrics,
            "query": self.query,
            "audit": self.audit.logger.name if self.audit is not None else False,
        }
        if self.consumer is not None:
            summary["consumer"] = self.consumer
        return Description(_LAYER, self.name, not excluded, summary)

    # --- providers -------------------------------------------------------------------

    def _current(self) -> Live:
        tracer_provider = self._tracer_provider
        if tracer_provider is None:
            tracer_provider = global_tracer_provider()
        meter_provider = self._meter_provider
        if meter_provider is None:
            meter_provider = global_meter_provider()
        live = self._live
        if live.tracer_provider is tracer_provider and live.meter_provider is meter_provider:
            return live
        return self._refresh(tracer_provider, meter_provider)

    def _refresh(self, tracer_provider: Any, meter_provider: Any) -> Live:
        # Cached on the providers' identity: a request that finds them unchanged
        # pays two attribute reads and two comparisons.
        live = self._live
        tracer = live.tracer
        if tracer_provider is not live.tracer_provider:
            tracer = None
            if not is_noop_tracer_provider(tracer_provider):
                tracer = tracer_provider.get_tracer("apiguard", _VERSION, schema_url=SCHEMA_URL)
        instruments = live.instruments
        if meter_provider is not live.meter_provider:
            instruments = None
            if not is_noop_meter_provider(meter_provider):
                instruments = Instruments(
                    meter_provider, _VERSION, active=self.active_requests, sizes=self.body_sizes
                )
        live = self._live = Live(tracer_provider, meter_provider, tracer, instruments)
        if instruments is not None and not self._listening:
            # From the first request with metrics on (never for the copy
            # guard() builds to check options): held weakly, so that a
            # layer dropped stops counting.
            self._listening = True
            listen(self._transition, weak=True)
        return live

    def _transition(self, transition: Transition) -> None:
        """Count a breaker's transition (the layer's, a store's, a key fetcher's) as it happens."""
        instruments = self._live.instruments
        if instruments is None:
            return
        name = transition.name
        self.states.reported.add((transition.layer, name))
        attributes: dict[str, AttributeValue] = {
            "apiguard.layer": transition.layer,
            "apiguard.name": name,
            "apiguard.state": transition.state,
            "apiguard.state.previous": transition.previous,
        }
        if transition.key is not None:
            attributes["apiguard.policy"] = transition.key
        instruments.transitions.add(1, attributes)

    # --- the request -----------------------------------------------------------------

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Trace an HTTP request; pass anything else through."""
        if scope["type"] != "http":
            if scope["type"] == "lifespan" and self.audit is not None:
                await lifespan_hooks(self.app, scope, receive, send, shutdown=self._flush)
                return
            await self.app(scope, receive, send)
            return
        live = self._current()
        if not live.on:
            if self.audit is None:
                await self.app(scope, receive, send)
                return
            root = scope.get("root_path", "")
            await self.app(scope, receive, send)
            context: RequestContext | None = scope.get(CONTEXT_KEY)
            if context is not None:
                for decision in context.decisions:
                    if decision.outcome == "reject":
                        if not self.routes.lookup(scope):
                            route = self.late_route(scope, context, root)
                            method = self._method(scope["method"])
                            self.audit_refusal(scope, decision, method, route, context, None)
                        break
            return
        await self._traced(scope, receive, send, live)

    async def _traced(self, scope: Scope, receive: Receive, send: Send, live: Live) -> None:
        if self.routes.lookup(scope):  # an excluded route
            await self.app(scope, receive, send)
            return
        match = self.routes.match(scope)
        route: str | None = None
        if match is not None:
            root = scope.get("root_path", "")
            route = (root.rstrip("/") + match.template) if root else match.template
        method = self._method(scope["method"])
        current = trace_api.get_current_span()
        outer = current if outer_span(current) else None
        http_metrics = self.http_metrics
        record_http = http_metrics == "on" or (
            http_metrics == "auto" and not metrics_recorded_outside(scope, outer)
        )
        exchange = Exchange(
            self, scope, send, live.instruments, method=method, route=route, record_http=record_http
        )
        instruments = live.instruments
        if instruments is not None and record_http:
            if instruments.active is not None:
                active: dict[str, AttributeValue] = {
                    "http.request.method": method,
                    "url.scheme": scope.get("scheme", "http"),
                }
                exchange.active_attributes = active
                instruments.active.add(1, active)
            if self.body_sizes:
                receive = exchange.counting = CountingReceive(receive)
        token: object = None
        tracer = live.tracer
        if outer is not None:
            exchange.outer = outer
        elif tracer is not None:
            attributes, propagated = start_attributes(
                scope, method, route, self.redact, self.client, self._fields.current()
            )
            parent = propagate.extract(scope["headers"], getter=RAW_GETTER) if propagated else None
            span = exchange.span = tracer.start_span(
                self.span_name(method, route),
                context=parent,
                kind=_SERVER,
                attributes=attributes,
                start_time=exchange.start_ns,
            )
            token = context_api.attach(trace_api.set_span_in_context(span, parent))
        try:
            await self.app(scope, receive, exchange)
        except BaseException as exc:
            exchange.finish(exc)
            raise
        finally:
            exchange.finish(None)
            if token is not None:
                context_api.detach(token)  # type: ignore[arg-type]

    def _method(self, method: str) -> str:
        return method if method in self.known_methods else OTHER

    def span_name(self, method: str, route: str | None) -> str:
        """`{method} {http.route}`, `{method}` without a route; `HTTP` for `_OTHER`."""
        label = "HTTP" if method == OTHER else method
        if route is None:
            return label
        names = self._names
        name = names.get((label, route))
        if name is None:
            name = f"{label} {route}"
            if len(names) < 4096:
                names[label, route] = name
        return name

    # --- used by the exchange at the end of a request ---------------------------------

    def late_route(self, scope: Scope, context: RequestContext, root: str) -> str | None:
        """`http.route` at the end of a request not resolved at its start."""
        resolver = self.routes.router_resolver(scope)
        if resolver is not None:
            if context.route_resolver is resolver:
                match = context.route
            else:  # resolve as the request arrived (an inner router may have moved root_path)
                match = resolver.resolve({**scope, "root_path": root})
        else:
            match = context.route  # a plain ASGI app: what a layer's templates found
        if match is None:
            return None
        return (root.rstrip("/") + match.template) if root else match.template

    def principal_attributes(
        self, context: RequestContext | None, attributes: dict[str, AttributeValue]
    ) -> None:
        """The principal's plan, and its id where opted in."""
        principal = context.principal if context is not None else None
        if principal is None:
            return
        if principal.plan is not None:
            attributes["apiguard.principal.plan"] = principal.plan
        if self.record_principal:
            attributes["apiguard.principal.id"] = principal.id

    def outer_attributes(
        self, scope: Scope, existing: Any, attributes: dict[str, AttributeValue]
    ) -> None:
        """What apiguard knows better than the outer instrumentation: client, query."""
        if self.trusted:
            attributes["client.address"] = self.client(scope)
        if existing is not None and "url.query" in existing and self.redact is not None:
            query: bytes = scope.get("query_string", b"")
            if query:
                attributes["url.query"] = self.redact(query)

    def audit_refusal(
        self,
        scope: Scope,
        decision: Any,
        method: str,
        route: str | None,
        context: RequestContext | None,
        span: Span | None,
    ) -> None:
        """Write (or fold) the audit record of a refused request."""
        audit = self.audit
        if audit is None or not audit.enabled():
            return
        trace_id = span_id = None
        if span is not None:
            span_context = span.get_span_context()
            if span_context.is_valid:
                trace_id = format(span_context.trace_id, "032x")
                span_id = format(span_context.span_id, "016x")
        principal = None
        if self.record_principal and context is not None and context.principal is not None:
            principal = context.principal.id
        audit.refused(
            decision,
            method=method,
            route=route,
            client=self.client(scope),
            trace_id=trace_id,
            span_id=span_id,
            principal=principal,
        )

    async def _flush(self) -> None:
        if self.audit is not None:
            self.audit.flush()

    def flush_audit(self) -> None:
        """Write the audit summaries of refusals folded so far (also done at shutdown)."""
        if self.audit is not None:
            self.audit.flush()


_UNSET: Final = object()
