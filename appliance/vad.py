"""Cut 16 kHz audio into speech segments with webrtcvad, from a whole file or frame by frame."""

from __future__ import annotations

import logging
import math
from collections import deque
from dataclasses import dataclass, field
from typing import NamedTuple

import numpy as np
import webrtcvad

from .audio import FRAME_BYTES, FRAME_MS, FRAME_SAMPLES, SAMPLE_RATE, float_to_pcm16, pcm16_to_float
from .errors import AudioError, UsageError
from .window import WINDOW_S

_LOGGER = logging.getLogger(__name__)


# A segment that reaches max_segment_s is cut at the quietest point of its last seconds: in
# continuous speech a pause between sentences is rarely further away than this.
_SPLIT_SEARCH_S = 5.0
# Level is averaged over 150 ms when choosing that point, so the cut lands in a pause between
# words, not in the 30 ms closure of a stop consonant inside one.
_SPLIT_SMOOTH_FRAMES = 5
# webrtcvad adapts its noise model over seconds, so a step up in steady noise (a fan starting,
# room tone after a quiet spell) reads as speech for several seconds. Two guards, both from
# the level alone. First, a frame counts as voiced only if it stands _FLOOR_MARGIN_DB above a
# noise floor that drops at once to any quieter frame and otherwise rises _FLOOR_RISE_DB_PER_S:
# a 25 dB step of room tone is caught in about 1.3 s, while a vowel held 50 dB above the floor
# stays voiced for about 3 s (pauses between words pull the floor back down).
_FLOOR_MARGIN_DB = 6.0
_FLOOR_RISE_DB_PER_S = 15.0
# Second, for the frames before the floor catches up: the voiced frames of a segment of speech
# spread over tens of dB, of a held vowel still over 5 dB, of room tone under 1 dB (10th to
# 90th percentile, measured on tests/data); a segment spreading less than this is steady noise.
_MIN_SPREAD_DB = 3.0


@dataclass(frozen=True, eq=False)
class SpeechSegment:
    """One stretch of speech; seconds count from the first frame pushed, samples are 16 kHz."""

    start_s: float
    end_s: float
    samples: np.ndarray = field(repr=False)

    @property
    def duration_s(self) -> float:
        """Length in seconds."""
        return self.end_s - self.start_s


class _Frame(NamedTuple):
    """One 30 ms frame as pushed, with what the segmenter decided about it."""

    pcm: bytes
    power: float
    voiced: bool


