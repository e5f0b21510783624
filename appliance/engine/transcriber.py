"""Transcriber: one loaded whisper.cpp context that turns speech segments into timed text."""

from __future__ import annotations

import atexit
import functools
import logging
import re
import threading
from collections import deque
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import Future
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, Self

import numpy as np

from appliance.engine.windows import WINDOW_S, set_window_params
from appliance.errors import CorruptModelError, UsageError
from appliance.models import store
from appliance.recording.audio import SAMPLE_RATE, load
from appliance.recording.segmenter import Segmenter
from appliance.transcript import Segment, Transcript

_LOGGER = logging.getLogger(__name__)

# Silence put between packed segments so the decoder hears a pause, not a run-on sentence.
SEPARATOR_S = 0.4
# The level each packed segment is brought to: close-talk speech (-20 dBFS RMS), by at most
# +50 dB (a speaker at -70 dBFS), with peaks kept under full scale.
SPEECH_RMS = 10 ** (-20 / 20)
_MAX_GAIN = 10 ** (50 / 20)
_MAX_PEAK = 0.95
_WHISPER_LOG = logging.getLogger("whisper.cpp")
_LOG_HOOK = threading.Lock()
_hooked = False
_GGML_LOG_ERROR = 4  # enum ggml_log_level
_LOAD = threading.Lock()  # one model load at a time, so its error lines are its own
_load_errors: list[str] | None = None  # collecting only while a load runs


class Speech(Protocol):
    """What the Transcriber needs of a VAD segment."""

    start_s: float
    samples: np.ndarray


def _log(level: int, text: str) -> None:
    if level == _GGML_LOG_ERROR and _load_errors is not None:
        _load_errors.append(text.strip())
    _WHISPER_LOG.debug("%s", text.rstrip())


def _whisper():
    """Import the binding and route whisper.cpp's own log lines into logging at DEBUG."""
    global _hooked
    import _pywhispercpp as pw

    with _LOG_HOOK:
        if not _hooked:
            pw.whisper_log_set(_log)
            # ggml logs while unloading at interpreter exit, when a Python callback can no
            # longer take the GIL (Fatal Python error, exit 134): restore the C logger first.
            atexit.register(pw.whisper_log_set, None)
            _hooked = True
    return pw


def load_context(model_path: Path, load: Callable[[], Any]) -> Any:
    """Run whisper.cpp's model load; CorruptModelError with its reason if it failed.

    pywhispercpp hands back a context object even when whisper.cpp returned NULL, so a failed
    load is told by the error line whisper.cpp logs, as well as by a NULL from ctypes.
    """
    global _load_errors
    with _LOAD:
        _load_errors = errors = []
        try:
            context = load()
        finally:
            _load_errors = None
    if not context or errors:
        reason = next((e for e in errors if "failed to load model" not in e), "") or "see the log"
        raise CorruptModelError(f"{model_path}: whisper.cpp could not load the model: {reason}")
    return context


@dataclass(frozen=True)
class Piece:
    """A stretch of a packed window and where it came from in the recording."""

    window_s: float
    recording_s: float
    duration_s: float
    source: Speech

    def heard(self, segments: Sequence[Segment]) -> bool:
        """Whether any decoded segment (window times) overlaps this piece."""
        end = self.window_s + self.duration_s
        return any(s.start_s < end and s.end_s > self.window_s for s in segments)


@dataclass(frozen=True)
class Window:
    """Up to WINDOW_S of audio built from one or more speech segments, with the map back."""

    samples: np.ndarray
    pieces: tuple[Piece, ...]

    def to_recording(self, t_s: float) -> float:
        """Map a time inside the window to a time in the recording."""
        piece = self.pieces[0]
        for candidate in self.pieces:
            if candidate.window_s <= t_s:
                piece = candidate
        return piece.recording_s + min(max(t_s - piece.window_s, 0.0), piece.duration_s)


