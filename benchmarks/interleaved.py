"""The meeting-time ratio against faster-whisper, with the engines taking turns, and their WER.

benchmarks.run measures one configuration after the other, so a neighbour's load that comes
and goes on a shared machine can land on one engine only. Here one process loads the default
whisper.cpp engine (as `appliance transcribe` runs it) and faster-whisper int8 on the same
tiny.en weights, then transcribes each dev meeting with each in turn, ROUNDS times; the ratio
is taken between the medians, of wall time and of the process's CPU seconds (which a
neighbour's load inflates far less). Writes the "Meeting time, engines taking turns" section.
"""

from __future__ import annotations

import argparse
import resource
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import jiwer

from appliance.engine.transcriber import DecodeOptions, Transcriber
from appliance.evaluate import normalize
from appliance.models import catalog, silero
from appliance.recording.segmenter import Segmenter
from benchmarks import peer, report_sections
from benchmarks.configs import MEETING_LANGUAGE, MEETINGS, ROOT, default_model
from benchmarks.machine import command_line, describe

HEADING = "## Meeting time, engines taking turns"
# Pause before each timed run: the previous engine's thread pools (CTranslate2's OpenMP,
# onnxruntime's for Silero VAD) spin on the cores for a while after their work.
_SETTLE_S = 2.0


Runs = tuple[list[float], list[float], float]  # wall s and CPU s per run, and the WER


def _cpu() -> float:
    """CPU seconds of the whole process (every thread), user and system."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def measure(model: Path, threads: int, rounds: int, scratch: Path) -> dict[str, dict[str, Runs]]:
    """Per meeting and engine: wall and CPU seconds per transcription, round by round, and the
    WER."""
    fw = peer.load(peer.model_folder(catalog.DEFAULT_MODEL, scratch), "int8", threads)
    segmenter = Segmenter(silero.path(model.parent))
    results = {}
    with Transcriber(model, DecodeOptions(threads=1), workers=threads) as ours:
        for meeting in MEETINGS:
            engines: dict[str, Callable[[], str]] = {
                f"whisper.cpp {model.name}, {threads} workers x 1 thread": lambda meeting=meeting: (
                    ours.transcribe_file(meeting, segmenter, MEETING_LANGUAGE).text
                ),
                "faster-whisper int8, whole file": lambda meeting=meeting: peer.transcribe(
                    fw, str(meeting), MEETING_LANGUAGE
                ),
                "faster-whisper int8, vad_filter=True": lambda meeting=meeting: peer.transcribe(
                    fw, str(meeting), MEETING_LANGUAGE, True
                ),
            }
            reference = meeting.with_suffix(".txt").read_text(encoding="utf-8")
            texts = {name: run() for name, run in engines.items()}  # warm-up, not timed
            times: dict[str, list[float]] = {name: [] for name in engines}
            cpu: dict[str, list[float]] = {name: [] for name in engines}
            for done in range(1, rounds + 1):
                for name, run in engines.items():
                    time.sleep(_SETTLE_S)
                    started, cpu_started = time.perf_counter(), _cpu()
                    run()
                    times[name].append(time.perf_counter() - started)
                    cpu[name].append(_cpu() - cpu_started)
                print(
                    f"bench interleaved: {meeting.name} round {done}/{rounds}",
                    file=sys.stderr,
                    flush=True,
                )
            results[meeting.name] = {
                name: (times[name], cpu[name], _wer(reference, texts[name])) for name in engines
            }
    return results


def _wer(reference: str, hypothesis: str) -> float:
    """Word error rate in percent after the evaluation's normalization."""
    ref, hyp = normalize(reference, MEETING_LANGUAGE), normalize(hypothesis, MEETING_LANGUAGE)
    out = jiwer.process_words(ref, hyp)
    return 100 * (out.substitutions + out.deletions + out.insertions) / len(ref.split())


def render(results: dict[str, dict[str, Runs]], machine: dict, command: str) -> str:
    """The report section: per meeting, medians, every run, WER and each engine's ratios."""
    lines = [
        HEADING,
        "",
        f"`{command}` on {machine.get('cpu', 'this machine')}, {machine.get('cores', '?')} cores, "
        f"load average at the start {machine['load_average'][0]:.2f}: one process, each dev "
        f"meeting transcribed by each engine in turn, after one untimed warm-up each and a "
        f"{_SETTLE_S:.0f} s pause before each run. *CPU s*: the process's CPU seconds (every "
        "thread) per run, median.",
        "",
        "| meeting | engine | median s | runs s | CPU s | WER | whisper.cpp / this | in CPU s |",
        "| --- | --- | ---: | --- | ---: | ---: | ---: | ---: |",
    ]
    for meeting, engines in results.items():
        ours_runs, ours_cpu, _ = next(iter(engines.values()))
        ours_s, ours_cpu_s = statistics.median(ours_runs), statistics.median(ours_cpu)
        for name, (runs, cpu, wer) in engines.items():
            median, cpu_s = statistics.median(runs), statistics.median(cpu)
            lines.append(
                f"| {meeting} | {name} | {median:.2f} | "
                f"{', '.join(f'{r:.2f}' for r in runs)} | {cpu_s:.2f} | {wer:.1f} % | "
                f"{ours_s / median:.2f} | {ours_cpu_s / cpu_s:.2f} |"
            )
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    """Parse arguments, measure, write the section."""
    parser = argparse.ArgumentParser(prog="python -m benchmarks.interleaved", description=__doc__)
    parser.add_argument("--output", type=Path, default=Path("docs/benchmarks.md"))
    parser.add_argument("--threads", type=int, default=2, help="threads per engine (default 2)")
    parser.add_argument("--rounds", type=int, default=5, help="timed runs per engine (default 5)")
    args = parser.parse_args(argv)
    if args.threads < 1 or args.rounds < 1:
        parser.error("--threads and --rounds must be 1 or more")
    model = default_model("interleaved")
    if model is None:
        return 2
    machine = describe(ROOT)  # before the run: its load average is the other work's
    with tempfile.TemporaryDirectory(prefix="bench-interleaved-") as scratch:
        results = measure(model, args.threads, args.rounds, Path(scratch))
    command = command_line("benchmarks.interleaved", argv)
    report_sections.write(args.output, render(results, machine, command))
    print(f"bench interleaved: wrote the interleaved section of {args.output}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
