"""The outbox: each meeting's email written to disk once, then delivered to each recipient.

A recipient's acceptance is committed the moment the server's DATA reply arrives, before QUIT.
A crash between that reply and the commit (one SQLite write), or a connection lost after the
message was sent but before the reply, leaves the recipient due and it is sent again: delivery
is at least once, never lost. The Message-ID is decided once and kept in the .eml, so such a
rare duplicate is the same message to the recipient's mail system (many show it only once).
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import sqlite3
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from appliance.config import Config
from appliance.delivery.mail import ACCEPTED, PERMANENT, Outcome, Sender, mailer_for
from appliance.delivery.outbox_records import (
    DELIVERED,
    FAILED,
    PENDING,
    QUEUED,
    REFUSED,
    RETRYING,
    SCHEMA,
    OutboxRecords,
)
from appliance.delivery.recipients import Resolution, resolve
from appliance.delivery.render import Renderer, make_message_id
from appliance.files import write_atomic
from appliance.paths import TEMPLATES_OVERRIDE
from appliance.store import Database, Meeting
from appliance.transcript import Transcript

_LOGGER = logging.getLogger(__name__)

FIRST_RETRY_S = 300.0
MAX_RETRY_S = 3600.0
# The longest sleep between passes. The Pi has no real-time clock: the wall clock jumps when
# NTP syncs after boot, so a sleep computed from it before the jump must not last hours.
_IDLE_S = 300.0
# The shortest: something still due after a pass (a mailer that gave no outcome) must not spin.
_MIN_IDLE_S = 1.0
# Giving up also takes this many attempts (a quarter of an hour of retries): a clock jump or a
# long power-off alone must not fail a recipient that was hardly tried.
_MIN_ATTEMPTS_TO_GIVE_UP = 3


@dataclass(frozen=True)
class _Draft:
    """A meeting's email resolved and written, not yet recorded."""

    resolution: Resolution
    message_id: str
    path: Path | None  # None when nobody may receive it
    problems: tuple[str, ...]
    created_at: float


def retry_delay_s(attempts: int) -> float:
    """Wait after the n-th failed attempt: 5 minutes, doubling, at most an hour."""
    return min(FIRST_RETRY_S * 2 ** max(0, attempts - 1), MAX_RETRY_S)


