"""The wall-clock instant the rate-limit and storage tests run at (see `mid_window_wall_clock`)."""

from __future__ import annotations

from typing import Final

#: 20 s into a minute, 1,280 s into an hour, 80,000 s into a day (UTC).
MID_WINDOW: Final = 1_700_000_000.0
