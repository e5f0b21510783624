"""One progress line on stderr: redrawn in place on a terminal, a single closing line otherwise."""

from __future__ import annotations

import sys
import time
from typing import TextIO


class ProgressLine:
    """Report stage, done and total; throttled so a fast loop does not flood the terminal."""

    def __init__(self, stream: TextIO | None = None, interval_s: float = 0.2) -> None:
        self._stream = stream or sys.stderr
        self._tty = self._stream.isatty()
        self._interval_s = interval_s
        self._last = 0.0
        self._stage = ""

    def __call__(self, stage: str, done: int, total: int) -> None:
        """Update the line; the final call of a stage (done == total) always shows."""
        if stage != self._stage and self._stage:
            self.close()
        self._stage = stage
        now = time.monotonic()
        finished = total > 0 and done >= total
        if not finished and now - self._last < self._interval_s:
            return
        self._last = now
        text = f"{stage}: {done}/{total}" if total else f"{stage}: {done}"
        if total and total > 1000:
            text = f"{stage}: {100 * done // total}%"
        if self._tty:
            self._stream.write(f"\r\x1b[K{text}")
            self._stream.flush()
        elif finished:
            self._stream.write(f"{text}\n")
        if finished and self._tty:
            self._stream.write("\n")
            self._stage = ""

    def close(self) -> None:
        """End an unfinished line on a terminal."""
        if self._tty and self._stage:
            self._stream.write("\n")
        self._stage = ""
