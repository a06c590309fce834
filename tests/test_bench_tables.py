"""The docs' benchmark tables: written between their markers, from a result file."""

from __future__ import annotations

import pytest
from benchmarks._tables import replace_section, section_stack, update_page


def entry(case: str, group: str, label: str, method: str, **figures: object) -> dict[str, object]:
    meta = {"group": group, "label": label, "method": method}
    return {"case": case, "unit": "request", "samples_us": [1.0], "meta": meta, **figures}


DOCUMENT = {
    "suites": {
        "stack": [
            entry("bare GET", "bare", "bare app", "GET", median_us=12.0),
            entry("bare POST", "bare", "bare app", "POST", median_us=18.0),
            entry(
                "stack GET",
                "stack",
                "the stack (7 layers)",
                "GET",
                median_us=36.0,
                overhead_us=24.0,
                overhead_iqr_us=[23.5, 24.5],
            ),
        ]
    }
}


def test_the_stack_table_has_the_bare_app_and_the_paired_overhead() -> None:
    table = section_stack(DOCUMENT)
    assert table is not None
    assert "| the bare app (µs a request) | 12.0 |  | 18.0 |  |" in table
    assert "| **the stack (7 layers)** | +24.0 | +23.5 … +24.5 | - |  |" in table


@pytest.mark.parametrize("old", ["", "old\n", "old\nlines\n"])
def test_a_section_is_replaced_between_its_markers_only(old: str) -> None:
    page = f"intro\n<!-- bench:stack -->\n{old}<!-- /bench:stack -->\noutro\n"
    assert replace_section(page, "stack", "new") == (
        "intro\n<!-- bench:stack -->\nnew\n<!-- /bench:stack -->\noutro\n"
    )


def test_missing_markers_are_an_error_not_a_silent_skip() -> None:
    with pytest.raises(ValueError, match="bench:stack"):
        replace_section("no markers here", "stack", "new")


def test_sections_without_data_are_left_as_they_were() -> None:
    page = (
        "<!-- bench:stack -->\nold\n<!-- /bench:stack -->\n"
        "<!-- bench:server -->\nkept\n<!-- /bench:server -->\n"
    )
    text, done = update_page(page, DOCUMENT)
    assert done == ["stack"]
    assert "kept" in text
    assert "old" not in text


def test_the_performance_page_has_every_sections_markers() -> None:
    from pathlib import Path

    from benchmarks._tables import SECTIONS

    page = (Path(__file__).parent.parent / "docs/explanation/performance.md").read_text()
    for name in SECTIONS:
        assert f"<!-- bench:{name} -->" in page
        assert f"<!-- /bench:{name} -->" in page
