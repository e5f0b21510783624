"""The outbox's records: each meeting's message and recipients in the meetings database, and
what `status`, the web page and retention read from them."""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

from appliance.store import Database

QUEUED, RETRYING, DELIVERED, FAILED, REFUSED = (
    "queued",
    "retrying",
    "delivered",
    "failed",
    "refused",
)
PENDING = (QUEUED, RETRYING)

SCHEMA = """
CREATE TABLE IF NOT EXISTS outbox_messages (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    meeting_id INTEGER NOT NULL UNIQUE REFERENCES meetings(id) ON DELETE CASCADE,
    message_id TEXT NOT NULL,
    path TEXT NOT NULL,
    source TEXT NOT NULL,
    problems TEXT NOT NULL DEFAULT '',
    created_at REAL NOT NULL,
    settled_at REAL
);
CREATE TABLE IF NOT EXISTS outbox_recipients (
    message_id INTEGER NOT NULL REFERENCES outbox_messages(id) ON DELETE CASCADE,
    address TEXT NOT NULL,
    name TEXT NOT NULL DEFAULT '',
    state TEXT NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0,
    next_attempt_at REAL,
    last_reply TEXT NOT NULL DEFAULT '',
    updated_at REAL NOT NULL,
    PRIMARY KEY (message_id, address)
);
CREATE INDEX IF NOT EXISTS outbox_due ON outbox_recipients(state, next_attempt_at);
"""


@dataclass(frozen=True)
class RecipientStatus:
    """One recipient of one meeting's message as the outbox sees it now."""

    address: str
    state: str
    attempts: int
    reply: str  # the server's last reply, why it was refused, or the Maildir file's path


class OutboxRecords:
    """Reads and forgets the outbox's rows; Outbox adds sending."""

    db: Database

    def counts(self) -> dict[str, int]:
        """Recipients per state, and meetings with no valid recipient, for `appliance status`."""
        counts = dict.fromkeys((QUEUED, RETRYING, DELIVERED, FAILED, REFUSED), 0)
        for state, number in self.db.db.execute(
            "SELECT state, COUNT(*) FROM outbox_recipients GROUP BY state"
        ):
            counts[state] = number
        counts["no_recipients"] = len(self._nobody())
        return counts

    def _nobody(self) -> list[tuple[int, int]]:
        return self.db.db.execute(
            "SELECT id, meeting_id FROM outbox_messages m WHERE NOT EXISTS (SELECT 1 FROM "
            "outbox_recipients r WHERE r.message_id = m.id AND r.state != ?) ORDER BY id",
            (REFUSED,),
        ).fetchall()

    def problems(self) -> list[str]:
        """Failed recipients, meetings nobody can get, broken templates: one line each."""
        lines = []
        for message, meeting_id in self._nobody():
            refused = self.db.db.execute(
                "SELECT address, last_reply FROM outbox_recipients WHERE message_id = ? "
                "ORDER BY rowid",
                (message,),
            ).fetchall()
            why = (
                "; ".join(f"{a}: {e}" for a, e in refused)
                or "nobody named by start --to, the calendar or room.default_participants"
            )
            lines.append(f"meeting {meeting_id}: no valid recipient, transcript kept ({why})")
        for meeting_id, address, error in self.db.db.execute(
            "SELECT m.meeting_id, r.address, r.last_reply FROM outbox_recipients r "
            "JOIN outbox_messages m ON m.id = r.message_id WHERE r.state = ? "
            "ORDER BY m.id, r.rowid",
            (FAILED,),
        ):
            lines.append(f"meeting {meeting_id}: {address} failed: {error}")
        for meeting_id, problems in self.db.db.execute(
            "SELECT meeting_id, problems FROM outbox_messages WHERE problems != '' ORDER BY id"
        ):
            lines.extend(
                f"meeting {meeting_id}: template {p} (built-in used)" for p in problems.splitlines()
            )
        return lines

    def retrying(self) -> list[str]:
        """Recipients not reached yet after an attempt: the last error and the next attempt."""
        return [
            f"meeting {meeting_id}: mail to {address} failing ({attempts} attempt(s)): {reply}; "
            f"next attempt {time.strftime('%H:%M:%S', time.localtime(next_at))}"
            for meeting_id, address, attempts, reply, next_at in self.db.db.execute(
                "SELECT m.meeting_id, r.address, r.attempts, r.last_reply, r.next_attempt_at "
                "FROM outbox_recipients r JOIN outbox_messages m ON m.id = r.message_id "
                "WHERE r.state = ? ORDER BY m.id, r.rowid",
                (RETRYING,),
            )
        ]

    def recipients(self, meeting_id: int) -> list[RecipientStatus]:
        """Each recipient of a meeting's message, in the order they were named."""
        return [
            RecipientStatus(*row)
            for row in self.db.db.execute(
                "SELECT r.address, r.state, r.attempts, r.last_reply FROM outbox_recipients r "
                "JOIN outbox_messages m ON m.id = r.message_id WHERE m.meeting_id = ? "
                "ORDER BY r.rowid",
                (meeting_id,),
            )
        ]

    def settled(self, before: float) -> list[tuple[int, Path | None]]:
        """Meetings (and .eml paths) settled at or before a time that someone was sent to."""
        rows = self.db.db.execute(
            "SELECT meeting_id, path FROM outbox_messages m WHERE settled_at <= ? AND EXISTS "
            "(SELECT 1 FROM outbox_recipients r WHERE r.message_id = m.id AND r.state != ?) "
            "ORDER BY id",
            (before, REFUSED),
        ).fetchall()
        return [(meeting_id, Path(path) if path else None) for meeting_id, path in rows]

    def message(self, meeting_id: int) -> str | None:
        """The path of a meeting's email ("" when nobody may receive it); None when it has no
        message: not handed to the outbox yet, or forgotten by retention."""
        row = self.db.db.execute(
            "SELECT path FROM outbox_messages WHERE meeting_id = ?", (meeting_id,)
        ).fetchone()
        return row[0] if row else None

    def paths(self) -> set[Path]:
        """Every .eml the outbox still refers to."""
        return {
            Path(p)
            for (p,) in self.db.db.execute("SELECT path FROM outbox_messages WHERE path != ''")
        }

    def forget(self, meeting_id: int) -> None:
        """Drop a meeting's outbox rows (the .eml is the caller's to delete first)."""
        with self.db.tx() as db:
            db.execute(
                "DELETE FROM outbox_recipients WHERE message_id IN "
                "(SELECT id FROM outbox_messages WHERE meeting_id = ?)",
                (meeting_id,),
            )
            db.execute("DELETE FROM outbox_messages WHERE meeting_id = ?", (meeting_id,))