def level(samples: np.ndarray) -> np.ndarray:
    """Samples brought to SPEECH_RMS (at most +MAX_GAIN_DB, peaks under full scale).

    Whisper's log-mel input is not scale-free (it is clamped and offset in absolute terms), so
    a speaker far from the microphone reaches the model out of the range it was trained on,
    and one packed beside a loud speaker is heard under them.
    """
    samples = np.asarray(samples, dtype=np.float32)
    rms = float(np.sqrt(np.mean(np.square(samples, dtype=np.float64)))) if samples.size else 0.0
    peak = float(np.max(np.abs(samples))) if samples.size else 0.0
    if rms <= 0.0:
        return samples
    gain = min(SPEECH_RMS / rms, _MAX_GAIN, _MAX_PEAK / peak)
    return samples * np.float32(gain)


def pack(segments: Iterable[Speech], window_s: float = WINDOW_S) -> list[Window]:
    """Pack consecutive speech segments, each levelled, into windows of at most window_s s."""
    gap = np.zeros(int(SEPARATOR_S * SAMPLE_RATE), dtype=np.float32)
    limit = int(window_s * SAMPLE_RATE)
    windows: list[Window] = []
    parts: list[np.ndarray] = []
    pieces: list[Piece] = []
    used = 0
    for segment in segments:
        samples = level(np.asarray(segment.samples, dtype=np.float32)[:limit])
        needed = samples.size + (gap.size if parts else 0)
        if parts and used + needed > limit:
            windows.append(Window(np.concatenate(parts), tuple(pieces)))
            parts, pieces, used = [], [], 0
        if parts:
            parts.append(gap)
            used += gap.size
        pieces.append(
            Piece(used / SAMPLE_RATE, segment.start_s, samples.size / SAMPLE_RATE, segment)
        )
        parts.append(samples)
        used += samples.size
    if parts:
        windows.append(Window(np.concatenate(parts), tuple(pieces)))
    return windows


# A unit of 1-12 characters, within a word, repeated five or more times ("a-a-a-a-a-a").
_CHAR_LOOP = re.compile(r"(\S{1,12}?)\1{4,}")
_MAX_PHRASE = 10  # words in the longest repeated phrase collapsed
_MAX_REPEATS = 2  # times a phrase may follow itself before the rest is a loop


def _word_key(word: str) -> str:
    return re.sub(r"\W", "", word).lower()


def collapse_repeats(text: str) -> str:
    """Cut decoder loops: a phrase of up to ten words said more than twice in a row is kept twice."""
    text = _CHAR_LOOP.sub(r"\1", text)
    words = text.split()
    keys = [_word_key(w) for w in words]
    out: list[int] = []  # indexes of kept words
    i = 0
    while i < len(words):
        skipped = False
        for n in range(1, _MAX_PHRASE + 1):
            if len(out) < n * _MAX_REPEATS or not keys[i]:
                continue
            phrase = [keys[j] for j in out[-n:]]
            previous = [keys[j] for j in out[-n * _MAX_REPEATS : -n]]
            if keys[i : i + n] == phrase and previous == phrase * (_MAX_REPEATS - 1):
                i += n
                skipped = True
                break
        if not skipped:
            out.append(i)
            i += 1
    return " ".join(words[j] for j in out)


def decoded_segments(rows: Iterable[tuple[int, int, bytes]]) -> list[Segment]:
    """Segments from whisper.cpp's (t0, t1 in 10 ms ticks, UTF-8 text) rows, loops cut."""
    out = []
    for t0, t1, raw in rows:
        text = collapse_repeats(raw.decode("utf-8", "replace").strip())
        if text:
            out.append(Segment(t0 / 100, t1 / 100, text))
    return out


