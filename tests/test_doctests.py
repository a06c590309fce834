"""Every `Examples:` block in a docstring runs, as written."""

from __future__ import annotations

import doctest
import importlib
import pkgutil

import pytest

import apiguard

MODULES = sorted(m.name for m in pkgutil.walk_packages(apiguard.__path__, "apiguard."))


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples_run(name: str) -> None:
    module = importlib.import_module(name)
    result = doctest.testmod(module, optionflags=doctest.ELLIPSIS, report=True)
    assert result.failed == 0, f"{result.failed} of {result.attempted} examples failed in {name}"
