"""The SQLite state file: meetings, segments, gaps, lifecycle, durability across reopen."""

from __future__ import annotations

import os
import sqlite3
import stat

import pytest

from appliance.store import DELIVERING, DONE, FINISHING, RECORDING, UNFINISHED, Database, StoreError
from appliance.transcript import Gap, Segment


@pytest.fixture
def db(tmp_path):
    database = Database(tmp_path / "state" / "appliance.db")
    yield database
    database.close()


def test_create_and_read_back(db):
    meeting = db.create("Q3 review", "en", ("a@example.com",), "microphone", started_at=1000.0)
    assert meeting.state == RECORDING and meeting.stopped_at is None
    assert db.meeting(meeting.id) == meeting
    assert meeting.to_json()["recipients"] == ["a@example.com"]
    assert db.meeting(meeting.id + 1) is None


def test_segments_gaps_and_transcript(db):
    meeting = db.create("t", "en", (), "microphone")
    db.add_segments(meeting.id, [Segment(4.0, 5.0, "second"), Segment(0.5, 2.0, "first")], 5.0)
    db.add_gap(meeting.id, Gap(2.0, 3.0, "microphone lost: unplugged"))
    db.set_audio(meeting.id, 6.0)
    transcript = db.transcript(meeting.id)
    assert [s.text for s in transcript.segments] == ["first", "second"]
    assert transcript.gaps == (Gap(2.0, 3.0, "microphone lost: unplugged"),)
    assert transcript.duration_s == 6.0
    assert db.meeting(meeting.id).transcribed_s == 5.0
    assert db.last_line(meeting.id) == "second"
    db.add_segments(meeting.id, [], 3.0)  # progress never goes backwards
    assert db.meeting(meeting.id).transcribed_s == 5.0


def test_speaker_labels_replace_the_segments_and_survive_reopen(tmp_path):
    path = tmp_path / "appliance.db"
    db = Database(path)
    meeting = db.create("t", "en", (), "microphone")
    db.add_segments(meeting.id, [Segment(0.0, 4.0, "hello there yes")], 4.0)
    labelled = (
        Segment(0.0, 2.0, "hello there", "Speaker 1"),
        Segment(2.0, 4.0, "yes", "Speaker 2"),
    )
    db.label_segments(meeting.id, labelled)
    db.close()
    db = Database(path)
    assert db.transcript(meeting.id).segments == labelled
    db.close()


def test_a_state_file_from_before_speakers_gains_the_column(tmp_path):
    path = tmp_path / "old.db"
    old = sqlite3.connect(path)
    old.executescript(
        "CREATE TABLE segments (meeting_id INTEGER NOT NULL, start_s REAL NOT NULL, "
        "end_s REAL NOT NULL, text TEXT NOT NULL);"
    )
    old.close()
    db = Database(path)
    meeting = db.create("t", "en", (), "microphone")
    db.add_segments(meeting.id, [Segment(0.0, 1.0, "old file", "Speaker 1")], 1.0)
    assert db.transcript(meeting.id).segments == (Segment(0.0, 1.0, "old file", "Speaker 1"),)
    db.close()


def test_lifecycle_states(db):
    meeting = db.create("t", "en", (), "microphone")
    db.set_state(meeting.id, FINISHING)
    stopped = db.meeting(meeting.id).stopped_at
    assert stopped is not None
    db.set_state(meeting.id, DELIVERING, error="audio spool missing")
    db.set_state(meeting.id, DONE)
    done = db.meeting(meeting.id)
    assert (done.state, done.stopped_at, done.error) == (DONE, stopped, "audio spool missing")
    assert [m.id for m in db.meetings(UNFINISHED)] == []
    other = db.create("u", "en", (), "microphone")
    assert [m.id for m in db.meetings(UNFINISHED)] == [other.id]


def test_committed_rows_survive_reopen_and_file_is_private(tmp_path):
    path = tmp_path / "state" / "appliance.db"
    first = Database(path)
    meeting = first.create("t", "en", (), "microphone")
    first.add_segments(meeting.id, [Segment(0.0, 1.0, "kept")], 1.0)
    # no close: a killed process leaves the WAL behind; a new connection must see the rows
    second = Database(path)
    assert second.transcript(meeting.id).segments[0].text == "kept"
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    first.close()
    second.close()


def test_forget_and_delete(db):
    meeting = db.create("secret title", "en", ("a@example.com",), "microphone")
    db.add_segments(meeting.id, [Segment(0.0, 1.0, "words")], 1.0)
    db.forget_transcript(meeting.id)
    kept = db.meeting(meeting.id)
    assert (kept.title, kept.recipients) == ("", ())
    assert db.transcript(meeting.id).segments == ()
    db.delete(meeting.id)
    assert db.meeting(meeting.id) is None
    with pytest.raises(KeyError):
        db.transcript(meeting.id)


def test_transaction_rolls_back(db):
    meeting = db.create("t", "en", (), "microphone")
    with pytest.raises(RuntimeError), db.tx():
        db.db.execute("UPDATE meetings SET title = 'changed' WHERE id = ?", (meeting.id,))
        raise RuntimeError
    assert db.meeting(meeting.id).title == "t"


def test_unwritable_location_is_one_clear_error(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("")
    with pytest.raises(StoreError, match="cannot open the state database"):
        Database(blocker / "appliance.db")
