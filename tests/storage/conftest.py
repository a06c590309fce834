from __future__ import annotations

import pytest


@pytest.fixture(autouse=True)
def _no_window_edge(mid_window_wall_clock: float) -> None:
    """Every test here runs with the wall clock pinned mid-window (see the fixture)."""
