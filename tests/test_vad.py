"""Speech segmentation on real speech and real meetings, chunk by chunk and whole-file."""

from __future__ import annotations

import tracemalloc
from itertools import pairwise
from pathlib import Path

import noise
import numpy as np
import pytest
import soundfile

from appliance.errors import AudioError, UsageError
from appliance.recording.audio import SAMPLE_RATE, float_to_pcm16, load
from appliance.recording.segmenter import (
    FRAME_S,
    Segmenter,
    SpeechDetector,
    SpeechSegment,
    default_model,
)

DATA = Path(__file__).parent / "data"
JFK = DATA / "speech" / "jfk" / "jfk.flac"
MEETING = DATA / "meetings" / "dev-meeting-01.flac"
# The meeting's 45 s without speech: steady room tone at -55 dBFS from 115.5 s to 163.0 s,
# found by frame level (speech around it peaks near -10 dBFS).
SILENCE = (115.5, 163.0)
FRAME = round(FRAME_S * SAMPLE_RATE)


@pytest.fixture(scope="module")
def jfk() -> np.ndarray:
    return load(JFK)


@pytest.fixture(scope="module")
def meeting() -> np.ndarray:
    return load(MEETING)


@pytest.fixture(scope="module")
def meeting_segments(meeting) -> list[SpeechSegment]:
    return Segmenter().segments(meeting)