@dataclass(frozen=True)
class DecodeOptions:
    """How whisper.cpp decodes; defaults chosen for meetings on a small CPU."""

    threads: int = 2
    language: str | None = None  # None: English for .en models, detected otherwise
    beam_size: int = 1  # 1 = greedy
    no_speech_thold: float = 0.6
    logprob_thold: float = -1.0
    # No sampled fallback by default: on the English dev clips it cost 0.66 WER points against
    # pure greedy (35.96 %, the same as faster-whisper); loops are cut by collapse_repeats.
    # When set, only a window failing the thresholds above is re-decoded, one candidate each.
    temperature_inc: float = 0.0
    # Names and terms of the room ([room] vocabulary), given to the decoder as its prompt.
    prompt: str = ""

    def whisper_params(self) -> dict[str, Any]:
        """The whisper_full_params fields these options set, by name (nested structs as dicts).

        The one list for every way the appliance calls whisper.cpp (the binding's object here,
        the ctypes struct of appliance.engine.workers), so their output cannot drift apart.
        """
        if self.beam_size <= 1:
            search: dict[str, Any] = {"greedy": {"best_of": 1}}
        else:
            search = {"beam_search": {"beam_size": self.beam_size, "patience": -1.0}}
        return {
            **search,
            "n_threads": self.threads,
            "no_context": True,  # no conditioning on previous text: it feeds repetition loops
            "suppress_blank": True,
            "suppress_nst": True,
            "no_speech_thold": self.no_speech_thold,
            "logprob_thold": self.logprob_thold,
            "temperature_inc": self.temperature_inc,
            "print_progress": False,
            "print_realtime": False,
            "print_timestamps": False,
            # Every window's prompt: with no_context it is all the decoder is given before.
            **({"initial_prompt": self.prompt} if self.prompt else {}),
        }


def checked_language(model_path: Path, multilingual: bool, language: str | None) -> str:
    """The language code to decode with: English for .en models, else given or detected."""
    language = language or ("auto" if multilingual else "en")
    if not multilingual and language != "en":
        raise UsageError(
            f"{model_path.name} is English-only; language {language!r} needs base or small"
        )
    if language != "auto" and _whisper().whisper_lang_id(language) < 0:
        raise UsageError(f"unknown language code {language!r}")
    return language


def _to_recording(window: Window, decoded: list[Segment]) -> list[Segment]:
    out = []
    for seg in decoded:
        start = window.to_recording(seg.start_s)
        out.append(Segment(start, max(window.to_recording(seg.end_s), start), seg.text))
    return out


def transcribe_windows(
    windows: Sequence[Window],
    submit: Callable[[np.ndarray, str], Future[list[Segment]]],
    language: str,
    progress: Callable[[int, int], None] | None = None,
    ahead: int = 0,
) -> list[Segment]:
    """Decode packed windows through submit; times are the recording's.

    submit either decodes at once (one context) or queues the window for a pool of workers;
    ahead is how many more windows are submitted before the oldest one's result is awaited.
    The result is assembled in window order whatever order decodes finish in, so it does not
    depend on ahead or on the number of workers.
    """
    queued: deque[tuple[Window, Future[list[Segment]]]] = deque()
    upcoming = iter(windows)
    decoded_windows = []
    for done in range(1, len(windows) + 1):
        while len(queued) <= ahead and (window := next(upcoming, None)) is not None:
            queued.append((window, submit(window.samples, language)))
        window, future = queued.popleft()
        decoded = future.result()
        # Greedy decoding sometimes ends a window early and skips its last stretch of speech:
        # a piece nothing was heard in gets a window of its own, so no words are lost.
        missed = [p.source for p in window.pieces if not p.heard(decoded)]
        alone = []
        if missed and len(window.pieces) > 1:
            _LOGGER.debug("re-decoding %d skipped speech segments", len(missed))
            alone = [(w, submit(w.samples, language)) for w in (pack([s])[0] for s in missed)]
        decoded_windows.append((window, decoded, alone))
        if progress:
            progress(done, len(windows))
    result = []
    for window, decoded, alone in decoded_windows:
        result += _to_recording(window, decoded)
        for single, future in alone:
            result += _to_recording(single, future.result())
    return sorted(result, key=lambda s: s.start_s)


