"""One traced request: the send wrapper that sees the response, and the work at its end.

The end of a request is its last response message (the last body, or the
last trailers), as FastAPI's telemetry takes it, so that background tasks
do not count in its duration; a request whose app returns or raises without
finishing its response ends there. At the end, in one place: the span's
closing attributes and status, every layer's decisions, the metrics and the
audit record. Under an outer server span, that work is done before the last
message is passed on, because the outer instrumentation ends its span when
the message reaches it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from opentelemetry.trace import Span, StatusCode

from apiguard._clock import clock
from apiguard._types import Message, Receive, Scope, Send
from apiguard.context import CONTEXT_KEY, AttributeValue, Decision, RequestContext
from apiguard.tracing._coexist import fill_fastapi_route
from apiguard.tracing._decisions import STORE_UNAVAILABLE

if TYPE_CHECKING:
    from apiguard.tracing._metrics import Instruments
    from apiguard.tracing.middleware import TracingMiddleware

__all__ = ["CountingReceive", "Exchange", "exception_type", "status_class"]

_STATUS_CLASSES = {1: "1xx", 2: "2xx", 3: "3xx", 4: "4xx", 5: "5xx"}


def exception_type(exc: BaseException) -> str:
    """`error.type` for an exception: its qualified type (`builtins` left out)."""
    cls = type(exc)
    module = cls.__module__
    return cls.__qualname__ if module == "builtins" else f"{module}.{cls.__qualname__}"


def status_class(status: int | None, error: bool) -> str:
    """`2xx`...; `5xx` for an exception before any response, `none` when nothing was sent."""
    if status is None:
        return "5xx" if error else "none"
    return _STATUS_CLASSES.get(status // 100, "none")


class CountingReceive:
    """A `receive` that counts the request body's bytes (`http.server.request.body.size`)."""

    __slots__ = ("count", "receive")

    def __init__(self, receive: Receive) -> None:
        self.receive = receive
        self.count = 0

    async def __call__(self) -> Message:
        message = await self.receive()
        if message["type"] == "http.request":
            self.count += len(message.get("body", b""))
        return message


