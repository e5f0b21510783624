"""purge: audio and transcripts gone at the right time, kept before it, repeatable after a crash."""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from appliance import config as config_module
from appliance.config import Config
from appliance.delivery.mail import TEMPORARY, Outcome, Record
from appliance.delivery.outbox import Outbox
from appliance.delivery.retention import delete_meeting, purge
from appliance.store import DELIVERING, DONE, Database, Meeting
from appliance.transcript import Gap, Segment

DAY = 86400.0
A = "a@example.com"


class Down:
    """A mail server that never answers: recipients stay retrying."""

    async def send(
        self, data: bytes, sender: str, recipients: list[str], record: Record | None = None
    ) -> dict[str, Outcome]:
        return {r: Outcome(TEMPORARY, "421 down") for r in recipients}


class Room:
    """A state folder, its database and an outbox delivering into the Maildir."""

    def __init__(self, tmp_path: Path, **storage: float) -> None:
        self.config: Config = config_module.parse(
            {"storage": {"state_dir": str(tmp_path / "state"), **storage}}
        )
        self.db = Database(self.config.database)
        self.now = time.time()
        self.outbox = self.make_outbox()

    def make_outbox(self, mailer: object = None) -> Outbox:
        return Outbox(
            self.db,
            self.config,
            mailer=mailer,
            templates_override=Path("/nonexistent"),
            on_settled=lambda meeting_id: self.db.set_state(meeting_id, DONE),
            clock=lambda: self.now,
        )

    def meeting(self, to: tuple[str, ...] = (A,), state: str = DELIVERING) -> Meeting:
        meeting = self.db.create("Budget", "en", to, "microphone", self.now - 3600)
        self.db.add_segments(meeting.id, [Segment(1.0, 3.0, "Hello.")], 3.0)
        self.db.add_gap(meeting.id, Gap(5.0, 6.0, "microphone lost"))
        self.config.spool_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        self.audio(meeting.id).write_bytes(b"\0" * 3200)
        if state != "recording":
            self.db.set_state(meeting.id, state)
        return self.db.meeting(meeting.id)

    def audio(self, meeting_id: int) -> Path:
        return self.config.spool_dir / f"{meeting_id}.pcm"

    def deliver(self, meeting: Meeting, outbox: Outbox | None = None) -> None:
        outbox = outbox or self.outbox
        outbox.enqueue(meeting, self.db.transcript(meeting.id))
        asyncio.run(outbox.deliver_due())

    def eml(self, meeting_id: int) -> Path:
        row = self.db.db.execute(
            "SELECT path FROM outbox_messages WHERE meeting_id = ?", (meeting_id,)
        ).fetchone()
        return Path(row[0])

    def purge(self, after_s: float) -> object:
        return purge(self.db, self.config, self.outbox, now=self.now + after_s)


@pytest.fixture
def room(tmp_path: Path) -> Iterator[Room]:
    state = Room(tmp_path)
    yield state
    state.db.close()


def test_audio_goes_once_the_transcript_is_final(room: Room) -> None:
    recording = room.meeting(state="recording")
    finished = room.meeting()
    summary = room.purge(after_s=1.0)
    assert summary.audio == (finished.id,)
    assert not room.audio(finished.id).exists() and room.audio(recording.id).exists()
    assert room.db.transcript(finished.id).segments  # the text is not the audio's to delete


def test_audio_is_kept_for_keep_audio_days(tmp_path: Path) -> None:
    room = Room(tmp_path, keep_audio_days=2.0)
    meeting = room.meeting()
    assert room.purge(after_s=1.9 * DAY).audio == ()
    assert room.audio(meeting.id).exists()
    assert room.purge(after_s=2.1 * DAY).audio == (meeting.id,)
    assert not room.audio(meeting.id).exists()
    room.db.close()


def test_transcript_goes_keep_transcripts_days_after_everyone_has_it(room: Room) -> None:
    meeting = room.meeting()
    room.deliver(meeting)
    assert room.db.meeting(meeting.id).state == DONE
    eml = room.eml(meeting.id)
    summary = room.purge(after_s=6.9 * DAY)
    assert summary.transcripts == () and eml.exists()
    assert room.db.transcript(meeting.id).segments and room.outbox.recipients(meeting.id)
    summary = room.purge(after_s=7.1 * DAY)
    assert summary.transcripts == (meeting.id,)
    assert not eml.exists()
    transcript = room.db.transcript(meeting.id)
    assert (transcript.segments, transcript.gaps) == ((), ())
    assert room.outbox.recipients(meeting.id) == []
    assert room.db.meeting(meeting.id).title == ""  # the row stays as a record
    maildir = list((room.config.maildir / "new").iterdir())
    assert len(maildir) == 1  # what was delivered is the recipient's, not the outbox's
    assert room.purge(after_s=8 * DAY).transcripts == ()


