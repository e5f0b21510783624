"""Run the benchmarks and write docs/benchmarks.md and .json: `python -m benchmarks.run --help`."""

from __future__ import annotations

import argparse
import datetime
import json
import os
import shlex
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import soundfile

from appliance import paths
from appliance.errors import ApplianceError
from appliance.evaluate import read_manifest
from appliance.models import install, store
from benchmarks import configs, machine, peer, report, report_sections
from benchmarks.configs import Config

Result = dict[str, Any]


def _say(text: str) -> None:
    print(f"bench: {text}", file=sys.stderr, flush=True)


def _install(chosen: list[Config], directory: Path) -> dict[str, Path | str]:
    """Each whisper.cpp configuration's model file, or why it could not be installed."""
    found: dict[str, Path | str] = {}
    cpp = [c for c in chosen if c.engine == configs.WHISPER_CPP]
    for step, config in enumerate(cpp, 1):
        started = time.perf_counter()
        try:
            path, written = install.install(config.model, config.quant, directory)
        except ApplianceError as err:
            found[config.id] = f"install failed: {err}"
            _say(f"install [{step}/{len(cpp)}] {config.id}: FAILED: {err}")
            continue
        found[config.id] = path
        took = time.perf_counter() - started
        state = f"installed in {took:.1f} s" if written else "already installed"
        _say(f"install [{step}/{len(cpp)}] {config.id}: {state} ({path.name})")
    return found


def _peer_folders(chosen: list[Config], scratch: Path) -> dict[str, Path | str]:
    """Each faster-whisper model's CTranslate2 folder, or why it could not be made."""
    folders: dict[str, Path | str] = {}
    for model in dict.fromkeys(c.model for c in chosen if c.engine == configs.FASTER_WHISPER):
        try:
            folders[model] = folder = peer.model_folder(model, scratch)
            _say(f"faster-whisper {model}: weights in {folder}")
        except (ApplianceError, OSError) as err:
            folders[model] = f"no CTranslate2 folder: {err}"
            _say(f"faster-whisper {model}: FAILED: {err}")
    return folders


def _run_worker(config: Config, path: Path, args: argparse.Namespace, scratch: Path) -> Result:
    """One configuration in a fresh process; its peak RSS from wait4, which reaps it."""
    result_file = scratch / f"{config.engine}-{config.id}.json"
    command = [
        sys.executable,
        "-m",
        "benchmarks.worker",
        config.engine,
        config.model,
        config.quant,
        str(path),
        "--result",
        str(result_file),
        "--threads",
        str(args.threads),
    ]
    if args.quick:
        command += ["--sets", ",".join(configs.QUICK_SETS)]
        # The meeting is most of a run's time: a smoke run does it for the default and the peer.
        if config.engine == configs.WHISPER_CPP and config != configs.DEFAULT:
            command.append("--no-meeting")
    else:
        command.append("--swedish")
    started = time.perf_counter()
    process = subprocess.Popen(command, cwd=configs.ROOT, stdin=subprocess.DEVNULL)
    try:
        _, status, usage = os.wait4(process.pid, 0)
    except BaseException:
        process.kill()
        process.wait()
        raise
    process.returncode = code = os.waitstatus_to_exitcode(status)
    result: Result = {}
    if result_file.is_file():
        result = json.loads(result_file.read_text(encoding="utf-8"))
    if code != 0 and "error" not in result:
        result["error"] = f"worker exited with status {code}"
    result.update(
        engine=config.engine,
        model=config.model,
        quant=config.quant,
        # The worker's own VmHWM: wait4's ru_maxrss would include this parent's peak.
        peak_rss_kib=result.get("self_peak_rss_kib"),
        worker_s=time.perf_counter() - started,
        # CPU seconds and the load after: a busy machine shows as load above 0 and wall time
        # well over cpu_s / threads.
        cpu_s=usage.ru_utime + usage.ru_stime,
        load_average_after=os.getloadavg(),
    )
    return result


