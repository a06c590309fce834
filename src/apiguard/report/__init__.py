"""The policy report: every route of an app, and what each layer does there.

`apiguard routes MODULE:APP` (or `python -m apiguard routes MODULE:APP`)
prints it; `--check` makes "no unguarded route" a CI rule. From Python:
[`build_report`][apiguard.report.build_report] gives the
[`Report`][apiguard.report.Report], and its
[`check`][apiguard.report.Report.check] the findings. The report is made
from each layer's [`Description`][apiguard.layer.Description] alone, so a
layer of your own appears in it by implementing
[`describe`][apiguard.layer.Describes].
"""

from __future__ import annotations

from apiguard.report._model import Finding, Report, RouteReport, build_report
from apiguard.report._render import render_json, render_table, to_json
from apiguard.report._stack import chain, layers_of

__all__ = [
    "Finding",
    "Report",
    "RouteReport",
    "build_report",
    "chain",
    "layers_of",
    "render_json",
    "render_table",
    "to_json",
]
