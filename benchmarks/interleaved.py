"""The meeting-time ratio against faster-whisper, with the engines taking turns, and their WER.

benchmarks.run measures one configuration after the other, so a neighbour's load that comes
and goes on a shared machine can land on one engine only. Here one process loads the default
whisper.cpp engine (as `appliance transcribe` runs it) and faster-whisper int8 on the same
tiny.en weights, then transcribes each dev meeting with each in turn, ROUNDS times; the ratio
is taken between the medians, of wall time and of the process's CPU seconds (which a
neighbour's load inflates far less). Then each engine transcribes each meeting once more in a
process of its own, which loads only that engine, for its peak RSS (VmHWM, the load included).
Writes the "Meeting time, engines taking turns" section.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path

import jiwer

from appliance.engine.transcriber import DecodeOptions, Transcriber
from appliance.evaluate import normalize
from appliance.models import catalog, silero
from appliance.recording.segmenter import Segmenter
from benchmarks import peer, proc, report_sections
from benchmarks.configs import MEETING_LANGUAGE, MEETINGS, ROOT, default_model
from benchmarks.machine import command_line, describe

HEADING = "## Meeting time, engines taking turns"
# Pause before each timed run: the previous engine's thread pools (CTranslate2's OpenMP,
# onnxruntime's for Silero VAD) spin on the cores for a while after their work.
_SETTLE_S = 2.0


Runs = tuple[list[float], list[float], float]  # wall s and CPU s per run, and the WER
PEER_WHOLE, PEER_VAD = "faster-whisper int8, whole file", "faster-whisper int8, vad_filter=True"


def ours_name(model: Path, threads: int) -> str:
    """The appliance engine's row name."""
    return f"whisper.cpp {model.name}, {threads} workers x 1 thread"


@contextmanager
def engines(
    model: Path, threads: int, scratch: Path, only: str | None = None
) -> Iterator[dict[str, Callable[[Path], str]]]:
    """The engines by row name (only the one named, if given), each a meeting file to text."""
    out: dict[str, Callable[[Path], str]] = {}
    with ExitStack() as stack:
        if only in (None, ours_name(model, threads)):
            ours = stack.enter_context(Transcriber(model, DecodeOptions(threads=1), threads))
            segmenter = Segmenter(silero.path(model.parent))
            out[ours_name(model, threads)] = lambda meeting: (
                ours.transcribe_file(meeting, segmenter, MEETING_LANGUAGE).text
            )
        if only in (None, PEER_WHOLE, PEER_VAD):
            fw = peer.load(peer.model_folder(catalog.DEFAULT_MODEL, scratch), "int8", threads)
            for name, vad in ((PEER_WHOLE, False), (PEER_VAD, True)):
                if only in (None, name):
                    out[name] = lambda meeting, vad=vad: peer.transcribe(
                        fw, str(meeting), MEETING_LANGUAGE, vad
                    )
        yield out


def measure(model: Path, threads: int, rounds: int, scratch: Path) -> dict[str, dict[str, Runs]]:
    """Per meeting and engine: wall and CPU seconds per transcription, round by round, and the
    WER."""
    results = {}
    with engines(model, threads, scratch) as runs:
        for meeting in MEETINGS:
            reference = meeting.with_suffix(".txt").read_text(encoding="utf-8")
            texts = {name: run(meeting) for name, run in runs.items()}  # warm-up, not timed
            times: dict[str, list[float]] = {name: [] for name in runs}
            cpu: dict[str, list[float]] = {name: [] for name in runs}
            for done in range(1, rounds + 1):
                for name, run in runs.items():
                    time.sleep(_SETTLE_S)
                    started, cpu_started = time.perf_counter(), proc.own_cpu_s()
                    run(meeting)
                    times[name].append(time.perf_counter() - started)
                    cpu[name].append(proc.own_cpu_s() - cpu_started)
                print(
                    f"bench interleaved: {meeting.name} round {done}/{rounds}",
                    file=sys.stderr,
                    flush=True,
                )
            results[meeting.name] = {
                name: (times[name], cpu[name], _wer(reference, texts[name])) for name in runs
            }
    return results


def peaks(names: list[str], threads: int) -> dict[str, dict[str, float]]:
    """Per meeting and engine: the peak RSS in MB of a process that loads only that engine
    and transcribes only that meeting."""
    out: dict[str, dict[str, float]] = {}
    for meeting in MEETINGS:
        for name in names:
            command = ["--threads", str(threads), "--peak-of", name, "--meeting", str(meeting)]
            child = subprocess.run(
                [sys.executable, "-m", "benchmarks.interleaved", *command],
                capture_output=True,
                text=True,
                check=True,
            )
            out.setdefault(meeting.name, {})[name] = json.loads(child.stdout)["peak_mb"]
            print(f"bench interleaved: {meeting.name}, {name}: peak RSS measured", file=sys.stderr)
    return out


