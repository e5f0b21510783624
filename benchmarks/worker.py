"""One configuration in a process of its own, so its peak memory is its own: `python -m
benchmarks.worker ENGINE MODEL QUANT PATH --result FILE`; the parent reads FILE (JSON)."""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import jiwer
import soundfile

from appliance.evaluate import Clip, evaluate, normalize, read_manifest
from benchmarks import configs, proc

Measures = dict[str, Any]


def _say(config: str, text: str) -> None:
    print(f"bench:   {config}: {text}", file=sys.stderr, flush=True)


def _whisper_cpp(path: Path, threads: int, out: Measures):
    """Load through the product path; clip and meeting callables as `appliance transcribe` runs
    them by default: one worker of one thread per thread given, each with its own context."""
    from appliance.engine.transcriber import DecodeOptions, Transcriber
    from appliance.models import store
    from appliance.recording.segmenter import Segmenter

    out["file_bytes"] = path.stat().st_size
    # Transcriber() checks the file's sha256 before whisper.cpp sees it; timed apart here too,
    # so load_s (which includes it) can be read against the bare check.
    started = time.perf_counter()
    store.verify(path)
    out["verify_s"] = time.perf_counter() - started
    started = time.perf_counter()
    transcriber = Transcriber(path, DecodeOptions(threads=1), workers=threads)
    out["load_s"] = time.perf_counter() - started

    def clip_text(clip: Clip) -> str:
        return transcriber.transcribe_file(clip.audio, Segmenter(), clip.language).text

    def meeting() -> str:
        return transcriber.transcribe_file(
            configs.MEETING, Segmenter(), configs.MEETING_LANGUAGE
        ).text

    return transcriber.multilingual, clip_text, [("transcribe_file", meeting)]


def _faster_whisper(folder: Path, compute_type: str, threads: int, out: Measures):
    """Load the CTranslate2 folder; clips decoded by the appliance, the meeting file as it is."""
    from appliance.recording.audio import load
    from benchmarks import peer

    out["file_bytes"] = (folder / "model.bin").stat().st_size
    started = time.perf_counter()
    model = peer.load(folder, compute_type, threads)
    out["load_s"] = time.perf_counter() - started

    def clip_text(clip: Clip) -> str:
        return peer.transcribe(model, load(clip.audio), clip.language)

    # faster-whisper's default is the whole file through its own decoder (PyAV), no VAD.
    def whole() -> str:
        return peer.transcribe(model, str(configs.MEETING), configs.MEETING_LANGUAGE)

    def vad() -> str:
        return peer.transcribe(model, str(configs.MEETING), configs.MEETING_LANGUAGE, True)

    return peer.is_multilingual(model), clip_text, [("whole file", whole), ("vad_filter", vad)]


def _report(clips: list[Clip], clip_text: Callable[[Clip], str]) -> Measures:
    return json.loads(evaluate(clips, clip_text).to_json())


def _meeting(mode: str, run: Callable[[], str]) -> Measures:
    """Median wall time of MEETING_RUNS meeting transcriptions, and the WER of the last (greedy
    decoding gives the same text each time); the median keeps one slow run on a shared machine
    from deciding the result."""
    audio_s = soundfile.info(str(configs.MEETING)).duration
    runs = []
    for _ in range(configs.MEETING_RUNS):
        started = time.perf_counter()
        text = run()
        runs.append(time.perf_counter() - started)
    seconds = statistics.median(runs)
    reference = normalize(configs.MEETING_TEXT.read_text(encoding="utf-8"), "en")
    heard = normalize(text, "en")
    words = jiwer.process_words(reference, heard)
    return {
        "mode": mode,
        "seconds": seconds,
        "runs_s": [round(s, 2) for s in runs],
        "audio_s": audio_s,
        "rtf": seconds / audio_s,
        "wer": words.wer,
        "ref_words": words.hits + words.substitutions + words.deletions,
        "substitutions": words.substitutions,
        "deletions": words.deletions,
        "insertions": words.insertions,
        "hypothesis": heard,
    }


def measure(args: argparse.Namespace, out: Measures) -> None:
    """Fill out with every measurement of one configuration."""
    config = f"{args.model}-{args.quant}"
    if args.engine == configs.WHISPER_CPP:
        multilingual, clip_text, meetings = _whisper_cpp(Path(args.path), args.threads, out)
    else:
        multilingual, clip_text, meetings = _faster_whisper(
            Path(args.path), args.quant, args.threads, out
        )
    out["rss_after_load_kib"] = proc.status_kib("VmHWM")
    _say(config, f"loaded in {out['load_s']:.2f} s, {out['file_bytes'] / 1e6:.0f} MB file")

    sets = set(args.sets.split(",")) if args.sets else None
    english = read_manifest(configs.MANIFEST, sets=sets, language="en")
    out["english"] = _report(english, clip_text)
    corpus = out["english"]["corpus"]
    _say(config, f"English WER {100 * corpus['wer']:.1f}% over {corpus['clips']} clips")

    out["swedish"] = None
    if args.swedish and multilingual:
        swedish = read_manifest(configs.MANIFEST, sets={configs.SWEDISH_SET}, language="sv")
        out["swedish"] = _report(swedish, clip_text)
        _say(config, f"Swedish WER {100 * out['swedish']['corpus']['wer']:.1f}%")

    out["meeting"] = []
    for mode, run in meetings if args.meeting else ():
        row = _meeting(mode, run)
        out["meeting"].append(row)
        _say(
            config,
            f"meeting ({mode}) {row['seconds']:.1f} s, RTF {row['rtf']:.3f}, "
            f"WER {100 * row['wer']:.1f}%",
        )
    out["self_peak_rss_kib"] = proc.status_kib("VmHWM")


def main(argv: Sequence[str] | None = None) -> int:
    """Measure one configuration and write the result file, with the error if it failed."""
    parser = argparse.ArgumentParser(prog="python -m benchmarks.worker")
    parser.add_argument("engine", choices=(configs.WHISPER_CPP, configs.FASTER_WHISPER))
    parser.add_argument("model")
    parser.add_argument("quant", help="ggml quant, or faster-whisper compute_type")
    parser.add_argument("path", help="ggml file, or CTranslate2 folder")
    parser.add_argument("--result", required=True, help="JSON file to write")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--sets", help="English sets, comma-separated (default: all)")
    parser.add_argument("--swedish", action="store_true", help="also Swedish, if multilingual")
    parser.add_argument(
        "--no-meeting", dest="meeting", action="store_false", help="skip the meeting recording"
    )
    args = parser.parse_args(argv)
    out: Measures = {}
    try:
        measure(args, out)
    except BaseException as err:
        out["error"] = f"{type(err).__name__}: {err}"
        raise
    finally:
        Path(args.result).write_text(json.dumps(out, ensure_ascii=False), encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
