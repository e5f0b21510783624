"""One meeting's speaker turns, gathered while it records or read back from its spool after a
crash, at most as many as the room calendar names people; a failure drops the labels only."""

from __future__ import annotations

import dataclasses
import logging
import time
from pathlib import Path

import numpy as np

from appliance import paths
from appliance.config import Config
from appliance.delivery.recipients import CalendarError, calendar_attendees
from appliance.delivery.roomtime import room_zone
from appliance.engine.speakers import SpeakerLabeller, SpeakerTrack, open_labeller
from appliance.recording import spool
from appliance.transcript import Segment, Transcript

_LOGGER = logging.getLogger(__name__)

# A recovered meeting's spool is read this much at a time: an hour would be 230 MB of floats.
_SPOOL_CHUNK_S = 30.0


def load_labeller(config: Config) -> SpeakerLabeller | None:
    """The labeller when [speakers] is on and its weights load, else None (one log line)."""
    if not config.speakers.enabled:
        return None
    directory = paths.models_dir(config.transcriber.models_dir)
    return open_labeller(directory, config.speakers.max_speakers)


def attendee_cap(config: Config, started_at: float) -> int | None:
    """How many people (organizer and attendees who have not declined) the room calendar's
    event at started_at names: no more speakers than that. None without a calendar, an
    event, or a calendar that can be read; then [speakers] max_speakers alone caps."""
    if not config.room.calendar:
        return None
    try:
        people = calendar_attendees(
            config.room.calendar, started_at, room_zone(config.room.timezone)
        )
    except CalendarError as err:
        _LOGGER.info("speakers not capped by the calendar: %s", err)
        return None
    return len({person.address.lower() for person in people}) or None


class MeetingSpeakers:
    """Embeds each speech segment as the recorder finds it; labels the transcript at the end."""

    def __init__(self, labeller: SpeakerLabeller, meeting_id: int) -> None:
        self._track = SpeakerTrack(labeller)
        self._words: dict[tuple[float, float, str], tuple[tuple[float, float], ...]] = {}
        self.meeting_id = meeting_id
        self.failed = False

    def heard(self, segments: list[Segment]) -> None:
        """Transcribed segments as stored: their word times (which the database does not
        keep) are kept here, so a cut at a change of speaker falls between two words."""
        self._words.update({(s.start_s, s.end_s, s.text): s.words for s in segments if s.words})

    def add(self, samples: np.ndarray, start_s: float) -> None:
        """One speech segment (16 kHz samples starting start_s into the meeting)."""
        if self.failed:
            return
        try:
            self._track.add(samples, start_s)
        except Exception:  # the meeting goes on, without speaker labels
            self.failed = True
            _LOGGER.exception("meeting %d: speaker embeddings failed", self.meeting_id)

    def label(self, transcript: Transcript, max_speakers: int | None = None) -> Transcript | None:
        """The transcript labelled by speaker (at most max_speakers when given), or None when
        the turns could not be found."""
        if self.failed:
            return None
        segments = tuple(
            dataclasses.replace(s, words=self._words.get((s.start_s, s.end_s, s.text), ()))
            for s in transcript.segments
        )
        started = time.monotonic()
        try:
            labelled = self._track.label(
                dataclasses.replace(transcript, segments=segments), max_speakers
            )
        except Exception:
            _LOGGER.exception("meeting %d: speaker turns failed", self.meeting_id)
            return None
        found = len({s.speaker for s in labelled.segments if s.speaker})
        _LOGGER.info(
            "meeting %d: %d speakers, labelled in %.2f s",
            self.meeting_id,
            found,
            time.monotonic() - started,
        )
        return labelled


def label_spooled(
    labeller: SpeakerLabeller,
    meeting_id: int,
    path: Path,
    transcript: Transcript,
    max_speakers: int | None = None,
) -> Transcript | None:
    """A recovered meeting's transcript labelled from its spooled audio, read a chunk at a
    time; None (one log line) when the spool cannot be read or the turns not found."""
    speakers = MeetingSpeakers(labeller, meeting_id)
    try:
        duration_s = spool.duration_s(path)
    except spool.SpoolError as err:
        _LOGGER.warning("meeting %d: no speaker labels: %s", meeting_id, err)
        return None
    start_s = 0.0
    while start_s < duration_s and not speakers.failed:
        try:
            samples = spool.read(path, start_s, start_s + _SPOOL_CHUNK_S)
        except spool.SpoolError as err:
            _LOGGER.warning("meeting %d: no speaker labels: %s", meeting_id, err)
            return None
        speakers.add(samples, start_s)
        start_s += _SPOOL_CHUNK_S
    return speakers.label(transcript, max_speakers)
