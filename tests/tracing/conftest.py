from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.tracing._helpers import Telemetry


@pytest.fixture
def telemetry() -> Iterator[Telemetry]:
    """An SDK tracer and meter provider exporting to memory, for the layer's options."""
    made = Telemetry()
    yield made
    made.shutdown()
