"""One SERVER span per request, by the stable HTTP semantic conventions."""

from __future__ import annotations

from typing import Any

import pytest
from opentelemetry import baggage
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.trace import NoOpTracerProvider, SpanKind, StatusCode
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Mount, Route

from apiguard import AuthMiddleware, JWTAuth, TracingMiddleware, guard
from apiguard.testing import FrozenClock, generate_key
from tests.tracing._helpers import (
    KEYS,
    READER_KEY,
    Telemetry,
    attributes,
    call,
    client,
    orders_app,
)

pytestmark = pytest.mark.anyio

TRACE_ID = "0af7651916cd43dd8448eb211c80319c"


class Anything:
    """An ASGI endpoint: its route takes any method."""

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        await PlainTextResponse("ok")(scope, receive, send)


PARENT_ID = "b7ad6b7169203331"


async def test_normal_request_gets_a_server_span_with_every_attribute(
    telemetry: Telemetry,
) -> None:
    """Name, kind, status and each attribute of the conventions for a 200."""
    async with client(orders_app(telemetry)) as http:
        response = await http.get(
            "/orders/42?page=2", headers={"x-api-key": READER_KEY, "user-agent": "tests/1.0"}
        )
    assert response.status_code == 200
    span = telemetry.span()
    assert span.name == "GET /orders/{order_id}"
    assert span.kind is SpanKind.SERVER
    assert span.status.status_code is StatusCode.UNSET
    got = attributes(span)
    assert {k: v for k, v in got.items() if not k.startswith("apiguard.")} == {
        "http.request.method": "GET",
        "url.path": "/orders/42",
        "url.scheme": "http",
        "url.query": "page=2",
        "http.route": "/orders/{order_id}",
        "http.response.status_code": 200,
        "network.protocol.version": "1.1",
        "server.address": "api.example.com",
        "server.port": 80,
        "client.address": "203.0.113.9",
        "network.peer.address": "203.0.113.9",
        "network.peer.port": 4000,
        "user_agent.original": "tests/1.0",
    }
    assert "error.type" not in got


async def test_unmatched_path_is_named_by_its_method_alone(telemetry: Telemetry) -> None:
    """A 404 has no route: the span is `GET`, no `http.route`, not an error."""
    async with client(orders_app(telemetry)) as http:
        response = await http.get("/health/../nope", headers={"x-api-key": READER_KEY})
    assert response.status_code == 404
    span = telemetry.span()
    assert span.name == "GET"
    got = attributes(span)
    assert "http.route" not in got
    assert got["http.response.status_code"] == 404
    assert "error.type" not in got
    assert span.status.status_code is StatusCode.UNSET


async def test_a_4xx_refusal_is_not_an_error(telemetry: Telemetry) -> None:
    """A 401 from authentication: status unset, no `error.type`."""
    async with client(orders_app(telemetry)) as http:
        assert (await http.get("/orders/42")).status_code == 401
    span = telemetry.span()
    assert span.name == "GET /orders/{order_id}"
    assert span.status.status_code is StatusCode.UNSET
    assert "error.type" not in attributes(span)
    assert attributes(span)["http.response.status_code"] == 401


async def test_a_5xx_is_an_error_typed_by_its_status(telemetry: Telemetry) -> None:
    async with client(orders_app(telemetry)) as http:
        assert (await http.get("/unavailable")).status_code == 503
    span = telemetry.span()
    assert span.status.status_code is StatusCode.ERROR
    assert attributes(span)["error.type"] == "503"
    assert attributes(span)["http.response.status_code"] == 503


async def test_an_exception_is_an_error_typed_by_its_qualified_class(
    telemetry: Telemetry,
) -> None:
    """The endpoint raises: `error.type` is the exception's type, recorded as an event."""
    async with client(orders_app(telemetry)) as http:
        assert (await http.get("/boom")).status_code == 500
    span = telemetry.span()
    assert span.name == "GET /boom"
    assert span.status.status_code is StatusCode.ERROR
    assert attributes(span)["error.type"] == "tests.tracing._helpers.Boom"
    assert "http.response.status_code" not in attributes(span)  # the 500 came from outside
    assert [event.name for event in span.events] == ["exception"]


