"""benchmarks.interleaved: the ratio is taken between medians, whatever one slow run did."""

from benchmarks.interleaved import HEADING, render

MACHINE = {"cpu": "AMD EPYC", "cores": 2, "load_average": [0.05, 0.1, 0.1]}


def test_ratio_between_medians_with_every_run_shown():
    times = {"whisper.cpp": [6.0, 5.0, 9.0], "faster-whisper": [10.0, 11.0, 30.0]}
    text = render(times, MACHINE, "python -m benchmarks.interleaved")
    assert text.startswith(HEADING + "\n")
    rows = [line for line in text.splitlines() if line.startswith(("| whisper", "| faster"))]
    assert rows == ["| whisper.cpp | 6.00 | 6.00, 5.00, 9.00 | 1.00 |",
                    "| faster-whisper | 11.00 | 10.00, 11.00, 30.00 | 0.55 |"]
