"""Synthetic non-speech a meeting room makes: a fan, ventilation, typing, a knock at the door.

Seeded, so every run hears the same noise; each is 16 kHz float32 at a given RMS level.
"""

from __future__ import annotations

import numpy as np

SAMPLE_RATE = 16000


def _at_level(samples: np.ndarray, dbfs: float) -> np.ndarray:
    rms = float(np.sqrt(np.mean(samples.astype(np.float64) ** 2)))
    return (samples * (10 ** (dbfs / 20) / rms)).astype(np.float32)


def pink(seconds: float, dbfs: float, seed: int = 1) -> np.ndarray:
    """1/f noise: the spectrum of ventilation (HVAC) and distant traffic."""
    white = np.random.default_rng(seed).standard_normal(round(seconds * SAMPLE_RATE))
    spectrum = np.fft.rfft(white)
    freqs = np.fft.rfftfreq(white.size, 1 / SAMPLE_RATE)
    spectrum[1:] /= np.sqrt(freqs[1:])
    spectrum[0] = 0
    return _at_level(np.fft.irfft(spectrum, white.size), dbfs)


def fan_hum(seconds: float, dbfs: float, seed: int = 2) -> np.ndarray:
    """A fan: mains hum at 50 Hz with harmonics, blade tones at 120 Hz, over broadband air."""
    t = np.arange(round(seconds * SAMPLE_RATE)) / SAMPLE_RATE
    tones = sum(np.sin(2 * np.pi * f * t) / k for k, f in enumerate((50, 100, 120, 150, 240), 1))
    air = np.random.default_rng(seed).standard_normal(t.size) * 0.3
    return _at_level(tones + air, dbfs)


def keyboard(seconds: float, dbfs: float, seed: int = 3) -> np.ndarray:
    """Typing: 5 ms clicks of filtered noise at irregular intervals, about eight a second."""
    rng = np.random.default_rng(seed)
    out = np.zeros(round(seconds * SAMPLE_RATE))
    click = rng.standard_normal(80) * np.exp(-np.arange(80) / 15)
    position = 0
    while position + click.size < out.size:
        out[position : position + click.size] += click * rng.uniform(0.5, 1.0)
        position += int(rng.uniform(0.06, 0.2) * SAMPLE_RATE)
    return _at_level(out + rng.standard_normal(out.size) * 1e-3, dbfs)


def knock(seconds: float, dbfs: float, seed: int = 4) -> np.ndarray:
    """Three knocks at a door, each a damped 180 Hz thud, then room quiet."""
    rng = np.random.default_rng(seed)
    out = rng.standard_normal(round(seconds * SAMPLE_RATE)) * 1e-3
    t = np.arange(int(0.15 * SAMPLE_RATE)) / SAMPLE_RATE
    thud = np.sin(2 * np.pi * 180 * t) * np.exp(-t * 40)
    for start_s in (1.0, 1.3, 1.6):
        start = int(start_s * SAMPLE_RATE)
        out[start : start + thud.size] += thud
    return _at_level(out, dbfs)


KINDS = {"pink": pink, "fan": fan_hum, "keyboard": keyboard, "knock": knock}