@pytest.mark.parametrize(
    ("method", "path", "name", "original"),
    [
        ("FOO", "/any", "HTTP /any", "FOO"),
        ("FOO", "/nope", "HTTP", "FOO"),
        ("get", "/orders/42", "HTTP", "get"),  # Starlette's methods are case-sensitive: a 405
        ("QUERY", "/any", "QUERY /any", None),
    ],
)
async def test_unknown_and_non_canonical_methods_are_other(
    telemetry: Telemetry, method: str, path: str, name: str, original: str | None
) -> None:
    """`_OTHER` with `http.request.method_original`, and `HTTP` in the span name."""

    async def order(request: Request) -> Response:
        return JSONResponse({})

    app = guard(
        Starlette(routes=[Route("/any", Anything()), Route("/orders/{order_id:int}", order)]),
        Middleware(TracingMiddleware, **telemetry.providers),
    )
    await call(app, method, path)
    span = telemetry.span()
    assert span.name == name
    got = attributes(span)
    assert got["http.request.method"] == ("_OTHER" if original else method)
    assert got.get("http.request.method_original") == original


async def test_known_methods_come_from_the_environment(
    telemetry: Telemetry, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`OTEL_INSTRUMENTATION_HTTP_KNOWN_METHODS` replaces the default list whole."""
    monkeypatch.setenv("OTEL_INSTRUMENTATION_HTTP_KNOWN_METHODS", "GET,PURGE")

    app = guard(
        Starlette(routes=[Route("/any", Anything())]),
        Middleware(TracingMiddleware, **telemetry.providers),
    )
    for method in ("PURGE", "POST"):
        await call(app, method, "/any")
    purge, post = telemetry.server_spans()
    assert (purge.name, attributes(purge)["http.request.method"]) == ("PURGE /any", "PURGE")
    assert (post.name, attributes(post)["http.request.method"]) == ("HTTP /any", "_OTHER")
    assert attributes(post)["http.request.method_original"] == "POST"


async def test_credentials_in_the_query_are_redacted(telemetry: Telemetry) -> None:
    """Signature and credential parameters, however spelt, the option's and the authenticators'."""
    key = generate_key("HS256", kid="k")
    jwt = JWTAuth(
        key=key.verification_key,
        algorithms=["HS256"],
        audience="a",
        issuer="https://i/",
        token_locations=["query:jwt"],
    )
    app = guard(
        Starlette(routes=[Route("/health", lambda r: PlainTextResponse("ok"))]),
        Middleware(TracingMiddleware, redact_query=["session"], **telemetry.providers),
        Middleware(AuthMiddleware, authenticators=[jwt], public=["GET /health"]),
    )
    query = (
        b"sig=s1&Signature=s2&X-Goog-Signature=s3&AWSAccessKeyId=s4&access_token=s5"
        b"&Access%5Ftoken=s6&session=s7&jwt=s8&X-Amz-Signature=s9&page=2&flag"
    )
    await call(app, "GET", "/health", query=query)
    recorded = attributes(telemetry.span())["url.query"]
    assert recorded == (
        "sig=REDACTED&Signature=REDACTED&X-Goog-Signature=REDACTED&AWSAccessKeyId=REDACTED"
        "&access_token=REDACTED&Access%5Ftoken=REDACTED&session=REDACTED&jwt=REDACTED"
        "&X-Amz-Signature=REDACTED&page=2&flag"
    )
    assert not any(f"s{i}" in recorded for i in range(1, 10))


def _query_jwt() -> JWTAuth:
    key = generate_key("HS256", kid="k")
    return JWTAuth(
        key=key.verification_key,
        algorithms=["HS256"],
        audience="a",
        issuer="https://i/",
        token_locations=["query:tok"],
    )


def _health() -> list[Route]:
    return [Route("/health", lambda r: PlainTextResponse("ok"))]


def _mounted(telemetry: Telemetry) -> Any:
    """Authentication in a mounted sub-app, tracing on the outer one."""
    inner = guard(
        Starlette(routes=_health()), Middleware(AuthMiddleware, authenticators=[_query_jwt()])
    )
    return guard(
        Starlette(routes=[Mount("/api", inner)]),
        Middleware(TracingMiddleware, **telemetry.providers),
    )


def _wrapped(telemetry: Telemetry) -> Any:
    """Tracing wrapped around an app whose layers are registered inside it."""
    inner = guard(
        Starlette(routes=_health()), Middleware(AuthMiddleware, authenticators=[_query_jwt()])
    )
    return TracingMiddleware(inner, **telemetry.providers)


@pytest.mark.parametrize(
    ("build", "path"),
    [(_mounted, "/api/health"), (_wrapped, "/health")],
    ids=["mounted", "wrapped"],
)
async def test_an_authenticators_query_credential_is_redacted_wherever_it_sits(
    telemetry: Telemetry, build: Any, path: str
) -> None:
    """The parameter a JWT is read from never reaches a span, the layer below or not."""
    await call(build(telemetry), "GET", path, query=b"tok=eyJ.s3cr3t.sig&page=2")
    recorded = attributes(telemetry.span())["url.query"]
    assert recorded == "tok=REDACTED&page=2"


class Touchy(Anything):
    """An ASGI endpoint whose attributes raise when looked at."""

    @property
    def routes(self) -> list[Any]:
        raise RuntimeError("not here")


async def test_looking_for_credentials_never_stops_the_start(telemetry: Telemetry) -> None:
    app = guard(
        Starlette(routes=[Route("/any", Touchy())]),
        Middleware(TracingMiddleware, **telemetry.providers),
    )
    assert await call(app, "GET", "/any", query=b"access_token=s1") == 200
    assert attributes(telemetry.span())["url.query"] == "access_token=REDACTED"


async def test_the_query_can_be_left_out(telemetry: Telemetry) -> None:
    async with client(orders_app(telemetry, query="drop")) as http:
        await http.get("/health?page=2")
    assert "url.query" not in attributes(telemetry.span())


async def test_the_parent_comes_from_traceparent(telemetry: Telemetry) -> None:
    """W3C trace context and baggage are extracted with the global propagator."""
    seen: dict[str, Any] = {}

    async def endpoint(request: Request) -> Response:
        seen["tenant"] = baggage.get_baggage("tenant")
        return PlainTextResponse("ok")

    app = guard(
        Starlette(routes=[Route("/x", endpoint)]),
        Middleware(TracingMiddleware, **telemetry.providers),
    )
    headers = {
        "traceparent": f"00-{TRACE_ID}-{PARENT_ID}-01",
        "tracestate": "vendor=value",
        "baggage": "tenant=acme",
    }
    async with client(app) as http:
        await http.get("/x", headers=headers)
    span = telemetry.span()
    assert span.parent is not None
    assert span.parent.is_remote
    assert format(span.parent.span_id, "016x") == PARENT_ID
    assert format(span.context.trace_id, "032x") == TRACE_ID
    assert span.context.trace_state.get("vendor") == "value"
    assert seen["tenant"] == "acme"


async def test_without_traceparent_the_span_is_a_root(telemetry: Telemetry) -> None:
    async with client(orders_app(telemetry)) as http:
        await http.get("/health", headers={"traceparent": "garbage"})
    assert telemetry.span().parent is None


async def test_excluded_routes_get_no_span(telemetry: Telemetry) -> None:
    """Health checks listed in `exclude`: no span, no metric; other routes as usual."""
    async with client(orders_app(telemetry, exclude=["GET /health"])) as http:
        await http.get("/health")
        await http.get("/orders/42", headers={"x-api-key": READER_KEY})
    names = [span.name for span in telemetry.server_spans()]
    assert "GET /health" not in names
    assert "GET /orders/{order_id}" in names
    routes = {
        point.attributes.get("http.route")
        for point in telemetry.points("http.server.request.duration")
    }
    assert "/health" not in routes


@pytest.mark.parametrize(
    ("host", "expected"),
    [
        (b"api.example.com:8443", ("api.example.com", 8443)),
        (b"[2001:db8::1]:8000", ("2001:db8::1", 8000)),
        (b"API.Example.COM", ("api.example.com", 80)),
        (b"evil.example/path", None),
        (b"host:99999", None),
    ],
)
async def test_server_address_and_port_come_from_host(
    telemetry: Telemetry, host: bytes, expected: tuple[str, int] | None
) -> None:
    app = guard(
        Starlette(routes=[Route("/x", lambda r: PlainTextResponse("ok"))]),
        Middleware(TracingMiddleware, **telemetry.providers),
    )
    scope_headers = [(b"host", host)]
    await _raw(app, scope_headers)
    got = attributes(telemetry.span())
    if expected is None:
        assert "server.address" not in got
        assert "server.port" not in got
    else:
        assert (got["server.address"], got["server.port"]) == expected


async def _raw(app: Any, headers: list[tuple[bytes, bytes]]) -> None:
    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        return None

    scope = {
        "type": "http",
        "http_version": "1.1",
        "method": "GET",
        "scheme": "http",
        "path": "/x",
        "raw_path": b"/x",
        "root_path": "",
        "query_string": b"",
        "headers": headers,
        "client": ("198.51.100.1", 1234),
        "server": ("127.0.0.1", 8000),
    }
    await app(scope, receive, send)


async def test_client_address_believes_only_trusted_proxies(telemetry: Telemetry) -> None:
    app = orders_app(telemetry, trusted_proxies=["10.0.0.0/8"])
    forwarded = {"x-forwarded-for": "192.0.2.77", "x-api-key": READER_KEY}
    async with client(app, peer=("10.1.2.3", 1000)) as http:
        await http.get("/orders/1", headers=forwarded)
    async with client(app, peer=("198.51.100.9", 1000)) as http:
        await http.get("/orders/2", headers=forwarded)
    trusted, untrusted = telemetry.server_spans()
    assert attributes(trusted)["client.address"] == "192.0.2.77"
    assert attributes(trusted)["network.peer.address"] == "10.1.2.3"
    assert attributes(untrusted)["client.address"] == "198.51.100.9"


async def test_a_mounted_app_route_includes_its_prefix(telemetry: Telemetry) -> None:
    """Templates are the full route, mount prefixes included; `root_path` too."""
    inner = Starlette(routes=[Route("/items/{item_id}", lambda r: PlainTextResponse("ok"))])
    app = guard(
        Starlette(routes=[Mount("/api", inner)]),
        Middleware(TracingMiddleware, **telemetry.providers),
    )
    async with client(app) as http:
        await http.get("/api/items/7")
    assert telemetry.span().name == "GET /api/items/{item_id}"
    served = guard(
        Starlette(routes=[Route("/items/{item_id}", lambda r: PlainTextResponse("ok"))]),
        Middleware(TracingMiddleware, **telemetry.providers),
    )
    transport_app: Any = served
    scope_root = "/prefix"

    async def with_root(scope: Any, receive: Any, send: Any) -> None:
        scope = {**scope, "root_path": scope_root, "path": scope_root + scope["path"]}
        await transport_app(scope, receive, send)

    async with client(with_root) as http:
        await http.get("/items/8")
    assert telemetry.server_spans()[-1].name == "GET /prefix/items/{item_id}"


async def test_span_duration_is_the_measured_duration(telemetry: Telemetry) -> None:
    """The span and `http.server.request.duration` measure the same interval."""
    with FrozenClock() as frozen:

        async def slow(request: Request) -> Response:
            frozen.advance(0.25)
            return PlainTextResponse("ok")

        app = guard(
            Starlette(routes=[Route("/slow", slow)]),
            Middleware(TracingMiddleware, **telemetry.providers),
        )
        async with client(app) as http:
            await http.get("/slow")
    span = telemetry.span()
    assert span.end_time is not None
    assert span.start_time is not None
    assert span.end_time - span.start_time == 250_000_000
    (point,) = telemetry.points("http.server.request.duration")
    assert point.sum == pytest.approx(0.25)


async def test_a_no_op_provider_records_nothing(telemetry: Telemetry) -> None:
    """The API's no-op tracer provider: no span, and the request is served."""
    app = orders_app(None, tracer_provider=NoOpTracerProvider())
    async with client(app) as http:
        assert (await http.get("/orders/1", headers={"x-api-key": READER_KEY})).status_code == 200
    assert telemetry.spans() == []


async def test_websocket_connections_pass_through(telemetry: Telemetry) -> None:
    from starlette.routing import WebSocketRoute
    from starlette.websockets import WebSocket

    async def echo(websocket: WebSocket) -> None:
        await websocket.accept()
        await websocket.send_text(await websocket.receive_text())
        await websocket.close()

    app = guard(
        Starlette(routes=[WebSocketRoute("/ws", echo)]),
        Middleware(TracingMiddleware, **telemetry.providers),
    )
    incoming = [
        {"type": "websocket.connect"},
        {"type": "websocket.receive", "text": "hi"},
        {"type": "websocket.disconnect", "code": 1000},
    ]
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return incoming.pop(0)

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    scope = {
        "type": "websocket",
        "path": "/ws",
        "raw_path": b"/ws",
        "root_path": "",
        "query_string": b"",
        "headers": [(b"host", b"api.example.com")],
        "client": ("203.0.113.9", 4000),
        "server": ("127.0.0.1", 8000),
        "scheme": "ws",
        "subprotocols": [],
    }
    await app(scope, receive, send)
    assert [m["type"] for m in sent] == ["websocket.accept", "websocket.send", "websocket.close"]
    assert telemetry.spans() == []


async def test_one_provider_per_layer_and_the_global_one_untouched() -> None:
    """A provider given to the layer is used; the global providers stay unset."""
    from opentelemetry import trace

    own = Telemetry()
    app = orders_app(own)
    async with client(app) as http:
        await http.get("/orders/3", headers={"x-api-key": READER_KEY})
    assert len(own.server_spans()) == 1
    assert not isinstance(trace.get_tracer_provider(), TracerProvider)
    own.shutdown()


async def test_keys_given_to_the_app_never_reach_the_span(telemetry: Telemetry) -> None:
    async with client(orders_app(telemetry, keys=KEYS)) as http:
        await http.get("/orders/4", headers={"x-api-key": READER_KEY})
        await http.get("/orders/4", headers={"x-api-key": "k-wrong-9999"})
    for span in telemetry.server_spans():
        assert not any(
            READER_KEY in str(v) or "k-wrong" in str(v) for v in attributes(span).values()
        )
