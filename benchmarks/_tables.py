"""The markdown tables of the published figures, from a result file.

`benchmarks.charts` writes them into `docs/explanation/performance.md`,
each between its markers (`<!-- bench:stack -->` ... `<!-- /bench:stack -->`);
a section whose suite is not in the file is left as it was.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

Document = dict[str, Any]
Entry = dict[str, Any]


def cases_of(document: Document, suite: str) -> dict[str, Entry]:
    """A suite's cases by name (a suite's entry is a list, or `{"cases": [...]}`)."""
    saved = document.get("suites", {}).get(suite)
    if saved is None:
        return {}
    cases = saved.get("cases", []) if isinstance(saved, dict) else saved
    return {case["case"]: case for case in cases}


def over(entry: Entry | None) -> str:
    """`+24.5` (paired median over the baseline), or the median where there is no baseline."""
    if entry is None:
        return "-"
    if "overhead_us" in entry:
        return f"{entry['overhead_us']:+.1f}"
    return f"{entry['median_us']:.1f}"


def iqr(entry: Entry | None) -> str:
    """The interquartile range of the paired differences: `23.9 … 25.1`."""
    if entry is None or "overhead_iqr_us" not in entry:
        return ""
    low, high = entry["overhead_iqr_us"]
    return f"{low:+.1f} … {high:+.1f}"


def _table(head: list[str], rows: list[list[str]], align: str = "") -> str:
    align = align or "---" + "|---:" * (len(head) - 1)
    lines = ["| " + " | ".join(head) + " |", "|" + align + "|"]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


def by_label(cases: dict[str, Entry], group: str) -> dict[str, dict[str, Entry]]:
    """`{label: {method: entry}}` of one group of the stack run, in run order."""
    found: dict[str, dict[str, Entry]] = {}
    for entry in cases.values():
        meta = entry.get("meta") or {}
        if meta.get("group") == group:
            found.setdefault(meta["label"], {})[meta.get("method", "")] = entry
    return found


def section_machine(document: Document) -> str | None:
    machine = document.get("machine")
    if machine is None:
        return None
    packages = machine.get("packages", {})
    versions = ", ".join(f"{name} {version}" for name, version in packages.items())
    start = "/".join(f"{x:.2f}" for x in machine.get("load_average", []))
    end = "/".join(f"{x:.2f}" for x in machine.get("load_average_end", []))
    return "\n".join(
        [
            f"- **Machine**: {machine['cpu']}, {machine['cores']} cores, {machine['system']}"
            " (shared with other work: load average, 1/5/15 min, "
            f"{start or '?'} at the start, {end or '?'} at the end)",
            f"- **Python**: {machine['python']}; **revision**: {machine.get('git') or '?'}; "
            f"**run**: {document.get('started', '?')}",
            f"- **Packages**: {versions}",
            f"- **Redis**: {machine.get('redis_server') or 'not found'}",
        ]
    )


def section_targets(document: Document) -> str | None:
    targets = document.get("targets") or []
    if not targets:
        return None
    rows = []
    for t in targets:
        if t["measured"] is None:
            figure = "-"
        elif t["unit"] == "%":
            figure = f"{t['measured']:.0f} %"
        else:
            figure = f"{t['measured']:+.1f} µs"
        verdict = t["verdict"] if t["met"] is not False else f"**{t['verdict']}**"
        rows.append([t["what"], figure, t["target"], verdict, f"`{t['command']}`"])
    head = ["what", "measured", "target", "verdict", "command"]
    return _table(head, rows, "---|---:|---|---|---")


STACK_GROUPS = ("stack", "layer", "apart", "primitive-layer", "allowed")


def section_stack(document: Document) -> str | None:
    cases = cases_of(document, "stack")
    if not cases:
        return None
    bare = by_label(cases, "bare").get("bare app", {})
    rows = [
        [
            "the bare app (µs a request)",
            f"{bare['GET']['median_us']:.1f}" if "GET" in bare else "-",
            "",
            f"{bare['POST']['median_us']:.1f}" if "POST" in bare else "-",
            "",
        ]
    ]
    for group in STACK_GROUPS:
        for label, methods in by_label(cases, group).items():
            get, post = methods.get("GET"), methods.get("POST")
            name = f"**{label}**" if group == "stack" else label
            rows.append([name, over(get), iqr(get), over(post), iqr(post)])
    head = ["µs over the bare app", "GET", "IQR", "POST, 302 B", "IQR"]
    return _table(head, rows)


def section_refusals(document: Document) -> str | None:
    cases = cases_of(document, "stack")
    if not cases:
        return None
    floors = by_label(cases, "floor")
    rows = [
        [f"{label} ({method}): the floor", "", "", f"{entry['median_us']:.1f}"]
        for label, methods in floors.items()
        for method, entry in methods.items()
    ]
    for label, methods in by_label(cases, "refusal").items():
        for method, entry in methods.items():
            rows.append(
                [f"{label} ({method})", over(entry), iqr(entry), f"{entry['median_us']:.1f}"]
            )
    head = ["refusal", "µs over a canned refusal", "IQR", "µs a request"]
    return _table(head, rows)


PEERS = (
    ("stack", "the stack"),
    ("layer", "IP limit, memory"),
    ("layer", "JWT HS256, repeat token"),
    ("peer", "slowapi decorator, memory"),
    ("peer", "slowapi middleware, memory"),
    ("peer", "BaseHTTPMiddleware limiter, hand-written"),
    ("peer", "Starlette AuthenticationMiddleware + PyJWT HS256"),
    ("peer", "otel-asgi, no SDK"),
    ("redis", "IP limit, Redis"),
    ("redis-floor", "a layer awaiting one Redis PING"),
    ("peer", "slowapi decorator, Redis"),
    ("peer", "slowapi middleware, Redis"),
)
#: The SDK process's rows: `[sdk] <name>` and `[sdk] <name>, POST`.
SDK_ROWS = (
    ("+ apiguard TracingMiddleware", "apiguard tracing, SDK batch processor"),
    ("+ opentelemetry-instrumentation-asgi", "otel-asgi, SDK batch processor"),
    ("+ starlette OpenTelemetryMiddleware", "Starlette OpenTelemetryMiddleware, SDK"),
    ("+ FastAPI native telemetry", "FastAPI native telemetry, SDK (over FastAPI)"),
    (
        "+ FastAPI native + apiguard (enriching its span)",
        "FastAPI native + apiguard enriching its span, SDK (over FastAPI)",
    ),
)


def section_peers(document: Document) -> str | None:
    cases = cases_of(document, "stack")
    if not cases:
        return None
    rows = []
    for group, wanted in PEERS:
        for label, methods in by_label(cases, group).items():
            if label == wanted or (group == "stack" and wanted == "the stack"):
                get, post = methods.get("GET"), methods.get("POST")
                name = f"**apiguard: {label}**" if group in ("stack", "layer", "redis") else label
                rows.append([name, over(get), iqr(get), over(post), iqr(post)])
    for name, label in SDK_ROWS:
        get, post = cases.get(f"[sdk] {name}"), cases.get(f"[sdk] {name}, POST")
        if get is not None or post is not None:
            rows.append([label, over(get), iqr(get), over(post), iqr(post)])
    return _table(["µs over the bare app", "GET", "IQR", "POST, 302 B", "IQR"], rows)


def section_primitives(document: Document) -> str | None:
    cases = cases_of(document, "stack")
    rows = [
        [label, f"{methods[''].get('median_us', 0):.2f}", methods[""].get("unit", "call")]
        for label, methods in by_label(cases, "primitive").items()
        if "" in methods
    ]
    if not rows:
        return None
    return _table(["primitive", "µs", "per"], rows, "---|---:|---")


def _series(cases: dict[str, Entry], figure: str) -> dict[str, dict[float, Entry]]:
    found: dict[str, dict[float, Entry]] = {}
    for entry in cases.values():
        meta = entry.get("meta") or {}
        if meta.get("figure") == figure:
            found.setdefault(meta["series"], {})[meta["x"]] = entry
    return found


def _growth_table(
    cases: dict[str, Entry],
    figure: str,
    head: str,
    columns: list[tuple[str, str, bool]],
    extra: tuple[list[str], Callable[[float], list[str]]] | None = None,
) -> str | None:
    """One row per x: for each `(series, heading, raw)`, the overhead (or the raw median).

    Baselines of a figure (the bare app) have x < 0 and no row; `extra`
    adds columns: their headings, and their cells for an x.
    """
    series = _series(cases, figure)
    xs = sorted({x for s in series.values() for x in s if x >= 0})
    if not xs:
        return None
    rows = []
    for x in xs:
        row = [f"{x:,g}" + (" %" if figure == "sampling" else "")]
        for name, _, raw in columns:
            entry = series.get(name, {}).get(x)
            if entry is None:
                row.append("-")
            else:
                row.append(f"{entry['median_us']:.1f}" if raw else over(entry))
        if extra is not None:
            row += extra[1](x)
        rows.append(row)
    heads = [head, *(h for _, h, _ in columns), *(extra[0] if extra else [])]
    return _table(heads, rows)


def section_growth(document: Document) -> str | None:
    cases = cases_of(document, "growth")
    if not cases:
        return None
    parts = []
    routes = _growth_table(
        cases,
        "routes",
        "routes",
        [
            ("bare app", "bare app, µs a request", True),
            ("the stack", "the stack, µs over it", False),
        ],
    )
    memory = {
        e["meta"]["x"]: e["meta"] for e in cases.values() if "memory_bytes" in (e.get("meta") or {})
    }

    def held(x: float) -> list[str]:
        meta = memory.get(x)
        if meta is None:
            return ["-", ""]
        # Below 10,000 keys the resident set moves by less than its own noise.
        per = f"{meta['memory_bytes'] / meta['live_keys']:.0f}" if x >= 10_000 else ""
        return [f"{meta['memory_bytes'] / 1e6:.1f} MB", per]

    keys = _growth_table(
        cases,
        "keys",
        "live keys",
        [
            ("IP limit, memory", "IP limit, µs over the bare app", False),
            ("its store alone", "its store's hit alone, µs over a loop turn", False),
        ],
        (["memory held", "bytes a key"], held),
    )
    tokens = _growth_table(
        cases,
        "tokens",
        "cached tokens",
        [
            ("JWT, cache hit", "a cached token, µs over the bare app", False),
            ("JWT, cache miss (verified)", "a new token (verified), µs over it", False),
        ],
    )
    flight = _growth_table(
        cases,
        "in-flight",
        "requests in flight",
        [
            ("bare app", "bare app, µs a request", True),
            ("the stack", "the stack, µs over it", False),
        ],
    )
    sampling = _growth_table(
        cases,
        "sampling",
        "traces sampled",
        [
            ("apiguard tracing", "apiguard tracing, µs over the bare app", False),
            ("otel-asgi", "otel-asgi, µs over the bare app", False),
        ],
    )
    for title, table in (
        ("Routes", routes),
        ("Live rate-limit keys", keys),
        ("Tokens in the JWT cache", tokens),
        ("Requests in flight", flight),
        ("Sampler ratio (SDK, batch processor)", sampling),
    ):
        if table is not None:
            parts += [f"**{title}**", "", table, ""]
    return "\n".join(parts).rstrip()


SERVER_LABELS = {
    "bare": "bare Starlette",
    "stack-memory": "apiguard stack, memory://",
    "stack-redis": "apiguard stack, redis://",
    "slowapi-middleware": "slowapi middleware, memory",
    "otel-asgi": "otel-asgi, no SDK",
}


def section_server(document: Document) -> str | None:
    saved = document.get("suites", {}).get("server") or {}
    summaries = saved.get("summaries")
    if not summaries:
        return None
    rows = []
    for s in summaries:
        ratio = f"{s['ratio']:.0%}" if s.get("ratio") is not None else ""
        added = f"{s['added_us']:+.1f}" if s.get("added_us") is not None else ""
        spread = f"{min(s['samples']):,.0f} … {max(s['samples']):,.0f}"
        rows.append(
            [
                SERVER_LABELS.get(s["app"], s["app"]),
                str(s["workers"]),
                f"{s['rps']:,.0f}",
                spread,
                f"{s['p50_ms']:.2f}",
                f"{s['p99_ms']:.2f}",
                ratio,
                added,
            ]
        )
    head = ["app", "workers", "req/s", "runs' range", "p50 ms", "p99 ms", "of bare", "µs added"]
    note = (
        f"{saved.get('server', 'uvicorn')}; load by {saved.get('generator', '?')}, "
        f"{saved.get('connections', '?')} connections, {saved.get('runs', '?')} interleaved runs "
        f"of {saved.get('duration_s', '?')} s per app. Two workers share the machine's cores "
        "with the load generator."
    )
    return _table(head, rows) + "\n\n" + note


SECTIONS: dict[str, Callable[[Document], str | None]] = {
    "machine": section_machine,
    "targets": section_targets,
    "stack": section_stack,
    "refusals": section_refusals,
    "peers": section_peers,
    "primitives": section_primitives,
    "growth": section_growth,
    "server": section_server,
}


def replace_section(text: str, name: str, body: str) -> str:
    """`text` with what is between `<!-- bench:name -->` and `<!-- /bench:name -->` replaced."""
    pattern = re.compile(
        rf"(<!-- bench:{re.escape(name)} -->\n).*?(<!-- /bench:{re.escape(name)} -->)", re.S
    )
    if not pattern.search(text):
        raise ValueError(f"no <!-- bench:{name} --> ... <!-- /bench:{name} --> markers")
    return pattern.sub(lambda m: m.group(1) + body + "\n" + m.group(2), text, count=1)


def update_page(text: str, document: Document) -> tuple[str, list[str]]:
    """The page with every section the document has data for; and their names."""
    done = []
    for name, render in SECTIONS.items():
        if f"<!-- bench:{name} -->" not in text:
            continue
        body = render(document)
        if body is not None:
            text = replace_section(text, name, body)
            done.append(name)
    return text, done
