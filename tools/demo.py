"""`make demo`: the whole appliance on a virtual microphone, ending in a delivered email.

Plays a recorded meeting into a private PulseAudio device, runs `appliance run` on the embedded
defaults (only the state folder, socket and device point into the demo folder), starts a
meeting, stops it when the audio ends, and prints the delivered message's path last.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

from tools.virtual_mic import DEVICE, VirtualMicrophone

_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_AUDIO = _ROOT / "tests" / "data" / "meetings" / "dev-meeting-01.flac"
_APPLIANCE = [sys.executable, "-m", "appliance"]


def _say(text: str) -> None:
    print(f"demo: {text}", file=sys.stderr, flush=True)


class _Appliance:
    """The appliance command against the demo's config."""

    def __init__(self, config: Path, env: dict[str, str]) -> None:
        self.config = config
        self.env = env

    def __call__(self, *args: str) -> str:
        result = subprocess.run(
            [*_APPLIANCE, *args, "--config", str(self.config)],
            env=self.env,
            capture_output=True,
            text=True,
            timeout=3600,
        )
        if result.returncode:
            raise SystemExit(f"demo: appliance {' '.join(args)} failed: {result.stderr.strip()}")
        return result.stdout

    def wait_until_ready(self, daemon: subprocess.Popen, log: Path) -> None:
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline:
            if daemon.poll() is not None:
                raise SystemExit(f"demo: the daemon exited; its log:\n{log.read_text()[-2000:]}")
            probe = subprocess.run(
                [*_APPLIANCE, "status", "--config", str(self.config)],
                env=self.env,
                capture_output=True,
            )
            if probe.returncode == 0:
                return
            time.sleep(0.5)
        raise SystemExit("demo: the daemon did not become ready within 180 s")


def run(audio: Path, workdir: Path) -> Path:
    """Run the demo; the path of the delivered message."""
    workdir = workdir.resolve()
    state = workdir / "state"
    config = workdir / "config.toml"
    workdir.mkdir(parents=True, exist_ok=True)
    # The null sink runs at 16 kHz: opening the device at 16 kHz too makes the capture exact.
    config.write_text(
        f'[storage]\nstate_dir = "{state}"\n[control]\nsocket = '
        f'"{workdir / "control.sock"}"\n[audio]\ndevice = "{DEVICE}"\n'
        "samplerate = 16000\n"
    )
    with VirtualMicrophone(workdir / "pulse") as microphone:
        appliance = _Appliance(config, microphone.env)
        log = workdir / "daemon.log"
        _say(f"starting the daemon (log: {log})")
        with open(log, "wb") as handle:
            daemon = subprocess.Popen(
                [*_APPLIANCE, "run", "--config", str(config)],
                env=microphone.env,
                stdout=handle,
                stderr=handle,
            )
        try:
            appliance.wait_until_ready(daemon, log)
            meeting = appliance(
                "start", "--title", "Demo meeting", "--to", "participants@example.com"
            ).strip()
            _say(f"meeting {meeting} recording; playing {audio.name} into the microphone")
            player = microphone.play(audio)
            while player.poll() is None:
                time.sleep(15)
                status = json.loads(appliance("status", "--json"))
                line = status["last_line"][:60]
                _say(
                    f"recorded {status['audio_s']:.0f} s, waiting for transcription "
                    f"{status['backlog_s']:.0f} s; last line: {line}"
                )
            time.sleep(1.0)  # the last words are still on their way through PulseAudio
            stopped = time.monotonic()
            appliance("stop", "--wait")
            _say(f"stopped; transcript final and delivered in {time.monotonic() - stopped:.1f} s")
            print(appliance("show", meeting), end="")
        finally:
            daemon.terminate()
            daemon.wait(120)
    delivered = sorted((state / "maildir" / "new").iterdir(), key=lambda p: p.stat().st_mtime)
    if not delivered:
        raise SystemExit("demo: nothing was delivered; see the daemon log")
    return delivered[-1]


def main() -> None:
    """Parse arguments and run."""
    parser = argparse.ArgumentParser(prog="python -m tools.demo", description=__doc__)
    parser.add_argument(
        "--audio",
        type=Path,
        default=DEFAULT_AUDIO,
        help="meeting audio to play (default: the bundled dev meeting)",
    )
    parser.add_argument(
        "--workdir",
        type=Path,
        default=Path(".demo"),
        help="state, config and logs of the demo (default .demo)",
    )
    args = parser.parse_args()
    print(run(args.audio, args.workdir))


if __name__ == "__main__":
    main()
