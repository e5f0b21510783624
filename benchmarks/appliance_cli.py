"""The appliance as the benchmarks run it: its own process, driven by its command line."""

from __future__ import annotations

import subprocess
import sys
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
