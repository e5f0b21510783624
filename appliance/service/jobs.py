"""Transcriptions sent to the HTTP API: SQLite rows in the daemon's database, audio in a spool.

A transcription is kept until its owner and every receiver have fetched it done, or until
`[web] keep_hours` after it finished, whichever comes first; then its row and audio go at once.
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from appliance.service.schema import migrate
from appliance.store import Database
from appliance.transcript import Segment, Transcript

_LOGGER = logging.getLogger(__name__)

QUEUED, TRANSCRIBING, DONE, FAILED = "queued", "transcribing", "done", "failed"
PENDING = (QUEUED, TRANSCRIBING)

_STEPS = (
    """CREATE TABLE api_transcriptions (
        key INTEGER PRIMARY KEY AUTOINCREMENT,
        owner TEXT NOT NULL,
        id TEXT NOT NULL,
        language TEXT NOT NULL,
        receivers TEXT NOT NULL DEFAULT '[]',
        status TEXT NOT NULL,
        error TEXT NOT NULL DEFAULT '',
        created_at REAL NOT NULL,
        finished_at REAL,
        duration_s REAL NOT NULL DEFAULT 0,
        segments TEXT NOT NULL DEFAULT '[]',
        fetched TEXT NOT NULL DEFAULT '[]',
        UNIQUE (owner, id)
    );
    CREATE INDEX api_transcriptions_status ON api_transcriptions (status, key)""",
)
_COLUMNS = (
    "key, owner, id, language, receivers, status, error, created_at, finished_at, duration_s, "
    "segments, fetched"
)


@dataclass(frozen=True)
class Job:
    """One transcription as stored."""

    key: int  # our own row number; the spool file's name
    owner: str  # the name of the token that posted it
    id: str  # the owner's own id
    language: str  # "" for the model's default
    receivers: tuple[str, ...]
    status: str
    error: str
    created_at: float
    finished_at: float | None
    duration_s: float
    segments: tuple[Segment, ...]
    fetched: tuple[str, ...]

    def readers(self) -> set[str]:
        """Who may read it: the owner and the receivers."""
        return {self.owner, *self.receivers}

    def transcript(self) -> Transcript:
        """The result as a Transcript, for the txt, srt, vtt and json forms."""
        return Transcript(self.segments, self.language, self.duration_s)

    def to_json(self, with_text: bool = True) -> dict:
        """The API's view of it; the list leaves the text out."""
        shown = {
            "id": self.id,
            "owner": self.owner,
            "receivers": list(self.receivers),
            "status": self.status,
            "error": self.error,
            "language": self.language,
            "duration_s": round(self.duration_s, 2),
            "created_at": self.created_at,
        }
        if with_text:
            shown["segments"] = [
                {"start_s": round(s.start_s, 2), "end_s": round(s.end_s, 2), "text": s.text}
                for s in self.segments
            ]
            shown["text"] = self.transcript().text
        return shown


def _job(row: tuple) -> Job:
    values = list(row)
    values[4] = tuple(json.loads(values[4]))
    values[10] = tuple(Segment(*s) for s in json.loads(values[10]))
    values[11] = tuple(json.loads(values[11]))
    return Job(*values)


