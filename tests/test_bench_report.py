"""benchmarks.report sets whisper.cpp's default quant against faster-whisper int8."""

from benchmarks import configs
from benchmarks.report import _comparisons


def _result(engine: str, quant: str, clips_s: float, errors: int, meetings: dict) -> dict:
    return {
        "engine": engine,
        "model": configs.DEFAULT.model,
        "quant": quant,
        "english": {"corpus": {"clips": 66, "processing_s": clips_s, "errors": errors}},
        "meeting": [{"mode": mode, "seconds": s} for mode, s in meetings.items()],
    }


def test_clip_and_meeting_time_ratios() -> None:
    results = [
        _result(configs.WHISPER_CPP, configs.DEFAULT.quant, 16.7, 158, {"transcribe_file": 5.4}),
        _result(configs.WHISPER_CPP, "f16", 99.0, 150, {"transcribe_file": 99.0}),
        _result(configs.FASTER_WHISPER, "int8", 33.4, 159, {"whole file": 9.0, "vad_filter": 6.0}),
    ]
    clips, whole, vad = _comparisons(results)
    assert "66 English clips" in clips
    assert clips.endswith("= 16.7 s / 33.4 s = **0.50** (158 against 159 word errors)")
    assert "(whole file, no VAD)" in whole and whole.endswith("5.4 s / 9.0 s = **0.60**")
    assert "(vad_filter=True)" in vad and vad.endswith("5.4 s / 6.0 s = **0.90**")
