"""Forgetting on schedule: audio once the transcript is final, transcripts once everyone has it."""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass
from pathlib import Path

from appliance.config import Config
from appliance.delivery.outbox import Outbox
from appliance.store import DELIVERING, DONE, FAILED, Database

_LOGGER = logging.getLogger(__name__)

_DAY_S = 86400.0
_PURGE_INTERVAL_S = _DAY_S
# A stray file in the outbox folder may be an enqueue still between writing and committing.
_STRAY_AGE_S = _DAY_S


@dataclass(frozen=True)
class Summary:
    """What one purge deleted, by meeting id (and stray outbox files by path)."""

    audio: tuple[int, ...]
    transcripts: tuple[int, ...]
    strays: tuple[Path, ...]

    def __str__(self) -> str:
        return (
            f"deleted the audio of {len(self.audio)} meeting(s), the transcript of "
            f"{len(self.transcripts)}, and {len(self.strays)} stray outbox file(s)"
        )


def purge(db: Database, config: Config, outbox: Outbox, now: float | None = None) -> Summary:
    """Delete what [storage] says is no longer to be kept; safe to repeat after a crash."""
    now = time.time() if now is None else now
    audio = _purge_audio(db, config, now)
    transcripts = _purge_transcripts(db, config, outbox, now)
    strays = _purge_strays(config, outbox, now)
    summary = Summary(tuple(audio), tuple(transcripts), tuple(strays))
    if audio or transcripts or strays:
        _LOGGER.info("purge: %s", summary)
    return summary


async def purge_daily(db: Database, config: Config, outbox: Outbox) -> None:
    """Purge now and then once a day, for ever (the daemon's background task)."""
    while True:
        # On the loop's thread: the one SQLite connection must not run two transactions.
        _LOGGER.info("purge: %s", purge(db, config, outbox))
        await asyncio.sleep(_PURGE_INTERVAL_S)


def spool_path(config: Config, meeting_id: int) -> Path:
    """Where a meeting's raw audio is kept."""
    return config.spool_dir / f"{meeting_id}.pcm"


def delete_meeting(db: Database, config: Config, outbox: Outbox, meeting_id: int) -> None:
    """Delete one meeting at once (`appliance delete`, the web page): its audio, its email, its
    transcript and its record. The files go first, so a crash part way never leaves audio or
    text without the record that finds it, and deleting again finishes the job."""
    spool_path(config, meeting_id).unlink(missing_ok=True)
    if email := outbox.message(meeting_id):
        Path(email).unlink(missing_ok=True)
    db.delete(meeting_id)  # segments, gaps and outbox rows go with it (ON DELETE CASCADE)
    _LOGGER.info("meeting %d deleted: its record, transcript, audio and email", meeting_id)


def _purge_audio(db: Database, config: Config, now: float) -> list[int]:
    cutoff = now - config.storage.keep_audio_days * _DAY_S
    deleted = []
    for meeting in db.meetings((DELIVERING, DONE, FAILED)):
        if meeting.stopped_at is None or meeting.stopped_at > cutoff:
            continue
        path = spool_path(config, meeting.id)
        if path.exists():
            path.unlink(missing_ok=True)
            deleted.append(meeting.id)
    return deleted


def _purge_transcripts(db: Database, config: Config, outbox: Outbox, now: float) -> list[int]:
    cutoff = now - config.storage.keep_transcripts_days * _DAY_S
    deleted = []
    for meeting_id, path in outbox.settled(before=cutoff):
        meeting = db.meeting(meeting_id)
        # DONE is what on_settled sets; a meeting not DONE could be handed to the outbox again,
        # and an emptied transcript must never be sent.
        if meeting is None or meeting.state not in (DONE, FAILED):
            continue
        # Each step repeats harmlessly, and the outbox rows that find this meeting go last,
        # so a crash part way is finished by the next purge.
        if path is not None:
            path.unlink(missing_ok=True)
        db.forget_transcript(meeting_id)
        outbox.forget(meeting_id)
        deleted.append(meeting_id)
    return deleted


def _purge_strays(config: Config, outbox: Outbox, now: float) -> list[Path]:
    """Files in the outbox folder no row refers to: left by a crash before the commit."""
    directory = config.outbox_dir
    if not directory.is_dir():
        return []
    known = outbox.paths()
    deleted = []
    for path in directory.iterdir():
        if path in known or not path.is_file() or path.stat().st_mtime > now - _STRAY_AGE_S:
            continue
        path.unlink(missing_ok=True)
        deleted.append(path)
    return deleted