class Outbox(OutboxRecords):
    """Meetings' emails waiting for, or done with, delivery; state in the meetings database."""

    def __init__(
        self,
        db: Database,
        config: Config,
        mailer: Sender | None = None,
        templates_override: Path = TEMPLATES_OVERRIDE,
        on_settled: Callable[[int], None] | None = None,
        clock: Callable[[], float] = time.time,
        on_attempt: Callable[[int], None] | None = None,
    ) -> None:
        self.db = db
        self.config = config
        self.mailer = mailer if mailer is not None else mailer_for(config)
        self.renderer = Renderer(config, templates_override)
        self._on_settled = on_settled
        self._on_attempt = on_attempt
        self._clock = clock
        self._lock = asyncio.Lock()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._wake: asyncio.Event | None = None
        self.db.db.executescript(SCHEMA)

    # --- adding -------------------------------------------------------------------------

    def enqueue(self, meeting: Meeting, transcript: Transcript) -> int | None:
        """Resolve, render and store a meeting's email once; its outbox id, None if nobody.

        Blocking (a calendar URL may take CALENDAR_TIMEOUT_S); the daemon uses enqueue_async.
        """
        found = self._existing(meeting.id)
        if found is None:
            found = self._commit(meeting, self._prepare(meeting, transcript))
        return self._enqueued(found)

    async def enqueue_async(
        self, meeting: Meeting, transcript: Transcript, again: bool = False
    ) -> int | None:
        """enqueue with the calendar, rendering and file writing on a worker thread.

        again (`appliance resend`): a new message in place of the meeting's old one, with a
        Message-ID of its own, so no mail system drops it as a duplicate of the first."""
        found = None if again else self._existing(meeting.id)
        if found is None:
            draft = await asyncio.to_thread(self._prepare, meeting, transcript)
            old = self.message(meeting.id) if again else None
            found = self._commit(meeting, draft, replace=again)
            if old:  # a crash before this leaves a stray that retention removes
                Path(old).unlink(missing_ok=True)
        return self._enqueued(found)

    def _existing(self, meeting_id: int) -> int | None:
        row = self.db.db.execute(
            "SELECT id FROM outbox_messages WHERE meeting_id = ?", (meeting_id,)
        ).fetchone()
        return row[0] if row else None

    def _enqueued(self, message: int) -> int | None:
        self._wake_up()
        deliverable = self.db.db.execute(
            "SELECT 1 FROM outbox_recipients WHERE message_id = ? AND state != ? LIMIT 1",
            (message, REFUSED),
        ).fetchone()
        return message if deliverable else None

    def _prepare(self, meeting: Meeting, transcript: Transcript) -> _Draft:
        """Recipients resolved and the message on disk; touches no database."""
        resolution = resolve(meeting, self.config)
        now = self._clock()
        if not resolution.accepted:
            return _Draft(resolution, "", None, (), now)
        message_id = make_message_id(meeting.id, self.config.smtp.from_)
        rendered = self.renderer.render(meeting, transcript, resolution.accepted, message_id, now)
        # A name of its own per draft: two hand-offs of one meeting never share a file, and a
        # crash before the commit leaves a stray that retention removes, never a row without
        # its message.
        path = self.config.outbox_dir / f"{meeting.id}-{secrets.token_hex(4)}.eml"
        write_atomic(path, rendered.data, mode=0o600, folder_mode=0o700)
        return _Draft(resolution, message_id, path, rendered.problems, now)

    def _commit(self, meeting: Meeting, draft: _Draft, replace: bool = False) -> int:
        """Record a draft, or drop it when another hand-off of this meeting got there first;
        with replace, in place of the meeting's message (its recipients go with it)."""
        resolution = draft.resolution
        try:
            with self.db.tx() as db:
                if replace:
                    db.execute("DELETE FROM outbox_messages WHERE meeting_id = ?", (meeting.id,))
                cursor = db.execute(
                    "INSERT INTO outbox_messages (meeting_id, message_id, path, source, "
                    "problems, created_at) VALUES (?, ?, ?, ?, ?, ?)",
                    (
                        meeting.id,
                        draft.message_id,
                        str(draft.path or ""),
                        resolution.source,
                        "\n".join(draft.problems),
                        draft.created_at,
                    ),
                )
                db.executemany(
                    "INSERT INTO outbox_recipients (message_id, address, name, state, "
                    "next_attempt_at, last_reply, updated_at) VALUES (?, ?, ?, ?, ?, ?, ?)",
                    [
                        (
                            cursor.lastrowid,
                            r.address,
                            r.name,
                            REFUSED if r.refused else QUEUED,
                            None if r.refused else draft.created_at,
                            r.refused,
                            draft.created_at,
                        )
                        for r in resolution.recipients
                    ],
                )
        except sqlite3.IntegrityError:
            existing = self._existing(meeting.id)
            if existing is None:
                raise
            if draft.path is not None:
                draft.path.unlink(missing_ok=True)
            return existing
        if resolution.accepted:
            _LOGGER.info(
                "meeting %d: email queued for %d recipient(s) from %s, %d refused",
                meeting.id,
                len(resolution.accepted),
                resolution.source,
                len(resolution.refused),
            )
        else:
            _LOGGER.warning(
                "meeting %d: no valid recipient (%d refused); the transcript is kept",
                meeting.id,
                len(resolution.refused),
            )
        return cursor.lastrowid

    def _wake_up(self) -> None:
        if self._loop is not None and self._wake is not None:
            # Event.set is not thread-safe, and enqueue may run on any thread.
            self._loop.call_soon_threadsafe(self._wake.set)

    # --- delivering ---------------------------------------------------------------------

    async def run(self, stop: asyncio.Event) -> None:
        """Deliver what is due, then sleep until the next retry, an enqueue, or stop."""
        self._wake = wake = asyncio.Event()
        self._loop = asyncio.get_running_loop()
        try:
            while not stop.is_set():
                wake.clear()
                await self.deliver_due()
                waiters = [asyncio.ensure_future(stop.wait()), asyncio.ensure_future(wake.wait())]
                try:
                    await asyncio.wait(
                        waiters, timeout=self._idle_s(), return_when=asyncio.FIRST_COMPLETED
                    )
                finally:
                    for waiter in waiters:
                        waiter.cancel()
        finally:
            self._loop = self._wake = None

    def _idle_s(self) -> float:
        row = self.db.db.execute(
            "SELECT MIN(next_attempt_at) FROM outbox_recipients WHERE state IN (?, ?)", PENDING
        ).fetchone()
        if row[0] is None:
            return _IDLE_S
        return min(max(_MIN_IDLE_S, row[0] - self._clock()), _IDLE_S)

    async def deliver_due(self) -> None:
        """One pass: send each message to its recipients that are due, then report settled ones."""
        async with self._lock:
            due = self.db.db.execute(
                "SELECT DISTINCT m.id, m.meeting_id, m.path FROM outbox_messages m "
                "JOIN outbox_recipients r ON r.message_id = m.id "
                "WHERE r.state IN (?, ?) AND r.next_attempt_at <= ? ORDER BY m.id",
                (*PENDING, self._clock()),
            ).fetchall()
            for message, meeting_id, path in due:
                await self._deliver(message, meeting_id, Path(path))
            self._settle()

    async def _deliver(self, message: int, meeting_id: int, path: Path) -> None:
        addresses = [
            row[0]
            for row in self.db.db.execute(
                "SELECT address FROM outbox_recipients WHERE message_id = ? AND state IN (?, ?) "
                "AND next_attempt_at <= ? ORDER BY rowid",
                (message, *PENDING, self._clock()),
            )
        ]
        if not addresses:
            return
        try:
            data = await asyncio.to_thread(path.read_bytes)
        except OSError as err:
            _LOGGER.error("meeting %d: the message file cannot be read: %s", meeting_id, err)
            self._record(
                message,
                meeting_id,
                {a: Outcome(PERMANENT, f"message file unreadable: {err}") for a in addresses},
            )
            return
        recorded: set[str] = set()

        def record(batch: dict[str, Outcome]) -> None:
            self._record(message, meeting_id, batch)
            recorded.update(batch)

        outcomes = await self.mailer.send(data, self.config.smtp.from_, addresses, record)
        rest = {a: o for a, o in outcomes.items() if a not in recorded}
        if rest:
            record(rest)

    def _record(self, message: int, meeting_id: int, batch: dict[str, Outcome]) -> None:
        """Commit what the server said, at once; a delivered recipient is never due again."""
        now = self._clock()
        created_at = self.db.db.execute(
            "SELECT created_at FROM outbox_messages WHERE id = ?", (message,)
        ).fetchone()[0]
        give_up_s = self.config.delivery.give_up_days * 86400.0
        with self.db.tx() as db:
            for address, outcome in batch.items():
                row = db.execute(
                    "SELECT attempts FROM outbox_recipients WHERE message_id = ? AND address = ?",
                    (message, address),
                ).fetchone()
                if row is None:
                    continue  # purged meanwhile
                attempts = row[0] + 1
                reply, next_at = outcome.reply, None
                if outcome.status == ACCEPTED:
                    state = DELIVERED
                    _LOGGER.info("meeting %d: delivered to %s", meeting_id, address)
                elif outcome.status == PERMANENT or (
                    now - created_at >= give_up_s and attempts >= _MIN_ATTEMPTS_TO_GIVE_UP
                ):
                    state = FAILED
                    if outcome.status != PERMANENT:
                        reply = f"gave up after {self.config.delivery.give_up_days:g} days: {reply}"
                    _LOGGER.warning(
                        "meeting %d: delivery to %s failed: %s", meeting_id, address, reply
                    )
                else:
                    state, next_at = RETRYING, now + retry_delay_s(attempts)
                    _LOGGER.warning(
                        "meeting %d: %s not reached (%s); retrying in %d s",
                        meeting_id,
                        address,
                        reply,
                        next_at - now,
                    )
                db.execute(
                    "UPDATE outbox_recipients SET state = ?, attempts = ?, next_attempt_at = ?, "
                    "last_reply = ?, updated_at = ? WHERE message_id = ? AND address = ? "
                    "AND state IN (?, ?)",
                    (state, attempts, next_at, reply, now, message, address, *PENDING),
                )
        if self._on_attempt is not None:
            self._on_attempt(meeting_id)

    def _settle(self) -> None:
        """Tell on_settled about each message whose recipients are all final, once."""
        rows = self.db.db.execute(
            "SELECT id, meeting_id FROM outbox_messages m WHERE settled_at IS NULL AND NOT "
            "EXISTS (SELECT 1 FROM outbox_recipients r WHERE r.message_id = m.id "
            "AND r.state IN (?, ?)) ORDER BY id",
            PENDING,
        ).fetchall()
        for message, meeting_id in rows:
            if self._on_settled is not None:
                try:
                    self._on_settled(meeting_id)
                except Exception:  # the caller's bug must not stop delivery; tried next pass
                    _LOGGER.exception("meeting %d: on_settled failed", meeting_id)
                    continue
            self.db.db.execute(
                "UPDATE outbox_messages SET settled_at = ? WHERE id = ?", (self._clock(), message)
            )

    def retry_now(self) -> int:
        """Make every recipient waiting for a retry due now (`appliance retry`, and each start);
        how many."""
        cursor = self.db.db.execute(
            "UPDATE outbox_recipients SET next_attempt_at = ? WHERE state IN (?, ?)",
            (self._clock(), *PENDING),
        )
        self._wake_up()
        return cursor.rowcount
