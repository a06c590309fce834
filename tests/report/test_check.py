"""`apiguard routes --check`: no unguarded route, no escaped layer, no app that would not start."""

from __future__ import annotations

import io
import json
import re

import pytest

from apiguard.report.cli import main


def run(*argv: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    status = main(["routes", *argv], stdout=out, stderr=err)
    return status, out.getvalue(), err.getvalue()


def test_check_names_every_unguarded_route_http_and_websocket() -> None:
    status, _, err = run("tests.report._apps:unguarded", "--check")
    assert status == 1
    assert err.splitlines() == [
        "apiguard routes: GET /orders: no authentication decision "
        "(neither public nor behind an authenticator)",
        "apiguard routes: POST /orders: no authentication decision "
        "(neither public nor behind an authenticator)",
        "apiguard routes: GET /status: no authentication decision "
        "(neither public nor behind an authenticator)",
        "apiguard routes: WEBSOCKET /live: no authentication decision "
        "(neither public nor behind an authenticator)",
        "apiguard routes: 4 problem(s) in tests.report._apps:unguarded",
    ]


def test_check_passes_once_the_routes_are_declared_public() -> None:
    status, out, err = run("tests.report._apps:declared", "--check")
    assert (status, err) == (0, "")
    assert re.search(r"^GET +/status +ratelimit:ip +off \(exempt: yes\)$", out, re.M)
    assert re.search(r"^ +auth +off \(mode: public\)$", out, re.M)


def test_layers_of_a_mounted_app_guard_the_routes_under_its_mount() -> None:
    """The API's own authentication counts for /api/...; the outer routes are named."""
    status, _, err = run("tests.report._apps:mounted", "--check", "--json")
    assert status == 1
    assert "GET /status: no authentication decision" in err
    assert "WEBSOCKET /live: no authentication decision" in err
    assert "/api" not in err
    status, out, _ = run("tests.report._apps:mounted", "--json")
    routes = {f"{r['method']} {r['route']}": r for r in json.loads(out)["routes"]}
    item = routes["GET /api/items/{item_id}"]
    assert item["authentication"] == "required"
    assert [(layer["layer"], layer["applies"]) for layer in item["layers"]] == [
        ("ipfilter", True),
        ("auth", True),
    ]
    write = routes["POST /api/items"]["layers"][1]
    assert write["summary"]["scopes"] == ["items:write"]  # the API's own key, /items


def test_a_start_up_check_that_fails_is_reported_and_fails_the_run() -> None:
    """A policy naming a template the app does not have: the app would not start."""
    status, out, err = run("tests.report._apps:misconfigured")
    assert status == 1
    assert (
        "the app would not start: AuthMiddleware[name='auth']: public: route 'GET /stauts'" in out
    )
    assert "did you mean '/status'?" in err
    status, out, _ = run("tests.report._apps:misconfigured", "--json")
    document = json.loads(out)
    assert document["routes"] == []
    assert document["findings"][0]["rule"] == "start-up"


def test_an_outer_route_shadowing_a_mounted_one_is_not_credited_with_its_layers() -> None:
    """The outer route answers: the mounted app's authentication never runs there."""
    status, _, err = run("tests.report._apps:shadowed", "--check")
    assert status == 1
    assert err.splitlines()[:-1] == [
        f"apiguard routes: {route}: no authentication decision "
        "(neither public nor behind an authenticator)"
        for route in ("GET /api/items/{item_id}", "* /api/items", "POST /api/items")
    ]


def test_an_app_whose_routes_cannot_be_found_fails_the_check() -> None:
    """A wrapper hiding the router: zero routes checked is no pass."""
    status, out, err = run("tests.report._apps:hidden", "--check")
    assert status == 1
    assert "0 routes" in out
    assert "no route found" in err
    status, out, _ = run("tests.report._apps:hidden", "--check", "--json")
    assert json.loads(out)["findings"][0]["rule"] == "no-routes"


@pytest.mark.parametrize(
    ("argv", "status", "named"),
    [
        pytest.param(["--require", "ratelimit"], 0, [], id="every-route-limited"),
        pytest.param(["--require", "ratelimit:ip"], 0, [], id="by-name"),
        pytest.param(
            ["--require", "ratelimit:plan"],
            1,
            ["GET /orders", "POST /orders", "WEBSOCKET /live"],
            id="no-such-limiter",
        ),
        pytest.param(
            ["--require", "validation"],
            1,
            ["GET /orders", "POST /orders", "WEBSOCKET /live"],
            id="no-such-layer",
        ),
    ],
)
def test_require_names_the_routes_escaping_a_layer(
    argv: list[str], status: int, named: list[str]
) -> None:
    """Every route passes the rate limiter but GET /status, which is exempted from the rule."""
    code, _, err = run("tests.report._apps:declared", *argv, "--exempt", "GET /status")
    lines = [line for line in err.splitlines() if "required for every route" in line]
    assert code == status
    assert [line.split(": ")[1] for line in lines] == named


def test_an_exempt_route_escapes_a_required_layer_until_it_is_excused() -> None:
    status, _, err = run("tests.report._apps:declared", "--require", "ratelimit")
    assert status == 1
    assert err.splitlines()[0] == (
        "apiguard routes: GET /status: ratelimit:ip does not apply here (required for every route)"
    )
    status, _, err = run(
        "tests.report._apps:declared", "--require", "ratelimit", "--exempt", "GET /status"
    )
    assert (status, err) == (0, "")


def test_an_exemption_naming_no_route_is_a_finding() -> None:
    status, _, err = run("tests.report._apps:declared", "--check", "--exempt", "GET /stauts")
    assert status == 1
    assert "GET /stauts: is exempted but is not a route of the app" in err


@pytest.mark.parametrize(
    ("target", "message"),
    [
        ("tests.report._apps", "is not like 'package.module:app'"),
        ("tests.report._nowhere:app", "cannot import 'tests.report._nowhere'"),
        ("tests.report._apps:nothing", "has no attribute 'nothing'"),
        ("tests.report._apps:KEYS", "not an ASGI app"),
    ],
)
def test_an_app_that_cannot_be_loaded_exits_2(target: str, message: str) -> None:
    status, out, err = run(target)
    assert (status, out) == (2, "")
    assert message in err


def test_a_malformed_exemption_exits_2() -> None:
    status, _, err = run("tests.report._apps:declared", "--exempt", "get /x")
    assert status == 2
    assert "--exempt: route key 'get /x' does not start with an uppercase HTTP method" in err


def test_options_refused_at_import_are_reported_as_a_start_up_failure() -> None:
    status, out, err = run("tests.report._bad_options:app", "--check")
    assert status == 1
    assert "the app would not start: RateLimitMiddleware[name='default']: limit" in out
    assert "'ten a minute'" in err


def test_options_refused_when_the_stack_is_built_are_reported() -> None:
    status, out, _ = run("tests.report._apps:unvalidated")
    assert status == 1
    assert "the app would not start: RateLimitMiddleware[name='default']: limit" in out
