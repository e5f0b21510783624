"""Cut 16 kHz audio into speech segments with Silero VAD, from a whole file or chunk by chunk.

The front end is recall-first: it only has to find where nobody speaks, so it errs on the side
of sending too much, and Whisper's own no-speech probability decides the rest. It hears a
speaker at -70 dBFS as well as one at -20: each frame is scored twice, as recorded and brought
up to speech level by a gain that follows the last second, and the higher score counts. The
raw score keeps the contrast a quiet onset or a whisper has against the room; the gained one
finds the far speaker whose every frame is under what the model was trained to call speech.
"""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple

import numpy as np

from appliance import paths
from appliance.errors import AudioError, UsageError
from appliance.models import silero as silero_weights
from appliance.recording.audio import SAMPLE_RATE, float_to_pcm16, pcm16_to_float
from appliance.recording.silero import BLOCK_FRAMES, FRAME_SAMPLES, SileroModel, load

_LOGGER = logging.getLogger(__name__)

FRAME_S = FRAME_SAMPLES / SAMPLE_RATE  # 32 ms
# The longest segment: one Whisper window of 30 s, as it was trained on.
MAX_SEGMENT_S = 30.0
# The gain path: frames are brought to -25 dBFS (speech at a close microphone) by at most
# +45 dB, from the mean level of the last second; a speaker at -70 dBFS gets all of it.
_TARGET_RMS = 10 ** (-25 / 20)
_MAX_GAIN = 10 ** (45 / 20)
_GAIN_FRAMES = round(1.0 / FRAME_S)
# The score must fall this far under threshold before speech counts as ended (as Silero's own
# speech finder does), so a word's fading end is not cut.
_HYSTERESIS = 0.15
# A segment that reaches max_segment_s is cut where the score is lowest in its last seconds.
_SPLIT_SEARCH_S = 5.0
_SPLIT_SMOOTH_FRAMES = 5
# stream() pushes a recording this much at a time (about 33 s): whole Silero calls, so the
# model sees the blocks one push of the whole recording would give it.
_STREAM_FRAMES = 16 * BLOCK_FRAMES


@dataclass(frozen=True, eq=False)
class SpeechSegment:
    """One stretch of speech; seconds count from the first sample pushed, samples are 16 kHz."""

    start_s: float
    end_s: float
    samples: np.ndarray = field(repr=False)

    @property
    def duration_s(self) -> float:
        """Length in seconds."""
        return self.end_s - self.start_s


class SpeechDetector:
    """Speech probability per 32 ms frame of one stream, whatever the speaker's level."""

    def __init__(self, model: SileroModel) -> None:
        self._model = model
        self._raw = model.new_state()
        self._gained = model.new_state()
        self._energies = np.zeros(0)

    def probabilities(self, frames: np.ndarray) -> np.ndarray:
        """Score the next frames (n x 512 float32) of the stream."""
        energy = np.mean(frames.astype(np.float64) ** 2, axis=1)
        history = np.concatenate([self._energies, energy])
        total = np.concatenate([[0.0], np.cumsum(history)])
        ends = np.arange(self._energies.size, history.size) + 1
        starts = np.maximum(0, ends - _GAIN_FRAMES)
        level = np.sqrt((total[ends] - total[starts]) / (ends - starts)) + 1e-9
        gain = np.clip(_TARGET_RMS / level, 1.0, _MAX_GAIN).astype(np.float32)
        self._energies = history[-(_GAIN_FRAMES - 1) :]
        raw = self._model.probabilities(frames, self._raw)
        gained = self._model.probabilities(frames * gain[:, None], self._gained)
        return np.maximum(raw, gained)


class _Frame(NamedTuple):
    samples: np.ndarray
    probability: float


def default_model() -> SileroModel:
    """Silero VAD from the default models folder."""
    return load(silero_weights.path(paths.models_dir()))


