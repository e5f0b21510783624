"""Speech packed into windows: how much audio one whisper.cpp pass hears, and the map back.

A window is up to 30 s, over all 1500 encoder positions. whisper.cpp can encode fewer
positions (audio_ctx) for a shorter window, which is faster, but it costs words on short
windows of quiet and spontaneous speech (tiny.en on held-out clips: 16.5 % WER at 512
positions, 7.5 % at 768, 6.1 % at 1500; README, "The front end"). So every window gets the
1500 positions Whisper was trained on. Every window then also writes the same rows of the
encoder's output, so whisper.cpp's flash attention, which reads that output padded to a
multiple of 256 positions without a mask, never reads rows a window of another length left
behind.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np

from appliance.recording.audio import SAMPLE_RATE
from appliance.transcript import Segment

WINDOW_S = 30.0  # Whisper's window: 1500 positions of 20 ms
# Silence put between packed segments so the decoder hears a pause, not a run-on sentence.
SEPARATOR_S = 0.4
# The level each packed segment is brought to: close-talk speech (-20 dBFS RMS), by at most
# +50 dB (a speaker at -70 dBFS), with peaks kept under full scale.
SPEECH_RMS = 10 ** (-20 / 20)
_MAX_GAIN = 10 ** (50 / 20)
_MAX_PEAK = 0.95


class Speech(Protocol):
    """What packing needs of a VAD segment."""

    start_s: float
    samples: np.ndarray


def set_window_params(params: Any, threads: int) -> None:
    """Set the per-window fields of the binding's whisper_full_params object."""
    params.n_threads = threads
    params.audio_ctx = 0  # all 1500 positions


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

    def segments_to_recording(self, decoded: Sequence[Segment]) -> list[Segment]:
        """Decoded segments (window times) with the recording's times."""
        out = []
        for seg in decoded:
            start = self.to_recording(seg.start_s)
            words = tuple((self.to_recording(a), self.to_recording(b)) for a, b in seg.words)
            out.append(
                Segment(start, max(self.to_recording(seg.end_s), start), seg.text, None, words)
            )
        return out


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


def fitting(sizes: Iterable[int], window_s: float = WINDOW_S) -> int:
    """How many of the oldest segments (their lengths in samples, oldest first) fit one window
    together, with a separator between each two: at least one of any, since a segment longer
    than the window is cut to it."""
    gap = int(SEPARATOR_S * SAMPLE_RATE)
    limit = int(window_s * SAMPLE_RATE)
    used = count = 0
    for size in sizes:
        needed = min(size, limit) + (gap if count else 0)
        if count and used + needed > limit:
            break
        used += needed
        count += 1
    return count


def pack(segments: Iterable[Speech], window_s: float = WINDOW_S) -> list[Window]:
    """Pack consecutive speech segments, each levelled, into windows of at most window_s s."""
    return list(packed(segments, window_s))


def packed(segments: Iterable[Speech], window_s: float = WINDOW_S) -> Iterator[Window]:
    """pack() as the segments arrive: each window once the segment after it is known not to fit
    (or the segments end), so the first is decoded while later speech is still being found."""
    todo: list[Speech] = []
    for segment in segments:
        todo.append(segment)
        count = fitting((np.asarray(s.samples).size for s in todo), window_s)
        if count < len(todo):
            yield _window(todo[:count], window_s)
            del todo[:count]
    while todo:
        count = fitting((np.asarray(s.samples).size for s in todo), window_s)
        yield _window(todo[:count], window_s)
        del todo[:count]


def _window(segments: Sequence[Speech], window_s: float) -> Window:
    """One window of these segments, each levelled and cut to window_s, separators between."""
    gap = np.zeros(int(SEPARATOR_S * SAMPLE_RATE), dtype=np.float32)
    limit = int(window_s * SAMPLE_RATE)
    parts: list[np.ndarray] = []
    pieces: list[Piece] = []
    used = 0
    for segment in segments:
        samples = level(np.asarray(segment.samples, dtype=np.float32)[:limit])
        if parts:
            parts.append(gap)
            used += gap.size
        pieces.append(
            Piece(used / SAMPLE_RATE, segment.start_s, samples.size / SAMPLE_RATE, segment)
        )
        parts.append(samples)
        used += samples.size
    return Window(np.concatenate(parts), tuple(pieces))
