"""Where the meeting's CPU goes: CPU seconds per stage of `Transcriber.transcribe_file`.

For each dev meeting, in one process with the default engine (2 workers x 1 thread): decoding
the file, Silero VAD's two passes (as recorded, and levelled by the gain that follows the last
second), the segmenter's own Python, levelling and packing, then the workers' whisper.cpp CPU
split into mel, encoder and decoder by whisper.cpp's own stage timings. Also the windows: how
many, how much speech each holds, and how many extra encoder runs the re-decoded pieces cost.
CPU seconds (getrusage, thread_time), not wall: the machine is shared. Writes the "Where the
meeting's CPU goes" section.
"""

from __future__ import annotations

import argparse
import logging
import statistics
import sys
import time
from pathlib import Path

import numpy as np

from appliance.engine.transcriber import DecodeOptions, Transcriber
from appliance.engine.windows import pack
from appliance.recording.audio import SAMPLE_RATE, float_to_pcm16, load, pcm16_to_float
from appliance.recording.segmenter import Segmenter, default_model
from appliance.recording.silero import FRAME_SAMPLES
from benchmarks import configs, proc, report_sections
from benchmarks.configs import MEETING_LANGUAGE, MEETINGS, ROOT
from benchmarks.machine import command_line, describe
from benchmarks.timings import Lines, stages

HEADING = "## Where the meeting's CPU goes"
_WHISPER_STAGES = ("mel", "encode", "decode")


def _silero_raw_pass(samples: np.ndarray) -> float:
    """CPU seconds of one Silero pass over the whole file as recorded (the segmenter runs two)."""
    whole = samples.size // FRAME_SAMPLES * FRAME_SAMPLES
    frames = pcm16_to_float(float_to_pcm16(samples[:whole])).reshape(-1, FRAME_SAMPLES)
    model = default_model()  # the one every Segmenter shares
    started = time.thread_time()
    model.probabilities(frames, model.new_state())
    return time.thread_time() - started


def measure(meeting: Path, transcriber: Transcriber, log: Lines) -> dict:
    """One meeting's CPU seconds per stage, and its windows."""
    segmenter = Segmenter()
    transcriber.transcribe_file(meeting, segmenter, MEETING_LANGUAGE)  # warm-up
    started = time.thread_time()
    samples = load(meeting)
    load_s = time.thread_time() - started
    raw_s = _silero_raw_pass(samples)
    started = time.thread_time()
    speech = segmenter.segments(samples)
    segmenter_s = time.thread_time() - started
    started = time.thread_time()
    windows = pack(speech)
    pack_s = time.thread_time() - started
    transcriber.log_timings()
    log.lines.clear()
    cpu, main = proc.own_cpu_s(), time.thread_time()
    transcriber.transcribe(speech, MEETING_LANGUAGE)
    workers_s = proc.own_cpu_s() - cpu - (time.thread_time() - main)
    transcriber.log_timings()
    timed = stages(log.lines)
    log.lines.clear()
    cpu, wall = proc.own_cpu_s(), time.perf_counter()
    transcriber.transcribe_file(meeting, segmenter, MEETING_LANGUAGE)
    file_cpu, file_wall = proc.own_cpu_s() - cpu, time.perf_counter() - wall
    whisper_ms = sum(timed.get(s, (0.0, 0))[0] for s in _WHISPER_STAGES)
    return {
        "meeting": meeting.name,
        "duration_s": samples.size / SAMPLE_RATE,
        "load": load_s,
        "silero raw": raw_s,
        "segmenter": segmenter_s,
        "level and pack": pack_s,
        # the workers' CPU, shared out as whisper.cpp's own clock shares its wall time
        **{s: workers_s * timed.get(s, (0.0, 0))[0] / whisper_ms for s in _WHISPER_STAGES},
        "encoder runs": timed.get("encode", (0.0, 0))[1],
        "tokens": timed.get("decode", (0.0, 0))[1],
        "windows": len(windows),
        "speech per window": [sum(p.duration_s for p in w.pieces) for w in windows],
        "file cpu": file_cpu,
        "file wall": file_wall,
    }


def render(rows: list[dict], machine: dict, command: str, model: Path) -> str:
    """The report section."""
    lines = [
        HEADING,
        "",
        f"`{command}` on {machine.get('cpu', 'this machine')}, {machine.get('cores', '?')} cores, "
        f"load average at the start {machine['load_average'][0]:.2f}: CPU seconds per stage of "
        f"`transcribe_file` with {model.name}, 2 workers x 1 thread, after a warm-up. The "
        "workers' CPU is shared among mel, encoder and decoder as whisper.cpp's own stage "
        "timings share their time. *extra encoder runs*: pieces a window's decode skipped, "
        "decoded again alone (each a whole 30 s encoder pass).",
        "",
        "| meeting | audio s | load | one Silero pass | segmenter (2 passes, gain, Python) | "
        "level + pack | mel | encoder (runs) | decoder (tokens) | windows (extra encoder "
        "runs) | speech per window s (median, min-max) | file CPU s | file wall s |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- | "
        "---: | ---: |",
    ]
    for row in rows:
        fill = row["speech per window"]
        lines.append(
            f"| {row['meeting']} | {row['duration_s']:.0f} | {row['load']:.2f} | "
            f"{row['silero raw']:.2f} | {row['segmenter']:.2f} | "
            f"{row['level and pack']:.2f} | {row['mel']:.2f} | "
            f"{row['encode']:.2f} ({row['encoder runs']}) | {row['decode']:.2f} "
            f"({row['tokens']}) | {row['windows']} ({row['encoder runs'] - row['windows']}) | "
            f"{statistics.median(fill):.1f}, {min(fill):.1f}-{max(fill):.1f} | "
            f"{row['file cpu']:.2f} | {row['file wall']:.2f} |"
        )
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    """Parse arguments, measure both dev meetings, write the section."""
    parser = argparse.ArgumentParser(prog="python -m benchmarks.stages", description=__doc__)
    parser.add_argument(
        "--output", type=Path, default=Path("docs/benchmarks.md"), help="report to update"
    )
    args = parser.parse_args(argv)
    model = configs.default_model("stages")
    if model is None:
        return 2
    machine = describe(ROOT)
    log = Lines()
    whisper_log = logging.getLogger("whisper.cpp")
    whisper_log.addHandler(log)
    whisper_log.setLevel(logging.DEBUG)
    try:
        with Transcriber(model, DecodeOptions(threads=1), workers=2) as transcriber:
            rows = [measure(meeting, transcriber, log) for meeting in MEETINGS]
    finally:
        whisper_log.removeHandler(log)
    for row in rows:
        print(f"bench stages: {row['meeting']}: {row['file cpu']:.2f} CPU s", file=sys.stderr)
    report_sections.write(
        args.output, render(rows, machine, command_line("benchmarks.stages", argv), model)
    )
    print(f"bench stages: wrote the stages section of {args.output}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
