"""Kaldi's log mel filterbank (as torchaudio.compliance.kaldi.fbank computes it by default),
the features CAM++ was trained on: 25 ms frames every 10 ms, 80 bins, povey window."""

from __future__ import annotations

import functools

import numpy as np

SAMPLE_RATE = 16000
FRAME_SAMPLES = 400  # 25 ms
HOP_SAMPLES = 160  # 10 ms
_FFT = 512
_BINS = 80
_LOW_HZ = 20.0
_PREEMPHASIS = 0.97


def _mel(hz: np.ndarray | float) -> np.ndarray:
    return 1127.0 * np.log(1.0 + np.asarray(hz) / 700.0)


@functools.cache
def _filters() -> np.ndarray:
    """(257, 80) triangular filters on the mel scale, Kaldi's layout (Nyquist bin weight 0)."""
    low, high = _mel(_LOW_HZ), _mel(SAMPLE_RATE / 2)
    delta = (high - low) / (_BINS + 1)
    mels = _mel(np.arange(_FFT // 2) * SAMPLE_RATE / _FFT)[:, None]
    left = low + np.arange(_BINS)[None, :] * delta
    centre, right = left + delta, left + 2 * delta
    up = (mels - left) / (centre - left)
    down = (right - mels) / (right - centre)
    weights = np.maximum(0.0, np.minimum(up, down))
    return np.vstack([weights, np.zeros((1, _BINS))]).astype(np.float32)


@functools.cache
def _window() -> np.ndarray:
    n = np.arange(FRAME_SAMPLES)
    return ((0.5 - 0.5 * np.cos(2 * np.pi * n / (FRAME_SAMPLES - 1))) ** 0.85).astype(np.float32)


def frame_count(samples: int) -> int:
    """Frames Kaldi makes of this many samples (edges snipped: whole frames only)."""
    return 0 if samples < FRAME_SAMPLES else 1 + (samples - FRAME_SAMPLES) // HOP_SAMPLES


def fbank(samples: np.ndarray) -> np.ndarray:
    """(frames, 80) float32 log mel energies of 16 kHz float samples."""
    count = frame_count(len(samples))
    if count == 0:
        return np.zeros((0, _BINS), dtype=np.float32)
    frames = np.lib.stride_tricks.sliding_window_view(samples.astype(np.float32), FRAME_SAMPLES)
    frames = frames[::HOP_SAMPLES][:count]
    frames = frames - frames.mean(axis=1, keepdims=True)
    emphasized = np.empty_like(frames)
    emphasized[:, 1:] = frames[:, 1:] - _PREEMPHASIS * frames[:, :-1]
    emphasized[:, 0] = frames[:, 0] * (1 - _PREEMPHASIS)
    power = np.abs(np.fft.rfft(emphasized * _window(), n=_FFT)) ** 2
    energies = power.astype(np.float32) @ _filters()
    return np.log(np.maximum(energies, np.finfo(np.float32).eps))
