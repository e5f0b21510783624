"""The meeting lifecycle: start, stop, cancel, recovery after a crash, and the hand-off to mail."""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import logging
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from appliance import languages
from appliance.addresses import address_problem
from appliance.config import Config
from appliance.delivery import retention
from appliance.delivery.outbox import Outbox
from appliance.engine.speakers import SpeakerLabeller
from appliance.errors import UsageError
from appliance.recording import spool as spool_file
from appliance.recording.capture import FileSource, MicrophoneSource, upload
from appliance.recording.meeting import Engine, Recording
from appliance.recording.segmenter import Segmenter
from appliance.recording.spool import DiskFullError, Spool
from appliance.service import faults, recovery
from appliance.service.speaker_turns import MeetingSpeakers, attendee_cap
from appliance.store import DELIVERING, DONE, FAILED, FINISHING, UNFINISHED, Database, Meeting
from appliance.transcript import FORMATS, Gap, render

_LOGGER = logging.getLogger(__name__)

_MB = 1_000_000


def _printable(text: str) -> str:
    """Control characters from a title would reach terminals and the email's text."""
    return "".join(c if c.isprintable() else " " for c in text)


class Meetings:
    """One meeting at a time, recovered after a crash, handed to the outbox once finished.

    Serves the control commands (control.COMMANDS): one async method per command, named after
    it, returning the reply. on_change(fault) is called whenever the state may have changed.
    model is the configured model file's name and whether it is multilingual.
    """

    def __init__(
        self,
        config: Config,
        db: Database,
        outbox: Outbox,
        new_segmenter: Callable[[], Segmenter],
        on_change: Callable[[bool], None],
        model: tuple[str, bool] = ("the model", False),
    ) -> None:
        self.config = config
        self.db = db
        self.outbox = outbox
        self.engine: Engine | None = None  # set by the daemon once the model is loaded
        self.labeller: SpeakerLabeller | None = None  # set by the daemon with [speakers] on
        self._speakers: dict[int, MeetingSpeakers] = {}
        self.model = model
        self.new_segmenter = new_segmenter
        self._on_change = on_change
        self.current: Recording | None = None
        self._current_task: asyncio.Task | None = None
        self._starting = False
        self.tasks: set[asyncio.Task] = set()
        self._outcome: dict[int, asyncio.Event] = {}

    # --- commands -----------------------------------------------------------------------

    async def start(
        self,
        title: str = "",
        to: list[str] | tuple[str, ...] = (),
        language: str = "",
        from_file: str = "",
        speed: float = 0.0,
    ) -> dict[str, Any]:
        """Start recording; UsageError if a meeting is already running or an argument is bad."""
        self._check_idle()
        for address in to:
            if problem := address_problem(address):
                raise UsageError(f"{address!r} is not an email address we can send to: {problem}")
        language = self._check_language(language)
        source: Any = None
        self._starting = True
        try:
            # Off the loop: a file on a stalled disk, or anything else odd, blocks a thread only.
            if from_file:
                if not 0 <= speed <= 1000:
                    raise UsageError(f"speed {speed:g} is out of range (0 to 1000)")
                source = await asyncio.to_thread(upload, Path(from_file), speed)
            await asyncio.to_thread(self._check_room)
        finally:
            self._starting = False
        meeting = self._begin(
            source, str(from_file) if from_file else "", title, tuple(to), language
        )
        return {"meeting": meeting.to_json()}

    async def stop(self, wait: bool = False) -> dict[str, Any]:
        """Stop recording; with wait, return once the transcript is final and delivery tried."""
        return {"meeting": (await self.stop_meeting(wait)).to_json()}

    async def cancel(self) -> dict[str, Any]:
        """Discard the current meeting: audio, transcript and record."""
        return {"meeting": (await self.cancel_meeting()).to_json()}

    async def status(self) -> dict[str, Any]:
        """What `appliance status` shows."""
        recording = self.current
        meeting = self.db.meeting(recording.meeting.id) if recording else None
        if meeting is None:
            recent = self.db.meetings()
            meeting = recent[-1] if recent else None
        return {
            "state": self.state(),
            "meeting": meeting.to_json() if meeting else None,
            "elapsed_s": round(time.time() - meeting.started_at, 1) if recording else 0.0,
            "audio_s": round(recording.audio_s, 1) if recording else 0.0,
            "backlog_s": round(recording.backlog_s, 1) if recording else 0.0,
            "last_line": self.db.last_line(meeting.id) if meeting else "",
            "outbox": self.outbox.counts(),
            "problems": self.faults() + self.outbox.problems(),
        }

    async def meetings(self) -> dict[str, Any]:
        """Every meeting on record, oldest first."""
        return {"meetings": [m.to_json() for m in self.db.meetings()]}

    async def show(self, id: int | None = None, format: str = "txt") -> dict[str, Any]:
        """One meeting's transcript in one of the transcript formats."""
        if id is None:
            raise UsageError("show: a meeting id is required")
        if format not in FORMATS:
            raise UsageError(f"show: unknown format {format!r} (one of {', '.join(FORMATS)})")
        if self.db.meeting(id) is None:
            raise UsageError(f"no meeting {id}")
        return {"text": render(self.db.transcript(id), format)}

    async def retry(self) -> dict[str, Any]:
        """Try every recipient still waiting for a retry now."""
        return {"retried": self.outbox.retry_now()}

    async def resend(self, id: int | None = None) -> dict[str, Any]:
        """Email a finished meeting's transcript again, as a new message, to its recipients."""
        meeting = self._handed_off(id)
        if self.outbox.message(meeting.id) is None:
            raise UsageError(f"meeting {id}: its transcript was deleted (keep_transcripts_days)")
        await self.deliver(meeting.id, again=True)
        return {"meeting": self.db.meeting(meeting.id).to_json()}

    async def delete(self, id: int | None = None) -> dict[str, Any]:
        """Delete a finished meeting: its record, transcript, audio and queued email."""
        meeting = self._handed_off(id)
        retention.delete_meeting(self.db, self.config, self.outbox, meeting.id)
        self._on_change(False)
        return {"meeting": meeting.to_json()}

    def _handed_off(self, id: int | None) -> Meeting:
        """The meeting, once its email is with the outbox: resend and delete may touch it."""
        meeting = self.db.meeting(id) if id is not None else None
        if meeting is None:
            raise UsageError(f"no meeting {id}")
        if meeting.state in UNFINISHED or (
            meeting.state == DELIVERING and self.outbox.message(meeting.id) is None
        ):
            raise UsageError(f"meeting {id} is still {meeting.state}; try again once it is done")
        return meeting

    # --- starting -----------------------------------------------------------------------

    def start_meeting(self) -> Meeting:
        """Start recording from the microphone (the button): the room's language and title."""
        self._check_idle()
        self._check_room()
        return self._begin(None, "", "", (), self._check_language(""))

    def _check_idle(self) -> None:
        current = self.current
        if current is not None and current.capturing:
            raise UsageError(f"meeting {current.meeting.id} is already recording; stop it first")
        if current is not None:
            raise UsageError(
                f"meeting {current.meeting.id} is still being transcribed; start again when "
                "`appliance status` no longer says finishing"
            )
        if self._starting:
            raise UsageError("another meeting is starting")

    def _check_language(self, language: str) -> str:
        language = language or self.config.room.language
        refusal = languages.refusal(language, *self.model)
        if refusal:
            raise UsageError(f"language {language!r}: {refusal}")
        return language

    def _check_room(self) -> None:
        """Refuse to start without [storage] min_free_mb free: the audio must have room."""
        self.config.state_dir.mkdir(parents=True, exist_ok=True)
        free = spool_file.free_bytes(self.config.state_dir)
        if free < self.config.storage.min_free_mb * _MB:
            raise DiskFullError(
                f"cannot start: {free // _MB} MB free in {self.config.state_dir}, and a meeting "
                f"needs [storage] min_free_mb = {self.config.storage.min_free_mb}"
            )

    def _begin(
        self,
        source: FileSource | None,
        from_file: str,
        title: str,
        to: tuple[str, ...],
        language: str,
    ) -> Meeting:
        """Create the meeting and start its recording (no await: nothing can start between)."""
        self._check_idle()
        if source is None:
            source = MicrophoneSource(
                self.config.audio.device,
                self.config.audio.retry_max_s,
                self.config.audio.samplerate,
            )
        started = time.time()
        meeting = self.db.create(
            _printable(title).strip() or self._default_title(started),
            language,
            to,
            from_file or "microphone",
            started,
        )
        path = self.spool_path(meeting.id)
        try:
            spool = Spool.create(path, reserve_bytes=self.config.storage.min_free_mb * _MB // 2)
        except Exception:
            self.db.delete(meeting.id)
            raise
        speakers = None
        if self.labeller is not None:
            speakers = self._speakers[meeting.id] = MeetingSpeakers(self.labeller, meeting.id)
        self.current = Recording(
            meeting,
            self.db,
            source,
            self.engine,
            self.new_segmenter(),
            path,
            spool,
            queue_segments=self.config.transcriber.queue_segments,
            on_speech=speakers.add if speakers else None,
            on_transcribed=speakers.heard if speakers else None,
        )
        self._current_task = self.track(self._record(self.current))
        _LOGGER.info("meeting %d started (%s)", meeting.id, meeting.source)
        self._on_change(False)
        return meeting

    def _default_title(self, started: float) -> str:
        when = datetime.datetime.fromtimestamp(started).strftime("%Y-%m-%d %H:%M")
        return f"{self.config.room.name}, {when}"

    def spool_path(self, meeting_id: int) -> Path:
        """Where a meeting's raw audio is kept."""
        return retention.spool_path(self.config, meeting_id)

    def track(self, coro: Any) -> asyncio.Task:
        """Run a meeting's work as a task that shutdown waits for."""
        task = asyncio.create_task(coro)
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)
        return task

    # --- finishing ----------------------------------------------------------------------

    async def _record(self, recording: Recording) -> None:
        meeting_id = recording.meeting.id
        try:
            await recording.run()
        except asyncio.CancelledError:
            raise
        except Exception as err:  # one meeting's failure must not take the daemon down
            _LOGGER.exception("meeting %d failed while recording", meeting_id)
            self.note_failure(meeting_id, recording.audio_s, faults.one_line(err))
        finally:
            if self.current is recording:
                self.current = None
        if speakers := self._speakers.pop(meeting_id, None):
            # Clustering off the loop; the database only on it, like every other write.
            transcript = self.db.transcript(meeting_id)
            cap = await asyncio.to_thread(attendee_cap, self.config, recording.meeting.started_at)
            labelled = await asyncio.to_thread(speakers.label, transcript, cap)
            if labelled is not None:
                self.db.label_segments(meeting_id, labelled.segments)
        await self.deliver(meeting_id)

    def note_failure(self, meeting_id: int, audio_s: float, reason: str) -> None:
        """Mark what was recorded but not transcribed as a gap, and keep the reason."""
        meeting = self.db.meeting(meeting_id)
        if audio_s > meeting.transcribed_s:
            gap = Gap(meeting.transcribed_s, audio_s, f"not transcribed: {reason}")
            self.db.add_gap(meeting_id, gap)
        self.db.set_audio(meeting_id, max(audio_s, meeting.audio_s))
        self.db.set_state(meeting_id, FINISHING, error=reason)

    def _failed(self, meeting: Meeting) -> bool:
        """Ended by an error with nothing at all transcribed."""
        return bool(meeting.error) and not self.db.last_line(meeting.id)

    async def deliver(self, meeting_id: int, again: bool = False) -> None:
        """Give a finished meeting to the outbox (a failed one too: the organiser learns why);
        enqueue is idempotent, so a retry is safe; again: a new message, for `resend`."""
        self.db.set_state(meeting_id, DELIVERING)
        meeting = self.db.meeting(meeting_id)
        await self.outbox.enqueue_async(meeting, self.db.transcript(meeting_id), again)
        if self._failed(meeting):
            self.db.set_state(meeting_id, FAILED)
            _LOGGER.warning("meeting %d failed: %s", meeting_id, meeting.error)
        elif self.config.storage.keep_audio_days == 0:
            self.spool_path(meeting_id).unlink(missing_ok=True)  # the transcript is final
        _LOGGER.info("meeting %d handed to delivery", meeting_id)
        self._on_change(False)

    def settled(self, meeting_id: int) -> None:
        """The outbox has a final outcome for every recipient of this meeting."""
        meeting = self.db.meeting(meeting_id)
        if meeting is not None:
            self.db.set_state(meeting_id, FAILED if self._failed(meeting) else DONE)
        self.attempted(meeting_id)

    def attempted(self, meeting_id: int) -> None:
        """A delivery attempt for this meeting has an outcome (sent, refused or retrying)."""
        self._outcome.setdefault(meeting_id, asyncio.Event()).set()
        self._on_change(False)

    async def stop_meeting(self, wait: bool = False) -> Meeting:
        """Stop recording; with wait, return once the transcript is final and the first
        delivery attempt has an outcome."""
        recording = self.current
        if recording is None:
            raise UsageError("no meeting is recording")
        recording.stop()
        self._on_change(False)
        meeting_id = recording.meeting.id
        if wait:
            await asyncio.shield(self._current_task)
            outcome = self._outcome.setdefault(meeting_id, asyncio.Event())
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(outcome.wait(), self.config.smtp.timeout_s)
        return self.db.meeting(meeting_id)

    async def cancel_meeting(self) -> Meeting:
        """Discard the current meeting: audio, transcript and record."""
        recording = self.current
        if recording is None:
            raise UsageError("no meeting is recording")
        recording.stop()
        self._current_task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._current_task
        self.current = None
        self.spool_path(recording.meeting.id).unlink(missing_ok=True)
        self._speakers.pop(recording.meeting.id, None)
        self.db.delete(recording.meeting.id)
        _LOGGER.info("meeting %d cancelled and discarded", recording.meeting.id)
        self._on_change(False)
        return recording.meeting

    async def recover(self) -> None:
        """Finish what a crash left behind (service/recovery.py)."""
        await recovery.recover(self)

    async def finish_for_shutdown(self, timeout_s: float) -> None:
        """Stop the meeting and give the backlog timeout_s; what is left the next start finishes."""
        if self.current is not None:
            _LOGGER.info("shutting down: stopping meeting %d", self.current.meeting.id)
            self.current.stop()
        if self.tasks:
            _done, pending = await asyncio.wait(self.tasks, timeout=timeout_s)
            for task in pending:
                task.cancel()  # left in "finishing": the next start recovers it from the spool

    # --- state --------------------------------------------------------------------------

    def state(self) -> str:
        """recording, finishing, delivering or idle."""
        if self.current is not None:
            return "recording" if self.current.capturing else "finishing"
        if self.tasks:
            return "finishing"
        if self.db.meetings((DELIVERING,)):
            return "delivering"
        return "idle"

    def faults(self) -> list[str]:
        """What is wrong now, one line each (service/faults.py)."""
        return faults.now(self)
