"""Facts about the host and the software versions, for the head of the benchmark report."""

from __future__ import annotations

import importlib.metadata
import importlib.util
import os
import platform
import re
import shlex
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any


def _read(path: str) -> str:
    try:
        return Path(path).read_text(encoding="utf-8", errors="replace")
    except OSError:
        return ""


def _field(text: str, key: str, separator: str) -> str | None:
    for line in text.splitlines():
        name, _, value = line.partition(separator)
        if name.strip() == key:
            return value.strip().strip('"')
    return None


def _version(package: str) -> str | None:
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return None


def _bundled_library(prefix: str) -> str | None:
    """The version in the name of a library beside _pywhispercpp (libwhisper.so.1.8.5)."""
    spec = importlib.util.find_spec("_pywhispercpp")
    if spec is None or not spec.origin:
        return None
    versions = [
        match.group(1)
        for path in Path(spec.origin).parent.glob(f"{prefix}.so.*")
        if (match := re.fullmatch(rf"{re.escape(prefix)}\.so\.(\d+\.\d+\.\d+)", path.name))
    ]
    return max(versions, default=None)


def _whisper_cpp() -> dict[str, Any]:
    """pywhispercpp's version, whisper.cpp's and ggml's, and the CPU features ggml uses."""
    facts: dict[str, Any] = {"pywhispercpp": _version("pywhispercpp")}
    try:
        import _pywhispercpp as pw
    except ImportError:
        return facts
    # The binding's own __version__ is "dev" in the 1.5.1 wheel: the package metadata says more.
    own = getattr(pw, "__version__", None)
    if own and own != "dev":
        facts["pywhispercpp_binding"] = own
    facts["whisper.cpp"] = _bundled_library("libwhisper")
    facts["ggml"] = _bundled_library("libggml")
    info = pw.whisper_print_system_info()
    facts["cpu_features"] = [m.group(1) for m in re.finditer(r"(\w+) = 1", info)]
    return facts


def _commit(root: Path) -> str | None:
    """The checkout's commit, "+changes" when the tree differs; read-only git calls only."""
    try:
        head = subprocess.run(
            ["git", "-C", str(root), "rev-parse", "--short", "HEAD"],
            capture_output=True,
            text=True,
            check=True,
            timeout=10,
        ).stdout.strip()
        # --no-optional-locks: status must not refresh (write) the index.
        status = subprocess.run(
            [
                "git",
                "--no-optional-locks",
                "-C",
                str(root),
                "status",
                "--porcelain",
                "--untracked-files=no",
            ],
            capture_output=True,
            text=True,
            check=True,
            timeout=10,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    return f"{head}+changes" if status else head


def describe(root: Path) -> dict[str, Any]:
    """CPU, cores, memory, OS, load, Python and the versions of both engines."""
    cpuinfo = _read("/proc/cpuinfo")
    mem_kib = _field(_read("/proc/meminfo"), "MemTotal", ":")
    os_release = _read("/etc/os-release")
    return {
        "cpu": _field(cpuinfo, "model name", ":") or platform.processor() or "unknown",
        "cores": os.cpu_count(),
        "usable_cores": len(os.sched_getaffinity(0)),
        "ram_gb": round(int(mem_kib.split()[0]) * 1024 / 1e9, 1) if mem_kib else None,
        "os": _field(os_release, "PRETTY_NAME", "=") or platform.platform(),
        "kernel": platform.release(),
        "machine": platform.machine(),
        "load_average": os.getloadavg(),
        "python": platform.python_version(),
        **_whisper_cpp(),
        "faster-whisper": _version("faster-whisper"),
        "ctranslate2": _version("ctranslate2"),
        "commit": _commit(root),
    }


def command_line(module: str, argv: Sequence[str] | None) -> str:
    """How the benchmark `module` was started: `python -m module` and its arguments (argv, or
    the process's own when None), for the head of its section."""
    return shlex.join(["python", "-m", module, *(argv if argv is not None else sys.argv[1:])])
