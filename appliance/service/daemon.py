"""The composition root of `appliance run`: config, model, meetings, control, button, outbox."""

from __future__ import annotations

import asyncio
import logging
import signal
from pathlib import Path
from typing import Any

import numpy as np

from appliance import paths
from appliance.config import Config
from appliance.delivery import retention
from appliance.delivery.outbox import Outbox
from appliance.engine.transcriber import DecodeOptions, Transcriber
from appliance.models import silero as silero_weights
from appliance.models import store as model_store
from appliance.paths import TEMPLATES_OVERRIDE
from appliance.recording.meeting import Engine
from appliance.recording.segmenter import Segmenter, SpeechSegment
from appliance.service import checks
from appliance.service.button import Panel, led_for
from appliance.service.control import ControlServer, handler_for
from appliance.service.meetings import Meetings
from appliance.service.notify import Notifier
from appliance.service.speaker_turns import load_labeller
from appliance.service.web import serve as serve_web
from appliance.store import Database

_LOGGER = logging.getLogger(__name__)

# SIGTERM leaves this long to finish the backlog (the unit's TimeoutStopSec is longer); what
# is left stays in the spool and is finished by the next start.
_SHUTDOWN_FINISH_S = 90.0
_WATCH_S = 2.0


def load_engine(config: Config) -> Engine:
    """Load the configured model and warm it, so the first meeting does not wait for it."""
    directory = paths.models_dir(config.transcriber.models_dir)
    path = model_store.resolve(config.transcriber.model, directory, config.transcriber.quant)
    options = DecodeOptions(
        threads=config.transcriber.threads,
        beam_size=config.transcriber.beam_size,
        prompt=", ".join(config.room.vocabulary),
    )
    engine = Transcriber(path, options, config.transcriber.workers)
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
    """The parts composed: database, outbox, meetings, control socket, button, systemd."""

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
        self.db = Database(config.database)
        self.outbox = Outbox(
            self.db,
            config,
            templates_override=templates_override,
            on_settled=self._settled,
            on_attempt=self._attempted,
        )
        self.meetings = Meetings(
            config,
            self.db,
            self.outbox,
            lambda: segmenter(config),
            self._show,
            checks.model_multilingual(config),
        )
        self._shutdown = asyncio.Event()
        self._exit_code = 0
        self.panel: Panel | None = None

    async def run(self) -> int:
        """Serve until SIGTERM/SIGINT; 0 on a clean stop, 1 if a background task died."""
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self._shutdown.set)
        if self.engine is None:
            self.engine = await asyncio.to_thread(load_engine, self.config)
        self.meetings.engine = self.engine
        self.meetings.labeller = await asyncio.to_thread(load_labeller, self.config)
        server = ControlServer(self.config.socket, handler_for(self.meetings))
        await server.start()
        self.panel = Panel(self.config.button, loop, self._press, self._hold, self._pin_factory)
        stop_outbox = asyncio.Event()
        # A restart is a reason to try again: the server may be back, or the cause fixed.
        retried = self.outbox.retry_now()
        if retried:
            _LOGGER.info("retrying delivery to %d recipient(s) now", retried)
        background = [
            asyncio.create_task(self.notifier.watchdog(), name="watchdog"),
            asyncio.create_task(self.outbox.run(stop_outbox), name="outbox"),
            asyncio.create_task(
                retention.purge_daily(self.db, self.config, self.outbox), name="purge"
            ),
            asyncio.create_task(self.meetings.recover(), name="recover"),
            asyncio.create_task(self._watch(), name="watch"),
            asyncio.create_task(serve_web(self, segmenter), name="web"),
        ]
        for task in background:
            task.add_done_callback(self._background_done)
        self.notifier.ready("idle")
        self._show()
        _LOGGER.info("ready: control socket %s", self.config.socket)
        try:
            await self._shutdown.wait()
            self.notifier.stopping()
            await self.meetings.finish_for_shutdown(_SHUTDOWN_FINISH_S)
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

    def _settled(self, meeting_id: int) -> None:
        self.meetings.settled(meeting_id)

    def _attempted(self, meeting_id: int) -> None:
        self.meetings.attempted(meeting_id)

    def _show(self, fault: bool = False) -> None:
        """Show the state and what is wrong on the LED and to systemd."""
        state = self.meetings.state()
        faults = self.meetings.faults()
        if self.panel is not None:
            self.panel.show(led_for(state, fault or bool(faults)))
        current = self.meetings.current
        detail = f" meeting {current.meeting.id}" if current else ""
        problem = f"; problem: {faults[0]}" if faults else ""
        self.notifier.status(f"{state}{detail}{problem}")

    async def _watch(self) -> None:
        """Show faults that arrive without an event (disk filling, microphone gone, mail)."""
        while True:
            self._show()
            await asyncio.sleep(_WATCH_S)

    # --- button: press starts or stops, hold cancels --------------------------------------

    def _press(self) -> None:
        if self.meetings.current is None:
            try:
                self.meetings.start_meeting()
            except Exception:
                _LOGGER.exception("button action failed")
                self._show(fault=True)
        else:
            self._guard(self.meetings.stop())

    def _hold(self) -> None:
        if self.meetings.current is not None:
            self._guard(self.meetings.cancel())

    def _guard(self, action: Any) -> None:
        async def guarded() -> None:
            try:
                await action
            except Exception:
                _LOGGER.exception("button action failed")
                self._show(fault=True)

        self.meetings.track(guarded())
