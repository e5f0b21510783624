"""Audio decoding and PCM helpers, on real speech rewritten into odd formats at test time."""

from __future__ import annotations

import logging
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import pytest
import soundfile
import soxr

from appliance.errors import AudioError
from appliance.recording.audio import (
    SAMPLE_RATE,
    Resampler,
    float_to_pcm16,
    load,
    pcm16_to_float,
    to_mono,
    to_mono_16k,
)

JFK = Path(__file__).parent / "data" / "speech" / "jfk" / "jfk.flac"
MP3 = pytest.mark.skipif(
    "MP3" not in soundfile.available_formats(), reason="libsndfile built without MP3"
)


@pytest.fixture(scope="module")
def reference() -> np.ndarray:
    """JFK's 11 s as stored: 16 kHz mono."""
    samples, rate = soundfile.read(JFK, dtype="float32")
    assert rate == SAMPLE_RATE
    return samples


def _write(
    path: Path, samples: np.ndarray, rate: int, channels: int, fmt: str, subtype: str
) -> Path:
    """Write 16 kHz mono samples as a file of another rate, channel count and format."""
    data = samples if rate == SAMPLE_RATE else soxr.resample(samples, SAMPLE_RATE, rate)
    if channels == 2:
        data = np.stack([data, data], axis=1)
    soundfile.write(path, data, rate, format=fmt, subtype=subtype)
    return path


def _correlation(a: np.ndarray, b: np.ndarray) -> float:
    n = min(a.size, b.size)
    return float(np.corrcoef(a[:n], b[:n])[0, 1])


@pytest.mark.parametrize(
    ("fmt", "subtype", "rate", "channels", "min_correlation"),
    [
        ("WAV", "PCM_16", 16000, 1, 0.9999),
        ("WAV", "PCM_U8", 22050, 1, 0.999),
        ("WAV", "PCM_16", 8000, 1, 0.999),
        ("WAV", "PCM_24", 44100, 2, 0.9999),
        ("WAV", "FLOAT", 48000, 2, 0.9999),
        ("FLAC", "PCM_24", 96000, 2, 0.9999),
        ("OGG", "VORBIS", 44100, 2, 0.99),
        ("OGG", "OPUS", 48000, 1, 0.99),
        pytest.param("MP3", "MPEG_LAYER_III", 44100, 2, 0.99, marks=MP3),
    ],
)
def test_load_decodes_any_format_to_mono_16k(
    tmp_path, reference, fmt, subtype, rate, channels, min_correlation
):
    path = _write(tmp_path / f"jfk.{fmt.lower()}", reference, rate, channels, fmt, subtype)
    samples = load(path)
    assert samples.dtype == np.float32 and samples.ndim == 1
    assert abs(samples.size - reference.size) <= SAMPLE_RATE // 100
    assert _correlation(samples, reference) >= min_correlation
    assert np.sqrt(np.mean(samples**2) / np.mean(reference**2)) == pytest.approx(1.0, abs=0.02)


def test_load_clips_float_overs(tmp_path, reference):
    path = tmp_path / "hot.wav"
    soundfile.write(path, 3 * reference, SAMPLE_RATE, subtype="FLOAT")
    samples = load(path)
    assert samples.max() == 1.0 and samples.min() == -1.0


def _missing(path: Path) -> None:
    """Leave the path absent."""


def _directory(path: Path) -> None:
    path.mkdir()


def _empty(path: Path) -> None:
    path.touch()


def _no_frames(path: Path) -> None:
    soundfile.write(path, np.zeros(0, dtype=np.float32), SAMPLE_RATE, format="WAV")


def _text(path: Path) -> None:
    path.write_text("minutes of the meeting\n" * 50)


def _noise_bytes(path: Path) -> None:
    path.write_bytes(np.random.default_rng(0).integers(0, 256, 20000, dtype=np.uint8).tobytes())


@pytest.mark.parametrize(
    ("make", "name", "says"),
    [
        (_missing, "absent.wav", "no such file"),
        (_directory, "folder.wav", "is a directory"),
        (_empty, "empty.wav", "empty"),
        (_no_frames, "silent.wav", "no audio"),
        (_text, "notes.wav", "not audio"),
        (_noise_bytes, "garbage.flac", "not audio"),
    ],
)
def test_load_refuses_bad_input_naming_the_file(tmp_path, make, name, says):
    path = tmp_path / name
    make(path)
    with pytest.raises(AudioError) as caught:
        load(path)
    assert str(caught.value).startswith(str(path))
    assert says in str(caught.value)
    assert isinstance(caught.value, ValueError)


