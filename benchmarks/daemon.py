"""The daemon over a one-hour meeting: peak RSS, CPU share while recording, stop to final.

Runs `appliance run` as its own process on the default model, records a one-hour file (the dev
meeting eleven times over) paced at --speed times real time, stops at the hour; twice, with
`[speakers]` on and off, so what labelling adds shows. Writes a "Daemon" section into the
benchmark report (replacing an earlier one).
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import soundfile

from appliance.recording import audio
from benchmarks import proc, report_sections
from benchmarks.appliance_cli import APPLIANCE, check_running, cli, running
from benchmarks.machine import command_line, describe

_ROOT = Path(__file__).resolve().parent.parent
MEETING = _ROOT / "tests" / "data" / "meetings" / "dev-meeting-01.flac"


def _say(text: str) -> None:
    print(f"bench daemon: {text}", file=sys.stderr, flush=True)


def _hour_file(directory: Path, minutes: float) -> Path:
    """The dev meeting repeated to the given length, as 16 kHz PCM16 WAV."""
    one = audio.load(MEETING)
    repeats = int(np.ceil(minutes * 60 * 16000 / one.size))
    path = directory / "meeting-hour.wav"
    with soundfile.SoundFile(path, "w", 16000, 1, "PCM_16") as out:
        for _ in range(repeats):
            out.write(one)
    return path


def _proc(pid: int) -> tuple[int, int, float]:
    """(VmRSS kB, VmHWM kB, CPU seconds) of a process."""
    return proc.status_kib("VmRSS", pid), proc.status_kib("VmHWM", pid), proc.cpu_s(pid)


def measure(minutes: float, speed: float, threads: int, speakers: bool, scratch: Path) -> dict:
    """Run the daemon through one meeting and return what was measured."""
    wav = _hour_file(scratch, minutes)
    length_s = soundfile.info(str(wav)).duration
    config = scratch / "config.toml"
    config.write_text(
        f'[storage]\nstate_dir = "{scratch / "state"}"\n[control]\nsocket = '
        f'"{scratch / "control.sock"}"\n[transcriber]\nthreads = {threads}\n'
        f"[speakers]\nenabled = {str(speakers).lower()}\n"
    )
    log = scratch / "daemon.log"
    with running(config, log) as daemon:
        while subprocess.run(
            [*APPLIANCE, "status", "--config", str(config)], capture_output=True
        ).returncode:
            check_running(daemon, log)
            time.sleep(0.3)
        idle_rss, _, cpu_before = _proc(daemon.pid)
        cli(
            config,
            "start",
            "--from-file",
            str(wav),
            "--speed",
            str(speed),
            "--to",
            "bench@example.com",
        )
        started = time.monotonic()
        stop_at_s = min(length_s, minutes * 60) - 1.0
        backlog_max = 0.0
        said = started
        while True:
            status = json.loads(cli(config, "status", "--json"))
            backlog_max = max(backlog_max, status["backlog_s"])
            if status["audio_s"] >= stop_at_s or status["state"] != "recording":
                break
            if time.monotonic() - said >= 30:
                said = time.monotonic()
                _say(f"{status['audio_s'] / 60:.0f} min recorded, backlog {status['backlog_s']} s")
            time.sleep(1.0)
        recorded_wall_s = time.monotonic() - started
        _, _, cpu_recording = _proc(daemon.pid)
        stopping = time.monotonic()
        cli(config, "stop", "--wait")
        stop_to_final_s = time.monotonic() - stopping
        _, peak_kb, _ = _proc(daemon.pid)
        meetings = json.loads(cli(config, "meetings", "--json"))
        final = json.loads(cli(config, "show", str(meetings[-1]["id"]), "--format", "json"))
    audio_s = meetings[-1]["audio_s"]
    cpu_s = cpu_recording - cpu_before
    # The daemon's own line (service/speaker_turns.py): the part of stop-to-final spent on it.
    labelled = re.findall(r"labelled in ([0-9.]+) s", log.read_text())
    return {
        "audio_s": round(audio_s, 1),
        "speed": speed,
        "threads": threads,
        "recorded_wall_s": round(recorded_wall_s, 1),
        "idle_rss_mb": round(idle_rss / 1024, 1),
        "peak_rss_mb": round(peak_kb / 1024, 1),
        "backlog_max_s": backlog_max,
        "cpu_s_recording": round(cpu_s, 1),
        "cpu_share_of_one_core_at_1x": round(cpu_s / audio_s, 4),
        "stop_to_final_s": round(stop_to_final_s, 2),
        "state": meetings[-1]["state"],
        "speakers": len({s["speaker"] for s in final["segments"] if s.get("speaker")}),
        "label_s": float(labelled[-1]) if labelled else None,
    }


def render(on: dict, off: dict, machine: dict, command: str) -> str:
    """The report section: the meeting with [speakers] on and off, and what labelling adds."""

    def row(measure: str, key: str, unit: str, target: str = "") -> str:
        added = f"{on[key] - off[key]:+.{3 if unit == ' s/s' else 1}f}{unit}"
        return f"| {measure} | {on[key]}{unit} | {off[key]}{unit} | {added} | {target} |"

    return "\n".join(
        [
            "## Daemon: a one-hour meeting",
            "",
            f"`{command}` on {machine.get('cpu', 'this machine')}, {machine.get('cores', '?')} "
            f"cores: `appliance run` as its own process, default model (tiny.en q5_1, "
            f"{on['threads']} threads), {on['audio_s'] / 60:.1f} min of meeting audio "
            f"(the dev meeting repeated) fed with `appliance start --from-file --speed "
            f"{on['speed']:g}` (paced at {on['speed']:g}x real time), stopped with "
            "`appliance stop --wait` at the end of the audio; once with `[speakers]` on and once "
            "off, each in a daemon of its own. Load average at the start: "
            f"{', '.join(f'{v:.2f}' for v in machine.get('load_average', ()))} (above 0 means "
            "other work shared the cores and the times are pessimistic).",
            "",
            "| measure | `[speakers]` on | off | added by speakers | target |",
            "|---|---|---|---|---|",
            row("peak RSS of the daemon (VmHWM)", "peak_rss_mb", " MB", "≤ 200 MB"),
            row("RSS when idle, model loaded", "idle_rss_mb", " MB"),
            row(
                "`stop` to final transcript (and delivered to the Maildir)",
                "stop_to_final_s",
                " s",
                "≤ 5 s",
            ),
            row("CPU while recording, per second of audio", "cpu_share_of_one_core_at_1x", " s/s"),
            f"| speakers labelled in the final transcript | {on['speakers']} | "
            f"{off['speakers']} | | 7 people speak in the dev meeting |",
            f"| of stop to final, labelling (clustering the live embeddings, cutting segments) | "
            f"{on['label_s']} s | | | |",
            row("largest transcription backlog seen", "backlog_max_s", " s"),
            row(f"wall time for the meeting at {on['speed']:g}x", "recorded_wall_s", " s"),
            "",
        ]
    )


def main(argv: list[str] | None = None) -> int:
    """Parse arguments, measure, write the section."""
    parser = argparse.ArgumentParser(prog="python -m benchmarks.daemon", description=__doc__)
    parser.add_argument("--output", type=Path, default=Path("docs/benchmarks.md"))
    parser.add_argument("--minutes", type=float, default=60.0, help="meeting length")
    parser.add_argument("--speed", type=float, default=16.0, help="pace, times real time")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args(argv)
    machine = describe(_ROOT)  # before the run: its load average is the other work's
    results = {}
    for speakers in (True, False):
        with tempfile.TemporaryDirectory(prefix="bench-daemon-") as scratch:
            results[speakers] = measure(
                args.minutes, args.speed, args.threads, speakers, Path(scratch)
            )
        _say(f"[speakers] {'on' if speakers else 'off'}: {json.dumps(results[speakers])}")
    command = command_line("benchmarks.daemon", argv)
    report_sections.write(args.output, render(results[True], results[False], machine, command))
    _say(f"wrote the daemon section of {args.output}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
