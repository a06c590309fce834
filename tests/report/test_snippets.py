"""The report's output in the docs is generated: this test checks it (and rewrites it on request).

Run `APIGUARD_WRITE_SNIPPETS=1 make test` (or this file) after changing the
report or the examples, and commit the snippets it writes.
"""

from __future__ import annotations

import io
import os
from pathlib import Path

import pytest

from apiguard.report.cli import main

SNIPPETS = Path(__file__).resolve().parents[2] / "docs" / "snippets"

#: Each snippet file the docs include, and the command line that makes it.
GENERATED = {
    "orders-report.txt": ["routes", "examples.orders:app"],
    "report-check.txt": ["routes", "examples.report_check:app", "--check"],
    "report-check-fixed.txt": ["routes", "examples.report_check:fixed", "--check"],
}


def _run(argv: list[str]) -> str:
    """The output as a terminal shows it: the command, the report, then the findings."""
    out, err = io.StringIO(), io.StringIO()
    status = main(argv, stdout=out, stderr=err)
    return f"$ apiguard {' '.join(argv)}\n{out.getvalue()}{err.getvalue()}$ echo $?\n{status}\n"


@pytest.mark.parametrize("name", sorted(GENERATED))
def test_snippet_is_the_commands_output(name: str) -> None:
    expected = _run(GENERATED[name])
    path = SNIPPETS / name
    if os.environ.get("APIGUARD_WRITE_SNIPPETS") == "1":
        path.write_text(expected)
    assert path.exists(), f"{path} is missing: run with APIGUARD_WRITE_SNIPPETS=1"
    assert path.read_text() == expected, (
        f"{path} is out of date: run this test with APIGUARD_WRITE_SNIPPETS=1 and commit it"
    )