def test_load_refuses_unreadable_file(reference):
    """Root reads any file, so as root the check runs as user nobody through setpriv."""
    folder = Path(tempfile.mkdtemp(prefix="appliance-locked-"))
    try:
        folder.chmod(0o755)
        path = _write(folder / "locked.wav", reference, SAMPLE_RATE, 1, "WAV", "PCM_16")
        path.chmod(0)
        code = (
            "import sys; from pathlib import Path; "
            "from appliance.recording.audio import load; load(Path(sys.argv[1]))"
        )
        drop = ["setpriv", "--reuid=nobody", "--regid=nogroup", "--clear-groups"]
        command = [*(drop if os.geteuid() == 0 else []), sys.executable, "-c", code, str(path)]
        run = subprocess.run(command, capture_output=True, text=True, cwd=Path(__file__).parents[1])
        assert run.returncode != 0
        last = run.stderr.strip().splitlines()[-1]
        assert last.startswith("appliance.errors.AudioError: " + str(path))
        assert "permission denied" in last
    finally:
        shutil.rmtree(folder)


@pytest.mark.parametrize(
    ("fmt", "subtype", "min_fraction"),
    [
        ("WAV", "PCM_16", 0.49),
        # FLAC loses the block being decoded when the decoder hits the cut (under a second).
        ("FLAC", "PCM_16", 0.4),
        ("OGG", "VORBIS", 0.4),
        pytest.param("MP3", "MPEG_LAYER_III", 0.4, marks=MP3),
    ],
)
def test_load_returns_the_prefix_of_a_truncated_file_with_a_warning(
    tmp_path, reference, caplog, fmt, subtype, min_fraction
):
    whole = _write(tmp_path / f"whole.{fmt.lower()}", reference, SAMPLE_RATE, 1, fmt, subtype)
    data = whole.read_bytes()
    path = tmp_path / f"cut.{fmt.lower()}"
    path.write_bytes(data[: len(data) // 2])
    with caplog.at_level(logging.WARNING, logger="appliance.recording.audio"):
        samples = load(path)
    assert min_fraction * reference.size <= samples.size <= 0.6 * reference.size
    assert _correlation(samples, reference) >= 0.99
    assert any(
        str(path) in record.getMessage() and "truncated" in record.getMessage()
        for record in caplog.records
    )


def test_load_refuses_overlong_file_from_its_header(tmp_path, reference):
    path = tmp_path / "claims-ten-hours.flac"
    soundfile.write(path, reference[:SAMPLE_RATE], SAMPLE_RATE)
    data = bytearray(path.read_bytes())
    # STREAMINFO's 36-bit total-samples field ends the 8 bytes at offset 18.
    field = int.from_bytes(data[18:26], "big") & ~((1 << 36) - 1)
    data[18:26] = (field | 10 * 3600 * SAMPLE_RATE).to_bytes(8, "big")
    path.write_bytes(data)
    with pytest.raises(AudioError, match="36000 s of audio is over the 28800 s limit") as caught:
        load(path)
    assert str(caught.value).startswith(str(path))


def test_load_honours_a_shorter_limit(reference):
    with pytest.raises(AudioError, match="over the 5 s limit"):
        load(JFK, max_duration_s=5)
    assert load(JFK, max_duration_s=12).size == reference.size


@pytest.fixture
def ffmpeg(tmp_path, monkeypatch) -> str:
    """A real ffmpeg (from the imageio-ffmpeg wheel) as the only ffmpeg on PATH."""
    imageio_ffmpeg = pytest.importorskip("imageio_ffmpeg")
    directory = tmp_path / "bin"
    directory.mkdir()
    (directory / "ffmpeg").symlink_to(imageio_ffmpeg.get_ffmpeg_exe())
    monkeypatch.setenv("PATH", f"{directory}{os.pathsep}{os.environ.get('PATH', '')}")
    return str(directory / "ffmpeg")


@pytest.fixture
def m4a(tmp_path, reference, ffmpeg) -> Path:
    """JFK as AAC in MP4, a format libsndfile cannot read."""
    wav = _write(tmp_path / "jfk.wav", reference, 44100, 2, "WAV", "PCM_16")
    path = tmp_path / "jfk.m4a"
    subprocess.run([ffmpeg, "-v", "error", "-i", str(wav), "-c:a", "aac", str(path)], check=True)
    return path


def test_load_falls_back_to_ffmpeg(reference, m4a):
    samples = load(m4a)
    assert samples.dtype == np.float32 and samples.ndim == 1
    assert abs(samples.size - reference.size) <= SAMPLE_RATE // 50
    assert _correlation(samples, reference) >= 0.99


def test_ffmpeg_path_names_the_file_and_keeps_the_limit(tmp_path, m4a):
    text = tmp_path / "notes.wav"
    _text(text)
    with pytest.raises(AudioError, match="not audio") as caught:
        load(text)
    assert str(caught.value).startswith(str(text))
    with pytest.raises(AudioError, match="over the 5 s limit"):
        load(m4a, max_duration_s=5)


def test_without_ffmpeg_an_unknown_format_is_a_clear_error(tmp_path, m4a, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path / "nowhere"))
    with pytest.raises(AudioError, match="not audio, or a format libsndfile cannot read") as caught:
        load(m4a)
    assert str(caught.value).startswith(str(m4a))


@pytest.mark.parametrize(
    ("value", "pcm"),
    [
        (0.0, 0),
        (0.5, 16384),
        (-0.5, -16384),
        (1 / 32768, 1),
        (1.0, 32767),
        (-1.0, -32768),
        (2.5, 32767),
        (-7.0, -32768),
    ],
)
def test_float_to_pcm16_scales_and_clips(value, pcm):
    assert np.frombuffer(float_to_pcm16(np.array([value])), dtype="<i2")[0] == pcm


def test_pcm16_round_trip_is_exact():
    every = np.arange(-32768, 32768, dtype=np.int16)
    floats = pcm16_to_float(every.tobytes())
    assert floats.dtype == np.float32 and floats.min() == -1.0 and floats.max() < 1.0
    assert float_to_pcm16(floats) == every.tobytes()
    assert np.array_equal(pcm16_to_float(every), floats)


@pytest.mark.parametrize("bad", [b"\x00\x01\x02", np.zeros(4, dtype=np.int32)])
def test_pcm16_to_float_rejects_what_is_not_pcm16(bad):
    with pytest.raises(AudioError):
        pcm16_to_float(bad)


@pytest.mark.parametrize(
    ("block", "expected"),
    [
        (np.array([0.5, -0.25], dtype=np.float32), [0.5, -0.25]),
        (np.array([[0.5, 0.0], [-0.25, -0.25]]), [0.25, -0.25]),
        (np.array([[16384], [-32768]], dtype=np.int16), [0.5, -1.0]),
        (np.array([[16384, 0, -16384]], dtype=np.int16), [0.0]),
    ],
)
def test_to_mono_averages_channels(block, expected):
    mono = to_mono(block)
    assert mono.dtype == np.float32
    assert mono.tolist() == expected


@pytest.mark.parametrize(
    "bad", [np.zeros((2, 2, 2), dtype=np.float32), np.zeros(4, dtype=np.int32)]
)
def test_to_mono_rejects_other_shapes_and_types(bad):
    with pytest.raises(AudioError):
        to_mono(bad)


@pytest.mark.parametrize("rate", [8000, 16000, 22050, 44100, 48000])
def test_to_mono_16k_keeps_pitch_and_duration(rate):
    seconds = np.arange(rate) / rate
    stereo = np.stack([np.sin(2 * np.pi * 440 * seconds)] * 2, axis=1).astype(np.float32)
    mono = to_mono_16k(stereo, rate)
    assert mono.dtype == np.float32 and mono.size == SAMPLE_RATE
    assert np.argmax(np.abs(np.fft.rfft(mono))) == 440  # one-second window: bin = Hz


def test_resampler_stream_matches_one_pass(reference):
    at_48k = soxr.resample(reference, SAMPLE_RATE, 48000).astype(np.float32)
    stereo = np.stack([at_48k, at_48k], axis=1)
    resampler = Resampler(48000)
    pieces, offset = [], 0
    for size in [1, 480, 1024, 4410, 333, 48000] * 20:
        pieces.append(resampler.resample(stereo[offset : offset + size]))
        offset += size
    pieces.append(resampler.resample(stereo[offset:]))
    pieces.append(resampler.flush())
    streamed = np.concatenate(pieces)
    whole = to_mono_16k(stereo, 48000)
    assert streamed.size == whole.size
    assert np.max(np.abs(streamed - whole)) < 1e-3
    assert _correlation(streamed, reference) > 0.9999
