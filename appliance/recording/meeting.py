"""One meeting's audio path: source → spool → segmenter → transcriber → database, and recovery."""

from __future__ import annotations

import asyncio
import logging
import sqlite3
from collections import deque
from collections.abc import AsyncIterator, Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import numpy as np

from appliance.recording import spool as spool_file
from appliance.recording.audio import SAMPLE_RATE, float_to_pcm16
from appliance.recording.segmenter import Segmenter, SpeechSegment
from appliance.recording.spool import DiskFullError, Spool
from appliance.store import FINISHING, Database, Meeting
from appliance.transcript import Gap, Segment

_LOGGER = logging.getLogger(__name__)

_BYTES_PER_S = SAMPLE_RATE * 2
# Speech waits at most this long (in recorded seconds) for its window to fill before it is
# transcribed anyway, so `status` never lags far behind a slow conversation.
MAX_WAIT_S = 60.0
# Recovery reads the spool back in blocks of this many seconds (about 1 MB of PCM16).
_REPLAY_BLOCK_S = 30.0
# How often a growing disk-full gap is stored again (seconds of meeting audio dropped).
_GAP_STORE_EVERY_S = 5.0


class Source(Protocol):
    """Where a meeting's audio comes from: PCM16 16 kHz mono chunks, and gaps it could not hear."""

    def stream(self) -> AsyncIterator[bytes | Gap]: ...

    def stop(self) -> None: ...


class Transcribed(Protocol):
    """What the engine made of some speech."""

    @property
    def segments(self) -> list[Segment]: ...

    @property
    def language(self) -> str | None:
        """The language the speech was heard in (detected, if asked for "auto")."""


class Engine(Protocol):
    """The transcriber of speech segments (appliance.engine's Transcriber)."""

    workers: int

    async def transcribe_async(
        self, segments: Sequence[SpeechSegment], language: str | None
    ) -> Transcribed: ...

    def window_fill(self, durations_s: Sequence[float]) -> int:
        """How many of the oldest segments (durations, oldest first) fit one window."""


@dataclass
class _Pending:
    """A speech segment waiting for the transcriber; samples None = read back from the spool."""

    start_s: float
    end_s: float
    samples: np.ndarray | None


class SpoolReplay:
    """A Source that reads a meeting's spool back from a point, for recovery after a crash."""

    def __init__(self, path: Path, start_s: float) -> None:
        self.path = path
        self.start_s = start_s
        self._stopped = False

    async def stream(self) -> AsyncIterator[bytes | Gap]:
        """The spooled audio from start_s to its end."""
        end_s = spool_file.duration_s(self.path)
        position = self.start_s
        while position < end_s and not self._stopped:
            block_end = min(end_s, position + _REPLAY_BLOCK_S)
            samples = await asyncio.to_thread(spool_file.read, self.path, position, block_end)
            yield float_to_pcm16(samples)
            position = block_end

    def stop(self) -> None:
        """End the replay early."""
        self._stopped = True


