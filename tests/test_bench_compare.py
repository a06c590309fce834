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
