"""Charts and tables of a saved run, written into the docs.

`python -m benchmarks.charts results.json` draws PNG charts into
`docs/explanation/img/` and rewrites the tables of
`docs/explanation/performance.md` between their markers; `make bench`
runs it after the run. It keeps a copy of the file as
`benchmarks/results/published.json` (what `make bench-compare` compares a
new run with). A quick-mode file is never published: it is drawn into a
temporary directory instead, to check that the charts still draw
(`--dry-run` does the same for any file).
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Any

from benchmarks._tables import Document, by_label, cases_of, update_page

ROOT = Path(__file__).resolve().parent.parent
IMAGES = ROOT / "docs" / "explanation" / "img"
PAGE = ROOT / "docs" / "explanation" / "performance.md"
PUBLISHED = ROOT / "benchmarks" / "results" / "published.json"

OURS, PEER, FLOOR, BUDGET = "#3949ab", "#9e9e9e", "#c5cae9", "#d32f2f"
METHOD_COLOURS = {"GET": "#3949ab", "POST": "#8e99f3"}


def _plt() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    plt.rcParams.update({"font.size": 9, "axes.spines.top": False, "axes.spines.right": False})
    return plt


def _errors(entries: list[dict[str, Any] | None]) -> list[list[float]]:
    """Error bars from each entry's IQR of paired differences (0 where there is none)."""
    low, high = [], []
    for entry in entries:
        if entry is None or "overhead_iqr_us" not in entry:
            low.append(0.0)
            high.append(0.0)
            continue
        a, b = entry["overhead_iqr_us"]
        value = entry["overhead_us"]
        low.append(max(value - a, 0.0))
        high.append(max(b - value, 0.0))
    return [low, high]


def _value(entry: dict[str, Any] | None) -> float:
    if entry is None:
        return 0.0
    return float(entry.get("overhead_us", entry["median_us"]))


def _grouped_bars(
    ax: Any, labels: list[str], rows: list[dict[str, dict[str, Any]]], colours: list[str]
) -> None:
    """Horizontal bars, GET and POST side by side, IQR error bars, labelled with the figure."""
    height = 0.38
    positions = list(range(len(labels)))
    for shift, method in ((-height / 2, "GET"), (height / 2, "POST")):
        entries = [row.get(method) for row in rows]
        values = [_value(e) for e in entries]
        y = [p + shift for p in positions]
        bars = ax.barh(
            y,
            values,
            height,
            xerr=_errors(entries),
            color=[c if method == "GET" else c + "99" for c in colours],
            error_kw={"elinewidth": 0.8, "capsize": 2},
            label=method if method == "GET" else "POST, 302-byte JSON",
        )
        for bar, entry, value in zip(bars, entries, values, strict=True):
            if entry is not None:
                ax.annotate(
                    f"{value:+.1f}",
                    (max(value, 0), bar.get_y() + bar.get_height() / 2),
                    xytext=(3, 0),
                    textcoords="offset points",
                    va="center",
                    fontsize=7,
                )
    ax.set_yticks(positions, labels)
    ax.invert_yaxis()


def chart_stack(document: Document, out: Path) -> Path | None:
    cases = cases_of(document, "stack")
    if not cases:
        return None
    plt = _plt()
    labels, rows, colours = [], [], []
    for group in ("stack", "layer", "apart", "primitive-layer"):
        for label, methods in by_label(cases, group).items():
            labels.append(label)
            rows.append(methods)
            colours.append(OURS if group != "primitive-layer" else PEER)
    fig, ax = plt.subplots(figsize=(9, 0.42 * len(labels) + 1.2))
    _grouped_bars(ax, labels, rows, colours)
    ax.axvline(3, color=BUDGET, linestyle="--", linewidth=1)
    ax.text(3, -0.9, " 3 µs: a layer's budget", color=BUDGET, fontsize=7)
    ax.set_xlabel("µs a request over the bare Starlette app (paired median over rounds, IQR)")
    ax.set_title("The stack and each layer alone, in process")
    ax.legend(loc="lower right", frameon=False)
    return _save(fig, out / "bench-stack.png")


PEER_ROWS = (
    ("stack", None, "apiguard: the whole stack"),
    ("layer", "IP limit, memory", "apiguard: IP limit, memory"),
    ("layer", "JWT HS256, repeat token", "apiguard: JWT HS256"),
    ("peer", "slowapi decorator, memory", None),
    ("peer", "slowapi middleware, memory", None),
    ("peer", "BaseHTTPMiddleware limiter, hand-written", None),
    ("peer", "Starlette AuthenticationMiddleware + PyJWT HS256", None),
    ("peer", "otel-asgi, no SDK", None),
    ("redis", "IP limit, Redis", "apiguard: IP limit, Redis"),
    ("peer", "slowapi decorator, Redis", None),
    ("peer", "slowapi middleware, Redis", None),
)