def _peak_of(model: Path, name: str, meeting: Path, threads: int) -> None:
    """Print, as JSON, this process's peak RSS after loading one engine and transcribing once."""
    with (
        tempfile.TemporaryDirectory(prefix="bench-interleaved-") as scratch,
        engines(model, threads, Path(scratch), only=name) as runs,
    ):
        if name not in runs:
            raise SystemExit(f"no engine named {name!r}")
        runs[name](meeting)
    print(json.dumps({"peak_mb": proc.status_kib("VmHWM") * 1024 / 1e6}))


def _wer(reference: str, hypothesis: str) -> float:
    """Word error rate in percent after the evaluation's normalization."""
    ref, hyp = normalize(reference, MEETING_LANGUAGE), normalize(hypothesis, MEETING_LANGUAGE)
    out = jiwer.process_words(ref, hyp)
    return 100 * (out.substitutions + out.deletions + out.insertions) / len(ref.split())


def render(
    results: dict[str, dict[str, Runs]],
    peak_mb: dict[str, dict[str, float]],
    machine: dict,
    command: str,
) -> str:
    """The report section: per meeting, medians, every run, WER, peak RSS and the ratios."""
    lines = [
        HEADING,
        "",
        f"`{command}` on {machine.get('cpu', 'this machine')}, {machine.get('cores', '?')} cores "
        f"(ggml uses {', '.join(machine.get('cpu_features') or ['?'])}: the ratio depends on "
        f"them), load average at the start {machine['load_average'][0]:.2f}: one process, each dev "
        f"meeting transcribed by each engine in turn, after one untimed warm-up each and a "
        f"{_SETTLE_S:.0f} s pause before each run. *CPU s*: the process's CPU seconds (every "
        "thread) per run, median. *Peak RSS*: of a process that loads only that engine and "
        "transcribes only that meeting, once (VmHWM, the model's load included; MB are 10^6 "
        "bytes).",
        "",
        "| meeting | engine | median s | runs s | CPU s | WER | peak RSS MB | "
        "whisper.cpp / this | in CPU s |",
        "| --- | --- | ---: | --- | ---: | ---: | ---: | ---: | ---: |",
    ]
    for meeting, runs_by_engine in results.items():
        ours_runs, ours_cpu, _ = next(iter(runs_by_engine.values()))
        ours_s, ours_cpu_s = statistics.median(ours_runs), statistics.median(ours_cpu)
        for name, (runs, cpu, wer) in runs_by_engine.items():
            median, cpu_s = statistics.median(runs), statistics.median(cpu)
            lines.append(
                f"| {meeting} | {name} | {median:.2f} | "
                f"{', '.join(f'{r:.2f}' for r in runs)} | {cpu_s:.2f} | {wer:.1f} % | "
                f"{peak_mb[meeting][name]:.0f} | {ours_s / median:.2f} | "
                f"{ours_cpu_s / cpu_s:.2f} |"
            )
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    """Parse arguments, measure, write the section."""
    parser = argparse.ArgumentParser(prog="python -m benchmarks.interleaved", description=__doc__)
    parser.add_argument("--output", type=Path, default=Path("docs/benchmarks.md"))
    parser.add_argument("--threads", type=int, default=2, help="threads per engine (default 2)")
    parser.add_argument("--rounds", type=int, default=5, help="timed runs per engine (default 5)")
    parser.add_argument(
        "--peak-of", metavar="ENGINE", help="internal: the peak RSS of one engine, as JSON"
    )
    parser.add_argument("--meeting", type=Path, help="internal: the meeting for --peak-of")
    args = parser.parse_args(argv)
    if args.threads < 1 or args.rounds < 1:
        parser.error("--threads and --rounds must be 1 or more")
    model = default_model("interleaved")
    if model is None:
        return 2
    if args.peak_of:
        if args.meeting is None:
            parser.error("--peak-of needs --meeting")
        _peak_of(model, args.peak_of, args.meeting, args.threads)
        return 0
    machine = describe(ROOT)  # before the run: its load average is the other work's
    with tempfile.TemporaryDirectory(prefix="bench-interleaved-") as scratch:
        results = measure(model, args.threads, args.rounds, Path(scratch))
    peak_mb = peaks(list(next(iter(results.values()))), args.threads)
    command = command_line("benchmarks.interleaved", argv)
    report_sections.write(args.output, render(results, peak_mb, machine, command))
    print(f"bench interleaved: wrote the interleaved section of {args.output}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
