"""The routing package: its modules import alone, in any order, with no cycle."""

from __future__ import annotations

import subprocess
import sys

import pytest

MODULES = [
    "apiguard.context",
    "apiguard.routing",
    "apiguard.routing._keys",
    "apiguard.routing._tree",
    "apiguard.routing._framework",
    "apiguard.routing._resolver",
    "apiguard.routing._policies",
]


@pytest.mark.parametrize("module", MODULES)
def test_module_imports_first_in_a_fresh_interpreter(module: str) -> None:
    """Importing any one of them first works: no import cycle with the context."""
    done = subprocess.run(
        [sys.executable, "-c", f"import {module}"], capture_output=True, text=True, check=False
    )
    assert done.returncode == 0, done.stderr


def test_names_users_import_today_still_import() -> None:
    """`from apiguard.routing import ...` keeps every public name."""
    from apiguard import routing

    assert len(set(routing.__all__)) == len(routing.__all__)
    for name in [
        "Resolver",
        "RouteMatch",
        "RoutePolicies",
        "find_router",
        "normalize_template",
        "parse_route_key",
        "resolve",
        "resolver_for",
        "router_of",
    ]:
        assert getattr(routing, name).__module__.startswith("apiguard.routing")
