"""Audio sources against real parts: files through libsndfile and ffmpeg, and a real PortAudio
capture device recording a private PulseAudio server's null sink."""

from __future__ import annotations

import asyncio
import logging
import os
import subprocess
import time
from pathlib import Path

import numpy as np
import pytest
import soundfile
import soxr

from appliance.errors import AudioError
from appliance.recording import audio
from appliance.recording.capture import FileSource, MicrophoneSource
from appliance.transcript import Gap
from tools.virtual_mic import DEVICE

SPEECH = Path(__file__).parent / "data" / "speech"
JFK = SPEECH / "jfk" / "jfk.flac"  # 11.0 s, 16 kHz mono like every clip in tests/data/speech
SHORT = SPEECH / "commonvoice_en_words" / "common_voice_en_22058266.flac"  # 2.35 s
SENTENCE = SPEECH / "librispeech_fixtures" / "61-70968-0000.flac"  # 4.9 s
# PulseAudio's monitor does not rewind: the first ~90 ms a new player renders are lost to it.
_SETTLE = 3200


async def _drain(source) -> list:
    return [item async for item in source.stream()]


def _pcm(items: list) -> np.ndarray:
    assert all(isinstance(item, bytes) and len(item) % 2 == 0 for item in items)
    return np.frombuffer(b"".join(items), dtype="<i2")


def _reference(path: Path) -> np.ndarray:
    return np.frombuffer(audio.float_to_pcm16(audio.load(path)), dtype="<i2")


# --- FileSource ------------------------------------------------------------------------------


def _variant(tmp_path: Path, name: str) -> Path:
    """JFK written as another container, rate or channel count."""
    mono = audio.load(JFK)
    if name == "flac-16k-mono":
        return JFK
    if name == "wav-16k-mono":
        path = tmp_path / "jfk.wav"
        soundfile.write(path, mono, 16000, subtype="PCM_16")
    elif name == "wav-48k-stereo":
        wide = soxr.resample(mono, 16000, 48000)
        path = tmp_path / "jfk-48k.wav"
        soundfile.write(path, np.column_stack([wide, 0.5 * wide]), 48000, subtype="FLOAT")
    else:
        path = tmp_path / "jfk-44k.flac"
        soundfile.write(path, soxr.resample(mono, 16000, 44100), 44100, subtype="PCM_16")
    return path


@pytest.mark.parametrize(
    "name", ["flac-16k-mono", "wav-16k-mono", "wav-48k-stereo", "flac-44k-mono"]
)
def test_a_file_streams_the_samples_load_decodes(tmp_path, name):
    path = _variant(tmp_path, name)
    got = _pcm(asyncio.run(_drain(FileSource(path))))
    want = _reference(path)
    assert abs(got.size - want.size) <= 2
    count = min(got.size, want.size)
    # Same soxr filter either way; only the block edges differ, by float rounding.
    assert np.abs(got[:count].astype(int) - want[:count]).max() <= 2


@pytest.fixture
def ffmpeg(tmp_path, monkeypatch) -> str:
    """A real ffmpeg (from the imageio-ffmpeg wheel) as the only ffmpeg on PATH."""
    import imageio_ffmpeg

    directory = tmp_path / "bin"
    directory.mkdir()
    (directory / "ffmpeg").symlink_to(imageio_ffmpeg.get_ffmpeg_exe())
    monkeypatch.setenv("PATH", f"{directory}{os.pathsep}{os.environ.get('PATH', '')}")
    return str(directory / "ffmpeg")


def test_a_format_libsndfile_cannot_read_streams_through_ffmpeg(tmp_path, ffmpeg):
    path = tmp_path / "jfk.m4a"
    subprocess.run([ffmpeg, "-v", "error", "-i", str(JFK), "-c:a", "aac", str(path)], check=True)
    got = _pcm(asyncio.run(_drain(FileSource(path))))
    want = _reference(path)
    assert abs(got.size - want.size) <= 2
    count = min(got.size, want.size)
    assert np.abs(got[:count].astype(int) - want[:count]).max() <= 2


