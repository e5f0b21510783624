"""Transcriber: speech segments packed into windows and decoded by N whisper.cpp workers."""

from __future__ import annotations

import asyncio
import itertools
import logging
import queue
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future
from dataclasses import dataclass
from pathlib import Path
from typing import Self

import numpy as np

from appliance.engine.decoding import Decoded, DecodeOptions
from appliance.engine.whisper import Context, checked_language
from appliance.engine.windows import Speech, Window, fitting, pack, packed
from appliance.models import store
from appliance.recording.audio import SAMPLE_RATE, load
from appliance.recording.segmenter import Segmenter
from appliance.transcript import Segment, Transcript

_LOGGER = logging.getLogger(__name__)

__all__ = ["DecodeOptions", "Timing", "Transcribed", "Transcriber"]


@dataclass(frozen=True)
class Timing:
    """One window a worker decoded (time.perf_counter seconds), for benchmarks and tests."""

    worker: int
    started: float
    finished: float
    audio_s: float
    threads: int


@dataclass(frozen=True)
class Transcribed:
    """Speech transcribed: segments in the recording's times, and each window's language."""

    segments: list[Segment]
    languages: tuple[str, ...]  # per packed window, in order; "" where none was reported
    heard: tuple[bool, ...]  # per packed window: whether it gave any text

    @property
    def language(self) -> str | None:
        """The language of the first window that gave text; None if none did."""
        return next(
            (lang for lang, h in zip(self.languages, self.heard, strict=True) if h and lang), None
        )