class Recording:
    """Runs one meeting until its source ends and every segment is transcribed and stored."""

    def __init__(
        self,
        meeting: Meeting,
        db: Database,
        source: Source,
        engine: Engine,
        segmenter: Segmenter,
        spool_path: Path,
        spool: Spool | None = None,
        offset_s: float = 0.0,
        queue_segments: int = 8,
        on_speech: Callable[[np.ndarray, float], None] | None = None,
        on_transcribed: Callable[[list[Segment]], None] | None = None,
    ) -> None:
        self.meeting = meeting
        self.db = db
        self.source = source
        self.engine = engine
        self.segmenter = segmenter
        self.spool_path = spool_path
        self.spool = spool
        self.offset_s = offset_s  # where in the meeting this source's first sample lies
        self.queue_segments = queue_segments
        # Each speech segment as it is found (samples, meeting time), on a worker thread: the
        # speaker embeddings are computed while the meeting runs, not after it.
        self.on_speech = on_speech
        # Each batch of segments as stored, with what the database does not keep (word times).
        self.on_transcribed = on_transcribed
        self.language = None if meeting.language == "auto" else meeting.language
        self._language_stored = self.language is not None
        self.audio_s = offset_s
        self.transcribed_s = offset_s
        self.capturing = True
        self.disk_full_at: float | None = None  # meeting time the spool's disk filled up
        self._unrecorded_s = 0.0
        self._gap_stored_s = 0.0
        self._pending: deque[_Pending] = deque()
        self._in_memory = 0
        self._in_flight_s = 0.0
        self._behind_logged = False
        self._wake = asyncio.Event()

    @property
    def backlog_s(self) -> float:
        """Seconds of recorded speech waiting for, or in, the transcriber."""
        return self._in_flight_s + sum(p.end_s - p.start_s for p in self._pending)

    def stop(self) -> None:
        """End capture; what is recorded is still transcribed before run() returns."""
        self.source.stop()

    async def run(self) -> None:
        """Capture and transcribe side by side; return when both are done."""
        worker = asyncio.create_task(self._transcribe(), name=f"transcribe-{self.meeting.id}")
        # A transcriber that fails ends the capture too: the meeting finishes with what it has.
        worker.add_done_callback(lambda task: task.cancelled() or self.source.stop())
        try:
            await self._capture()
            await worker
        finally:
            worker.cancel()

    async def _capture(self) -> None:
        # Scoring speech (and embedding speakers, on_speech) always on this one thread: spread
        # over the default pool, each thread's malloc arena kept its own peak (peak RSS 492 MB
        # against 321 MB on one thread for a 15-minute meeting in benchmarks.daemon).
        loop = asyncio.get_running_loop()
        scorer = ThreadPoolExecutor(1, thread_name_prefix=f"speech-{self.meeting.id}")
        try:
            async for item in self.source.stream():
                if isinstance(item, Gap):
                    _LOGGER.info(
                        "meeting %d: gap %.1f-%.1f s (%s)",
                        self.meeting.id,
                        item.start_s,
                        item.end_s,
                        item.reason,
                    )
                    self.db.add_gap(self.meeting.id, item)
                    continue
                if self.disk_full_at is not None:
                    self._unrecorded_s += len(item) / _BYTES_PER_S
                    if self._unrecorded_s - self._gap_stored_s >= _GAP_STORE_EVERY_S:
                        self._store_disk_gap(self.disk_full_at)
                    continue
                if self.spool is not None:
                    try:
                        self.spool.append(item)
                    except DiskFullError as err:
                        _LOGGER.error(
                            "meeting %d: %s; audio is not recorded from here", self.meeting.id, err
                        )
                        self.disk_full_at = self.audio_s
                        self._unrecorded_s = len(item) / _BYTES_PER_S
                        self._store_disk_gap(self.disk_full_at)
                        continue
                self.audio_s += len(item) / _BYTES_PER_S
                # Scoring speech is ONNX inference: off the loop, like every other blocking call.
                for segment in await loop.run_in_executor(scorer, self._segment, item):
                    self._queue(segment)
                if self._pending:
                    self._wake.set()  # the worker checks whether the oldest has waited enough
            for segment in await loop.run_in_executor(scorer, self._segment, None):
                self._queue(segment)
        finally:
            scorer.shutdown(wait=False)
            self.capturing = False
            if self.disk_full_at is not None:
                self._store_disk_gap(self.disk_full_at)
            if self.spool is not None:
                self.spool.close()
            self.db.set_audio(self.meeting.id, self.audio_s)
            self.db.set_state(self.meeting.id, FINISHING)
            self._wake.set()

    def _store_disk_gap(self, start_s: float) -> None:
        """The disk-full gap as far as it goes, stored now: a crash while full keeps the note.

        The spool keeps space back for the database, so this write fits; if even it fails,
        the note is only logged and capture goes on.
        """
        gap = Gap(start_s, start_s + self._unrecorded_s, "the disk was full")
        try:
            self.db.put_gap(self.meeting.id, gap)
        except sqlite3.Error as err:
            _LOGGER.error("meeting %d: the disk-full note was not stored: %s", self.meeting.id, err)
        self._gap_stored_s = self._unrecorded_s

    def _segment(self, pcm: bytes | None) -> list[SpeechSegment]:
        """The speech segments this chunk completes (None: the end), each shown to on_speech."""
        segments = self.segmenter.flush() if pcm is None else self.segmenter.push(pcm)
        if self.on_speech is not None:
            for segment in segments:
                self.on_speech(segment.samples, segment.start_s + self.offset_s)
        return segments

    def _queue(self, segment: SpeechSegment) -> None:
        """Hand a segment to the transcriber; past the memory bound, keep only its times."""
        samples: np.ndarray | None = segment.samples
        if self._in_memory >= self.queue_segments:
            samples = None  # a full queue spools: the samples are read back from disk later
            if not self._behind_logged:
                _LOGGER.warning(
                    "meeting %d: transcription is behind; backlog kept on disk", self.meeting.id
                )
                self._behind_logged = True
        else:
            self._in_memory += 1
        self._pending.append(
            _Pending(segment.start_s + self.offset_s, segment.end_s + self.offset_s, samples)
        )
        self._wake.set()

    def _window_size(self) -> int:
        """How many of the oldest pending segments fit one window together."""
        return self.engine.window_fill([p.end_s - p.start_s for p in self._pending])

    def _ready(self) -> bool:
        """A window is ready when full (a later segment would not fit), when capture has
        ended, or when its oldest speech has waited MAX_WAIT_S; windows packed as full as the
        file pipeline packs them score as well as it does (27.7 % WER one segment per window
        against 25.2 % packed, on the dev meeting)."""
        if not self._pending:
            return False
        if not self.capturing or self._window_size() < len(self._pending):
            return True
        return self.audio_s - self._pending[0].end_s >= MAX_WAIT_S

    def _load(self, item: _Pending) -> SpeechSegment:
        samples = item.samples
        if samples is None:
            # Spool writes go straight to the OS, so the bytes are readable before any fsync.
            samples = spool_file.read(self.spool_path, item.start_s, item.end_s)
        else:
            self._in_memory -= 1
        return SpeechSegment(item.start_s, item.end_s, samples)

    async def _transcribe(self) -> None:
        while True:
            if not self._ready():
                if not self.capturing and not self._pending:
                    return
                self._wake.clear()
                await self._wake.wait()
                continue
            # Behind (a backlog, or the meeting just stopped): one window per worker at once.
            batch = []
            for _ in range(self.engine.workers):
                if not self._ready():
                    break
                batch += [self._pending.popleft() for _ in range(self._window_size())]
            segments = [self._load(item) for item in batch]
            self._in_flight_s = sum(s.duration_s for s in segments)
            try:
                heard = await self.engine.transcribe_async(segments, self.language)
            finally:
                self._in_flight_s = 0.0
            if not self._language_stored and heard.language:
                # An "auto" meeting records the language its first words were heard in.
                self.db.set_language(self.meeting.id, heard.language)
                self._language_stored = True
            # transcribed_s is committed with the text: recovery resumes exactly after it.
            self.db.add_segments(self.meeting.id, heard.segments, batch[-1].end_s)
            if self.on_transcribed is not None:
                self.on_transcribed(heard.segments)
            self.transcribed_s = max(self.transcribed_s, batch[-1].end_s)