def _command(argv: Sequence[str]) -> str:
    """The command line as typed from the checkout."""
    python = Path(sys.executable)
    try:
        python = python.relative_to(Path.cwd())
    except ValueError:
        pass
    return shlex.join([str(python), "-m", "benchmarks.run", *argv])


def _write(target: Path, text: str) -> None:
    """Replace target atomically: a reader sees the old file or the new one, never half."""
    with store.atomic_file(target) as out:
        out.write(text.encode("utf-8"))


def _parser() -> argparse.ArgumentParser:
    ids = ", ".join(c.id for c in configs.ALL)
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.run",
        description="Install and measure whisper.cpp models and quants against faster-whisper "
        "on the same weights; one configuration at a time, each in a fresh process.",
    )
    parser.add_argument(
        "--output",
        default="docs/benchmarks.md",
        help="Markdown report; the raw results go beside it as .json (default docs/benchmarks.md)",
    )
    parser.add_argument("--threads", type=int, default=2, help="threads per engine (default 2)")
    parser.add_argument(
        "--quick",
        action="store_true",
        help=f"smoke run: {', '.join(configs.QUICK)} on the {' and '.join(configs.QUICK_SETS)} "
        "sets only, no Swedish, the meeting only for the default and faster-whisper",
    )
    parser.add_argument("--only", metavar="MODEL-QUANT,...", help=f"configurations: {ids}")
    parser.add_argument("--list", action="store_true", help="print the configurations and exit")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Install, measure every chosen configuration in turn, write the report."""
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = _parser()
    args = parser.parse_args(argv)
    if args.threads < 1:
        parser.error("--threads must be 1 or more")
    try:
        chosen = configs.select(args.only, args.quick)
    except ValueError as err:
        parser.error(str(err))
    if args.list:
        for config in chosen:
            print(f"{config.id:<16} {config.engine}")
        return 0
    sets = list(configs.QUICK_SETS) if args.quick else None
    try:
        english = read_manifest(configs.MANIFEST, sets=set(sets) if sets else None, language="en")
        meeting_s = soundfile.info(str(configs.MEETING)).duration
    except (ApplianceError, OSError, RuntimeError) as err:
        print(f"bench: error: {err}", file=sys.stderr)
        return 2

    started = time.perf_counter()
    document: dict[str, Any] = {
        "date": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
        "command": _command(argv),
        "threads": args.threads,
        "quick": args.quick,
        "english_sets": list(dict.fromkeys(c.dataset for c in english)),
        "meeting_audio_s": meeting_s,
        "machine": machine.describe(configs.ROOT),
    }
    results: list[Result] = []
    with tempfile.TemporaryDirectory(prefix="meeting-appliance-bench-") as temp:
        scratch = Path(temp)
        models = _install(chosen, paths.models_dir())
        folders = _peer_folders(chosen, scratch)
        # Strictly one after another: two workers on a 2-core machine would time each other.
        for number, config in enumerate(chosen, 1):
            cpp = config.engine == configs.WHISPER_CPP
            where = models[config.id] if cpp else folders[config.model]
            if isinstance(where, str):
                results.append(
                    dict(engine=config.engine, model=config.model, quant=config.quant, error=where)
                )
                continue
            _say(f"[{number}/{len(chosen)}] {config.label}")
            result = _run_worker(config, where, args, scratch)
            results.append(result)
            if "error" in result:
                _say(f"[{number}/{len(chosen)}] {config.label}: FAILED: {result['error']}")
            else:
                _say(
                    f"[{number}/{len(chosen)}] {config.label}: done in {result['worker_s']:.0f} s, "
                    f"peak RSS {result['peak_rss_kib'] * 1024 / 1e6:.0f} MB"
                )
    document["elapsed_s"] = time.perf_counter() - started
    document["results"] = results

    output = Path(args.output)
    raw = output.with_suffix(".json")
    _write(raw, json.dumps(document, ensure_ascii=False, indent=1) + "\n")
    previous = output.read_text() if output.exists() else ""
    _write(output, report_sections.keep_others(previous, report.render(document)))
    _say(f"wrote {output} and {raw}")
    return 1 if any("error" in r for r in results) else 0


if __name__ == "__main__":
    sys.exit(main())
