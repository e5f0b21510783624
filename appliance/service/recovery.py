"""Recovery at start: finish the meetings a crash or power cut left, or mark them failed."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path
from typing import TYPE_CHECKING

from appliance import languages
from appliance.errors import UsageError
from appliance.recording import spool as spool_file
from appliance.recording.meeting import Recording, SpoolReplay
from appliance.service import faults
from appliance.service.speaker_turns import attendee_cap, label_spooled
from appliance.store import DELIVERING, FINISHING, UNFINISHED, Meeting

if TYPE_CHECKING:
    from appliance.service.meetings import Meetings

_LOGGER = logging.getLogger(__name__)


async def recover(meetings: Meetings) -> None:
    """Finish meetings a crash or power cut left behind, then hand each to delivery once.

    A meeting that cannot be finished is marked failed with its reason; the rest go on,
    and the daemon with them."""
    for meeting in meetings.db.meetings(UNFINISHED):
        try:
            await _recover(meetings, meeting)
        except Exception as err:
            _LOGGER.exception("meeting %d cannot be recovered", meeting.id)
            await _give_up(meetings, meeting, faults.one_line(err))
    for meeting in meetings.db.meetings((DELIVERING,)):
        try:
            await meetings.deliver(meeting.id)
        except Exception:
            _LOGGER.exception(
                "meeting %d: hand-off failed; tried again at the next start", meeting.id
            )


async def _recover(meetings: Meetings, meeting: Meeting) -> None:
    path = meetings.spool_path(meeting.id)
    _LOGGER.warning("meeting %d was left %s; recovering from %s", meeting.id, meeting.state, path)
    meetings.db.set_state(meeting.id, FINISHING)
    if not path.exists():
        meetings.db.set_state(meeting.id, FINISHING, error="audio spool missing")
    else:
        refusal = languages.refusal(meeting.language, *meetings.model)
        if refusal:
            raise UsageError(f"language {meeting.language!r}: {refusal}")
        replay = Recording(
            meeting,
            meetings.db,
            SpoolReplay(path, meeting.transcribed_s),
            meetings.engine,
            meetings.new_segmenter(),
            path,
            offset_s=meeting.transcribed_s,
            queue_segments=meetings.config.transcriber.queue_segments,
        )
        await meetings.track(replay.run())
        if meetings.labeller is not None:
            await _label(meetings, meeting, path)
    await meetings.deliver(meeting.id)


async def _label(meetings: Meetings, meeting: Meeting, path: Path) -> None:
    """Speaker labels from the spooled audio: the embeddings gathered live died with the
    process. Clustering off the loop, the database on it; a failure drops the labels only."""
    cap = await asyncio.to_thread(attendee_cap, meetings.config, meeting.started_at)
    transcript = meetings.db.transcript(meeting.id)
    labelled = await asyncio.to_thread(
        label_spooled, meetings.labeller, meeting.id, path, transcript, cap
    )
    if labelled is not None:
        meetings.db.label_segments(meeting.id, labelled.segments)


async def _give_up(meetings: Meetings, meeting: Meeting, reason: str) -> None:
    try:
        audio_s = spool_file.duration_s(meetings.spool_path(meeting.id))
    except OSError:
        audio_s = meeting.audio_s
    try:
        meetings.note_failure(meeting.id, audio_s, reason)
        await meetings.deliver(meeting.id)
    except Exception:  # e.g. the disk still full: the next start tries again
        _LOGGER.exception("meeting %d: cannot be marked failed now", meeting.id)
