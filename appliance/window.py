"""How much audio one whisper.cpp pass hears, and over how many encoder positions.

Whisper's encoder makes 1500 positions of 30 s, one per 20 ms. whisper.cpp can encode fewer
(audio_ctx), which is faster, but with flash attention it reads the encoder's output padded to
a multiple of 256 positions and without a mask: past the positions it wrote, it attends to
whatever an earlier window of another length left there. So every window here is encoded over
a multiple of 256 positions, which leaves no such rows, and holds at most 1280 positions' worth
of audio less a margin: 24.32 s.
"""

from __future__ import annotations

import math
from typing import Any

from .audio import SAMPLE_RATE
from .models.ggml import Hparams

ENCODER_POSITIONS = 1500  # a full 30 s window
POSITION_SAMPLES = 320  # 20 ms
CTX_STEP = 256  # whisper.cpp pads the encoder's output to a multiple of this
MAX_CTX = ENCODER_POSITIONS // CTX_STEP * CTX_STEP  # 1280
# The fewest positions a window gets. Below it a model invents and drops words on short
# windows; where that starts was measured per model on the dev clips (README, "Choosing a
# model"): base made 31 errors in the 66 Swedish words at 1024 positions and 40 at 768;
# tiny.en held at 512.
MIN_CTX = 1024
MIN_CTX_TINY_EN = 512
MARGIN = 64  # positions (1.28 s) encoded past the end of a window's audio
WINDOW_S = (MAX_CTX - MARGIN) * POSITION_SAMPLES / SAMPLE_RATE


def min_ctx(hparams: Hparams) -> int:
    """The fewest positions measured to cost no accuracy for this model."""
    tiny_en = not hparams.multilingual and hparams.n_audio_layer == 4
    return MIN_CTX_TINY_EN if tiny_en else MIN_CTX


def audio_ctx(n_samples: int, floor: int) -> int:
    """whisper.cpp's audio_ctx for a window of n_samples: the audio and MARGIN rounded up to a
    multiple of CTX_STEP, floor at least, or 0 (all 1500 positions, as Whisper was trained) for
    a window longer than WINDOW_S, which pack() never makes."""
    positions = math.ceil(n_samples / POSITION_SAMPLES) + MARGIN
    if positions > MAX_CTX:
        return 0
    return max(floor, math.ceil(positions / CTX_STEP) * CTX_STEP)


def set_window_params(params: Any, n_samples: int, threads: int, floor: int) -> None:
    """Set the per-window fields of whisper_full_params: the binding's object or the ctypes
    struct of appliance.workers, which name them alike."""
    params.n_threads = threads
    params.audio_ctx = audio_ctx(n_samples, floor)
