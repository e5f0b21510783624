"""Transcriber: one loaded whisper.cpp context that turns speech segments into timed text."""

from __future__ import annotations

import atexit
import logging
import re
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Protocol, Sequence

import numpy as np

from .audio import SAMPLE_RATE
from .errors import UsageError
from .models import store
from .transcript import Segment

_LOGGER = logging.getLogger(__name__)

WINDOW_S = 30.0  # Whisper's fixed input window
# Silence put between packed segments so the decoder hears a pause, not a run-on sentence.
SEPARATOR_S = 0.4
_WHISPER_LOG = logging.getLogger("whisper.cpp")
_LOG_HOOK = threading.Lock()
_hooked = False


class Speech(Protocol):
    """What the Transcriber needs of a VAD segment."""

    start_s: float
    samples: np.ndarray


def _whisper():
    """Import the binding and route whisper.cpp's own log lines into logging at DEBUG."""
    global _hooked
    import _pywhispercpp as pw

    with _LOG_HOOK:
        if not _hooked:
            pw.whisper_log_set(lambda level, text: _WHISPER_LOG.debug("%s", text.rstrip()))
            # ggml logs while unloading at interpreter exit, when a Python callback can no
            # longer take the GIL (Fatal Python error, exit 134): restore the C logger first.
            atexit.register(pw.whisper_log_set, None)
            _hooked = True
    return pw


@dataclass(frozen=True)
class Piece:
    """A stretch of a packed window and where it came from in the recording."""

    window_s: float
    recording_s: float
    duration_s: float


@dataclass(frozen=True)
class Window:
    """Up to 30 s of audio built from one or more speech segments, with the map back."""

    samples: np.ndarray
    pieces: tuple[Piece, ...]

    def to_recording(self, t_s: float) -> float:
        """Map a time inside the window to a time in the recording."""
        piece = self.pieces[0]
        for candidate in self.pieces:
            if candidate.window_s <= t_s:
                piece = candidate
        return piece.recording_s + min(max(t_s - piece.window_s, 0.0), piece.duration_s)


def pack(segments: Iterable[Speech], window_s: float = WINDOW_S) -> list[Window]:
    """Pack consecutive speech segments into windows of at most window_s seconds."""
    gap = np.zeros(int(SEPARATOR_S * SAMPLE_RATE), dtype=np.float32)
    limit = int(window_s * SAMPLE_RATE)
    windows: list[Window] = []
    parts: list[np.ndarray] = []
    pieces: list[Piece] = []
    used = 0
    for segment in segments:
        samples = np.asarray(segment.samples, dtype=np.float32)[:limit]
        needed = samples.size + (gap.size if parts else 0)
        if parts and used + needed > limit:
            windows.append(Window(np.concatenate(parts), tuple(pieces)))
            parts, pieces, used = [], [], 0
            needed = samples.size
        if parts:
            parts.append(gap)
            used += gap.size
        pieces.append(Piece(used / SAMPLE_RATE, segment.start_s, samples.size / SAMPLE_RATE))
        parts.append(samples)
        used += samples.size
    if parts:
        windows.append(Window(np.concatenate(parts), tuple(pieces)))
    return windows


_REPEAT = re.compile(r"\b((?:\S+\s+){0,3}?\S+?)(?:[\s,.]+\1\b){3,}", re.IGNORECASE)


def collapse_repeats(text: str) -> str:
    """Drop a word or phrase (up to four words) repeated four or more times in a row."""
    return _REPEAT.sub(r"\1", text)


@dataclass(frozen=True)
class DecodeOptions:
    """How whisper.cpp decodes; defaults chosen for meetings on a small CPU."""

    threads: int = 2
    language: str | None = None  # None: English for .en models, detected otherwise
    beam_size: int = 1  # 1 = greedy
    no_speech_thold: float = 0.6
    logprob_thold: float = -1.0
    # Whisper's usual fallback, but it only runs when a window fails the thresholds above.
    temperature_inc: float = 0.0


class Transcriber:
    """One whisper.cpp context, loaded once and reused for every window."""

    def __init__(self, model_path: Path, options: DecodeOptions = DecodeOptions()) -> None:
        found = store.verify(model_path)  # a damaged file must never reach whisper.cpp
        self.multilingual = found.hparams.multilingual
        language = options.language or ("en" if not self.multilingual else "auto")
        if not self.multilingual and language != "en":
            raise UsageError(f"{model_path.name} is English-only; language {language!r} needs base or small")
        pw = _whisper()
        if language != "auto" and pw.whisper_lang_id(language) < 0:
            raise UsageError(f"unknown language code {language!r}")
        self.language = language
        self.model_path = model_path
        self._pw = pw
        self._ctx = pw.whisper_init_from_file_with_params(str(model_path), pw.whisper_context_default_params())
        strategy = pw.whisper_sampling_strategy
        greedy = options.beam_size <= 1
        self._params = pw.whisper_full_default_params(
            strategy.WHISPER_SAMPLING_GREEDY if greedy else strategy.WHISPER_SAMPLING_BEAM_SEARCH
        )
        params = self._params
        if not greedy:
            params.beam_search = {"beam_size": options.beam_size, "patience": -1.0}
        params.n_threads = options.threads
        params.language = language
        params.no_context = True  # no conditioning on previous text: it feeds repetition loops
        params.suppress_blank = True
        params.suppress_nst = True
        params.no_speech_thold = options.no_speech_thold
        params.logprob_thold = options.logprob_thold
        params.temperature_inc = options.temperature_inc
        params.print_progress = False
        params.print_realtime = False
        params.print_timestamps = False
        self._lock = threading.Lock()
        _LOGGER.info("loaded %s (%s, %d threads)", model_path.name, language, options.threads)

    def transcribe_window(self, samples: np.ndarray) -> list[Segment]:
        """Decode one window (at most 30 s); times are relative to the window."""
        pw, ctx = self._pw, self._ctx
        audio = np.ascontiguousarray(samples, dtype=np.float32)
        with self._lock:
            if pw.whisper_full(ctx, self._params, audio, audio.size) != 0:
                raise RuntimeError("whisper_full failed")
            out = []
            for i in range(pw.whisper_full_n_segments(ctx)):
                text = pw.whisper_full_get_segment_text(ctx, i).decode("utf-8", "replace")
                text = collapse_repeats(text.strip())
                if text:
                    t0 = pw.whisper_full_get_segment_t0(ctx, i) / 100
                    t1 = pw.whisper_full_get_segment_t1(ctx, i) / 100
                    out.append(Segment(t0, t1, text))
        return out

    def transcribe(self, segments: Sequence[Speech]) -> list[Segment]:
        """Transcribe speech segments packed into windows; times are the recording's."""
        result = []
        for window in pack(segments):
            for seg in self.transcribe_window(window.samples):
                start = window.to_recording(seg.start_s)
                end = max(window.to_recording(seg.end_s), start)
                result.append(Segment(start, end, seg.text))
        return result

    def close(self) -> None:
        """Free the whisper.cpp context."""
        if self._ctx is not None:
            self._pw.whisper_free(self._ctx)
            self._ctx = None

    def __enter__(self) -> "Transcriber":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
