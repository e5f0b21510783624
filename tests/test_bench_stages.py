"""benchmarks.stages: one row per meeting, extra encoder runs counted beyond the windows."""

from pathlib import Path

from benchmarks.stages import HEADING, render

MACHINE = {"cpu": "AMD EPYC", "cores": 2, "load_average": [0.5, 0.4, 0.3]}


def test_a_row_per_meeting_with_the_retried_pieces_counted():
    row = {
        "meeting": "m2.flac",
        "duration_s": 368.6,
        "load": 0.1,
        "silero raw": 0.79,
        "segmenter": 1.64,
        "level and pack": 0.01,
        "mel": 0.72,
        "encode": 15.23,
        "decode": 3.52,
        "encoder runs": 15,
        "tokens": 780,
        "windows": 10,
        "speech per window": [29.1, 25.0, 2.7],
        "file cpu": 21.39,
        "file wall": 14.0,
    }
    text = render([row], MACHINE, "python -m benchmarks.stages", Path("ggml-tiny.en-q8_0.bin"))
    assert text.startswith(HEADING + "\n") and "ggml-tiny.en-q8_0.bin" in text
    rows = [line for line in text.splitlines() if line.startswith("| m2.flac")]
    assert rows == [
        "| m2.flac | 369 | 0.10 | 0.79 | 1.64 | 0.01 | 0.72 | 15.23 (15) | 3.52 (780) | 10 (5) "
        "| 25.0, 2.7-29.1 | 21.39 | 14.00 |"
    ]