def _scores(samples: np.ndarray) -> np.ndarray:
    """The detector's score per whole 32 ms frame, as the Segmenter sees it."""
    whole = samples[: samples.size // FRAME * FRAME].reshape(-1, FRAME)
    quantised = np.frombuffer(float_to_pcm16(whole), dtype="<i2").reshape(-1, FRAME) / 32768
    return SpeechDetector(default_model()).probabilities(quantised.astype(np.float32))


def _covered(segments: list[SpeechSegment], count: int) -> np.ndarray:
    """Which of count frames fall inside some segment."""
    inside = np.zeros(count, dtype=bool)
    for segment in segments:
        inside[round(segment.start_s / FRAME_S) : round(segment.end_s / FRAME_S)] = True
    return inside


def _silence(seconds: float) -> np.ndarray:
    return np.zeros(round(seconds * SAMPLE_RATE), dtype=np.float32)


def _rms_db(samples: np.ndarray) -> float:
    return float(10 * np.log10(np.mean(samples.astype(np.float64) ** 2)))


@pytest.mark.parametrize(
    ("settings", "names"),
    [
        ({"threshold": 0.0}, "threshold"),
        ({"threshold": 1.0}, "threshold"),
        ({"pad_ms": -30}, "pad_ms"),
        ({"min_speech_ms": -1}, "min_speech_ms"),
        ({"pad_ms": 1000, "min_silence_ms": 500}, "pad_ms"),
        ({"min_silence_ms": 10}, "min_silence_ms"),
        ({"max_segment_s": 30.5}, "max_segment_s"),
        ({"max_segment_s": 0.0}, "max_segment_s"),
        ({"pad_ms": 9000, "min_silence_ms": 9000, "max_segment_s": 10.0}, "pad_ms"),
    ],
)
def test_bad_settings_are_a_clear_error(settings, names):
    with pytest.raises(UsageError, match=names):
        Segmenter(**settings)


@pytest.mark.parametrize("size", [1, 959, 1921])
def test_push_takes_only_whole_samples(size):
    with pytest.raises(AudioError, match="even"):
        Segmenter().push(bytes(size))


def test_jfk_segments_cover_all_of_its_speech(jfk):
    segments = Segmenter().segments(jfk)
    speech = _scores(jfk) >= 0.35
    assert speech.sum() > 100
    assert _covered(segments, speech.size)[speech].all()
    assert all(0 <= s.start_s < s.end_s <= jfk.size / SAMPLE_RATE for s in segments)


@pytest.mark.parametrize("level_db", [-15.0, -40.0, -55.0, -66.0, -70.0])
def test_a_speaker_is_found_at_any_level(jfk, level_db):
    """Far speakers at a low-gain table microphone: every level keeps what the original keeps."""
    original = Segmenter().segments(jfk)
    scaled = jfk * np.float32(10 ** ((level_db - _rms_db(jfk)) / 20))
    # The -85 dBFS hiss of a real preamplifier under the speaker, not digital silence.
    hiss = np.random.default_rng(0).standard_normal(jfk.size).astype(np.float32) * 10 ** (-85 / 20)
    found = Segmenter().segments(np.clip(scaled + hiss, -1, 1))
    frames = jfk.size // FRAME
    kept = _covered(original, frames)
    assert kept.sum() > 250
    assert _covered(found, frames)[kept].mean() >= 0.97


@pytest.mark.parametrize("lead_s", [0.0, 0.1, 0.3, 1.0, 2.5])
def test_padding_reaches_back_before_the_first_speech(jfk, lead_s):
    samples = np.concatenate([_silence(lead_s), jfk])
    first_s = np.argmax(_scores(samples) >= 0.35) * FRAME_S
    start_s = Segmenter(pad_ms=400).segments(samples)[0].start_s
    assert start_s == pytest.approx(max(0.0, first_s - 0.416), abs=1e-6)  # 13 whole frames


@pytest.mark.parametrize("pad_ms", [0, 200, 400, 800])
def test_padding_keeps_audio_after_the_last_speech(jfk, pad_ms):
    samples = np.concatenate([jfk, _silence(3.0)])
    scores = _scores(samples)
    last = np.flatnonzero(scores >= 0.2)[-1]
    end_s = Segmenter(pad_ms=pad_ms).segments(samples)[-1].end_s
    assert end_s >= (last + 1) * FRAME_S + pad_ms / 1000 - 1e-6
    assert end_s <= (last + 1) * FRAME_S + pad_ms / 1000 + FRAME_S + 1e-6


def test_segments_are_frame_aligned_and_carry_the_recording(meeting, meeting_segments):
    quantised = np.frombuffer(float_to_pcm16(meeting), dtype="<i2") / 32768
    for segment in meeting_segments:
        for edge in (segment.start_s, segment.end_s):
            frames = edge / FRAME_S
            assert abs(frames - round(frames)) < 1e-6 or edge == meeting.size / SAMPLE_RATE
        start = round(segment.start_s * SAMPLE_RATE)
        assert segment.samples.dtype == np.float32
        assert segment.samples.size == round(segment.duration_s * SAMPLE_RATE)
        assert np.array_equal(segment.samples, quantised[start : start + segment.samples.size])


@pytest.mark.parametrize("chunk_bytes", [960, 1024, 6400, 32002])
def test_chunk_by_chunk_and_whole_file_agree(meeting, meeting_segments, chunk_bytes):
    segmenter = Segmenter()
    pcm = float_to_pcm16(meeting)
    streamed = []
    for offset in range(0, len(pcm), chunk_bytes):
        streamed += segmenter.push(pcm[offset : offset + chunk_bytes])
    streamed += segmenter.flush()
    # The same segmenter again: flush() must have forgotten everything, the model's state too.
    again = segmenter.segments(meeting)
    duration_s = meeting.size / SAMPLE_RATE
    for whole in (meeting_segments, again):
        assert len(whole) == len(streamed)
        for live, file in zip(streamed, whole, strict=True):
            assert file.start_s == live.start_s
            assert file.end_s == min(live.end_s, duration_s)
            assert np.array_equal(file.samples, live.samples[: file.samples.size])


def test_stream_gives_what_one_push_of_the_whole_file_gives(meeting, meeting_segments):
    # stream() scores the recording a chunk at a time so decoding can start early; its segments
    # must be those of the whole file pushed at once, sample for sample.
    segmenter = Segmenter()
    whole = segmenter.push(float_to_pcm16(meeting)) + segmenter.flush()
    duration_s = meeting.size / SAMPLE_RATE
    assert len(whole) == len(meeting_segments) > 20
    for one_push, streamed in zip(whole, meeting_segments, strict=True):
        assert streamed.start_s == one_push.start_s
        assert streamed.end_s == min(one_push.end_s, duration_s)
        assert np.array_equal(streamed.samples, one_push.samples[: streamed.samples.size])


def test_a_stream_left_early_leaves_the_segmenter_afresh(meeting, meeting_segments):
    segmenter = Segmenter()
    stream = segmenter.stream(meeting)
    first = next(stream)
    assert first.start_s == meeting_segments[0].start_s and first.end_s < 60
    stream.close()
    again = segmenter.segments(meeting)
    assert [(s.start_s, s.end_s) for s in again] == [(s.start_s, s.end_s) for s in meeting_segments]


def test_flush_closes_open_speech_at_the_last_frame(jfk):
    segmenter = Segmenter()
    assert segmenter.push(float_to_pcm16(jfk[: round(1.5 * SAMPLE_RATE)])) == []
    with pytest.raises(UsageError, match="flush"):
        segmenter.segments(jfk)
    (segment,) = segmenter.flush()
    assert segment.start_s < 0.5
    assert segment.end_s == pytest.approx(47 * FRAME_S)  # 1.5 s, zero-padded to whole frames
    assert segmenter.flush() == []
    assert len(segmenter.segments(jfk)) >= 1


def test_segments_fit_whisper_and_cover_the_meeting(meeting, meeting_segments):
    assert len(meeting_segments) >= 15
    assert all(0 < s.duration_s <= 30.0 for s in meeting_segments)
    assert all(a.end_s <= b.start_s for a, b in pairwise(meeting_segments))
    speech = _scores(meeting) >= 0.35
    # All but a blip or two under min_speech_ms (a cough, 0.13 s at 19.5 s).
    assert _covered(meeting_segments, speech.size)[speech].mean() >= 0.995


def test_no_segment_in_the_meetings_silent_stretch(meeting, meeting_segments):
    for segment in meeting_segments:
        overlap = min(segment.end_s, SILENCE[1]) - max(segment.start_s, SILENCE[0])
        assert overlap <= 1.0  # the fading ends and padding of the speech on either side


def test_room_tone_after_digital_silence_is_not_speech(meeting):
    room_tone = meeting[round(125 * SAMPLE_RATE) : round(135 * SAMPLE_RATE)]
    samples = np.concatenate([_silence(1.0), room_tone, _silence(1.0), room_tone])
    assert Segmenter().segments(samples) == []


@pytest.mark.parametrize("kind", sorted(noise.KINDS))
@pytest.mark.parametrize("level_db", [-65.0, -40.0, -20.0])
def test_room_noise_is_not_speech(kind, level_db):
    samples = np.concatenate([_silence(0.5), noise.KINDS[kind](8.0, level_db)])
    assert Segmenter().segments(samples) == []


@pytest.mark.parametrize(("burst_ms", "count"), [(30, 0), (90, 0), (150, 0), (600, 1), (1500, 1)])
def test_short_bursts_are_dropped_as_clicks(jfk, burst_ms, count):
    onset = round(0.33 * SAMPLE_RATE)  # "And", the loudest start in the clip
    burst = jfk[onset : onset + burst_ms * SAMPLE_RATE // 1000]
    samples = np.concatenate([_silence(1.0), burst, _silence(3.0)])
    assert len(Segmenter().segments(samples)) == count


@pytest.mark.parametrize(("gap_ms", "extra"), [(300, 0), (1000, 0), (1500, 0), (4000, 1)])
def test_a_pause_shorter_than_min_silence_does_not_split_speech(jfk, gap_ms, extra):
    baseline = len(Segmenter().segments(jfk))
    cut = round(6.3 * SAMPLE_RATE)  # inside "what your country can do", speech on both sides
    samples = np.concatenate([jfk[:cut], _silence(gap_ms / 1000), jfk[cut:]])
    assert len(Segmenter().segments(samples)) == baseline + extra


@pytest.fixture(scope="module")
def unbroken_speech() -> np.ndarray:
    """Over 40 s of speech from several clips, each trimmed to its loud part and butted together."""
    names = [
        "jfk/jfk.flac",
        "librispeech_fixtures/2412-153948-0000.flac",
        "librivox_sense_sensibility/sense_and_sensibility_01_austen_64kb-0870.flac",
        "librivox_sense_sensibility/sense_and_sensibility_01_austen_64kb-0930.flac",
        "librispeech_fixtures/61-70968-0000.flac",
        "librivox_sense_sensibility/sense_and_sensibility_01_austen_64kb-0920.flac",
        "ami_lhotse_clip/ES2011a.Headset-0-40s-46s.flac",
    ]
    parts = []
    for name in names:
        samples, _ = soundfile.read(DATA / "speech" / name, dtype="float32")
        frames = samples[: samples.size // FRAME * FRAME].reshape(-1, FRAME)
        loud = np.flatnonzero(10 * np.log10(np.mean(frames**2, axis=1) + 1e-10) > -35)
        parts.append(samples[loud[0] * FRAME : (loud[-1] + 1) * FRAME])
    return np.concatenate(parts)


def test_continuous_talk_is_never_cut(unbroken_speech):
    segments = Segmenter().segments(unbroken_speech)
    frames = unbroken_speech.size // FRAME
    assert _covered(segments, frames).all()


@pytest.mark.parametrize("max_segment_s", [30.0, 15.0, 8.0])
def test_long_speech_is_split_where_speech_is_least_likely(unbroken_speech, max_segment_s):
    segments = Segmenter(max_segment_s=max_segment_s).segments(unbroken_speech)
    assert len(segments) >= unbroken_speech.size / SAMPLE_RATE // max_segment_s + 1
    assert all(s.duration_s <= max_segment_s + 1e-9 for s in segments)
    scores = _scores(unbroken_speech)
    for before, after in pairwise(segments):
        assert before.end_s == after.start_s  # nothing lost at a split
        cut = round(before.end_s / FRAME_S)
        searched = scores[cut - round(min(5.0, max_segment_s / 2) / FRAME_S) : cut]
        assert np.mean(scores[cut - 2 : cut + 3]) <= np.percentile(searched, 20)


def test_memory_stays_bounded_on_a_long_stream(meeting):
    pcm = float_to_pcm16(np.concatenate([meeting, meeting]))  # 11 minutes, 21 MB of PCM
    segmenter = Segmenter()
    tracemalloc.start()
    try:
        for offset in range(0, len(pcm), 3200):
            segmenter.push(pcm[offset : offset + 3200])
        segmenter.flush()
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 6_000_000  # the open segment and the padding, not the stream
