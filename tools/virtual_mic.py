"""A capture device fed from a file: a private PulseAudio server with a null sink, for the demo
and the tests on machines without a sound card."""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from pathlib import Path

from appliance.errors import ApplianceError

DEVICE = "pulse"  # the ALSA plugin PCM that PortAudio lists; it records the default source
SINK = "room"


class VirtualMicError(ApplianceError, RuntimeError):
    """PulseAudio is missing or would not start."""


class VirtualMicrophone:
    """Play a file into the null sink `room`; its monitor is what the `pulse` device records."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.socket = directory / "native"
        self.env = {
            **os.environ,
            "PULSE_SERVER": f"unix:{self.socket}",
            "PULSE_RUNTIME_PATH": str(directory),
            "PULSE_STATE_PATH": str(directory / "state"),
            "XDG_RUNTIME_DIR": str(directory),
            "HOME": str(directory),
        }
        self._server: subprocess.Popen | None = None

    def start(self) -> VirtualMicrophone:
        """Start the server and make the sink's monitor the default source."""
        if shutil.which("pulseaudio") is None or shutil.which("paplay") is None:
            raise VirtualMicError(
                "pulseaudio and paplay are needed: apt install pulseaudio "
                "pulseaudio-utils libasound2-plugins"
            )
        self.directory.mkdir(parents=True, exist_ok=True)
        log = open(self.directory / "pulseaudio.log", "wb")  # noqa: SIM115 (open while the server runs)
        self._server = subprocess.Popen(
            [
                "pulseaudio",
                "-n",
                "--daemonize=no",
                "--exit-idle-time=-1",
                "--disallow-exit",
                "--use-pid-file=no",
                "--system=no",
                "-L",
                f"module-native-protocol-unix socket={self.socket} auth-anonymous=1",
                "-L",
                f"module-null-sink sink_name={SINK} rate=16000 channels=1",
            ],
            env=self.env,
            stdout=log,
            stderr=log,
        )
        log.close()
        deadline = time.monotonic() + 15
        while self._pactl("info", check=False).returncode != 0:
            if self._server.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise VirtualMicError(
                    "pulseaudio did not start: "
                    + (self.directory / "pulseaudio.log").read_text()[-500:]
                )
            time.sleep(0.1)
        self._pactl("set-default-sink", SINK)
        self._pactl("set-default-source", f"{SINK}.monitor")
        return self

    def _pactl(self, *args: str, check: bool = True) -> subprocess.CompletedProcess:
        return subprocess.run(
            ["pactl", *args], env=self.env, capture_output=True, check=check, timeout=10
        )

    def play(self, path: Path) -> subprocess.Popen:
        """Start playing a file into the room, in real time; returns the player process."""
        return subprocess.Popen(["paplay", f"--device={SINK}", str(path)], env=self.env)

    def stop(self) -> None:
        """Stop the server."""
        if self._server is not None and self._server.poll() is None:
            self._server.terminate()
            try:
                self._server.wait(5)
            except subprocess.TimeoutExpired:
                self._server.kill()
                self._server.wait()
        self._server = None

    def __enter__(self) -> VirtualMicrophone:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
