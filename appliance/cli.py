"""The `appliance` command line."""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from appliance import __version__
from appliance.engine.speakers import labelled, open_labeller
from appliance.engine.transcriber import DecodeOptions, Transcriber
from appliance.errors import ApplianceError, UsageError
from appliance.files import atomic_file
from appliance.models import catalog, silero, store
from appliance.models.commands import add_commands as add_model_commands
from appliance.models.commands import models_dir
from appliance.progress import ProgressLine
from appliance.recording.audio import load
from appliance.recording.segmenter import Segmenter
from appliance.service import checks, client, login, tokens
from appliance.transcript import FORMATS, Transcript, render


def _probability(text: str) -> float:
    """An argparse type: a number strictly between 0 and 1."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not 0.0 < value < 1.0:
        raise argparse.ArgumentTypeError(f"must be between 0 and 1, got {text}")
    return value


def _transcriber(args: argparse.Namespace) -> Transcriber:
    if args.workers < 1:
        raise UsageError(f"--workers must be 1 or more, not {args.workers}")
    path = store.resolve(args.model, models_dir(args), catalog.DEFAULT_QUANT)
    terms = [t.strip() for t in (args.vocabulary or "").split(",") if t.strip()]
    options = DecodeOptions(
        threads=args.threads,
        language=args.language,
        beam_size=args.beam_size,
        prompt=", ".join(terms),
    )
    return Transcriber(path, options, args.workers)


def _cmd_transcribe(args: argparse.Namespace) -> int:
    output = Path(args.output) if args.output else None
    paths = [Path(a) for a in args.audio]
    # With --workers N, N files are transcribed side by side (and a long file's windows spread
    # over the workers); results still come out in the order given. A progress bar needs
    # one file at a time.
    side_by_side = args.workers > 1 and len(paths) > 1
    failed = 0
    labeller = None if args.no_speakers else open_labeller(models_dir(args), args.max_speakers)
    with _transcriber(args) as transcriber, ThreadPoolExecutor(args.workers) as files:

        def transcribe(path: Path, progress: ProgressLine | None) -> Transcript:
            def report(done_s: int, total_s: int) -> None:
                # A bar only on a terminal and only for files of a minute or more.
                if progress is not None and total_s >= 60 and sys.stderr.isatty():
                    progress(f"{path.name} (seconds)", done_s, total_s)

            # A Segmenter per file: it keeps state from frame to frame.
            segmenter = Segmenter(silero.path(models_dir(args)), threshold=args.vad_threshold)
            transcript = transcriber.transcribe_file(path, segmenter, progress=report)
            return labeller.label(transcript, load(path)) if labeller else transcript

        started = [files.submit(transcribe, path, None) if side_by_side else None for path in paths]
        for path, future in zip(paths, started, strict=True):
            progress = ProgressLine()
            try:
                transcript = future.result() if future else transcribe(path, progress)
            except ApplianceError as err:
                failed += 1
                progress.close()
                print(f"appliance: error: {err}", file=sys.stderr)
                continue
            progress.close()
            text = render(transcript, args.format)
            if output is None:
                if len(args.audio) > 1:
                    print(f"==> {path} <==")
                sys.stdout.write(text)
                sys.stdout.flush()
                continue
            target = output / f"{path.stem}.{args.format}"
            with atomic_file(target) as out:
                out.write(text.encode("utf-8"))
            print(f"wrote {target}", file=sys.stderr)
    return 1 if failed else 0


def _cmd_eval(args: argparse.Namespace) -> int:
    # jiwer, pyannote.metrics and the normalizers: not in the daemon
    try:
        from appliance.evaluate import compare, evaluate, fits_one_window, read_manifest
        from appliance.evaluate_speakers import (
            cp_wer,
            format_speakers,
            read_rttm,
            rttm_beside,
            score_speakers,
        )
    except ImportError as err:
        raise UsageError(
            f"appliance eval needs the [eval] extra ({err.name} is missing): "
            "pip install 'meeting-appliance[eval]'"
        ) from err

    sets = set(args.sets.split(",")) if args.sets else None
    clips = read_manifest(Path(args.manifest), sets=sets, language=args.language)
    segmenter = Segmenter(silero.path(models_dir(args)), threshold=args.vad_threshold)
    labeller = None if args.no_speakers else open_labeller(models_dir(args), args.max_speakers)
    speakers_found = []
    with _transcriber(args) as transcriber:

        def transcribe(clip) -> str:
            transcript = transcriber.transcribe_file(clip.audio, segmenter, clip.language)
            rttm = rttm_beside(clip.audio)
            if labeller and rttm:
                who = labeller.diarize(load(clip.audio))
                transcript = labelled(transcript, who)
                stm = clip.audio.with_suffix(".stm")
                cp = cp_wer(stm, transcript, clip.language) if stm.is_file() else (0, 0)
                hypothesis = [(t.start_s, t.end_s, t.name) for t in who]
                found = score_speakers(
                    str(clip.audio),
                    clip.dataset,
                    read_rttm(rttm),
                    hypothesis,
                    transcript.duration_s,
                    cp,
                )
                speakers_found.append(found)
            return transcript.text

        def alone(clip) -> str:
            """The same weights on the whole clip, one window of all 1500 positions."""
            samples = load(clip.audio)
            language = transcriber.check_language(clip.language)
            return " ".join(s.text for s in transcriber.transcribe_window(samples, language))

        report = evaluate(clips, transcribe, progress=ProgressLine())
        baseline = None
        if args.baseline:
            whole = [c for c in clips if fits_one_window(c)]
            baseline = evaluate(whole, alone, progress=ProgressLine())
    if args.json:
        document = json.loads(report.to_json(baseline))
        document["speakers"] = [
            {**vars(r), "der": r.der, "cp_wer": r.cp_wer} for r in speakers_found
        ]
        print(json.dumps(document, indent=2))
    else:
        print(report.format())
        if baseline is not None:
            print()
            print(compare(report, baseline))
        if speakers_found:
            print()
            print(format_speakers(speakers_found))
    return 0


def _add_model_options(
    parser: argparse.ArgumentParser, threads: int = 2, workers: int = 1, batch: str = "windows"
) -> None:
    parser.add_argument(
        "--model",
        default=catalog.DEFAULT_MODEL,
        help=f"installed model name (tiny.en, base, ...), NAME-QUANT, or a ggml file path "
        f"(default {catalog.DEFAULT_MODEL}, quant {catalog.DEFAULT_QUANT} first)",
    )
    parser.add_argument("--dir", help="models folder (default: as for `appliance models`)")
    parser.add_argument(
        "--threads",
        type=int,
        default=threads,
        help=f"whisper.cpp threads per worker (default {threads})",
    )
    parser.add_argument(
        "--workers",
        type=int,
        default=workers,
        help=f"decoding workers, each with a copy of the model: {batch} side by side "
        f"(default {workers})",
    )
    parser.add_argument(
        "--beam-size",
        type=int,
        default=1,
        choices=range(1, 9),
        metavar="N",
        help="beam search width 1-8 (default 1: greedy)",
    )
    parser.add_argument(
        "--vocabulary",
        metavar="TERMS",
        help="comma-separated names and terms to expect, given to the model as its prompt",
    )
    parser.add_argument(
        "--vad-threshold",
        type=_probability,
        default=0.35,
        help="speech probability that opens a segment, 0-1 (default 0.35; lower keeps more)",
    )


def _add_speaker_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--no-speakers",
        action="store_true",
        help='no speaker labels (default: "Speaker 1..N" turns when the weights are installed)',
    )
    parser.add_argument(
        "--max-speakers",
        type=int,
        default=8,
        choices=range(1, 33),
        metavar="N",
        help="most speakers a file is split into, 1-32 (default 8)",
    )


def _cmd_check_config(args: argparse.Namespace) -> int:
    found = checks.review(Path(args.config) if args.config else None, must_exist=bool(args.config))
    print(f"config: {found.config.source if found.config else found.path}")
    print(f"checked: {checks.CHECKED}")
    for line in found.warnings:
        print(f"warning: {line}")
    for line in found.problems:
        print(line)
    print(f"{len(found.problems)} problem(s)" if found.problems else "ok")
    return 1 if found.problems else 0


def build_parser() -> argparse.ArgumentParser:
    """The argument parser for every subcommand."""
    parser = argparse.ArgumentParser(prog="appliance", description="On-device meeting transcriber.")
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    add_model_commands(commands)

    run = commands.add_parser("transcribe", help="transcribe audio files (wav, flac, ogg, mp3...)")
    run.add_argument("audio", nargs="+", help="audio files")
    # Two workers of one thread each: two cores without whisper.cpp's per-step thread barrier,
    # measured here on the dev meeting, q8_0: 5.74 s against 6.31 s for one worker of two threads
    # (medians of 5 runs taking turns in one process).
    _add_model_options(run, threads=1, workers=2, batch="files and the windows of a long file")
    run.add_argument(
        "--language",
        help="language code, e.g. en, sv (default: en for .en models, detected otherwise)",
    )
    run.add_argument("--format", choices=FORMATS, default="txt", help="output format (default txt)")
    run.add_argument(
        "--output", metavar="DIR", help="write DIR/NAME.FORMAT per input instead of printing"
    )
    _add_speaker_options(run)
    run.set_defaults(func=_cmd_transcribe)

    score = commands.add_parser("eval", help="word error rate over a manifest.jsonl of clips")
    score.add_argument("manifest", help="manifest.jsonl (audio, text, language, set)")
    _add_model_options(score, batch="a clip's windows")
    score.add_argument("--sets", help="comma-separated set names (default: all)")
    score.add_argument("--language", help="only clips of this language")
    score.add_argument("--json", action="store_true", help="print JSON")
    _add_speaker_options(score)
    score.add_argument(
        "--baseline",
        action="store_true",
        help="also decode every clip that "
        "fits one window whole, with the same weights and no VAD (the model "
        "alone), and print per set what the front end costs against it",
    )
    score.set_defaults(func=_cmd_eval)
    check = commands.add_parser(
        "check-config",
        help="check the config file and what it names "
        "(model, microphone, password file, state folder, calendar, "
        "templates); one line per problem, exit 1 if any",
    )
    check.set_defaults(func=_cmd_check_config)
    client.add_commands(commands)
    tokens.add_commands(commands)
    login.add_commands(commands)
    _add_config_option(parser)
    return parser


def _add_config_option(parser: argparse.ArgumentParser) -> None:
    """Give every subcommand, at every depth, `--config PATH`."""
    for action in parser._subparsers._group_actions if parser._subparsers else ():
        for sub in action.choices.values():
            if sub._subparsers is None:
                sub.add_argument(
                    "--config",
                    metavar="PATH",
                    help="config file (default "
                    "$MEETING_APPLIANCE_CONFIG, else /etc/meeting-appliance/config.toml)",
                )
            _add_config_option(sub)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point: run one subcommand, turning user-facing errors into one line."""
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return args.func(args)
    except ApplianceError as err:
        print(f"appliance: error: {err}", file=sys.stderr)
        return 2 if isinstance(err, UsageError) else 1
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        # `appliance status | head`: the reader has gone. Point stdout at /dev/null so that
        # Python's own flush at exit does not fail again, and exit as a shell would.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 141