class Segmenter:
    """Speech segments from 30 ms frames of 16 kHz PCM16, with pre-roll, hangover and a length cap.

    A segment opens at a voiced frame (reaching back pre_roll_ms) and closes once min_silence_ms
    of unvoiced frames follow, ending hangover_ms after its last voiced frame. Requiring that
    run of silence is the smoothing: a few unvoiced frames inside speech never split it. It is
    dropped if it holds fewer than min_speech_ms of voiced frames (a click, a cough) or if their
    level is steady (noise webrtcvad mistook for speech). One Segmenter serves one stream at a
    time; memory is the open segment (at most max_segment_s) and the pre-roll.
    """

    def __init__(
        self,
        # webrtcvad's 0-3: 3 rejects more noise, and more soft speech from the far end of a table.
        aggressiveness: int = 2,
        # webrtcvad fires a frame or more into a soft onset ("h", "f", "s"); 300 ms covers it.
        pre_roll_ms: int = 300,
        # Word endings (fricatives, released stops, trailing nasals) fade under webrtcvad's
        # threshold first; 450 ms keeps them without adding much silence for Whisper.
        hangover_ms: int = 450,
        # Longer than most breath and hesitation pauses inside a sentence, so a segment holds
        # whole sentences and Whisper hears each word in context.
        min_silence_ms: int = 900,
        # Voiced frames a segment needs (8 frames); door clicks and chair knocks are shorter,
        # a short "yes" or "no" is not.
        min_speech_ms: int = 240,
        # Under a window (appliance.window.WINDOW_S, 24.32 s) with 2 s to spare, so no segment
        # meets its edge; a longer one would be cut off there.
        max_segment_s: float = 22.0,
    ) -> None:
        if aggressiveness not in range(4):
            raise UsageError(f"aggressiveness must be 0, 1, 2 or 3, got {aggressiveness!r}")
        lengths = {
            "pre_roll_ms": pre_roll_ms,
            "hangover_ms": hangover_ms,
            "min_speech_ms": min_speech_ms,
        }
        for name, value in lengths.items():
            if value < 0:
                raise UsageError(f"{name} must not be negative, got {value}")
        if min_silence_ms < FRAME_MS:
            raise UsageError(f"min_silence_ms must be at least {FRAME_MS}, got {min_silence_ms}")
        if hangover_ms > min_silence_ms:
            raise UsageError(
                f"hangover_ms ({hangover_ms}) must not exceed min_silence_ms ({min_silence_ms})"
            )
        if not 0 < max_segment_s <= WINDOW_S:
            limit = f"above 0 and at most {WINDOW_S:g}"
            raise UsageError(f"max_segment_s must be {limit}, got {max_segment_s}")
        self.aggressiveness = aggressiveness
        self._pre_roll = _frames(pre_roll_ms)
        self._hangover = _frames(hangover_ms)
        self._min_silence = _frames(min_silence_ms)
        self._min_speech = _frames(min_speech_ms)
        self._max_frames = int(max_segment_s * 1000) // FRAME_MS
        if 2 * (self._pre_roll + 1) > self._max_frames:
            raise UsageError(
                f"pre_roll_ms ({pre_roll_ms}) must be under half of max_segment_s ({max_segment_s})"
            )
        self._search = min(_frames(_SPLIT_SEARCH_S * 1000), self._max_frames // 2)
        self._reset()

    def _reset(self) -> None:
        """Forget the stream, including webrtcvad's noise model."""
        self._vad = webrtcvad.Vad(self.aggressiveness)
        self._index = 0
        self._ring: deque[_Frame] = deque(maxlen=self._pre_roll)
        self._floor_db = np.inf
        self._open: list[_Frame] = []
        self._start = 0
        self._last_voiced = 0
        self._continued = False

    def push(self, frame: bytes) -> list[SpeechSegment]:
        """Take the next 30 ms frame (960 bytes of 16 kHz PCM16); return segments it completed."""
        if len(frame) != FRAME_BYTES:
            raise AudioError(f"a frame must be {FRAME_BYTES} bytes of PCM16, got {len(frame)}")
        frame = bytes(frame)
        index = self._index
        self._index += 1
        pcm = np.frombuffer(frame, dtype="<i2").astype(np.float64)
        power = float(pcm @ pcm) / (FRAME_SAMPLES * 32768.0**2)
        level_db = 10 * math.log10(power + 1e-10)
        self._floor_db = min(level_db, self._floor_db + _FLOOR_RISE_DB_PER_S * FRAME_MS / 1000)
        above_floor = level_db >= self._floor_db + _FLOOR_MARGIN_DB
        # webrtcvad sees every frame, so its noise model follows the stream.
        record = _Frame(frame, power, self._vad.is_speech(frame, SAMPLE_RATE) and above_floor)
        if not self._open:
            if record.voiced:
                self._open = [*self._ring, record]
                self._start = index - len(self._ring)
                self._last_voiced = index
                self._continued = False
                self._ring.clear()
            else:
                self._ring.append(record)
            return []
        self._open.append(record)
        if record.voiced:
            self._last_voiced = index
        elif index - self._last_voiced >= self._min_silence:
            return self._close()
        if len(self._open) >= self._max_frames:
            return self._split()
        return []

    def flush(self) -> list[SpeechSegment]:
        """End the stream: close the open segment (hangover cut at the last frame), start afresh."""
        completed = self._close() if self._open else []
        self._reset()
        return completed

    def segments(self, samples: np.ndarray) -> list[SpeechSegment]:
        """Every segment of a whole recording (float32 16 kHz), through the same path as push()."""
        if self._index:
            raise UsageError(
                "segments() needs a Segmenter with no stream in progress; call flush() first"
            )
        samples = np.asarray(samples, dtype=np.float32)
        if samples.ndim != 1:
            raise AudioError(f"samples must be mono (one dimension), got shape {samples.shape}")
        pcm = memoryview(float_to_pcm16(samples))
        completed: list[SpeechSegment] = []
        whole = len(pcm) - len(pcm) % FRAME_BYTES
        for offset in range(0, whole, FRAME_BYTES):
            completed += self.push(pcm[offset : offset + FRAME_BYTES])
        if whole < len(pcm):
            completed += self.push(bytes(pcm[whole:]).ljust(FRAME_BYTES, b"\0"))
        completed += self.flush()
        return [_clamp(segment, samples.size) for segment in completed]

    def _close(self) -> list[SpeechSegment]:
        """End the open segment hangover frames after its last voiced one; the rest is pre-roll."""
        end = max(0, min(self._last_voiced + 1 + self._hangover - self._start, len(self._open)))
        completed = self._emit(self._open[:end])
        self._ring.extend(self._open[end:])
        self._open = []
        return completed

    def _split(self) -> list[SpeechSegment]:
        """Cut a full-length segment at the quietest point of its last seconds; speech goes on."""
        tail = np.array([frame.power for frame in self._open[-self._search :]])
        smooth = np.convolve(
            tail, np.ones(_SPLIT_SMOOTH_FRAMES) / _SPLIT_SMOOTH_FRAMES, mode="valid"
        )
        cut = len(self._open) - self._search + int(np.argmin(smooth)) + _SPLIT_SMOOTH_FRAMES // 2
        completed = self._emit(self._open[:cut])
        self._open = self._open[cut:]
        self._start += cut
        self._continued = True
        return completed

    def _emit(self, frames: list[_Frame]) -> list[SpeechSegment]:
        """The segment these frames make, or nothing if they are a click or steady noise."""
        voiced = np.array([frame.power for frame in frames if frame.voiced])
        start_s = self._start * FRAME_MS / 1000
        end_s = (self._start + len(frames)) * FRAME_MS / 1000
        if not voiced.size:
            return []
        # The tail of a split segment is speech already confirmed, however short.
        if voiced.size < self._min_speech and not self._continued:
            _LOGGER.debug(
                "dropped %.2f-%.2f s: %d voiced frames is a click", start_s, end_s, voiced.size
            )
            return []
        if voiced.size >= self._min_speech:
            low, high = np.percentile(voiced, [10, 90])
            spread_db = 10 * np.log10((high + 1e-12) / (low + 1e-12))
            if spread_db < _MIN_SPREAD_DB:
                _LOGGER.debug(
                    "dropped %.2f-%.2f s: level spread %.1f dB is steady noise",
                    start_s,
                    end_s,
                    spread_db,
                )
                return []
        samples = pcm16_to_float(b"".join(frame.pcm for frame in frames))
        return [SpeechSegment(start_s, end_s, samples)]


def _frames(ms: float) -> int:
    """Whole frames covering at least ms milliseconds."""
    return -int(-ms // FRAME_MS)


def _clamp(segment: SpeechSegment, size: int) -> SpeechSegment:
    """Trim a segment that runs into the zero padding after a recording's last partial frame."""
    end_s = size / SAMPLE_RATE
    if segment.end_s <= end_s:
        return segment
    return SpeechSegment(
        segment.start_s, end_s, segment.samples[: size - round(segment.start_s * SAMPLE_RATE)]
    )
