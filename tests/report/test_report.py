"""The policy report: every route and method, each layer's description, without serving the app."""

from __future__ import annotations

import io
import json
import os
import re
import socket
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.responses import PlainTextResponse
from starlette.routing import Mount, Route, WebSocketRoute

from apiguard import (
    AuthMiddleware,
    RateLimitMiddleware,
    ValidationMiddleware,
    guard,
)
from apiguard.layer import Description, Security
from apiguard.report import build_report, render_table
from apiguard.report.cli import main
from tests.report import _apps

ROOT = Path(__file__).resolve().parents[2]


async def ok(request: Any) -> PlainTextResponse:
    return PlainTextResponse("ok")


async def static(scope: Any, receive: Any, send: Any) -> None:
    await PlainTextResponse("file")(scope, receive, send)


def rows(app: Any) -> list[tuple[str, str, str | None]]:
    return [(r.method, r.key, r.security) for r in build_report(app).routes]


def test_every_route_method_and_websocket_in_dispatch_order() -> None:
    app = guard(
        Starlette(
            routes=[
                Route("/orders", ok, methods=["POST", "GET"]),
                Route("/orders", ok, methods=["GET"]),  # shadowed: never dispatched to
                WebSocketRoute("/live", ok),
                Mount("/static", static),
            ]
        ),
        Middleware(AuthMiddleware, authenticators=[_apps.KEYS], public=["/static/{path}"]),
    )
    assert rows(app) == [
        ("GET", "/orders", "required"),
        ("POST", "/orders", "required"),
        ("WEBSOCKET", "/live", "required"),
        ("*", "/static/{path}", "public"),
        ("WEBSOCKET", "/static/{path}", "public"),
    ]


def test_head_is_listed_only_where_a_layer_treats_it_apart_from_get() -> None:
    app = guard(
        Starlette(routes=[Route("/a", ok), Route("/b", ok)]),
        Middleware(AuthMiddleware, authenticators=[_apps.KEYS], public=["HEAD /b"]),
    )
    assert rows(app) == [
        ("GET", "/a", "required"),
        ("GET", "/b", "required"),
        ("HEAD", "/b", "public"),
    ]


def test_each_layer_speaks_for_itself_in_order() -> None:
    app = guard(
        Starlette(routes=[Route("/orders", ok, methods=["GET", "POST"])]),
        Middleware(RateLimitMiddleware, name="ip", limit="10/minute"),
        Middleware(AuthMiddleware, authenticators=[_apps.KEYS]),
        Middleware(ValidationMiddleware, max_body_bytes=1024),
    )
    report = build_report(app, name="orders")
    assert report.layers == [("ratelimit", "ip"), ("auth", "auth"), ("validation", "validation")]
    post = report.routes[1]
    assert all(isinstance(d, Description) for d in post.descriptions)
    assert post.descriptions[2].summary["max_body_bytes"] == 1024
    table = render_table(report)
    assert re.search(r"^  ratelimit:ip +key: by_ip\(", table, re.M)
    assert "max_body_bytes: 1024" in table


def test_no_store_is_connected_to_without_lifespan() -> None:
    """A Redis limiter's report opens no connection: the store connects at lifespan start-up."""
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        listener.settimeout(0.2)
        port = listener.getsockname()[1]
        accepted: list[object] = []
        stop = threading.Event()

        def accept() -> None:
            while not stop.is_set():
                try:
                    accepted.append(listener.accept()[0])
                except TimeoutError:
                    continue

        thread = threading.Thread(target=accept, daemon=True)
        thread.start()
        try:
            env = {**os.environ, "REPORT_REDIS": f"redis://127.0.0.1:{port}/0"}
            done = subprocess.run(
                [sys.executable, "-m", "apiguard", "routes", "tests.report._apps:redis_store"],
                cwd=ROOT,
                env=env,
                capture_output=True,
                text=True,
                timeout=60,
                check=False,
            )
        finally:
            stop.set()
            thread.join(5)
            for connection in accepted:
                connection.close()  # type: ignore[attr-defined]
    assert done.returncode == 0, done.stderr
    assert f"redis://127.0.0.1:{port}/0" in done.stdout
    assert accepted == []


def test_the_console_script_runs_the_same_command() -> None:
    script = Path(sys.executable).with_name("apiguard")
    done = subprocess.run(
        [str(script), "routes", "tests.report._apps:unguarded", "--check"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 1
    assert "WEBSOCKET /live: no authentication decision" in done.stderr


def test_lifespan_runs_only_when_asked() -> None:
    _apps.events.clear()
    assert main(["routes", "tests.report._apps:with_lifespan"], stdout=io.StringIO()) == 0
    assert _apps.events == []
    assert (
        main(["routes", "tests.report._apps:with_lifespan", "--lifespan"], stdout=io.StringIO())
        == 0
    )
    assert _apps.events == ["startup", "shutdown"]


def test_a_lifespan_that_fails_to_start_is_reported() -> None:
    out, err = io.StringIO(), io.StringIO()
    assert (
        main(["routes", "tests.report._apps:misconfigured", "--lifespan"], stdout=out, stderr=err)
        == 1
    )
    assert "apiguard: AuthMiddleware[name='auth']: public: route 'GET /stauts'" in out.getvalue()


def test_factory_apps_are_called() -> None:
    out = io.StringIO()
    assert main(["routes", "tests.report._apps:make_app", "--factory", "--check"], stdout=out) == 0
    assert "3 routes" not in out.getvalue()
    assert "4 routes, 1 layer\n" in out.getvalue()


def test_json_carries_every_description() -> None:
    out = io.StringIO()
    assert main(["routes", "tests.report._apps:declared", "--json", "--check"], stdout=out) == 0
    document = json.loads(out.getvalue())
    assert document["app"] == "tests.report._apps:declared"
    assert document["layers"] == [
        {"layer": "ratelimit", "name": "ip"},
        {"layer": "auth", "name": "auth"},
    ]
    assert document["findings"] == []
    post = next(r for r in document["routes"] if r["method"] == "POST")
    auth = post["layers"][1]
    assert auth["security"] == {
        "mode": "required",
        "schemes": [
            {"name": "api_key", "type": "apiKey", "in": "header", "parameter": "x-api-key"}
        ],
        "scopes": [],
    }
    assert {a["status"] for a in auth["answers"]} == {400, 401}
    assert post["layers"][0]["response_headers"] == ["RateLimit", "RateLimit-Policy"]


class HealthLike:
    """A health layer that answers /healthz itself, before any layer inside it."""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        await self.app(scope, receive, send)

    def describe(self, method: str, key: str) -> Description:
        if key != "/healthz":
            return Description("health", "health", False)
        return Description("health", "health", security=Security("public"), handles=True)


def test_health_endpoints_count_as_public_and_stop_the_layers_inside() -> None:
    app = guard(
        Starlette(routes=[Route("/healthz", ok), Route("/orders", ok)]),
        Middleware(HealthLike),
        Middleware(RateLimitMiddleware, limit="10/minute"),
        Middleware(AuthMiddleware, authenticators=[_apps.KEYS]),
    )
    report = build_report(app)
    assert [(r.key, r.security) for r in report.routes] == [
        ("/healthz", "public"),
        ("/orders", "required"),
    ]
    assert report.check() == []
    [finding] = report.check(require=["ratelimit"])
    assert str(finding) == (
        "GET /healthz: answered by health before any ratelimit layer (required for every route)"
    )
    table = render_table(report)
    assert re.search(r"^GET +/healthz +health +on\n +ratelimit:default +not reached$", table, re.M)