def test_realtime_pacing_takes_about_the_audio_duration():
    started = time.monotonic()
    got = _pcm(asyncio.run(_drain(FileSource(SHORT, speed=1.0))))
    elapsed = time.monotonic() - started
    duration = got.size / audio.SAMPLE_RATE
    assert duration == pytest.approx(soundfile.info(SHORT).duration, abs=0.01)
    assert elapsed >= 0.9 * duration


def test_stop_ends_a_paced_file_early():
    source = FileSource(JFK, speed=1.0)

    async def first_then_stop() -> list:
        items = []
        async for item in source.stream():
            items.append(item)
            source.stop()
        return items

    started = time.monotonic()
    got = _pcm(asyncio.run(first_then_stop()))
    assert time.monotonic() - started < 1.0
    assert 0 < got.size < audio.SAMPLE_RATE // 2


def test_a_file_that_is_not_audio_is_refused_at_construction(tmp_path, monkeypatch):
    notes = tmp_path / "notes.wav"
    notes.write_text("minutes of the last meeting\n" * 20)
    monkeypatch.setenv("PATH", str(tmp_path / "nowhere"))
    with pytest.raises(AudioError, match="not audio") as caught:
        FileSource(notes)
    assert str(caught.value).startswith(str(notes))
    with pytest.raises(AudioError, match="no such file"):
        FileSource(tmp_path / "missing.flac")


def test_ffmpeg_refuses_a_file_that_is_not_audio_before_the_stream(tmp_path, ffmpeg):
    notes = tmp_path / "notes.m4a"
    notes.write_text("minutes of the last meeting\n" * 20)
    with pytest.raises(AudioError, match="not audio") as caught:
        FileSource(notes)
    assert str(caught.value).startswith(str(notes))


# --- MicrophoneSource ------------------------------------------------------------------------


def _align(captured: np.ndarray, reference: np.ndarray) -> int:
    """Where the reference starts in the capture, by FFT cross-correlation."""
    size = 1 << int(np.ceil(np.log2(captured.size + reference.size)))
    spectrum = np.fft.rfft(captured, size) * np.conj(np.fft.rfft(reference, size))
    return int(np.argmax(np.fft.irfft(spectrum, size)[: captured.size - reference.size + 1]))


