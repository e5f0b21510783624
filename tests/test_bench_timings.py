"""benchmarks.timings reads whisper.cpp's stage timings from a real decode."""

import logging
from pathlib import Path

from appliance.engine.transcriber import Transcriber
from appliance.recording.segmenter import Segmenter
from benchmarks.timings import stages

JFK = Path(__file__).parent / "data" / "speech" / "jfk" / "jfk.flac"


def test_stage_timings_of_one_clip_then_reset(tiny_en_installed, caplog):
    with (
        Transcriber(tiny_en_installed["q5_1"]) as transcriber,
        caplog.at_level(logging.DEBUG, logger="whisper.cpp"),
    ):
        text = transcriber.transcribe_file(JFK, Segmenter(), "en").text
        transcriber.log_timings()
        first = stages([r.getMessage() for r in caplog.records])
        caplog.clear()
        transcriber.log_timings()
        after_reset = stages([r.getMessage() for r in caplog.records])
    assert "country" in text
    encode_ms, windows = first["encode"]
    decode_ms, tokens = first["decode"]
    assert windows == 1 and encode_ms > 0  # the 11 s clip is one window
    assert tokens >= len(text.split()) and decode_ms > 0
    assert after_reset["encode"][0] == 0.0  # (whisper.cpp reports at least 1 run)


def test_stage_timings_of_several_workers_add_up():
    lines = [
        "whisper_print_timings:   encode time =  600.50 ms /     2 runs (   300.25 ms per run)",
        "whisper_print_timings:   encode time =  300.00 ms /     1 runs (   300.00 ms per run)",
        "whisper_print_timings:      mel time =    20.00 ms",
        "some other line: decode time = 5.00 ms / 1 runs",
    ]
    assert stages(lines) == {"encode": (900.5, 3), "mel": (20.0, 1)}
