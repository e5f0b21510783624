"""The daemon's side of speaker turns: the room calendar's cap, and a recovered meeting labelled
from its spool (real weights, a real spool file, a real calendar file)."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from appliance.engine import speakers
from appliance.engine.speakers import SpeakerLabeller
from appliance.models import speakers as weights
from appliance.recording.audio import float_to_pcm16, load
from appliance.recording.spool import Spool
from appliance.service.speaker_turns import MeetingSpeakers, attendee_cap, label_spooled
from appliance.transcript import Segment, Transcript
from tests.test_recipients import CALENDAR, at, make_config

CHECKOUT = Path(__file__).resolve().parents[1]
SAMPLE = CHECKOUT / "tests" / "data" / "diarization" / "pyannote_sample.flac"


@pytest.fixture
def ics(tmp_path: Path) -> Path:
    path = tmp_path / "room.ics"
    path.write_text(CALENDAR.replace("\n", "\r\n"))
    return path


@pytest.mark.parametrize(
    "when, expected",
    [
        # The weekly sync: olle (organizer and attendee), Ann, Eve; Dan declined, a room is no one.
        (at(2, 10, 20), 3),
        (at(3, 14, 30), 1),  # the Tuesday booking: one person
        (at(2, 12, 0), None),  # no event then
    ],
)
def test_the_calendar_caps_speakers_at_the_people_it_names(ics, when, expected):
    assert attendee_cap(make_config(str(ics)), when) == expected


def test_without_a_readable_calendar_there_is_no_cap(tmp_path, caplog):
    assert attendee_cap(make_config(""), at(2, 10, 20)) is None
    with caplog.at_level(logging.INFO, logger="appliance.service.speaker_turns"):
        assert attendee_cap(make_config(str(tmp_path / "gone.ics")), at(2, 10, 20)) is None
    assert len(caplog.records) == 1 and "gone.ics" in caplog.records[0].getMessage()


@pytest.fixture(scope="module")
def labeller() -> SpeakerLabeller:
    return SpeakerLabeller(weights.path(CHECKOUT / "models"))


@pytest.fixture
def spooled(tmp_path) -> Path:
    path = tmp_path / "7.pcm"
    with Spool.create(path) as spool:
        spool.append(float_to_pcm16(load(SAMPLE)))
    return path


def _transcript() -> Transcript:
    """Segments over the sample's speech, as a transcript read back from the database."""
    rows = [line.split() for line in SAMPLE.with_suffix(".rttm").read_text().splitlines()]
    turns = sorted((float(r[3]), float(r[3]) + float(r[4])) for r in rows if r)
    segments = tuple(Segment(a, b, f"words {i}") for i, (a, b) in enumerate(turns))
    return Transcript(segments, "en", 30.0)


def test_a_recovered_meeting_is_labelled_from_its_spool(labeller, spooled):
    labelled = label_spooled(labeller, 7, spooled, _transcript())
    assert labelled is not None
    assert {s.speaker for s in labelled.segments} == {"Speaker 1", "Speaker 2"}
    capped = label_spooled(labeller, 7, spooled, _transcript(), max_speakers=1)
    assert capped is not None and {s.speaker for s in capped.segments} == {"Speaker 1"}


def test_a_spool_that_cannot_be_read_drops_the_labels_with_one_line(labeller, tmp_path, caplog):
    with caplog.at_level(logging.WARNING, logger="appliance.service.speaker_turns"):
        assert label_spooled(labeller, 7, tmp_path / "7.pcm", _transcript()) is None
    assert len(caplog.records) == 1 and "7.pcm" in caplog.records[0].getMessage()


def test_word_times_the_database_drops_still_place_the_cuts(labeller):
    """The daemon labels the transcript read back from the database, which keeps no word
    times: the meeting keeps them as segments are stored, and the cuts fall where they say."""
    samples = load(SAMPLE)
    meeting = MeetingSpeakers(labeller, 7)
    meeting.add(samples, 0.0)
    # One segment over the whole sample, its words placed one per second.
    text = " ".join(f"w{i}" for i in range(30))
    timed = Segment(0.0, 30.0, text, words=tuple((i + 0.1, i + 0.9) for i in range(30)))
    meeting.heard([timed])
    stored = Transcript((Segment(0.0, 30.0, text),), "en", 30.0)  # as read back: no words
    labelled = meeting.label(stored)
    track = speakers.SpeakerTrack(labeller)
    track.add(samples, 0.0)
    expected = track.label(Transcript((timed,), "en", 30.0))
    assert labelled is not None and len(labelled.segments) > 2
    assert labelled == expected
    without = track.label(stored)
    assert [s.end_s for s in without.segments] != [s.end_s for s in labelled.segments]
