"""Where people speak, at the VAD's 32 ms frame resolution: the regions speaker turns cover.

The transcription segments are padded by 400 ms and run across pauses under 2 s (Whisper hears
words in context); a speaker turn must not, or every pause is counted as speech. So the turns
come from Silero's per-frame scores directly, rerun on the samples (7.1 CPU s per audio hour
here), so the transcription path is left as it is. Only the raw score counts: the segmenter's
second, gained score finds faint talk from across the room that a meeting's reference turns do
not mark (EN2003a's first 14 s), which cost more than it found (docs/benchmarks.md). Whisper's
word times lose as a speech signal for the same reason, and because a token time can stretch
over seconds of silence: stretching speech to the words (up to 1.5 s long) across its edges
raised the mean DER of the five AMI clips the settings were chosen on from 17.2 to 22.7 %, and
of the other five from 46.5 to 49.1 %; counting every such word as speech gave 36.3 and
49.6 %, a threshold of 0.15 inside whisper's segments 36.4 and 71.6 %, and bridging the pauses
whisper heard words in lost on both halves too (turns holding pauses under 1 s in each case).
"""

from __future__ import annotations

import numpy as np

from appliance.recording.segmenter import FRAME_S
from appliance.recording.silero import FRAME_SAMPLES, SileroModel

# Chosen as the lowest mean DER over five AMI clips (EN2001a, EN2001e, EN2003a, EN2004a,
# EN2005a: 22.1 % at 0.2, 22.4 % at 0.25, 23.2 % at 0.3, 26.4 % at 0.5), then checked on the
# other five, the pyannote sample and dev-meeting-02 (docs/benchmarks.md, "Speaker turns").
THRESHOLD = 0.2
_HYSTERESIS = 0.15  # as the segmenter: speech ends once the score falls this far under
MIN_GAP_S = 0.3  # a shorter pause is inside one stretch of speech (a breath, a stop consonant)
MIN_SPEECH_S = 0.25  # a shorter stretch is a click or a knock, as for the segmenter


def probabilities(model: SileroModel, samples: np.ndarray) -> np.ndarray:
    """Silero's speech score of each whole 32 ms frame of 16 kHz float samples."""
    whole = len(samples) // FRAME_SAMPLES * FRAME_SAMPLES
    frames = np.asarray(samples[:whole], dtype=np.float32).reshape(-1, FRAME_SAMPLES)
    return model.probabilities(frames, model.new_state())


def regions(
    scores: np.ndarray, offset_s: float = 0.0, threshold: float = THRESHOLD
) -> list[tuple[float, float]]:
    """(start_s, end_s) of each stretch of speech in per-frame scores, offset_s added."""
    active = np.zeros(len(scores), dtype=bool)
    on = False
    for index, score in enumerate(scores):
        on = score >= (threshold - _HYSTERESIS if on else threshold)
        active[index] = on
    edges = np.flatnonzero(np.diff(np.concatenate([[0], active.astype(np.int8), [0]])))
    spans: list[list[float]] = []
    for first, last in zip(edges[::2], edges[1::2], strict=True):
        start, end = first * FRAME_S, last * FRAME_S
        if spans and start - spans[-1][1] < MIN_GAP_S:
            spans[-1][1] = end
        else:
            spans.append([start, end])
    return [(offset_s + a, offset_s + b) for a, b in spans if b - a >= MIN_SPEECH_S]


def joined(spans: list[tuple[float, float]], gap_s: float) -> list[tuple[float, float]]:
    """Spans in time order, those less than gap_s apart made one."""
    out: list[list[float]] = []
    for start, end in sorted(spans):
        if out and start <= out[-1][1] + gap_s:
            out[-1][1] = max(out[-1][1], end)
        else:
            out.append([start, end])
    return [(a, b) for a, b in out]
