"""What is wrong now, for `status`, the LED and systemd's STATUS=."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

from appliance.recording import spool as spool_file
from appliance.store import FAILED

if TYPE_CHECKING:
    from appliance.service.meetings import Meetings

_MB = 1_000_000
_RECENT_S = 86400.0  # a failed meeting is shown for a day


def one_line(err: BaseException) -> str:
    """An error as the one line a meeting keeps as its reason."""
    return " ".join(f"{type(err).__name__}: {err}".split())


def now(meetings: Meetings) -> list[str]:
    """What is wrong now, one line each: the LED shows error and systemd's status says so
    while any is there (the outbox's settled failures are shown by `status` alone)."""
    lines = []
    recording = meetings.current
    if recording is not None:
        problem = getattr(recording.source, "problem", "")
        if problem:
            lines.append(problem)
        if recording.disk_full_at is not None:
            lines.append(
                f"meeting {recording.meeting.id}: the disk is full; audio after "
                f"{_clock(recording.disk_full_at)} is not being recorded"
            )
    try:
        free = spool_file.free_bytes(meetings.config.state_dir)
    except OSError:
        free = None
    if free is not None and free < meetings.config.storage.min_free_mb * _MB:
        lines.append(
            f"disk nearly full: {free // _MB} MB free in {meetings.config.state_dir}; a meeting "
            f"needs [storage] min_free_mb = {meetings.config.storage.min_free_mb}"
        )
    day_ago = time.time() - _RECENT_S
    for meeting in meetings.db.meetings((FAILED,)):
        if (meeting.stopped_at or meeting.started_at) >= day_ago:
            lines.append(f"meeting {meeting.id} failed: {meeting.error}")
    return lines + meetings.outbox.retrying()


def _clock(seconds: float) -> str:
    whole = int(seconds)
    return f"{whole // 3600:02d}:{whole // 60 % 60:02d}:{whole % 60:02d}"
