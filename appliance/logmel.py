"""Whisper's log-mel spectrogram of one window, computed with numpy instead of by whisper.cpp.

whisper.cpp computes a window's spectrogram over the window and 30 s of silence after it, on
the decoding thread. Here only the frames that hold audio go through the FFT; the silence after
them is one repeated column, and there are only as many of those as the encoder can read.
The frames are whisper.cpp's and Whisper's: the start mirrored, a periodic Hann window of 400
samples every 160, the power spectrum through the model's own filterbank, log10 of at least
1e-10, clamped to 8 below the maximum, scaled by (x + 4) / 4.
"""

from __future__ import annotations

import numpy as np

from .models.mel import N_FFT

HOP = 160  # samples per frame: 10 ms
_HALF = N_FFT // 2
_HANN = (0.5 * (1.0 - np.cos(2.0 * np.pi * np.arange(N_FFT) / N_FFT))).astype(np.float32)
_SILENCE = np.log10(1e-10)  # a frame of zeros


def audio_frames(n_samples: int) -> int:
    """The frames whisper.cpp counts as the window's own (its n_len_org); past them is padding.
    At least 1: whisper_full reads a duration of 0 as all of the spectrogram."""
    return max(1, 1 + (n_samples - _HALF) // HOP)


def log_mel(samples: np.ndarray, filters: np.ndarray, frames_after: int) -> np.ndarray:
    """The (n_mels, frames) float32 spectrogram of samples, with frames_after frames of silence
    after the audio's own: enough for every encoder pass whisper.cpp may start inside it."""
    n = samples.size
    n_frames = audio_frames(n) + frames_after
    # Frames up to here overlap the audio; every later one is silence.
    n_fft = min(n_frames, (n + _HALF) // HOP + 1)
    padded = np.zeros(n_fft * HOP + N_FFT, dtype=np.float32)
    padded[_HALF : _HALF + n] = samples
    mirrored = samples[1 : _HALF + 1][::-1]
    padded[_HALF - mirrored.size : _HALF] = mirrored
    frames = np.lib.stride_tricks.sliding_window_view(padded, N_FFT)[::HOP][:n_fft]
    spectrum = np.fft.rfft(frames * _HANN, axis=1)
    power = (spectrum.real**2 + spectrum.imag**2).astype(np.float32)
    mel = np.full((filters.shape[0], n_frames), _SILENCE, dtype=np.float32)
    # In double, as whisper.cpp sums each band and takes its log.
    mel[:, :n_fft] = np.log10(np.maximum(filters.astype(np.float64) @ power.T, 1e-10))
    np.maximum(mel, mel.max() - 8.0, out=mel)
    return (mel + 4.0) / 4.0