class WindowTranscriber:
    """What Transcriber and TranscriberPool share: the model's language rules, and speech
    packed into windows that the subclass's _submit_window decodes, _ahead of them in flight."""

    model_path: Path
    multilingual: bool
    language: str
    _ahead = 0
    _alone_threads: int | None = None  # threads for a file of one window, if not the usual

    def _open(self, model_path: Path, options: DecodeOptions) -> None:
        found = store.verify(model_path)  # a damaged file must never reach whisper.cpp
        self.model_path = model_path
        self.multilingual = found.hparams.multilingual
        self.language = self.check_language(options.language)

    def _submit_window(self, samples: np.ndarray, language: str) -> Future[list[Segment]]:
        raise NotImplementedError

    def close(self) -> None:
        raise NotImplementedError

    def check_language(self, language: str | None) -> str:
        """The language code to decode with: English for .en models, else given or detected."""
        return checked_language(self.model_path, self.multilingual, language)

    def transcribe(
        self,
        segments: Sequence[Speech],
        language: str | None = None,
        progress: Callable[[int, int], None] | None = None,
    ) -> list[Segment]:
        """Transcribe speech segments packed into windows; times are the recording's."""
        language = self.check_language(language) if language else self.language
        windows = pack(segments)
        submit = self._submit_window
        if len(windows) == 1 and self._alone_threads:
            submit = functools.partial(submit, threads=self._alone_threads)
        return transcribe_windows(windows, submit, language, progress, ahead=self._ahead)

    def transcribe_file(
        self,
        path: Path,
        segmenter: Segmenter,
        language: str | None = None,
        progress: Callable[[int, int], None] | None = None,
    ) -> Transcript:
        """Decode, segment and transcribe one audio file; progress in seconds of the file."""
        samples = load(path)
        language = self.check_language(language) if language else self.language
        duration_s = samples.size / SAMPLE_RATE
        speech = segmenter.segments(samples)

        def windows_done(done: int, total: int) -> None:
            if progress:
                progress(round(duration_s * done / total), round(duration_s))

        segments = self.transcribe(speech, language, windows_done)
        return Transcript(tuple(segments), language, duration_s)

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class Transcriber(WindowTranscriber):
    """One whisper.cpp context, loaded once and reused for every window; each window is
    decoded when its turn comes, then its skipped pieces (_ahead 0)."""

    def __init__(self, model_path: Path, options: DecodeOptions = DecodeOptions()) -> None:
        self._pw = pw = _whisper()
        self._open(model_path, options)
        self.threads = options.threads
        context = pw.whisper_context_default_params()
        # Flash attention: measured 1.1x (q8_0) to 2.8x (q5_1) faster encoding on x86 here.
        context.flash_attn = True
        self._ctx = load_context(
            model_path, lambda: pw.whisper_init_from_file_with_params(str(model_path), context)
        )
        strategy = pw.whisper_sampling_strategy
        self._params = params = pw.whisper_full_default_params(
            strategy.WHISPER_SAMPLING_GREEDY
            if options.beam_size <= 1
            else strategy.WHISPER_SAMPLING_BEAM_SEARCH
        )
        for name, value in options.whisper_params().items():
            setattr(params, name, value)
        params.language = self.language
        self._lock = threading.Lock()
        _LOGGER.info("loaded %s (%s, %d threads)", model_path.name, self.language, options.threads)

    def transcribe_window(
        self, samples: np.ndarray, language: str | None = None, threads: int | None = None
    ) -> list[Segment]:
        """Decode one window (at most 30 s; pack() makes them WINDOW_S at most) with `threads`
        threads (default: as loaded); times are relative to the window."""
        pw, ctx = self._pw, self._ctx
        audio = np.ascontiguousarray(samples, dtype=np.float32)
        with self._lock:
            self._params.language = language or self.language
            set_window_params(self._params, threads or self.threads)
            if pw.whisper_full(ctx, self._params, audio, audio.size) != 0:
                raise RuntimeError("whisper_full failed")
            return decoded_segments(
                (
                    pw.whisper_full_get_segment_t0(ctx, i),
                    pw.whisper_full_get_segment_t1(ctx, i),
                    pw.whisper_full_get_segment_text(ctx, i),
                )
                for i in range(pw.whisper_full_n_segments(ctx))
            )

    def _submit_window(self, samples: np.ndarray, language: str) -> Future[list[Segment]]:
        """transcribe_window as an already finished Future, for transcribe_windows."""
        future: Future[list[Segment]] = Future()
        try:
            future.set_result(self.transcribe_window(samples, language))
        except Exception as err:
            future.set_exception(err)
        return future

    def log_timings(self, reset: bool = True) -> None:
        """Have whisper.cpp log its time per stage (mel, encode, decode) since the last reset."""
        self._pw.whisper_print_timings(self._ctx)
        if reset:
            self._pw.whisper_reset_timings(self._ctx)

    def close(self) -> None:
        """Free the whisper.cpp context."""
        if self._ctx is not None:
            self._pw.whisper_free(self._ctx)
            self._ctx = None
