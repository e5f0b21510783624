"""What the front end costs against the model alone, on every English dev set.

For each clip that fits one window, the product path (`appliance eval`: Silero VAD, levelling,
packing, whisper.cpp) and the model alone (the same weights on the whole clip, all 1500 encoder
positions, greedy, no previous-text conditioning), as `appliance eval --baseline` prints them.
Writes the "Front end against the model alone" section.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from appliance.engine.transcriber import DecodeOptions, Transcriber
from appliance.evaluate import Report, compare, evaluate, fits_one_window, read_manifest
from appliance.models import silero
from appliance.recording.audio import load
from appliance.recording.segmenter import Segmenter
from benchmarks import report_sections
from benchmarks.configs import MANIFEST, ROOT, default_model
from benchmarks.machine import command_line, describe

HEADING = "## Front end against the model alone"


def measure(model: Path, threads: int) -> tuple[Report, Report]:
    """The product path's report over every English clip, and the model alone's."""
    clips = read_manifest(MANIFEST, language="en")
    segmenter = Segmenter(silero.path(model.parent))
    with Transcriber(model, DecodeOptions(threads=threads)) as transcriber:
        ours = evaluate(clips, lambda c: transcriber.transcribe_file(c.audio, segmenter).text)
        alone = evaluate(
            [c for c in clips if fits_one_window(c)],
            lambda c: " ".join(s.text for s in transcriber.transcribe_window(load(c.audio))),
        )
    return ours, alone


def render(ours: Report, alone: Report, machine: dict, command: str, model: str) -> str:
    """The report section: one row per set, the differences in WER points and deletions."""
    return "\n".join(
        [
            HEADING,
            "",
            f"`{command}` on {machine.get('cpu', 'this machine')}, {machine.get('cores', '?')} cores: "
            f"{model}, every English clip of `tests/data/speech/manifest.jsonl` that fits one 30 s "
            "window, through the product path and through the model alone (the whole clip in one "
            "window, all 1500 encoder positions). `diff` is in WER points; the issue's bar is +1.0. "
            "EN2001b (AMI) has two reference words, so its invented words count as insertions.",
            "",
            "```",
            compare(ours, alone),
            "```",
            "",
        ]
    )


def main(argv: list[str] | None = None) -> int:
    """Parse arguments, measure, write the section."""
    parser = argparse.ArgumentParser(prog="python -m benchmarks.frontend", description=__doc__)
    parser.add_argument("--output", type=Path, default=Path("docs/benchmarks.md"))
    parser.add_argument("--threads", type=int, default=2, help="whisper.cpp threads (default 2)")
    args = parser.parse_args(argv)
    if args.threads < 1:
        parser.error("--threads must be 1 or more")
    model = default_model("frontend")
    if model is None:
        return 2
    machine = describe(ROOT)
    ours, alone = measure(model, args.threads)
    command = command_line("benchmarks.frontend", argv)
    report_sections.write(args.output, render(ours, alone, machine, command, model.name))
    print(f"bench frontend: wrote the front-end section of {args.output}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
