"""One meeting's speaker turns, gathered while it records; a failure drops the labels only."""

from __future__ import annotations

import logging

import numpy as np

from appliance import paths
from appliance.config import Config
from appliance.engine.speakers import SpeakerLabeller, SpeakerTrack, open_labeller
from appliance.transcript import Transcript

_LOGGER = logging.getLogger(__name__)


def load_labeller(config: Config) -> SpeakerLabeller | None:
    """The labeller when [speakers] is on and its weights load, else None (one log line)."""
    if not config.speakers.enabled:
        return None
    directory = paths.models_dir(config.transcriber.models_dir)
    return open_labeller(directory, config.speakers.max_speakers)


class MeetingSpeakers:
    """Embeds each speech segment as the recorder finds it; labels the transcript at the end."""

    def __init__(self, labeller: SpeakerLabeller, meeting_id: int) -> None:
        self._track = SpeakerTrack(labeller)
        self.meeting_id = meeting_id
        self.failed = False

    def add(self, samples: np.ndarray, start_s: float) -> None:
        """One speech segment (16 kHz samples starting start_s into the meeting)."""
        if self.failed:
            return
        try:
            self._track.add(samples, start_s)
        except Exception:  # the meeting goes on, without speaker labels
            self.failed = True
            _LOGGER.exception("meeting %d: speaker embeddings failed", self.meeting_id)

    def label(self, transcript: Transcript) -> Transcript | None:
        """The transcript labelled by speaker, or None when the turns could not be found."""
        if self.failed:
            return None
        try:
            return self._track.label(transcript)
        except Exception:
            _LOGGER.exception("meeting %d: speaker turns failed", self.meeting_id)
            return None