def chart_peers(document: Document, out: Path) -> Path | None:
    cases = cases_of(document, "stack")
    if not cases:
        return None
    plt = _plt()
    labels, rows, colours = [], [], []
    for group, wanted, shown in PEER_ROWS:
        for label, methods in by_label(cases, group).items():
            if wanted is None or label == wanted:
                labels.append(shown or label)
                rows.append(methods)
                colours.append(OURS if shown else PEER)
    for name, shown, ours in (
        ("+ apiguard TracingMiddleware", "apiguard: tracing, SDK batch", True),
        ("+ opentelemetry-instrumentation-asgi", "otel-asgi, SDK batch", False),
        ("+ starlette OpenTelemetryMiddleware", "Starlette OpenTelemetryMiddleware, SDK", False),
    ):
        get, post = cases.get(f"[sdk] {name}"), cases.get(f"[sdk] {name}, POST")
        if get is not None:
            labels.append(shown)
            rows.append({"GET": get, **({"POST": post} if post else {})})
            colours.append(OURS if ours else PEER)
    fig, ax = plt.subplots(figsize=(9, 0.42 * len(labels) + 1.2))
    _grouped_bars(ax, labels, rows, colours)
    ax.set_xscale("symlog", linthresh=10)
    ax.set_xlim(left=0)
    ax.set_xlabel("µs a request over the bare Starlette app (log scale above 10 µs)")
    ax.set_title("apiguard beside the peers doing the same work, in one run")
    ax.legend(loc="upper right", frameon=False)
    return _save(fig, out / "bench-peers.png")


def chart_refusals(document: Document, out: Path) -> Path | None:
    cases = cases_of(document, "stack")
    refusals = by_label(cases, "refusal")
    if not refusals:
        return None
    plt = _plt()
    fig, (early, late) = plt.subplots(1, 2, figsize=(10, 3.6), width_ratios=[3, 2])
    names = ["no token", "malformed token", "unknown kid", "413 by Content-Length", "415"]
    entries = [next(iter(refusals.get(n, {}).values()), None) for n in names]
    values = [_value(e) for e in entries]
    early.barh(names, values, xerr=_errors(entries), color=OURS, error_kw={"capsize": 2})
    early.axvline(3, color=BUDGET, linestyle="--", linewidth=1)
    early.invert_yaxis()
    early.set_xlabel("µs over a layer answering the same status canned")
    early.set_title("Refused before any store call, signature or parse")
    pairs = (
        ("429", "refused: 429 GET", "IP limit, memory GET"),
        ("422", "refused: 422 POST", "validation, body model POST"),
        ("bad signature", "refused: bad signature GET", "JWT HS256, uncached GET"),
    )
    labels = [label for label, _, _ in pairs]
    refused = [cases.get(r, {}).get("median_us", 0.0) for _, r, _ in pairs]
    allowed = [cases.get(a, {}).get("median_us", 0.0) for _, _, a in pairs]
    y = list(range(len(labels)))
    late.barh([p - 0.2 for p in y], refused, 0.4, color=OURS, label="refused")
    late.barh([p + 0.2 for p in y], allowed, 0.4, color=PEER, label="the allowed request")
    late.set_yticks(y, labels)
    late.invert_yaxis()
    late.set_xlabel("µs a request (cache off for the signature)")
    late.set_title("No dearer than the allowed path")
    late.legend(loc="upper center", bbox_to_anchor=(0.5, -0.25), ncol=2, frameon=False)
    fig.tight_layout()
    return _save(fig, out / "bench-refusals.png")


def _line(ax: Any, cases: dict[str, Any], figure: str, series: str, **style: Any) -> None:
    points = sorted(
        (e["meta"]["x"], e)
        for e in cases.values()
        if (e.get("meta") or {}).get("figure") == figure
        and e["meta"]["series"] == series
        and e["meta"]["x"] >= 0
    )
    if not points:
        return
    xs = [x for x, _ in points]
    entries = [e for _, e in points]
    ax.errorbar(
        xs,
        [_value(e) for e in entries],
        yerr=_errors(entries),
        marker="o",
        ms=4,
        capsize=2,
        **style,
    )


