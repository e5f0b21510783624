"""What /proc says of a process: its memory figures and the CPU time it has used."""

from __future__ import annotations

import os
import resource
from pathlib import Path

_TICKS = os.sysconf("SC_CLK_TCK")


def status_kib(field: str, pid: int | str = "self") -> int:
    """A memory figure (VmRSS, VmHWM, ...) of a process from /proc/PID/status, KiB.

    VmHWM, not ru_maxrss: Linux carries that high-water mark across fork and exec, so a child
    would report its parent's peak instead of its own.
    """
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(f"{field}:"):
            return int(line.split()[1])
    raise RuntimeError(f"no {field} in /proc/{pid}/status")


def cpu_s(pid: int | str = "self") -> float:
    """User plus system CPU seconds a process has used."""
    stat = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(stat[11]) + int(stat[12])) / _TICKS


def own_cpu_s() -> float:
    """User plus system CPU seconds of this process (every thread), to the microsecond."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime
