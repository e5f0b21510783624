"""The composition root of `appliance run`: config, model, meetings, control, button, outbox."""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import logging
import signal
import time
from pathlib import Path
from typing import Any

import numpy as np

from appliance import paths
from appliance.config import Config
from appliance.delivery import retention
from appliance.delivery.outbox import Outbox
from appliance.engine.transcriber import DecodeOptions
from appliance.engine.workers import open_transcriber
from appliance.errors import UsageError
from appliance.models import silero as silero_weights
from appliance.models import store as model_store
from appliance.paths import TEMPLATES_OVERRIDE
from appliance.recording.capture import FileSource, MicrophoneSource
from appliance.recording.meeting import Engine, Recording, SpoolReplay
from appliance.recording.segmenter import Segmenter, SpeechSegment
from appliance.recording.spool import Spool
from appliance.service.button import BUSY, ERROR, IDLE, RECORDING, Panel
from appliance.service.control import ControlServer, Request
from appliance.service.notify import Notifier
from appliance.service.web import serve as serve_web
from appliance.store import DELIVERING, DONE, FINISHING, UNFINISHED, Database, Meeting
from appliance.transcript import FORMATS, render

_LOGGER = logging.getLogger(__name__)

_PURGE_INTERVAL_S = 24 * 3600.0
# SIGTERM leaves this long to finish the backlog (the unit's TimeoutStopSec is longer); what
# is left stays in the spool and is finished by the next start.
_SHUTDOWN_FINISH_S = 90.0


def load_engine(config: Config) -> Engine:
    """Load the configured model and warm it, so the first meeting does not wait for it."""
    directory = paths.models_dir(config.transcriber.models_dir)
    path = model_store.resolve(config.transcriber.model, directory, config.transcriber.quant)
    options = DecodeOptions(
        threads=config.transcriber.threads,
        beam_size=config.transcriber.beam_size,
        prompt=", ".join(config.room.vocabulary),
    )
    engine: Any = open_transcriber(path, options, config.transcriber.workers)
    engine.transcribe([SpeechSegment(0.0, 1.0, np.zeros(16000, dtype=np.float32))], None)
    segmenter(config)  # loads the VAD's weights now: a missing file stops the start, not a meeting
    return engine


def segmenter(config: Config) -> Segmenter:
    """A Segmenter with the [vad] settings."""
    vad = config.vad
    weights = silero_weights.path(paths.models_dir(config.transcriber.models_dir))
    return Segmenter(
        weights,
        threshold=vad.threshold,
        pad_ms=vad.pad_ms,
        min_silence_ms=vad.min_silence_ms,
        min_speech_ms=vad.min_speech_ms,
        max_segment_s=vad.max_segment_s,
    )


class Daemon:
    """One meeting at a time, recovered after a crash, delivered through the outbox."""

    def __init__(
        self,
        config: Config,
        engine: Engine | None = None,
        pin_factory: Any = None,
        notifier: Notifier | None = None,
        templates_override: Path = TEMPLATES_OVERRIDE,
    ) -> None:
        self.config = config
        self.engine = engine
        self.notifier = notifier or Notifier()
        self._pin_factory = pin_factory
        self._templates_override = templates_override
        self.current: Recording | None = None
        self._current_task: asyncio.Task | None = None
        self._meeting_tasks: set[asyncio.Task] = set()
        self._settled: dict[int, asyncio.Event] = {}
        self._shutdown = asyncio.Event()
        self._exit_code = 0
        self.panel: Panel | None = None

    async def run(self) -> int:
        """Serve until SIGTERM/SIGINT; 0 on a clean stop, 1 if a background task died."""
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self._shutdown.set)
        self.db = Database(self.config.database)
        if self.engine is None:
            self.engine = await asyncio.to_thread(load_engine, self.config)
        self.outbox = Outbox(
            self.db,
            self.config,
            templates_override=self._templates_override,
            on_settled=self._on_settled,
        )
        server = ControlServer(self.config.socket, self._handle)
        await server.start()
        self.panel = Panel(self.config.button, loop, self._press, self._hold, self._pin_factory)
        stop_outbox = asyncio.Event()
        background = [
            asyncio.create_task(self.notifier.watchdog(), name="watchdog"),
            asyncio.create_task(self.outbox.run(stop_outbox), name="outbox"),
            asyncio.create_task(self._purge_daily(), name="purge"),
            asyncio.create_task(self._recover(), name="recover"),
            asyncio.create_task(serve_web(self, segmenter), name="web"),
        ]
        for task in background:
            task.add_done_callback(self._background_done)
        self.notifier.ready("idle")
        _LOGGER.info("ready: control socket %s", self.config.socket)
        try:
            await self._shutdown.wait()
            self.notifier.stopping()
            await self._finish_for_shutdown()
        finally:
            stop_outbox.set()
            for task in background:
                task.cancel()
            await asyncio.gather(*background, return_exceptions=True)
            await server.close()
            self.panel.close()
            self.db.close()
        return self._exit_code

    def _background_done(self, task: asyncio.Task) -> None:
        """A background task that dies takes the daemon down, so systemd restarts it clean."""
        if task.cancelled() or task.exception() is None:
            return
        _LOGGER.error("%s failed: %r", task.get_name(), task.exception(), exc_info=task.exception())
        self._exit_code = 1
        self._shutdown.set()

    async def _finish_for_shutdown(self) -> None:
        if self.current is not None:
            _LOGGER.info("shutting down: stopping meeting %d", self.current.meeting.id)
            self.current.stop()
        if self._meeting_tasks:
            _done, pending = await asyncio.wait(self._meeting_tasks, timeout=_SHUTDOWN_FINISH_S)
            for task in pending:
                task.cancel()  # left in "finishing": the next start recovers it from the spool

    # --- meetings -----------------------------------------------------------------------

    def start_meeting(
        self,
        title: str = "",
        to: tuple[str, ...] = (),
        language: str = "",
        from_file: str = "",
        speed: float = 0.0,
    ) -> Meeting:
        """Start recording; UsageError if a meeting is already running or an argument is bad."""
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
        path = self._spool_path(meeting.id)
        self.current = Recording(
            meeting,
            self.db,
            source,
            self.engine,
            segmenter(self.config),
            path,
            Spool.create(path),
            queue_segments=self.config.transcriber.queue_segments,
        )
        self._current_task = self._track(self._record(self.current))
        _LOGGER.info("meeting %d started (%s)", meeting.id, origin)
        self._show()
        return meeting

    def _default_title(self, started: float) -> str:
        when = datetime.datetime.fromtimestamp(started).strftime("%Y-%m-%d %H:%M")
        return f"{self.config.room.name}, {when}"

    def _spool_path(self, meeting_id: int) -> Path:
        return self.config.spool_dir / f"{meeting_id}.pcm"

    def _track(self, coro: Any) -> asyncio.Task:
        task = asyncio.create_task(coro)
        self._meeting_tasks.add(task)
        task.add_done_callback(self._meeting_tasks.discard)
        return task

    async def _record(self, recording: Recording) -> None:
        try:
            await recording.run()
        except asyncio.CancelledError:
            raise
        except Exception as err:  # one meeting's failure must not take the daemon down
            _LOGGER.exception("meeting %d failed while recording", recording.meeting.id)
            self.db.set_state(recording.meeting.id, FINISHING, error=f"{type(err).__name__}: {err}")
            self._show(ERROR)
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
        self._show()

    def _on_settled(self, meeting_id: int) -> None:
        self.db.set_state(meeting_id, DONE)
        self._settled.setdefault(meeting_id, asyncio.Event()).set()
        self._show()

    async def stop_meeting(self, wait: bool = False) -> Meeting:
        """Stop recording; with wait, return once the transcript is final and delivery tried."""
        recording = self.current
        if recording is None:
            raise UsageError("no meeting is recording")
        recording.stop()
        self._show()
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
        self._spool_path(recording.meeting.id).unlink(missing_ok=True)
        self.db.delete(recording.meeting.id)
        _LOGGER.info("meeting %d cancelled and discarded", recording.meeting.id)
        self._show()
        return recording.meeting

    async def _recover(self) -> None:
        """Finish meetings a crash or power cut left behind, then hand each to delivery once."""
        for meeting in self.db.meetings(UNFINISHED):
            path = self._spool_path(meeting.id)
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
                    segmenter(self.config),
                    path,
                    offset_s=meeting.transcribed_s,
                    queue_segments=self.config.transcriber.queue_segments,
                )
                await self._track(replay.run())
            else:
                self.db.set_state(meeting.id, FINISHING, error="audio spool missing")
            await self._hand_off(meeting.id)
        for meeting in self.db.meetings((DELIVERING,)):
            await self.outbox.enqueue_async(meeting, self.db.transcript(meeting.id))

    async def _purge_daily(self) -> None:
        while True:
            # On the loop's thread: the one SQLite connection must not run two transactions.
            _LOGGER.info("purge: %s", retention.purge(self.db, self.config, self.outbox))
            await asyncio.sleep(_PURGE_INTERVAL_S)

    # --- button -------------------------------------------------------------------------

    def _press(self) -> None:
        if self.current is None:
            self._guard(self.start_meeting)
        else:
            self._track(self._guard_async(self.stop_meeting()))

    def _hold(self) -> None:
        if self.current is not None:
            self._track(self._guard_async(self.cancel_meeting()))

    def _guard(self, action: Any) -> None:
        try:
            action()
        except Exception:
            _LOGGER.exception("button action failed")
            self._show(ERROR)

    async def _guard_async(self, action: Any) -> None:
        try:
            await action
        except Exception:
            _LOGGER.exception("button action failed")
            self._show(ERROR)

    # --- state --------------------------------------------------------------------------

    def state(self) -> str:
        """recording, finishing, delivering or idle."""
        if self.current is not None:
            return "recording" if self.current.capturing else "finishing"
        if self._meeting_tasks:
            return "finishing"
        if self.db.meetings((DELIVERING,)):
            return "delivering"
        return "idle"

    def _show(self, led: str | None = None) -> None:
        state = self.state()
        if self.panel is not None:
            self.panel.show(led or {"recording": RECORDING, "idle": IDLE}.get(state, BUSY))
        detail = f" meeting {self.current.meeting.id}" if self.current else ""
        self.notifier.status(f"{state}{detail}")

    def status(self) -> dict[str, Any]:
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

    # --- control socket -----------------------------------------------------------------

    async def _handle(self, request: Request) -> dict[str, Any]:
        args = request.args
        if request.command == "start":
            meeting = self.start_meeting(
                args.get("title", ""),
                tuple(args.get("to", ())),
                args.get("language", ""),
                args.get("from_file", ""),
                args.get("speed", 0.0),
            )
            return {"meeting": meeting.to_json()}
        if request.command == "stop":
            return {"meeting": (await self.stop_meeting(args.get("wait", False))).to_json()}
        if request.command == "cancel":
            return {"meeting": (await self.cancel_meeting()).to_json()}
        if request.command == "status":
            return self.status()
        if request.command == "meetings":
            return {"meetings": [m.to_json() for m in self.db.meetings()]}
        return self._show_transcript(args.get("id"), args.get("format", "txt"))

    def _show_transcript(self, meeting_id: int | None, fmt: str) -> dict[str, Any]:
        if meeting_id is None:
            raise UsageError("show: a meeting id is required")
        if fmt not in FORMATS:
            raise UsageError(f"show: unknown format {fmt!r} (one of {', '.join(FORMATS)})")
        if self.db.meeting(meeting_id) is None:
            raise UsageError(f"no meeting {meeting_id}")
        return {"text": render(self.db.transcript(meeting_id), fmt)}
