"""How much audio one whisper.cpp pass hears, and over how many encoder positions.

Whisper's encoder makes 1500 positions of 30 s, one per 20 ms. whisper.cpp can encode fewer
(audio_ctx), which is faster, but with flash attention it reads the encoder's output padded to
a multiple of 256 positions and without a mask: past the positions it wrote, it attends to
whatever an earlier window of another length left there. So every window here is encoded over
1024 or 1280 positions, multiples of 256 that leave no such rows, and holds at most 1280
positions' worth of audio less a margin: 24.32 s.
"""

from __future__ import annotations

import math

from .audio import SAMPLE_RATE

ENCODER_POSITIONS = 1500  # a full 30 s window
POSITION_SAMPLES = 320  # 20 ms
CTX_STEP = 256  # whisper.cpp pads the encoder's output to a multiple of this
MAX_CTX = ENCODER_POSITIONS // CTX_STEP * CTX_STEP  # 1280
# English dev clips, tiny.en q8_0, as `appliance transcribe` runs (`benchmarks.run`,
# docs/benchmarks.md): 35.7 % WER over 1024 positions; 36.4 % over all 1500 at commit bca4045.
MIN_CTX = 1024
MARGIN = 64  # positions (1.28 s) encoded past the end of a window's audio
WINDOW_S = (MAX_CTX - MARGIN) * POSITION_SAMPLES / SAMPLE_RATE


def audio_ctx(n_samples: int) -> int:
    """whisper.cpp's audio_ctx for a window of n_samples: MIN_CTX or MAX_CTX, or 0 (all 1500
    positions, as Whisper was trained) for one longer than WINDOW_S, which pack() never makes."""
    positions = math.ceil(n_samples / POSITION_SAMPLES) + MARGIN
    if positions > MAX_CTX:
        return 0
    return max(MIN_CTX, math.ceil(positions / CTX_STEP) * CTX_STEP)
