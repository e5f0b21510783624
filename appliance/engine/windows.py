"""How much audio one whisper.cpp pass hears: up to 30 s, over all 1500 encoder positions.

whisper.cpp can encode fewer positions (audio_ctx) for a shorter window, which is faster, but
it costs words on short windows of quiet and spontaneous speech (tiny.en on held-out clips:
16.5 % WER at 512 positions, 7.5 % at 768, 6.1 % at 1500; README, "The front end"). So every
window gets the 1500 positions Whisper was trained on. Every window then also writes the same
rows of the encoder's output, so whisper.cpp's flash attention, which reads that output padded
to a multiple of 256 positions without a mask, never reads rows a window of another length
left behind.
"""

from __future__ import annotations

from typing import Any

WINDOW_S = 30.0  # Whisper's window: 1500 positions of 20 ms


def set_window_params(params: Any, threads: int) -> None:
    """Set the per-window fields of whisper_full_params: the binding's object or the ctypes
    struct of appliance.engine.workers, which name them alike."""
    params.n_threads = threads
    params.audio_ctx = 0  # all 1500 positions