class Segmenter:
    """Speech segments from 16 kHz PCM16, padded, merged across short pauses, at most a window.

    A segment opens at a frame whose score reaches threshold (reaching back pad_ms) and closes
    once min_silence_ms of frames score under threshold less the hysteresis, ending pad_ms after
    the last one above it. So a pause shorter than min_silence_ms never splits speech: Whisper
    hears it as the pause it was. A segment with under min_speech_ms of speech is dropped (a
    click, a knock). One Segmenter serves one stream at a time; memory is the open segment (at
    most max_segment_s) and the padding.
    """

    def __init__(
        self,
        model: SileroModel | Path | None = None,
        # Under Silero's own 0.5: recall first. Chosen on the close-talk, disfluent and AMI clip
        # sets (405 errors at 0.35, 412 at 0.5), confirmed on the quiet speakers (7 and 7) and
        # both dev meetings (93 and 98, 191 and 192); README, "The front end".
        threshold: float = 0.35,
        # Silero scores a soft onset ("h", "f") and a fading end late; 400 ms keeps both.
        pad_ms: int = 400,
        # Longer than the pauses of one speaker thinking or of a turn changing hands, so
        # continuous talk stays in one piece and Whisper hears each word in context.
        min_silence_ms: int = 2000,
        # A short "yes" or "no" is longer; a door click or a chair knock is not.
        min_speech_ms: int = 250,
        max_segment_s: float = MAX_SEGMENT_S,
    ) -> None:
        if not 0.0 < threshold < 1.0:
            raise UsageError(f"threshold must be between 0 and 1, got {threshold!r}")
        for name, value in {"pad_ms": pad_ms, "min_speech_ms": min_speech_ms}.items():
            if value < 0:
                raise UsageError(f"{name} must not be negative, got {value}")
        if min_silence_ms < FRAME_S * 1000:
            raise UsageError(f"min_silence_ms must be at least 32, got {min_silence_ms}")
        if pad_ms > min_silence_ms:
            raise UsageError(f"pad_ms ({pad_ms}) must not exceed min_silence_ms ({min_silence_ms})")
        if not 0 < max_segment_s <= MAX_SEGMENT_S:
            raise UsageError(
                f"max_segment_s must be above 0 and at most {MAX_SEGMENT_S:g}, got {max_segment_s}"
            )
        self._model = (
            model
            if isinstance(model, SileroModel)
            else (load(model) if model is not None else default_model())
        )
        self.threshold = threshold
        self._pad = _frames(pad_ms / 1000)
        self._min_silence = _frames(min_silence_ms / 1000)
        self._min_speech = _frames(min_speech_ms / 1000)
        self._max_frames = int(max_segment_s / FRAME_S)
        if 2 * (self._pad + 1) > self._max_frames:
            raise UsageError(
                f"pad_ms ({pad_ms}) must be under half of max_segment_s ({max_segment_s})"
            )
        self._search = min(_frames(_SPLIT_SEARCH_S), self._max_frames // 2)
        self._reset()

    def _reset(self) -> None:
        """Forget the stream, including the detector's state."""
        self._detector = SpeechDetector(self._model)
        self._pending = b""
        self._index = 0
        self._active = False
        self._ring: deque[_Frame] = deque(maxlen=self._pad)
        self._open: list[_Frame] = []
        self._start = 0
        self._last_active = 0
        self._speech = 0
        self._continued = False

    def push(self, pcm: bytes) -> list[SpeechSegment]:
        """Take the next chunk of 16 kHz PCM16 (any even length); return segments it completed."""
        if len(pcm) % 2:
            raise AudioError(f"PCM16 needs an even number of bytes, got {len(pcm)}")
        self._pending += bytes(pcm)
        whole = len(self._pending) // (2 * FRAME_SAMPLES) * 2 * FRAME_SAMPLES
        if not whole:
            return []
        samples = pcm16_to_float(self._pending[:whole])
        self._pending = self._pending[whole:]
        return self._score(samples.reshape(-1, FRAME_SAMPLES))

    def flush(self) -> list[SpeechSegment]:
        """End the stream: score what is left (zero-padded), close the open segment, start afresh."""
        completed = []
        if self._pending:
            completed += self.push(b"\0" * (2 * FRAME_SAMPLES - len(self._pending)))
        if self._open:
            completed += self._close()
        self._reset()
        return completed

    def segments(self, samples: np.ndarray) -> list[SpeechSegment]:
        """Every segment of a whole recording (float32 16 kHz), through the same path as push()."""
        return list(self.stream(samples))

    def stream(self, samples: np.ndarray) -> Iterator[SpeechSegment]:
        """segments() one by one as the recording is scored, so a consumer can start on the
        first while the rest is still being found."""
        if self._index or self._pending:
            raise UsageError(
                "segments() needs a Segmenter with no stream in progress; call flush() first"
            )
        samples = np.asarray(samples, dtype=np.float32)
        if samples.ndim != 1:
            raise AudioError(f"samples must be mono (one dimension), got shape {samples.shape}")
        step = _STREAM_FRAMES * FRAME_SAMPLES
        finished = False
        try:
            for first in range(0, samples.size, step):
                for segment in self.push(float_to_pcm16(samples[first : first + step])):
                    yield _clamp(segment, samples.size)
            for segment in self.flush():
                yield _clamp(segment, samples.size)
            finished = True
        finally:
            if not finished:  # the consumer stopped early: the next stream starts afresh
                self._reset()

    def _score(self, frames: np.ndarray) -> list[SpeechSegment]:
        completed = []
        for samples, probability in zip(frames, self._detector.probabilities(frames), strict=True):
            completed += self._step(samples, float(probability))
        return completed

    def _step(self, samples: np.ndarray, probability: float) -> list[SpeechSegment]:
        index = self._index
        self._index += 1
        floor = self.threshold - _HYSTERESIS if self._active else self.threshold
        self._active = probability >= floor
        frame = _Frame(samples, probability)
        if not self._open:
            if self._active:
                self._open = [*self._ring, frame]
                self._start = index - len(self._ring)
                self._last_active = index
                self._speech = 1
                self._continued = False
                self._ring.clear()
            else:
                self._ring.append(frame)
            return []
        self._open.append(frame)
        if self._active:
            self._last_active = index
            self._speech += 1
        elif index - self._last_active >= self._min_silence:
            return self._close()
        if len(self._open) >= self._max_frames:
            return self._split()
        return []

    def _close(self) -> list[SpeechSegment]:
        """End the open segment pad frames after its last speech; the rest may pad the next."""
        end = max(0, min(self._last_active + 1 + self._pad - self._start, len(self._open)))
        completed = self._emit(self._open[:end])
        self._ring.extend(self._open[end:])
        self._open = []
        return completed

    def _split(self) -> list[SpeechSegment]:
        """Cut a full-length segment where speech is least likely in its last seconds."""
        tail = np.array([frame.probability for frame in self._open[-self._search :]])
        kernel = np.ones(_SPLIT_SMOOTH_FRAMES) / _SPLIT_SMOOTH_FRAMES
        smooth = np.convolve(tail, kernel, mode="valid")
        cut = len(self._open) - self._search + int(np.argmin(smooth)) + _SPLIT_SMOOTH_FRAMES // 2
        completed = self._emit(self._open[:cut])
        self._open = self._open[cut:]
        self._start += cut
        self._continued = True
        return completed

    def _emit(self, frames: list[_Frame]) -> list[SpeechSegment]:
        """The segment these frames make, or nothing if too little of it is speech."""
        start_s = self._start * FRAME_S
        end_s = (self._start + len(frames)) * FRAME_S
        if not frames:  # a split cut after the last speech, and none came since
            return []
        # The tail of a split segment is speech already confirmed, however short.
        if self._speech < self._min_speech and not self._continued:
            _LOGGER.debug("dropped %.2f-%.2f s: %d speech frames", start_s, end_s, self._speech)
            return []
        samples = np.concatenate([frame.samples for frame in frames])
        return [SpeechSegment(start_s, end_s, samples)]


def _frames(seconds: float) -> int:
    """Whole frames covering at least this many seconds."""
    return -int(-round(seconds * 1000) // round(FRAME_S * 1000))


def _clamp(segment: SpeechSegment, size: int) -> SpeechSegment:
    """Trim a segment that runs into the zero padding after a recording's last partial frame."""
    end_s = size / SAMPLE_RATE
    if segment.end_s <= end_s:
        return segment
    return SpeechSegment(
        segment.start_s, end_s, segment.samples[: size - round(segment.start_s * SAMPLE_RATE)]
    )
