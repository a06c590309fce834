"""The validation benchmark measures what it says: every case answers as claimed."""

from __future__ import annotations

import pytest
from benchmarks.__main__ import SUITES
from benchmarks.validation import DENSE_33, RECORDS_32, RECORDS_33, MiB, cases

pytestmark = pytest.mark.anyio


def test_suite_is_registered() -> None:
    assert "validation" in SUITES


def test_one_mib_bodies_are_within_the_default_limit() -> None:
    assert all(len(body) <= MiB for body in (RECORDS_32, RECORDS_33, DENSE_33))


@pytest.mark.slow
async def test_every_case_answers_as_its_name_says() -> None:
    """Each case's check(): the expected status (201, or 400 past the depth limit)."""
    for case in cases():
        await case.check()
