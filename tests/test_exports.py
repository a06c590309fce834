"""The public names: sorted, importable, documented."""

from __future__ import annotations

import inspect

import apiguard


def test_all_is_sorted_and_unique() -> None:
    assert apiguard.__all__ == sorted(set(apiguard.__all__))


def test_every_exported_name_exists_and_has_a_docstring() -> None:
    for name in apiguard.__all__:
        member = getattr(apiguard, name)
        assert inspect.getdoc(member), f"apiguard.{name} has no docstring"


def test_every_public_callable_in_the_package_root_is_exported() -> None:
    """Nothing public is reachable from `apiguard` without being in __all__."""
    public = {
        name
        for name, value in vars(apiguard).items()
        if not name.startswith("_")
        and not inspect.ismodule(value)
        and (inspect.isclass(value) or inspect.isfunction(value))
        and name not in {"annotations"}
    }
    assert public <= set(apiguard.__all__)