async def _record_while_playing(microphone, clip: Path, samplerate: int) -> list:
    """Start capturing, play the clip once the device delivers, stop half a second after."""
    source = MicrophoneSource(DEVICE, retry_max_s=1.0, samplerate=samplerate)
    items: list = []
    running, tail_heard = asyncio.Event(), asyncio.Event()
    tail_from: list[int] = []

    async def collect() -> None:
        captured = 0
        async for item in source.stream():
            items.append(item)
            captured += len(item) // 2 if isinstance(item, bytes) else 0
            running.set()
            if tail_from and captured >= tail_from[0] + audio.SAMPLE_RATE // 2:
                tail_heard.set()
        tail_heard.set()

    task = asyncio.create_task(collect())
    try:
        await asyncio.wait_for(running.wait(), 10)
        player = microphone.play(clip)
        assert await asyncio.to_thread(player.wait, 30) == 0
        tail_from.append(sum(len(i) // 2 for i in items if isinstance(i, bytes)))
        await asyncio.wait_for(tail_heard.wait(), 10)
    finally:
        source.stop()
        await asyncio.wait_for(task, 10)
    return items


def test_a_clip_played_into_the_room_arrives_bit_exact_at_16k(pulse_in_process):
    items = asyncio.run(_record_while_playing(pulse_in_process, SENTENCE, 16000))
    captured = _pcm(items)
    reference = _reference(SENTENCE)
    start = _align(captured.astype(np.float32), reference.astype(np.float32))
    heard = captured[start : start + reference.size]
    assert heard.size == reference.size
    assert np.array_equal(heard[_SETTLE:], reference[_SETTLE:])


def test_a_clip_resampled_from_the_device_rate_stays_close(pulse_in_process):
    # samplerate 0: the device's own rate (44.1 kHz here), so PulseAudio and soxr both resample.
    items = asyncio.run(_record_while_playing(pulse_in_process, SHORT, 0))
    captured = audio.pcm16_to_float(_pcm(items))
    reference = audio.load(SHORT)
    start = _align(captured, reference)
    heard = captured[start : start + reference.size][_SETTLE:]
    wanted = reference[_SETTLE:]
    snr_db = 10 * np.log10(np.sum(wanted**2) / np.sum((heard - wanted) ** 2))
    print(f"44.1 kHz round trip: SNR {snr_db:.1f} dB")
    assert snr_db > 30


def _records(caplog, text: str) -> list[logging.LogRecord]:
    return [
        r
        for r in caplog.records
        if r.name == "appliance.recording.capture" and text in r.getMessage()
    ]


def _check_gap_then_silence(items: list, index: int) -> Gap:
    """items[index] is a Gap, and exactly its length of zeros follows it."""
    gap = items[index]
    assert isinstance(gap, Gap) and gap.reason.startswith("microphone lost: ")
    wanted = round((gap.end_s - gap.start_s) * audio.SAMPLE_RATE)
    silence = b""
    for item in items[index + 1 :]:
        if len(silence) >= 2 * wanted:
            break
        silence += item
    assert silence == bytes(2 * wanted)
    return gap


def test_a_missing_device_is_a_gap_of_silence_not_an_error(caplog):
    caplog.set_level(logging.INFO, logger="appliance.recording.capture")
    source = MicrophoneSource("no such microphone", retry_max_s=1.0)

    async def run() -> list:
        asyncio.get_running_loop().call_later(1.6, source.stop)
        return await asyncio.wait_for(_drain(source), 10)

    items = asyncio.run(run())
    gap = _check_gap_then_silence(items, 0)
    assert gap.start_s == 0.0 and 1.4 <= gap.end_s <= 2.2
    assert "no input device named 'no such microphone'" in gap.reason
    assert sum(len(i) for i in items[1:]) == 2 * round(gap.end_s * audio.SAMPLE_RATE)
    assert len(_records(caplog, "microphone lost")) == 1  # tried three times, logged once
    assert not _records(caplog, "microphone back")


def test_the_microphone_comes_back_when_the_server_does(pulse_in_process, caplog):
    caplog.set_level(logging.INFO, logger="appliance.recording.capture")
    microphone = pulse_in_process
    source = MicrophoneSource(DEVICE, retry_max_s=1.0, samplerate=16000)
    items: list = []
    running, back = asyncio.Event(), asyncio.Event()

    async def collect() -> None:
        after_gap = None
        async for item in source.stream():
            items.append(item)
            running.set()
            if isinstance(item, Gap):
                after_gap = -round((item.end_s - item.start_s) * audio.SAMPLE_RATE)
            elif after_gap is not None:
                after_gap += len(item) // 2
                if after_gap >= audio.SAMPLE_RATE // 2:  # half a second of live audio again
                    back.set()

    async def run() -> float:
        task = asyncio.create_task(collect())
        try:
            await asyncio.wait_for(running.wait(), 10)
            await asyncio.to_thread(microphone.stop)
            down = time.monotonic()
            await asyncio.sleep(1.0)  # the outage itself, not a wait for something
            await asyncio.to_thread(microphone.start)
            outage = time.monotonic() - down
            await asyncio.wait_for(back.wait(), 15)
        finally:
            source.stop()
            await asyncio.wait_for(task, 10)
        return outage

    outage = asyncio.run(run())
    gaps = [i for i, item in enumerate(items) if isinstance(item, Gap)]
    assert len(gaps) == 1
    gap = _check_gap_then_silence(items, gaps[0])
    print(f"server down {outage:.2f} s, gap {gap.start_s:.2f}-{gap.end_s:.2f} s")
    assert gap.start_s > 0
    # Down for the outage, plus the retry back-off and the first block of a woken sink.
    assert outage - 0.2 <= gap.end_s - gap.start_s <= outage + 4.0
    assert len(_records(caplog, "microphone lost")) == 1
    assert len(_records(caplog, "microphone back")) == 1
