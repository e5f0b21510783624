"""Meetings, their transcript segments and recording gaps in one SQLite file under state_dir."""

from __future__ import annotations

import json
import os
import sqlite3
import time
from dataclasses import dataclass
from pathlib import Path

from appliance.errors import ApplianceError
from appliance.transcript import Gap, Segment, Transcript

RECORDING, FINISHING, DELIVERING, DONE = "recording", "finishing", "delivering", "done"
# Ended by an error with nothing transcribed; `error` says why, and the organiser is told.
FAILED = "failed"
STATES = (RECORDING, FINISHING, DELIVERING, DONE, FAILED)
UNFINISHED = (RECORDING, FINISHING)

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meetings (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    title TEXT NOT NULL,
    language TEXT NOT NULL,
    state TEXT NOT NULL,
    started_at REAL NOT NULL,
    stopped_at REAL,
    recipients TEXT NOT NULL DEFAULT '[]',
    source TEXT NOT NULL DEFAULT 'microphone',
    audio_s REAL NOT NULL DEFAULT 0,
    transcribed_s REAL NOT NULL DEFAULT 0,
    error TEXT NOT NULL DEFAULT ''
);
CREATE TABLE IF NOT EXISTS segments (
    meeting_id INTEGER NOT NULL REFERENCES meetings(id) ON DELETE CASCADE,
    start_s REAL NOT NULL,
    end_s REAL NOT NULL,
    text TEXT NOT NULL,
    speaker TEXT
);
CREATE INDEX IF NOT EXISTS segments_meeting ON segments(meeting_id, start_s);
CREATE TABLE IF NOT EXISTS gaps (
    meeting_id INTEGER NOT NULL REFERENCES meetings(id) ON DELETE CASCADE,
    start_s REAL NOT NULL,
    end_s REAL NOT NULL,
    reason TEXT NOT NULL
);
"""


class StoreError(ApplianceError, OSError):
    """The state database cannot be opened or written."""


@dataclass(frozen=True)
class Meeting:
    """One meeting as stored."""

    id: int
    title: str
    language: str
    state: str
    started_at: float  # unix seconds
    stopped_at: float | None
    recipients: tuple[str, ...]  # the addresses given with `appliance start --to`
    source: str  # "microphone" or the uploaded file's path
    audio_s: float  # seconds of audio recorded (and spooled)
    transcribed_s: float  # seconds of that audio the transcriber has finished
    error: str

    @property
    def backlog_s(self) -> float:
        """Recorded audio not yet transcribed."""
        return max(0.0, self.audio_s - self.transcribed_s)

    def to_json(self) -> dict:
        """A JSON-ready dict for `meetings --json` and `status --json`."""
        return {
            "id": self.id,
            "title": self.title,
            "language": self.language,
            "state": self.state,
            "started_at": self.started_at,
            "stopped_at": self.stopped_at,
            "recipients": list(self.recipients),
            "source": self.source,
            "audio_s": round(self.audio_s, 2),
            "transcribed_s": round(self.transcribed_s, 2),
            "error": self.error,
        }


_COLUMNS = (
    "id, title, language, state, started_at, stopped_at, recipients, source, audio_s, "
    "transcribed_s, error"
)


def _meeting(row: tuple) -> Meeting:
    values = list(row)
    values[6] = tuple(json.loads(values[6]))
    return Meeting(*values)


class Database:
    """The state database; one connection, used from the event loop's thread."""

    def __init__(self, path: Path) -> None:
        self.path = path
        try:
            path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
            fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
            os.close(fd)
            # autocommit mode: every statement commits at once unless inside `with self.tx`
            self.db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
            self.db.execute("PRAGMA journal_mode=WAL")
            # FULL: a committed segment survives a power cut, not just a crash of the process.
            self.db.execute("PRAGMA synchronous=FULL")
            self.db.execute("PRAGMA foreign_keys=ON")
            self.db.execute("PRAGMA busy_timeout=5000")
            self.db.executescript(_SCHEMA)
            columns = {row[1] for row in self.db.execute("PRAGMA table_info(segments)")}
            if "speaker" not in columns:  # a state file from before speaker turns
                self.db.execute("ALTER TABLE segments ADD COLUMN speaker TEXT")
        except (OSError, sqlite3.Error) as err:
            raise StoreError(f"{path}: cannot open the state database: {err}") from err

    def close(self) -> None:
        """Close the connection."""
        self.db.close()

    def tx(self) -> _Transaction:
        """A transaction: `with db.tx(): ...` commits on success, rolls back on error."""
        return _Transaction(self.db)

    def create(
        self,
        title: str,
        language: str,
        recipients: tuple[str, ...],
        source: str,
        started_at: float | None = None,
    ) -> Meeting:
        """A new meeting in the recording state."""
        cursor = self.db.execute(
            "INSERT INTO meetings (title, language, state, started_at, recipients, source) "
            "VALUES (?, ?, ?, ?, ?, ?)",
            (
                title,
                language,
                RECORDING,
                started_at or time.time(),
                json.dumps(list(recipients)),
                source,
            ),
        )
        return self.meeting(cursor.lastrowid)

    def meeting(self, meeting_id: int) -> Meeting | None:
        """One meeting, or None."""
        row = self.db.execute(
            f"SELECT {_COLUMNS} FROM meetings WHERE id = ?", (meeting_id,)
        ).fetchone()
        return _meeting(row) if row else None

    def meetings(self, states: tuple[str, ...] = STATES) -> list[Meeting]:
        """Meetings in the given states, oldest first."""
        marks = ", ".join("?" * len(states))
        rows = self.db.execute(
            f"SELECT {_COLUMNS} FROM meetings WHERE state IN ({marks}) ORDER BY id", states
        ).fetchall()
        return [_meeting(r) for r in rows]

    def set_state(self, meeting_id: int, state: str, error: str = "") -> None:
        """Move a meeting along its lifecycle; stopping time is set when it leaves recording."""
        self.db.execute(
            "UPDATE meetings SET state = ?, error = CASE WHEN ? != '' THEN ? ELSE error END, "
            "stopped_at = CASE WHEN ? != 'recording' AND stopped_at IS NULL THEN ? "
            "ELSE stopped_at END WHERE id = ?",
            (state, error, error, state, time.time(), meeting_id),
        )

    def set_language(self, meeting_id: int, language: str) -> None:
        """Record the language detected for an "auto" meeting."""
        self.db.execute("UPDATE meetings SET language = ? WHERE id = ?", (language, meeting_id))

    def set_audio(self, meeting_id: int, audio_s: float) -> None:
        """Seconds recorded so far."""
        self.db.execute("UPDATE meetings SET audio_s = ? WHERE id = ?", (audio_s, meeting_id))

    def add_segments(self, meeting_id: int, segments: list[Segment], transcribed_s: float) -> None:
        """Store finished segments and how far transcription has got, in one commit."""
        with self.tx():
            self.db.executemany(
                "INSERT INTO segments (meeting_id, start_s, end_s, text, speaker) "
                "VALUES (?, ?, ?, ?, ?)",
                [(meeting_id, s.start_s, s.end_s, s.text, s.speaker) for s in segments],
            )
            self.db.execute(
                "UPDATE meetings SET transcribed_s = MAX(transcribed_s, ?) WHERE id = ?",
                (transcribed_s, meeting_id),
            )

    def label_segments(self, meeting_id: int, segments: tuple[Segment, ...]) -> None:
        """Replace the meeting's segments with the same text labelled by speaker (some cut in
        two where the speaker changes), in one commit."""
        with self.tx():
            self.db.execute("DELETE FROM segments WHERE meeting_id = ?", (meeting_id,))
            self.db.executemany(
                "INSERT INTO segments (meeting_id, start_s, end_s, text, speaker) "
                "VALUES (?, ?, ?, ?, ?)",
                [(meeting_id, s.start_s, s.end_s, s.text, s.speaker) for s in segments],
            )

    def add_gap(self, meeting_id: int, gap: Gap) -> None:
        """Mark a stretch the recorder could not capture."""
        self.db.execute(
            "INSERT INTO gaps (meeting_id, start_s, end_s, reason) VALUES (?, ?, ?, ?)",
            (meeting_id, gap.start_s, gap.end_s, gap.reason),
        )

    def put_gap(self, meeting_id: int, gap: Gap) -> None:
        """Store a gap that is still growing: the one with its start and reason is replaced."""
        with self.tx():
            self.db.execute(
                "DELETE FROM gaps WHERE meeting_id = ? AND start_s = ? AND reason = ?",
                (meeting_id, gap.start_s, gap.reason),
            )
            self.add_gap(meeting_id, gap)

    def transcript(self, meeting_id: int) -> Transcript:
        """The meeting's transcript as stored so far."""
        meeting = self.meeting(meeting_id)
        if meeting is None:
            raise KeyError(meeting_id)
        segments = self.db.execute(
            "SELECT start_s, end_s, text, speaker FROM segments WHERE meeting_id = ? "
            "ORDER BY start_s, rowid",
            (meeting_id,),
        ).fetchall()
        gaps = self.db.execute(
            "SELECT start_s, end_s, reason FROM gaps WHERE meeting_id = ? ORDER BY start_s",
            (meeting_id,),
        ).fetchall()
        return Transcript(
            tuple(Segment(*s) for s in segments),
            meeting.language,
            meeting.audio_s,
            tuple(Gap(*g) for g in gaps),
        )

    def last_line(self, meeting_id: int) -> str:
        """The newest transcribed text of a meeting, for `status`."""
        row = self.db.execute(
            "SELECT text FROM segments WHERE meeting_id = ? "
            "ORDER BY end_s DESC, rowid DESC LIMIT 1",
            (meeting_id,),
        ).fetchone()
        return row[0] if row else ""

    def forget_transcript(self, meeting_id: int) -> None:
        """Delete a meeting's text (segments and gaps); the meeting row stays as a record."""
        with self.tx():
            self.db.execute("DELETE FROM segments WHERE meeting_id = ?", (meeting_id,))
            self.db.execute("DELETE FROM gaps WHERE meeting_id = ?", (meeting_id,))
            self.db.execute(
                "UPDATE meetings SET title = '', recipients = '[]' WHERE id = ?", (meeting_id,)
            )

    def delete(self, meeting_id: int) -> None:
        """Remove a meeting entirely (a cancelled one is discarded, not kept)."""
        self.db.execute("DELETE FROM meetings WHERE id = ?", (meeting_id,))


class _Transaction:
    def __init__(self, db: sqlite3.Connection) -> None:
        self.db = db

    def __enter__(self) -> sqlite3.Connection:
        self.db.execute("BEGIN IMMEDIATE")
        return self.db

    def __exit__(self, kind, *rest) -> None:
        self.db.execute("COMMIT" if kind is None else "ROLLBACK")
