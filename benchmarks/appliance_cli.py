"""The appliance as the benchmarks run it: its own process, driven by its command line."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

APPLIANCE = [sys.executable, "-m", "appliance"]


def cli(config: Path, *args: str) -> str:
    """One `appliance` subcommand with this config; its stdout, CalledProcessError if it fails."""
    return subprocess.run(
        [*APPLIANCE, *args, "--config", str(config)],
        check=True,
        capture_output=True,
        text=True,
        timeout=3600,
    ).stdout


@contextmanager
def running(config: Path, log_path: Path) -> Iterator[subprocess.Popen]:
    """`appliance run` with this config, its output to log_path, for the block: stopped with
    SIGTERM when the block ends (killed if it does not exit in 120 s or the block failed)."""
    with open(log_path, "wb") as log:
        daemon = subprocess.Popen(
            [*APPLIANCE, "run", "--config", str(config)], stdout=log, stderr=log
        )
        try:
            yield daemon
            daemon.terminate()
            daemon.wait(120)
        finally:
            if daemon.poll() is None:
                daemon.kill()
                daemon.wait()


def check_running(daemon: subprocess.Popen, log_path: Path) -> None:
    """SystemExit with the daemon's log if it has exited."""
    if daemon.poll() is not None:
        raise SystemExit(log_path.read_text())