class Transcriber:
    """N workers (threads), each with a whisper.cpp context of its own, fed from one queue.

    Windows are queued one more than there are workers ahead of the one awaited, so no worker
    idles; results are assembled in window order, so they do not depend on the number of
    workers. Blocking methods for the command line and benchmarks, transcribe_async for the
    daemon's event loop.
    """

    def __init__(
        self,
        model_path: Path,
        options: DecodeOptions = DecodeOptions(),
        workers: int = 1,
        on_decoded: Callable[[Timing], None] | None = None,
    ) -> None:
        if workers < 1:
            raise ValueError(f"workers must be 1 or more, not {workers}")
        found = store.verify(model_path)  # a damaged file must never reach whisper.cpp
        self.model_path = model_path
        self.multilingual = found.hparams.multilingual
        self.language = self.check_language(options.language)
        self.workers = workers
        self.threads = options.threads
        self._on_decoded = on_decoded
        self._contexts: list[Context] = []
        try:
            for _ in range(workers):
                self._contexts.append(Context(model_path, options))
        except BaseException:
            self._free()
            raise
        self._jobs: queue.SimpleQueue[tuple[Future[Decoded], np.ndarray, str, int] | None] = (
            queue.SimpleQueue()
        )
        self._closed = False
        self._closing = threading.Lock()
        self._threads = [
            threading.Thread(
                target=self._work, args=(i, c), name=f"whisper-worker-{i}", daemon=True
            )
            for i, c in enumerate(self._contexts)
        ]
        for thread in self._threads:
            thread.start()
        _LOGGER.info(
            "loaded %s (%s): %d workers x %d threads",
            model_path.name,
            self.language,
            workers,
            self.threads,
        )

    def check_language(self, language: str | None) -> str:
        """The language code to decode with: English for .en models, else given or detected."""
        return checked_language(self.model_path, self.multilingual, language)

    def window_fill(self, durations_s: Sequence[float]) -> int:
        """How many of the oldest speech segments (durations, oldest first) one window holds."""
        return fitting(round(d * SAMPLE_RATE) for d in durations_s)

    def submit(
        self, samples: np.ndarray, language: str | None = None, threads: int | None = None
    ) -> Future[Decoded]:
        """Queue one window (at most 30 s; do not modify it meanwhile) for the next free
        worker, decoded with `threads` threads (default: the per-worker count).

        Times in the result are the window's. The queue is not bounded here, so callers bound
        what they have in flight.
        """
        language = self.check_language(language) if language else self.language
        future: Future[Decoded] = Future()
        with self._closing:
            if self._closed:
                raise RuntimeError("the transcriber is closed")
            self._jobs.put((future, samples, language, threads or self.threads))
        return future

    def transcribe_window(
        self, samples: np.ndarray, language: str | None = None, threads: int | None = None
    ) -> list[Segment]:
        """Decode one window (at most 30 s) on the next free worker; times are the window's."""
        return self.submit(samples, language, threads).result().segments

    def transcribe(
        self,
        segments: Sequence[Speech],
        language: str | None = None,
        progress: Callable[[int, int], None] | None = None,
    ) -> Transcribed:
        """Transcribe speech segments packed into windows; times are the recording's."""
        windows = pack(segments)

        def window_done(count: int, _window: Window) -> None:
            if progress:
                progress(count, len(windows))

        return self._transcribe_windows(iter(windows), language, window_done)

    def _transcribe_windows(
        self,
        windows: Iterator[Window],
        language: str | None,
        window_done: Callable[[int, Window], None],
    ) -> Transcribed:
        """Decode windows as the iterator gives them (it may still be finding speech), in order."""
        language = self.check_language(language) if language else self.language
        # A file of one window would leave all workers but one idle: it gets all their threads.
        first = list(itertools.islice(windows, 2))
        threads = self.workers * self.threads if len(first) == 1 else self.threads
        upcoming = itertools.chain(first, windows)
        queued: deque[tuple[Window, Future[Decoded]]] = deque()
        done: list[tuple[Window, Decoded, list[tuple[Window, Future[Decoded]]]]] = []
        while True:
            while len(queued) <= self.workers and (window := next(upcoming, None)) is not None:
                queued.append((window, self.submit(window.samples, language, threads)))
            if not queued:
                break
            window, future = queued.popleft()
            decoded = future.result()
            # Greedy decoding sometimes ends a window early and skips its last stretch of
            # speech: a piece nothing was heard in gets a window of its own, so no words are lost.
            missed = [p.source for p in window.pieces if not p.heard(decoded.segments)]
            alone = []
            if missed and len(window.pieces) > 1:
                _LOGGER.debug("re-decoding %d skipped speech segments", len(missed))
                alone = [
                    (w, self.submit(w.samples, language, threads))
                    for w in (pack([s])[0] for s in missed)
                ]
            done.append((window, decoded, alone))
            window_done(len(done), window)
        result = []
        for window, decoded, alone in done:
            result += window.segments_to_recording(decoded.segments)
            for single, future in alone:
                result += single.segments_to_recording(future.result().segments)
        return Transcribed(
            sorted(result, key=lambda s: s.start_s),
            tuple(decoded.language for _, decoded, _ in done),
            tuple(bool(decoded.segments) for _, decoded, _ in done),
        )

    async def transcribe_async(
        self, segments: Sequence[Speech], language: str | None = None
    ) -> Transcribed:
        """transcribe() for an event loop: the loop goes on while the workers decode."""
        return await asyncio.to_thread(self.transcribe, segments, language)

    def transcribe_file(
        self,
        path: Path,
        segmenter: Segmenter,
        language: str | None = None,
        progress: Callable[[int, int], None] | None = None,
    ) -> Transcript:
        """Decode, segment and transcribe one audio file; progress in seconds of the file.

        Speech is found on this thread while the workers decode the windows already packed,
        so the VAD's time hides under the decoding (docs/benchmarks.md, "Where the meeting's
        CPU goes").
        """
        samples = load(path)
        language = self.check_language(language) if language else self.language
        duration_s = samples.size / SAMPLE_RATE

        def window_done(_count: int, window: Window) -> None:
            if progress:
                last = window.pieces[-1]
                heard_s = min(last.recording_s + last.duration_s, duration_s)
                progress(round(heard_s), round(duration_s))

        windows = packed(segmenter.stream(samples))
        segments = self._transcribe_windows(windows, language, window_done).segments
        if progress:
            progress(round(duration_s), round(duration_s))
        return Transcript(tuple(segments), language, duration_s)

    def log_timings(self, reset: bool = True) -> None:
        """Have whisper.cpp log every worker's time per stage since the last reset."""
        for context in self._contexts:
            context.log_timings(reset)

    def _work(self, index: int, context: Context) -> None:
        while (job := self._jobs.get()) is not None:
            future, samples, language, threads = job
            if not future.set_running_or_notify_cancel():
                continue
            started = time.perf_counter()
            try:
                result = context.decode(samples, language, threads)
            except Exception as err:  # the window fails, the worker goes on
                future.set_exception(err)
                continue
            if self._on_decoded is not None:
                finished = time.perf_counter()
                audio_s = len(samples) / SAMPLE_RATE
                self._on_decoded(Timing(index, started, finished, audio_s, threads))
            future.set_result(result)

    def close(self) -> None:
        """Finish the queued windows, stop the workers and free their contexts."""
        with self._closing:
            if self._closed:
                return
            self._closed = True
            for _ in self._threads:
                self._jobs.put(None)
        for thread in self._threads:
            thread.join()
        self._free()

    def _free(self) -> None:
        for context in self._contexts:
            context.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