class Jobs:
    """The api_transcriptions table and its spool folder; used from the event loop's thread."""

    def __init__(
        self,
        db: Database,
        spool_dir: Path,
        keep_s: float,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.db = db
        self.spool_dir = spool_dir
        self.keep_s = keep_s
        self.clock = clock
        migrate(db, "api_transcriptions", _STEPS)
        spool_dir.mkdir(parents=True, exist_ok=True, mode=0o700)

    def audio_path(self, job: Job) -> Path:
        """The job's audio: mono 16 kHz PCM16."""
        return self.spool_dir / f"{job.key}.pcm"

    def temp_path(self, name: str) -> Path:
        """A file in the spool folder for an upload in progress (deleted by recover())."""
        return self.spool_dir / f"{name}.part"

    def add(
        self,
        owner: str,
        job_id: str,
        language: str,
        receivers: tuple[str, ...],
        pcm: Path,
        duration_s: float,
    ) -> Job:
        """Queue a transcription of pcm (a finished .part file, moved into the spool)."""
        with self.db.tx() as tx:
            cursor = tx.execute(
                "INSERT INTO api_transcriptions (owner, id, language, receivers, status, "
                "created_at, duration_s) VALUES (?, ?, ?, ?, ?, ?, ?)",
                (owner, job_id, language, json.dumps(receivers), QUEUED, self.clock(), duration_s),
            )
            key = cursor.lastrowid
            os.replace(pcm, self.spool_dir / f"{key}.pcm")
        return self.by_key(key)

    def by_key(self, key: int) -> Job | None:
        """One job by our own key."""
        row = self.db.db.execute(
            f"SELECT {_COLUMNS} FROM api_transcriptions WHERE key = ?", (key,)
        ).fetchone()
        return _job(row) if row else None

    def owned(self, owner: str, job_id: str) -> Job | None:
        """The owner's job of that id."""
        row = self.db.db.execute(
            f"SELECT {_COLUMNS} FROM api_transcriptions WHERE owner = ? AND id = ?",
            (owner, job_id),
        ).fetchone()
        return _job(row) if row else None

    def visible(self, name: str, job_id: str) -> Job | None:
        """The job of that id name may read: their own, else the newest naming them a receiver."""
        own = self.owned(name, job_id)
        if own is not None:
            return own
        for job in reversed(self._select("id = ?", (job_id,))):
            if name in job.receivers:
                return job
        return None

    def readable_by(self, name: str) -> list[Job]:
        """Every job name owns or receives, oldest first."""
        return [j for j in self._select("1", ()) if name in j.readers()]

    def next_queued(self) -> Job | None:
        """The oldest job waiting to be transcribed."""
        found = self._select("status = ? ORDER BY key LIMIT 1", (QUEUED,), order=False)
        return found[0] if found else None

    def pending(self) -> int:
        """Jobs queued or being transcribed."""
        marks = ", ".join("?" * len(PENDING))
        return self.db.db.execute(
            f"SELECT COUNT(*) FROM api_transcriptions WHERE status IN ({marks})", PENDING
        ).fetchone()[0]

    def _select(self, where: str, args: tuple, order: bool = True) -> list[Job]:
        tail = " ORDER BY key" if order else ""
        rows = self.db.db.execute(
            f"SELECT {_COLUMNS} FROM api_transcriptions WHERE {where}{tail}", args
        ).fetchall()
        return [_job(r) for r in rows]

    def start(self, job: Job) -> None:
        """Mark a job as being transcribed."""
        self._set(job.key, status=TRANSCRIBING)

    def finish(self, job: Job, segments: list[Segment], language: str) -> None:
        """Store the result of a job."""
        rows = [[s.start_s, s.end_s, s.text] for s in segments]
        self._set(
            job.key,
            status=DONE,
            segments=json.dumps(rows),
            language=language,
            finished_at=self.clock(),
        )

    def fail(self, job: Job, error: str) -> None:
        """Record why a job could not be transcribed; it is kept (and expires) like a result."""
        self._set(job.key, status=FAILED, error=error, finished_at=self.clock())

    def _set(self, key: int, **values: object) -> None:
        names = ", ".join(f"{k} = ?" for k in values)
        self.db.db.execute(
            f"UPDATE api_transcriptions SET {names} WHERE key = ?", (*values.values(), key)
        )

    def fetched(self, job: Job, name: str) -> bool:
        """Record that name fetched the job done; delete it once every reader has. True if
        it was deleted."""
        seen = set(job.fetched) | {name}
        if job.readers() <= seen:
            self.delete(job)
            return True
        self._set(job.key, fetched=json.dumps(sorted(seen)))
        return False

    def delete(self, job: Job) -> None:
        """Remove a job's row and its audio."""
        self.db.db.execute("DELETE FROM api_transcriptions WHERE key = ?", (job.key,))
        self.audio_path(job).unlink(missing_ok=True)

    def expire(self) -> int:
        """Delete what finished more than keep_s ago; how many."""
        old = self._select(
            "finished_at IS NOT NULL AND finished_at < ?", (self.clock() - self.keep_s,)
        )
        for job in old:
            self.delete(job)
        if old:
            _LOGGER.info("expired %d API transcriptions", len(old))
        return len(old)

    def recover(self) -> int:
        """After a restart: jobs cut off mid-transcription wait again, unfinished uploads go,
        and a job whose audio is gone fails; how many jobs are queued."""
        for part in self.spool_dir.glob("*.part"):
            part.unlink(missing_ok=True)
        self.db.db.execute(
            "UPDATE api_transcriptions SET status = ? WHERE status = ?", (QUEUED, TRANSCRIBING)
        )
        for job in self._select("status = ?", (QUEUED,)):
            if not self.audio_path(job).exists():
                self.fail(job, "audio spool missing")
        return self.pending()
