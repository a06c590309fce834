"""`make bench-compare`: a move is called only beyond the noise of both runs."""

from __future__ import annotations

from benchmarks.compare import compare


def run(**cases: tuple[float, list[float]]) -> dict[str, object]:
    return {
        "environment": "test",
        "suites": {
            "core": [
                {"case": name, "median_us": 10.0, "overhead_us": value, "samples_us": samples}
                for name, (value, samples) in cases.items()
            ]
        },
    }


def test_moves_beyond_the_noise_are_flagged_and_the_rest_are_the_same() -> None:
    quiet = [10.0, 10.1, 10.0, 10.1, 10.0]
    noisy = [10.0, 14.0, 9.0, 13.0, 11.0]
    old = run(a=(2.0, quiet), b=(2.0, quiet), c=(2.0, noisy), d=(2.0, quiet))
    new = run(a=(4.0, quiet), b=(0.5, quiet), c=(4.0, noisy), d=(2.3, quiet))
    verdicts = {name.split(": ")[1]: verdict for name, _, _, verdict in compare(old, new)}
    assert verdicts == {"a": "slower", "b": "faster", "c": "same", "d": "same"}


def served(rps: float, spread: float) -> dict[str, object]:
    summary = {"app": "stack-memory", "workers": 1, "rps": rps, "samples": [rps - spread, rps]}
    return {"environment": "test", "suites": {"server": {"summaries": [summary]}}}


def test_server_runs_move_by_requests_per_second_beyond_their_spread() -> None:
    rows = compare(served(10_000, 100), served(8_000, 100))
    assert rows == [("server: stack-memory x1 (req/s)", 10_000, 8_000, "slower")]
    assert compare(served(10_000, 500), served(9_800, 100))[0][3] == "same"


def test_targets_whose_verdict_changed_are_listed() -> None:
    from benchmarks.compare import verdicts

    def with_target(met: bool, verdict: str) -> dict[str, object]:
        return {"targets": [{"what": "the stack, GET", "met": met, "verdict": verdict}]}

    assert verdicts(with_target(True, "met"), with_target(True, "met")) == []
    assert verdicts(with_target(True, "met (margin 1 µs)"), with_target(False, "MISSED")) == [
        ("the stack, GET", "met (margin 1 µs)", "MISSED")
    ]
