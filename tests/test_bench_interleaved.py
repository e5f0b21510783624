"""benchmarks.interleaved: the ratios are taken between medians, whatever one slow run did."""

from benchmarks.interleaved import HEADING, render

MACHINE = {
    "cpu": "AMD EPYC",
    "cores": 2,
    "load_average": [0.05, 0.1, 0.1],
    "cpu_features": ["AVX2", "FMA"],
}


def test_ratio_between_medians_with_every_run_shown_per_meeting():
    results = {
        "m1.flac": {
            "whisper.cpp": ([6.0, 5.0, 9.0], [8.0, 9.0, 10.0], 25.0),
            "faster-whisper": ([10.0, 11.0, 30.0], [20.0, 18.0, 60.0], 60.5),
        },
        "m2.flac": {
            "whisper.cpp": ([2.0, 2.0, 2.0], [3.0, 3.0, 3.0], 30.0),
            "faster-whisper": ([4.0, 3.0, 5.0], [6.0, 4.0, 5.0], 40.25),
        },
    }
    peak_mb = {
        "m1.flac": {"whisper.cpp": 390.2, "faster-whisper": 484.0},
        "m2.flac": {"whisper.cpp": 393.0, "faster-whisper": 517.6},
    }
    text = render(results, peak_mb, MACHINE, "python -m benchmarks.interleaved")
    assert text.startswith(HEADING + "\n")
    assert "AMD EPYC, 2 cores (ggml uses AVX2, FMA: the ratio depends on them)" in text
    rows = [line for line in text.splitlines() if line.startswith("| m") and ".flac" in line]
    assert rows == [
        "| m1.flac | whisper.cpp | 6.00 | 6.00, 5.00, 9.00 | 9.00 | 25.0 % | 390 | 1.00 | 1.00 |",
        "| m1.flac | faster-whisper | 11.00 | 10.00, 11.00, 30.00 | 20.00 | 60.5 % | 484 | 0.55 | 0.45 |",
        "| m2.flac | whisper.cpp | 2.00 | 2.00, 2.00, 2.00 | 3.00 | 30.0 % | 393 | 1.00 | 1.00 |",
        "| m2.flac | faster-whisper | 4.00 | 4.00, 3.00, 5.00 | 5.00 | 40.2 % | 518 | 0.50 | 0.60 |",
    ]
