"""Where whisper.cpp spends the dev meeting: mel, encoder and decoder time per tiny.en quant.

Each quant is loaded in turn into one Transcriber, warmed on the meeting once, then timed on it
again with whisper.cpp's own stage timings (whisper_print_timings) read from its log. Writes the
"Where whisper.cpp spends the meeting" section of the benchmark report.
"""

from __future__ import annotations

import argparse
import logging
import re
import sys
import time
from pathlib import Path

from appliance import paths
from appliance.engine.transcriber import DecodeOptions, Transcriber
from appliance.models import store
from appliance.recording.segmenter import Segmenter
from benchmarks import report_sections
from benchmarks.configs import MEETING, MEETING_LANGUAGE, ROOT
from benchmarks.machine import command_line, describe

HEADING = "## Where whisper.cpp spends the meeting"
QUANTS = ("f16", "q8_0", "q5_1", "q5_0", "q4_0")
# "whisper_print_timings:   encode time =  6605.02 ms /     8 runs (   825.63 ms per run)"
_TIMING = re.compile(r"(\w+) time =\s*([\d.]+) ms(?: /\s*(\d+) runs)?")


class Lines(logging.Handler):
    """Keeps the lines whisper.cpp logs."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(record.getMessage())


def stages(lines: list[str]) -> dict[str, tuple[float, int]]:
    """{stage: (ms, runs)} from whisper_print_timings lines, summed over the contexts that
    printed them (one per worker)."""
    found: dict[str, tuple[float, int]] = {}
    for line in lines:
        if "whisper_print_timings" in line and (m := _TIMING.search(line)):
            ms, runs = found.get(m.group(1), (0.0, 0))
            found[m.group(1)] = (ms + float(m.group(2)), runs + int(m.group(3) or 1))
    return found


def measure(model: Path, threads: int) -> dict:
    """Time the meeting on one model; whisper.cpp's stage timings and how many tensors it repacked."""
    log = Lines()
    whisper_log = logging.getLogger("whisper.cpp")
    whisper_log.addHandler(log)
    whisper_log.setLevel(logging.DEBUG)
    try:
        with Transcriber(model, DecodeOptions(threads=threads)) as transcriber:
            repacked = sum("repack tensor" in line for line in log.lines)
            transcriber.transcribe_file(MEETING, Segmenter(), MEETING_LANGUAGE)
            transcriber.log_timings()
            log.lines.clear()
            started = time.perf_counter()
            transcriber.transcribe_file(MEETING, Segmenter(), MEETING_LANGUAGE)
            wall_s = time.perf_counter() - started
            transcriber.log_timings()
    finally:
        whisper_log.removeHandler(log)
    found = stages(log.lines)
    return {"model": model.name, "wall_s": wall_s, "repacked": repacked, **found}


def render(rows: list[dict], machine: dict, command: str) -> str:
    """The report section."""
    lines = [
        HEADING,
        "",
        f"`{command}` on {machine.get('cpu', 'this machine')}, {machine.get('cores', '?')} cores, "
        f"load average at the start {machine['load_average'][0]:.2f}: the dev meeting "
        "through `Transcriber.transcribe_file` (VAD, packed windows), the second of two runs, "
        "with whisper.cpp's own stage timings. *repacked*: weight tensors ggml's CPU backend "
        "rearranged for its GEMM kernels at load (only some types have such kernels for this "
        "CPU; the rest go through a dot product per row pair).",
        "",
        "| model | meeting s | mel s | encode s (windows, ms each) | decode s (tokens, ms each) "
        "| encode share | repacked tensors |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for row in rows:
        encode_ms, windows = row.get("encode", (0.0, 0))
        decode_ms, tokens = row.get("decode", (0.0, 0))
        mel_ms, _ = row.get("mel", (0.0, 0))
        lines.append(
            f"| {row['model']} | {row['wall_s']:.2f} | {mel_ms / 1000:.2f} | {encode_ms / 1000:.2f} "
            f"({windows}, {encode_ms / max(windows, 1):.0f}) | {decode_ms / 1000:.2f} ({tokens}, "
            f"{decode_ms / max(tokens, 1):.1f}) | {encode_ms / 1000 / row['wall_s']:.0%} | "
            f"{row['repacked']} |"
        )
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    """Parse arguments, measure each installed quant, write the section."""
    parser = argparse.ArgumentParser(prog="python -m benchmarks.timings", description=__doc__)
    parser.add_argument("--output", type=Path, default=Path("docs/benchmarks.md"))
    parser.add_argument("--dir", type=Path, default=None, help="models folder")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args(argv)
    if args.threads < 1:
        parser.error("--threads must be 1 or more")
    directory = args.dir or paths.models_dir()
    machine = describe(ROOT)
    rows = []
    for quant in QUANTS:
        model = store.model_path(directory, "tiny.en", quant)
        if not model.exists():
            print(f"bench timings: {model} is not installed; skipped", file=sys.stderr)
            continue
        rows.append(measure(model, args.threads))
        print(f"bench timings: {quant}: {rows[-1]['wall_s']:.2f} s", file=sys.stderr, flush=True)
    if not rows:
        print(
            f"bench timings: error: no tiny.en model installed in {directory} "
            "(make model installs one)",
            file=sys.stderr,
        )
        return 2
    command = command_line("benchmarks.timings", argv)
    report_sections.write(args.output, render(rows, machine, command))
    print(f"bench timings: wrote the timings section of {args.output}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
