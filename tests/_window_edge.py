"""A pytest plugin that starts every test just before a window edge, to find clock-bound tests.

`python -m pytest -p tests._window_edge tests/ratelimit tests/storage` puts
apiguard's wall clock `APIGUARD_TEST_EDGE` seconds (default 0.03) before an
hour boundary, hence a minute's, when each test starts, and lets it run.
A test that counts requests within a window on the real clock then sees
the window roll over between two of them, every run instead of once in a
few hundred. The tests here pin the wall clock mid-window
(`mid_window_wall_clock`) and must pass under this plugin too.
"""

from __future__ import annotations

import math
import os
import time

import pytest

from apiguard._clock import clock


@pytest.fixture(autouse=True)
def _window_edge(_fresh_state: None) -> None:
    edge = float(os.environ.get("APIGUARD_TEST_EDGE", "0.03"))
    real = time.time()
    offset = math.ceil(real / 3600) * 3600 - edge - real
    clock.time = lambda: time.time() + offset