class Exchange:
    """The state of one traced request; also the `send` the app is given."""

    __slots__ = (
        "active_attributes",
        "counting",
        "done",
        "finished",
        "instruments",
        "layer",
        "method",
        "name",
        "outer",
        "raw_method",
        "record_http",
        "response_bytes",
        "root",
        "route",
        "scope",
        "send",
        "span",
        "start",
        "start_ns",
        "status",
        "trailers",
    )

    def __init__(
        self,
        layer: TracingMiddleware,
        scope: Scope,
        send: Send,
        instruments: Instruments | None,
        *,
        method: str,
        route: str | None,
        record_http: bool,
    ) -> None:
        self.layer = layer
        self.scope = scope
        self.send = send
        self.instruments = instruments
        self.method = method
        self.raw_method: str = scope["method"]
        self.route = route
        self.record_http = record_http
        self.root: str = scope.get("root_path", "")
        self.start = clock.monotonic()
        self.start_ns = int(clock.time() * 1e9)
        self.span: Span | None = None
        self.outer: Span | None = None
        self.status: int | None = None
        self.trailers = False
        self.done: float | None = None
        self.finished = False
        self.response_bytes = 0
        self.counting: CountingReceive | None = None
        self.active_attributes: dict[str, AttributeValue] | None = None

    async def __call__(self, message: Message) -> None:
        kind = message["type"]
        if kind == "http.response.start":
            self.status = message["status"]
            self.trailers = message.get("trailers", False)
            await self.send(message)
            return
        if kind == "http.response.body":
            if self.counting is not None:
                self.response_bytes += len(message.get("body", b""))
            if self.trailers or message.get("more_body", False):
                await self.send(message)
                return
        elif kind == "http.response.trailers":
            if message.get("more_trailers", False):
                await self.send(message)
                return
        elif kind != "http.response.pathsend":
            await self.send(message)
            return
        # The response's last message.
        if self.outer is not None:
            self.done = clock.monotonic()
            self.finish(None)  # before the outer instrumentation ends its span
            await self.send(message)
            return
        await self.send(message)
        self.done = clock.monotonic()
        self.finish(None)

    def finish(self, exc: BaseException | None) -> None:
        """Close the request: span attributes and end, metrics, audit record."""
        if self.finished:
            return
        self.finished = True
        layer = self.layer
        scope = self.scope
        end = self.done if self.done is not None else clock.monotonic()
        status = self.status
        error: str | None = None
        if exc is not None:
            error = exception_type(exc)
        elif status is None:
            error = "incomplete_response"
        elif status >= 500:
            error = str(status)
        context: RequestContext | None = scope.get(CONTEXT_KEY)
        decisions: list[Decision] = context.decisions if context is not None else []
        route = self.route
        if route is None and context is not None:
            route = layer.late_route(scope, context, self.root)
        span = self.span
        rejected: Decision | None = None
        if span is not None:
            rejected = self._close_span(span, route, status, error, exc, decisions, context)
        elif self.outer is not None:
            rejected = self._enrich(self.outer, route, decisions, context)
        else:
            rejected = next((d for d in decisions if d.outcome == "reject"), None)
        instruments = self.instruments
        if instruments is not None:
            self._measure(instruments, end - self.start, route, status, error, decisions, context)
        if rejected is not None and layer.audit is not None:
            target = span if span is not None else self.outer
            layer.audit_refusal(scope, rejected, self.method, route, context, target)

    def _close_span(
        self,
        span: Span,
        route: str | None,
        status: int | None,
        error: str | None,
        exc: BaseException | None,
        decisions: list[Decision],
        context: RequestContext | None,
    ) -> Decision | None:
        layer = self.layer
        if not span.is_recording():
            span.end()
            return next((d for d in decisions if d.outcome == "reject"), None)
        attributes: dict[str, AttributeValue] = {}
        if status is not None:
            attributes["http.response.status_code"] = status
        if error is not None:
            attributes["error.type"] = error
        rejected = layer.decision_attributes.add(decisions, attributes)
        layer.principal_attributes(context, attributes)
        if route is not None and self.route is None:  # found late (a plain ASGI app)
            attributes["http.route"] = route
            span.update_name(layer.span_name(self.method, route))
        span.set_attributes(attributes)
        if error is not None:
            span.set_status(StatusCode.ERROR)
            if exc is not None:
                span.record_exception(exc)
        end = self.done if self.done is not None else clock.monotonic()
        span.end(end_time=self.start_ns + int((end - self.start) * 1e9))
        return rejected

    def _enrich(
        self,
        span: Span,
        route: str | None,
        decisions: list[Decision],
        context: RequestContext | None,
    ) -> Decision | None:
        layer = self.layer
        if route is not None:
            fill_fastapi_route(self.scope, route)
        if not span.is_recording():
            return next((d for d in decisions if d.outcome == "reject"), None)
        attributes: dict[str, AttributeValue] = {}
        rejected = layer.decision_attributes.add(decisions, attributes)
        layer.principal_attributes(context, attributes)
        existing: Any = getattr(span, "attributes", None)
        if route is not None and (existing is None or "http.route" not in existing):
            attributes["http.route"] = route
            span.update_name(layer.span_name(self.method, route))
        layer.outer_attributes(self.scope, existing, attributes)
        span.set_attributes(attributes)
        return rejected

    def _measure(
        self,
        instruments: Instruments,
        duration: float,
        route: str | None,
        status: int | None,
        error: str | None,
        decisions: list[Decision],
        context: RequestContext | None,
    ) -> None:
        scope = self.scope
        method = self.method
        if self.record_http:
            attributes: dict[str, AttributeValue] = {
                "http.request.method": method,
                "url.scheme": scope.get("scheme", "http"),
            }
            version = scope.get("http_version")
            if version:
                attributes["network.protocol.version"] = version
            if route is not None:
                attributes["http.route"] = route
            if status is not None:
                attributes["http.response.status_code"] = status
            if error is not None:
                attributes["error.type"] = error
            instruments.duration.record(duration if duration > 0.0 else 0.0, attributes)
            if instruments.active is not None and self.active_attributes is not None:
                instruments.active.add(-1, self.active_attributes)
            if self.counting is not None:
                if instruments.request_size is not None:
                    instruments.request_size.record(self.counting.count, attributes)
                if instruments.response_size is not None:
                    instruments.response_size.record(self.response_bytes, attributes)
        usage: dict[str, AttributeValue] = {
            "http.request.method": method,
            "apiguard.status_class": status_class(status, error is not None),
        }
        if route is not None:
            usage["http.route"] = route
        consumer = self.layer.consumer_label
        if consumer is not None:
            usage["apiguard.consumer"] = consumer(context.principal if context else None)
        instruments.requests.add(1, usage)
        states = self.layer.states
        for decision in decisions:
            if decision.outcome == "reject":
                refusal: dict[str, AttributeValue] = {
                    "apiguard.layer": decision.layer,
                    "apiguard.name": decision.name or decision.layer,
                    "apiguard.reason": decision.reason or "unspecified",
                    "http.request.method": method,
                }
                if decision.status is not None:
                    refusal["http.response.status_code"] = decision.status
                if route is not None:
                    refusal["http.route"] = route
                instruments.refusals.add(1, refusal)
            if decision.reason == STORE_UNAVAILABLE:
                instruments.store_errors.add(
                    1,
                    {
                        "apiguard.layer": decision.layer,
                        "apiguard.name": decision.name or decision.layer,
                        "apiguard.outcome": decision.outcome,
                    },
                )
            state = decision.state
            if state is not None:
                previous = states.change(decision.layer, decision.name, decision.policy, state)
                if previous is not None:
                    transition: dict[str, AttributeValue] = {
                        "apiguard.layer": decision.layer,
                        "apiguard.name": decision.name or decision.layer,
                        "apiguard.state": state,
                        "apiguard.state.previous": previous,
                    }
                    if decision.policy is not None:
                        transition["apiguard.policy"] = decision.policy
                    instruments.transitions.add(1, transition)
