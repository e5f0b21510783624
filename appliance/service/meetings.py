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

from appliance.config import Config
from appliance.delivery.outbox import Outbox
from appliance.errors import UsageError
from appliance.recording.capture import FileSource, MicrophoneSource
from appliance.recording.meeting import Engine, Recording, SpoolReplay
from appliance.recording.segmenter import Segmenter
from appliance.recording.spool import Spool
from appliance.store import DELIVERING, DONE, FINISHING, UNFINISHED, Database, Meeting
from appliance.transcript import FORMATS, render

_LOGGER = logging.getLogger(__name__)


class Meetings:
    """One meeting at a time, recovered after a crash, handed to the outbox once finished.

    Serves the control commands (control.COMMANDS): one async method per command, named after
    it, returning the reply. on_change(failed) is called whenever the state may have changed.
    """

    def __init__(
        self,
        config: Config,
        db: Database,
        outbox: Outbox,
        new_segmenter: Callable[[], Segmenter],
        on_change: Callable[[bool], None],
    ) -> None:
        self.config = config
        self.db = db
        self.outbox = outbox
        self.engine: Engine | None = None  # set by the daemon once the model is loaded
        self._new_segmenter = new_segmenter
        self._on_change = on_change
        self.current: Recording | None = None
        self._current_task: asyncio.Task | None = None
        self.tasks: set[asyncio.Task] = set()
        self._settled: dict[int, asyncio.Event] = {}

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
        return {
            "meeting": self.start_meeting(title, tuple(to), language, from_file, speed).to_json()
        }

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
            "problems": self.outbox.problems(),
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

    # --- lifecycle ----------------------------------------------------------------------

    def start_meeting(
        self,
        title: str = "",
        to: tuple[str, ...] = (),
        language: str = "",
        from_file: str = "",
        speed: float = 0.0,
    ) -> Meeting:
        """Create the meeting and start its recording."""
        if self.current is not None:
            raise UsageError(
                f"meeting {self.current.meeting.id} is already recording; stop it first"
            )
        language = language or self.config.room.language
        if from_file:
            if not 0 <= speed <= 1000:
                raise UsageError(f"speed {speed:g} is out of range (0 to 1000)")
            source: Any = FileSource(Path(from_file), speed=speed)
            origin = str(from_file)
        else:
            source = MicrophoneSource(
                self.config.audio.device,
                self.config.audio.retry_max_s,
                self.config.audio.samplerate,
            )
            origin = "microphone"
        started = time.time()
        meeting = self.db.create(
            title.strip() or self._default_title(started), language, tuple(to), origin, started
        )
        path = self.spool_path(meeting.id)
        self.current = Recording(
            meeting,
            self.db,
            source,
            self.engine,
            self._new_segmenter(),
            path,
            Spool.create(path),
            queue_segments=self.config.transcriber.queue_segments,
        )
        self._current_task = self.track(self._record(self.current))
        _LOGGER.info("meeting %d started (%s)", meeting.id, origin)
        self._on_change(False)
        return meeting

    def _default_title(self, started: float) -> str:
        when = datetime.datetime.fromtimestamp(started).strftime("%Y-%m-%d %H:%M")
        return f"{self.config.room.name}, {when}"

    def spool_path(self, meeting_id: int) -> Path:
        """Where a meeting's raw audio is kept."""
        return self.config.spool_dir / f"{meeting_id}.pcm"

    def track(self, coro: Any) -> asyncio.Task:
        """Run a meeting's work as a task that shutdown waits for."""
        task = asyncio.create_task(coro)
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)
        return task

    async def _record(self, recording: Recording) -> None:
        try:
            await recording.run()
        except asyncio.CancelledError:
            raise
        except Exception as err:  # one meeting's failure must not take the daemon down
            _LOGGER.exception("meeting %d failed while recording", recording.meeting.id)
            self.db.set_state(recording.meeting.id, FINISHING, error=f"{type(err).__name__}: {err}")
            self._on_change(True)
            return
        finally:
            if self.current is recording:
                self.current = None
        await self._hand_off(recording.meeting.id)

    async def _hand_off(self, meeting_id: int) -> None:
        """Give a finished meeting to the outbox; enqueue is idempotent, so a retry is safe."""
        self.db.set_state(meeting_id, DELIVERING)
        meeting = self.db.meeting(meeting_id)
        await self.outbox.enqueue_async(meeting, self.db.transcript(meeting_id))
        _LOGGER.info("meeting %d handed to delivery", meeting_id)
        self._on_change(False)

    def settled(self, meeting_id: int) -> None:
        """The outbox has a final outcome for every recipient of this meeting."""
        self.db.set_state(meeting_id, DONE)
        self._settled.setdefault(meeting_id, asyncio.Event()).set()
        self._on_change(False)

    async def stop_meeting(self, wait: bool = False) -> Meeting:
        """Stop recording; with wait, return once the transcript is final and delivery tried."""
        recording = self.current
        if recording is None:
            raise UsageError("no meeting is recording")
        recording.stop()
        self._on_change(False)
        meeting_id = recording.meeting.id
        if wait:
            await asyncio.shield(self._current_task)
            settled = self._settled.setdefault(meeting_id, asyncio.Event())
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(settled.wait(), self.config.smtp.timeout_s)
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
        self.db.delete(recording.meeting.id)
        _LOGGER.info("meeting %d cancelled and discarded", recording.meeting.id)
        self._on_change(False)
        return recording.meeting

    async def recover(self) -> None:
        """Finish meetings a crash or power cut left behind, then hand each to delivery once."""
        for meeting in self.db.meetings(UNFINISHED):
            path = self.spool_path(meeting.id)
            _LOGGER.warning(
                "meeting %d was left %s; recovering from %s", meeting.id, meeting.state, path
            )
            self.db.set_state(meeting.id, FINISHING)
            if path.exists():
                replay = Recording(
                    meeting,
                    self.db,
                    SpoolReplay(path, meeting.transcribed_s),
                    self.engine,
                    self._new_segmenter(),
                    path,
                    offset_s=meeting.transcribed_s,
                    queue_segments=self.config.transcriber.queue_segments,
                )
                await self.track(replay.run())
            else:
                self.db.set_state(meeting.id, FINISHING, error="audio spool missing")
            await self._hand_off(meeting.id)
        for meeting in self.db.meetings((DELIVERING,)):
            await self.outbox.enqueue_async(meeting, self.db.transcript(meeting.id))

    async def finish_for_shutdown(self, timeout_s: float) -> None:
        """Stop the meeting and give the backlog timeout_s; what is left the next start finishes."""
        if self.current is not None:
            _LOGGER.info("shutting down: stopping meeting %d", self.current.meeting.id)
            self.current.stop()
        if self.tasks:
            _done, pending = await asyncio.wait(self.tasks, timeout=timeout_s)
            for task in pending:
                task.cancel()  # left in "finishing": the next start recovers it from the spool

    def state(self) -> str:
        """recording, finishing, delivering or idle."""
        if self.current is not None:
            return "recording" if self.current.capturing else "finishing"
        if self.tasks:
            return "finishing"
        if self.db.meetings((DELIVERING,)):
            return "delivering"
        return "idle"