def chart_growth(document: Document, out: Path) -> Path | None:
    cases = cases_of(document, "growth")
    if not cases:
        return None
    plt = _plt()
    fig, axes = plt.subplots(2, 3, figsize=(12, 6.5))
    panels = (
        ("routes", "routes in the app", [("the stack", OURS)], True),
        (
            "keys",
            "live rate-limit keys",
            [("IP limit, memory", OURS), ("its store alone", PEER)],
            True,
        ),
        (
            "tokens",
            "distinct tokens in the JWT cache",
            [("JWT, cache hit", OURS), ("JWT, cache miss (verified)", PEER)],
            True,
        ),
        ("in-flight", "requests in flight", [("the stack", OURS)], True),
        (
            "sampling",
            "% of traces sampled",
            [("apiguard tracing", OURS), ("otel-asgi", PEER)],
            False,
        ),
    )
    flat = list(axes.flat)
    for ax, (figure, xlabel, lines, log) in zip(flat, panels, strict=False):
        for series, colour in lines:
            _line(ax, cases, figure, series, color=colour, label=series)
        if log:
            ax.set_xscale("log")
        else:  # 0, 1, 10 and 100 %
            ax.set_xscale("symlog", linthresh=1)
        ax.set_xlabel(xlabel)
        ax.set_ylabel("µs over its baseline")
        ax.set_ylim(bottom=0)
        ax.legend(frameon=False, fontsize=7)
    memory = sorted(
        (e["meta"]["x"], e["meta"]["memory_bytes"] / 1e6)
        for e in cases.values()
        if "memory_bytes" in (e.get("meta") or {})
    )
    ax = flat[5]
    if memory:
        ax.plot([x for x, _ in memory], [m for _, m in memory], marker="o", ms=4, color=OURS)
        ax.set_xscale("log")
        ax.set_xlabel("live rate-limit keys")
        ax.set_ylabel("MB held (resident set)")
    fig.suptitle("Cost as the work grows (in process, paired medians, IQR)")
    fig.tight_layout()
    return _save(fig, out / "bench-growth.png")


def chart_server(document: Document, out: Path) -> Path | None:
    from benchmarks._tables import SERVER_LABELS

    saved = document.get("suites", {}).get("server") or {}
    summaries = saved.get("summaries")
    if not summaries:
        return None
    plt = _plt()
    apps = list(dict.fromkeys(s["app"] for s in summaries))
    workers = sorted({s["workers"] for s in summaries})
    by = {(s["app"], s["workers"]): s for s in summaries}
    fig, ax = plt.subplots(figsize=(9, 3.8))
    width = 0.8 / len(workers)
    for i, count in enumerate(workers):
        xs = [a + (i - (len(workers) - 1) / 2) * width for a in range(len(apps))]
        values = [by.get((app, count), {}).get("rps", 0.0) for app in apps]
        bars = ax.bar(xs, values, width, label=f"{count} worker{'s' * (count > 1)}")
        for bar, app in zip(bars, apps, strict=True):
            ratio = by.get((app, count), {}).get("ratio")
            if ratio is not None:
                ax.annotate(
                    f"{ratio:.0%}",
                    (bar.get_x() + bar.get_width() / 2, bar.get_height()),
                    ha="center",
                    va="bottom",
                    fontsize=7,
                )
    ax.set_xticks(range(len(apps)), [SERVER_LABELS.get(a, a) for a in apps], fontsize=8)
    ax.set_ylabel("requests/s (median of runs)")
    ax.set_title(
        f"Under {saved.get('server', 'uvicorn')}, load by {saved.get('generator', '?')} "
        "(% of bare; 2 workers share the cores with the load)",
        fontsize=8,
    )
    ax.legend(frameon=False)
    fig.tight_layout()
    return _save(fig, out / "bench-server.png")


def _save(fig: Any, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110, bbox_inches="tight", metadata={"Software": None})
    _plt().close(fig)
    return path


CHARTS = (chart_stack, chart_peers, chart_refusals, chart_growth, chart_server)


def publish(document: Document, *, images: Path, page: Path | None) -> list[str]:
    """Draw every chart the document has data for; rewrite the page's tables. What was done."""
    done = [str(p) for chart in CHARTS if (p := chart(document, images)) is not None]
    if page is not None:
        text, sections = update_page(page.read_text(), document)
        page.write_text(text)
        done += [f"{page}: {name}" for name in sections]
    return done


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.charts", description=__doc__)
    parser.add_argument("results", type=Path, help="a file written by python -m benchmarks --json")
    parser.add_argument("--dry-run", action="store_true", help="draw into a temporary directory")
    args = parser.parse_args(argv)
    document = json.loads(args.results.read_text())
    if args.dry_run or document.get("quick"):
        why = "a quick-mode run is never published" if document.get("quick") else "--dry-run"
        with tempfile.TemporaryDirectory() as scratch:
            done = publish(document, images=Path(scratch), page=None)
            _, sections = update_page(PAGE.read_text(), document)
        print(f"{why}: drew {len(done)} charts, rendered {len(sections)} tables; docs untouched")
        return 0
    done = publish(document, images=IMAGES, page=PAGE)
    print("\n".join(done), file=sys.stderr)
    from benchmarks.__main__ import PUBLISHED as SUITES

    missing = [s for s in SUITES if s not in document.get("suites", {})]
    if missing:
        print(f"not kept as {PUBLISHED.name}: the run lacks {', '.join(missing)}", file=sys.stderr)
    elif args.results.resolve() != PUBLISHED.resolve():
        PUBLISHED.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(args.results, PUBLISHED)
        print(f"kept as {PUBLISHED}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
