"""The spectrogram computed here is the one whisper.cpp would compute from the samples."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from appliance.audio import SAMPLE_RATE, load
from appliance.evaluate import read_manifest
from appliance.logmel import HOP, audio_frames, log_mel
from appliance.models import catalog, mel
from appliance.transcribe import DecodeOptions, Transcriber, decoded_segments
from appliance.window import prepare

DATA = Path(__file__).parent / "data"
FILTERS = mel.filterbank(80)


@pytest.mark.parametrize("n_samples", [0, 1, 199, 200, 359, 360, 16000, 16001, 389_120])
def test_the_audio_frames_are_whisper_cpps_count(n_samples: int) -> None:
    # whisper.cpp's n_len_org: 1 + (n + 200 - 400) / 160 in C's integer division; at least 1.
    expected = max(1, 1 + int((n_samples + 200 - 400) / 160))
    assert audio_frames(n_samples) == expected


def test_silence_after_the_audio_is_one_column_eight_below_the_loudest() -> None:
    rng = np.random.default_rng(1)
    samples = (0.1 * rng.standard_normal(SAMPLE_RATE)).astype(np.float32)
    spectrogram = log_mel(samples, FILTERS, frames_after=2048)
    assert spectrogram.shape == (80, audio_frames(samples.size) + 2048)
    assert spectrogram.dtype == np.float32 and spectrogram.flags.c_contiguous
    past_the_audio = (samples.size + 200) // HOP + 1  # frames the FFT still sees samples in
    silence = spectrogram[:, past_the_audio:]
    assert np.all(silence == spectrogram.max() - 2.0)  # (max - 8 + 4) / 4 against (max + 4) / 4
    assert spectrogram[:, : audio_frames(samples.size)].min() > silence[0, 0]  # noise is louder


def test_a_zero_window_is_all_the_floor() -> None:
    spectrogram = log_mel(np.zeros(1000, np.float32), FILTERS, frames_after=10)
    assert np.all(spectrogram == (np.log10(1e-10) + 4) / 4)


def _clean_speech() -> list[np.ndarray]:
    """Read speech whisper.cpp transcribes with no doubt: tiny float differences in the
    spectrogram cannot change its words (they can on the stumbling mfa_disfluency clips)."""
    sets = {"jfk", "librispeech_fixtures", "librivox_sense_sensibility"}
    return [load(c.audio) for c in read_manifest(DATA / "speech" / "manifest.jsonl", sets=sets)]


def test_whisper_cpp_hears_our_spectrogram_as_its_own(tiny_en_installed) -> None:
    model = tiny_en_installed[catalog.DEFAULT_QUANT]
    with Transcriber(model, DecodeOptions(threads=2)) as ours:
        pw, context, params = ours._pw, ours._ctx, ours._params
        for samples in _clean_speech():
            heard = ours.transcribe_window(samples)
            # whisper.cpp's own way: it gets the samples and makes the spectrogram itself.
            prepare(params, samples, 2, ours.min_ctx, ours.filters)
            params.duration_ms = 0
            assert pw.whisper_full(context, params, samples, samples.size) == 0
            own = decoded_segments(
                (pw.whisper_full_get_segment_t0(context, i), pw.whisper_full_get_segment_t1(
                    context, i), pw.whisper_full_get_segment_text(context, i))
                for i in range(pw.whisper_full_n_segments(context)))
            assert heard and heard == own