def test_a_transcript_still_being_delivered_is_kept(room: Room) -> None:
    outbox = room.make_outbox(mailer=Down())
    meeting = room.meeting()
    room.deliver(meeting, outbox)
    assert room.purge(after_s=30 * DAY).transcripts == ()
    assert room.db.transcript(meeting.id).segments and room.eml(meeting.id).exists()


def test_a_meeting_nobody_could_receive_keeps_its_transcript(room: Room) -> None:
    meeting = room.meeting(to=())
    room.deliver(meeting)
    assert room.db.meeting(meeting.id).state == DONE
    summary = room.purge(after_s=365 * DAY)
    assert summary.transcripts == () and summary.audio == (meeting.id,)
    assert room.db.transcript(meeting.id).segments
    assert room.outbox.problems()[0].startswith(f"meeting {meeting.id}: no valid recipient")


def test_a_purge_cut_short_is_finished_by_the_next(room: Room) -> None:
    meeting = room.meeting()
    room.deliver(meeting)
    # The last purge got as far as deleting the .eml and the text, not the outbox rows.
    eml = room.eml(meeting.id)
    eml.unlink()
    room.db.forget_transcript(meeting.id)
    assert room.purge(after_s=8 * DAY).transcripts == (meeting.id,)
    assert room.outbox.recipients(meeting.id) == [] and not eml.exists()


def test_stray_outbox_files_go_after_a_day(room: Room) -> None:
    room.config.outbox_dir.mkdir(parents=True, mode=0o700)
    old, fresh = room.config.outbox_dir / "41.eml", room.config.outbox_dir / ".42.eml.tmp"
    for path in (old, fresh):
        path.write_bytes(b"Subject: x\r\n\r\n")
    os.utime(old, (room.now - 2 * DAY, room.now - 2 * DAY))
    os.utime(fresh, (room.now, room.now))
    meeting = room.meeting()
    room.outbox.enqueue(meeting, room.db.transcript(meeting.id))
    os.utime(room.eml(meeting.id), (room.now - 2 * DAY, room.now - 2 * DAY))
    summary = room.purge(after_s=0.0)
    assert summary.strays == (old,)
    assert fresh.exists() and room.eml(meeting.id).exists()  # one is known to the outbox


def test_state_files_are_private(room: Room) -> None:
    meeting = room.meeting()
    room.deliver(meeting)
    for path in [room.config.state_dir, *room.config.state_dir.rglob("*")]:
        mode = path.stat().st_mode & 0o777
        if path.name.endswith(".pcm"):
            continue  # the spool is written by the recorder, not here
        assert mode == (0o700 if path.is_dir() else 0o600), path


def test_delete_removes_a_meeting_and_its_unsent_email_and_repeats_harmlessly(
    room: Room,
) -> None:
    kept = room.meeting()
    room.deliver(kept)
    waiting = room.meeting()
    room.deliver(waiting, room.make_outbox(Down()))  # its email still waiting for a retry
    eml = room.eml(waiting.id)
    assert eml.exists() and room.audio(waiting.id).exists()
    for _ in range(2):  # a delete cut short is finished by deleting again
        delete_meeting(room.db, room.config, room.outbox, waiting.id)
    assert room.db.meeting(waiting.id) is None and room.outbox.message(waiting.id) is None
    assert not eml.exists() and not room.audio(waiting.id).exists()
    assert not room.db.db.execute(
        "SELECT 1 FROM segments WHERE meeting_id = ? UNION ALL "
        "SELECT 1 FROM gaps WHERE meeting_id = ?",
        (waiting.id, waiting.id),
    ).fetchall()
    assert [r.address for r in room.outbox.recipients(waiting.id)] == []
    assert room.outbox.counts()["retrying"] == 0  # nothing left to send
    assert room.db.meeting(kept.id) is not None and room.eml(kept.id).exists()
