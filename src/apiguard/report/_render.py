"""The policy report as text (a table) and as JSON, from the layers' descriptions alone."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence

from apiguard.layer import Answer, Description, JSONValue, Security
from apiguard.report._model import Finding, Report, label

__all__ = ["render_json", "render_table", "to_json"]


# --- JSON -----------------------------------------------------------------------------


def _answer(answer: Answer) -> dict[str, JSONValue]:
    return {
        "status": answer.status,
        "reason": answer.reason,
        "headers": list(answer.headers),
        "type": answer.type,
        "description": answer.description,
    }


def _security(security: Security | None) -> JSONValue:
    if security is None:
        return None
    schemes: list[JSONValue] = []
    for scheme in security.schemes:
        given: dict[str, str | None] = {
            "scheme": scheme.scheme,
            "bearer_format": scheme.bearer_format,
            "in": scheme.location,
            "parameter": scheme.parameter,
        }
        entry: dict[str, JSONValue] = {"name": scheme.name, "type": scheme.type}
        entry.update({key: value for key, value in given.items() if value is not None})
        schemes.append(entry)
    return {"mode": security.mode, "schemes": schemes, "scopes": list(security.scopes)}


def _description(description: Description) -> dict[str, JSONValue]:
    return {
        "layer": description.layer,
        "name": description.name,
        "applies": description.applies,
        "summary": dict(description.summary),
        "answers": [_answer(answer) for answer in description.answers],
        "security": _security(description.security),
        "request_headers": [
            {"name": h.name, "required": h.required, "description": h.description}
            for h in description.request_headers
        ],
        "response_headers": list(description.response_headers),
    }


def to_json(report: Report, findings: Sequence[Finding] | None = None) -> dict[str, JSONValue]:
    """The report as a JSON-ready dict; `findings` (from `--check`) included when given."""
    document: dict[str, JSONValue] = {
        "app": report.app,
        "error": report.error,
        "layers": [{"layer": kind, "name": name} for kind, name in report.layers],
        "routes": [
            {
                "method": route.method,
                "route": route.key,
                "kind": route.kind,
                "authentication": route.security,
                "layers": [
                    {**_description(d), "reached": index < len(route.reached)}
                    for index, d in enumerate(route.descriptions)
                ],
            }
            for route in report.routes
        ],
    }
    if findings is not None:
        document["findings"] = [
            {"rule": f.rule, "route": f.route, "message": f.message} for f in findings
        ]
    return document


def render_json(report: Report, findings: Sequence[Finding] | None = None) -> str:
    """The report as indented JSON text."""
    return json.dumps(to_json(report, findings), indent=2, ensure_ascii=False) + "\n"


# --- the table ------------------------------------------------------------------------


def _text(value: JSONValue) -> str:
    """A summary value as one line: lists comma-separated, mappings as `key (value)`."""
    if value is None:
        return "none"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, list):
        return ", ".join(_text(item) for item in value) if value else "none"
    if isinstance(value, dict):
        return ", ".join(f"{key} ({_text(item)})" for key, item in value.items())
    return str(value)


def _canonical(value: JSONValue) -> str:
    return json.dumps(value, sort_keys=True, default=str)


def _shared(report: Report) -> dict[str, dict[str, JSONValue]]:
    """Per layer, the summary entries alike on every route where it applies.

    A layer that applies on fewer than two routes: alike on every route it
    stands in front of.
    """
    applying: dict[str, list[Mapping[str, JSONValue]]] = {}
    everywhere: dict[str, list[Mapping[str, JSONValue]]] = {}
    for route in report.routes:
        for description in route.reached:
            everywhere.setdefault(label(description), []).append(description.summary)
            if description.applies:
                applying.setdefault(label(description), []).append(description.summary)
    shared: dict[str, dict[str, JSONValue]] = {}
    for name, every in everywhere.items():
        summaries = applying.get(name, [])
        if len(summaries) < 2:
            summaries = every
        if len(summaries) < 2:
            shared[name] = {}
            continue
        first = summaries[0]
        shared[name] = {
            key: value
            for key, value in first.items()
            if all(
                key in other and _canonical(other[key]) == _canonical(value)
                for other in summaries[1:]
            )
        }
    return shared


def _cell(description: Description, shared: Mapping[str, JSONValue]) -> str:
    """What differs here from the layer's shared settings; `off (...)` where it does nothing."""
    own = "; ".join(
        f"{key}: {_text(value)}"
        for key, value in description.summary.items()
        if key not in shared or _canonical(shared[key]) != _canonical(value)
    )
    if description.applies:
        return own or "on"
    return f"off ({own})" if own else "off"


def render_table(report: Report) -> str:
    """The report as a text table: the layers' shared settings, then a line per route and layer.

    Settings a layer has alike on every route where it applies are listed
    once, with the layer; each route's line shows what differs there (`on`:
    nothing). `off` marks a layer that does nothing on the route (a public
    route, an exempt one), with what it says of the route; `not reached`, a
    layer inside one that answers the route itself (a health endpoint).
    """
    lines = [f"apiguard routes {report.app}", ""]
    if report.error is not None:
        return "\n".join([*lines, f"the app would not start: {report.error}", ""])
    shared = _shared(report)
    names = [f"{kind}:{name}" if name != kind else kind for kind, name in report.layers]
    if names:
        lines.append("Layers, outermost first, with the settings they have wherever they apply:")
        width = max(len(name) for name in names)
        for name in names:
            settings = "; ".join(f"{k}: {_text(v)}" for k, v in shared.get(name, {}).items())
            lines.append(f"  {name.ljust(width)}  {settings or '-'}".rstrip())
    else:
        lines.append("No layer describes itself in front of this app's routes.")
    lines.append("")
    rows: list[tuple[str, str, str, str]] = [("METHOD", "ROUTE", "LAYER", "POLICY")]
    for route in report.routes:
        reach = len(route.reached)
        cells = [
            (label(d), _cell(d, shared.get(label(d), {})) if i < reach else "not reached")
            for i, d in enumerate(route.descriptions)
        ]
        for index, (layer, policy) in enumerate(cells or [("-", "no layer")]):
            first = index == 0
            rows.append((route.method if first else "", route.key if first else "", layer, policy))
    widths = [max(len(row[column]) for row in rows) for column in range(3)]
    for row in rows:
        text = "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=False))
        lines.append(f"{text}  {row[3]}".rstrip())
    routes, layers = len(report.routes), len(report.layers)
    lines += ["", f"{routes} route{'s' * (routes != 1)}, {layers} layer{'s' * (layers != 1)}", ""]
    return "\n".join(lines)
