"""Every benchmark case still does what its name claims (status, no error)."""

from __future__ import annotations

import importlib

import pytest

pytestmark = pytest.mark.anyio


@pytest.mark.parametrize("suite", ["core", "routing", "auth", "stack"])
async def test_benchmark_cases_answer_as_named(suite: str) -> None:
    module = importlib.import_module(f"benchmarks.{suite}")
    cases = module.cases()
    assert cases
    for case in cases:
        await case.check()  # raises on a wrong status
        assert await case.batch(3) > 0
