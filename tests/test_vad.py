"""Speech segmentation on real speech and a real meeting, frame by frame and whole-file."""

from __future__ import annotations

import tracemalloc
from itertools import pairwise
from pathlib import Path

import numpy as np
import pytest
import soundfile
import webrtcvad

from appliance.audio import FRAME_BYTES, FRAME_MS, FRAME_SAMPLES, SAMPLE_RATE, float_to_pcm16, load
from appliance.errors import AudioError, UsageError
from appliance.vad import Segmenter, SpeechSegment

DATA = Path(__file__).parent / "data"
JFK = DATA / "speech" / "jfk" / "jfk.flac"
MEETING = DATA / "meetings" / "dev-meeting-01.flac"
# The meeting's 45 s without speech: steady room tone at -55 dBFS from 115.5 s to 163.0 s,
# found by frame level (speech around it peaks near -10 dBFS).
SILENCE = (115.5, 163.0)
FRAME_S = FRAME_MS / 1000


@pytest.fixture(scope="module")
def jfk() -> np.ndarray:
    return load(JFK)


@pytest.fixture(scope="module")
def meeting() -> np.ndarray:
    return load(MEETING)


@pytest.fixture(scope="module")
def meeting_segments(meeting) -> list[SpeechSegment]:
    return Segmenter().segments(meeting)


def _frames(samples: np.ndarray) -> list[bytes]:
    """30 ms PCM16 frames, the last partial one padded with zeros as segments() does."""
    padded = np.concatenate([samples, np.zeros(-samples.size % FRAME_SAMPLES, dtype=np.float32)])
    pcm = float_to_pcm16(padded)
    return [pcm[offset : offset + FRAME_BYTES] for offset in range(0, len(pcm), FRAME_BYTES)]


def _levels_db(samples: np.ndarray) -> np.ndarray:
    frames = samples[: samples.size // FRAME_SAMPLES * FRAME_SAMPLES].reshape(-1, FRAME_SAMPLES)
    return 10 * np.log10(np.mean(frames.astype(np.float64) ** 2, axis=1) + 1e-10)


def _raw_voiced(samples: np.ndarray, aggressiveness: int = 2) -> np.ndarray:
    """webrtcvad's own verdict per whole frame, with no smoothing or noise guard."""
    vad = webrtcvad.Vad(aggressiveness)
    return np.array(
        [
            vad.is_speech(frame, SAMPLE_RATE)
            for frame in _frames(samples)[: samples.size // FRAME_SAMPLES]
        ]
    )


def _covered(segments: list[SpeechSegment], count: int) -> np.ndarray:
    """Which of count frames fall inside some segment."""
    inside = np.zeros(count, dtype=bool)
    for segment in segments:
        inside[round(segment.start_s / FRAME_S) : round(segment.end_s / FRAME_S)] = True
    return inside


def _silence(seconds: float) -> np.ndarray:
    return np.zeros(round(seconds * SAMPLE_RATE), dtype=np.float32)


@pytest.mark.parametrize(
    ("settings", "names"),
    [
        ({"aggressiveness": 4}, "aggressiveness"),
        ({"aggressiveness": -1}, "aggressiveness"),
        ({"pre_roll_ms": -30}, "pre_roll_ms"),
        ({"hangover_ms": 1000, "min_silence_ms": 500}, "hangover_ms"),
        ({"min_silence_ms": 10}, "min_silence_ms"),
        ({"max_segment_s": 24.5}, "max_segment_s"),
        ({"max_segment_s": 0.0}, "max_segment_s"),
        ({"pre_roll_ms": 20000}, "pre_roll_ms"),
    ],
)
def test_bad_settings_are_a_clear_error(settings, names):
    with pytest.raises(UsageError, match=names):
        Segmenter(**settings)


@pytest.mark.parametrize("size", [0, 959, 961, 1920])
def test_push_takes_only_whole_frames(size):
    with pytest.raises(AudioError, match="960 bytes"):
        Segmenter().push(bytes(size))


def test_jfk_segments_cover_all_of_its_speech(jfk):
    segments = Segmenter().segments(jfk)
    loud_speech = _raw_voiced(jfk, 3) & (_levels_db(jfk) > -30)
    assert loud_speech.sum() > 100
    assert _covered(segments, loud_speech.size)[loud_speech].all()
    assert all(0 <= s.start_s < s.end_s <= jfk.size / SAMPLE_RATE for s in segments)


@pytest.mark.parametrize("lead_s", [0.0, 0.1, 0.3, 1.0, 2.5])
def test_pre_roll_reaches_back_before_the_first_voiced_frame(jfk, lead_s):
    samples = np.concatenate([_silence(lead_s), jfk])
    first_voiced_s = np.argmax(_raw_voiced(samples)) * FRAME_S
    start_s = Segmenter().segments(samples)[0].start_s
    assert start_s <= max(0.0, first_voiced_s - 0.3) + 1e-9
    assert start_s >= first_voiced_s - 0.3 - 1e-9  # exactly the pre-roll, no more


@pytest.mark.parametrize("hangover_ms", [300, 450, 600])
def test_hangover_keeps_speech_after_the_last_voiced_frame(jfk, hangover_ms):
    samples = np.concatenate([jfk, _silence(2.0)])
    loud_speech = _raw_voiced(samples) & (_levels_db(samples) > -40)
    wanted_s = (np.flatnonzero(loud_speech)[-1] + 1) * FRAME_S + hangover_ms / 1000
    end_s = Segmenter(hangover_ms=hangover_ms).segments(samples)[-1].end_s
    assert wanted_s - 1e-9 <= end_s <= wanted_s + 0.5


def test_segments_are_frame_aligned_and_carry_the_recording(meeting, meeting_segments):
    quantised = np.frombuffer(float_to_pcm16(meeting), dtype="<i2") / 32768
    for segment in meeting_segments:
        for edge in (segment.start_s, segment.end_s):
            # Exactly the float for a whole number of frames, so a recorder can map it to wall time.
            assert (
                edge == round(edge / FRAME_S) * FRAME_MS / 1000
                or edge == meeting.size / SAMPLE_RATE
            )
        start = round(segment.start_s * SAMPLE_RATE)
        assert segment.samples.dtype == np.float32
        assert segment.samples.size == round(segment.duration_s * SAMPLE_RATE)
        assert np.array_equal(segment.samples, quantised[start : start + segment.samples.size])


def test_frame_by_frame_and_whole_file_agree(meeting, meeting_segments):
    segmenter = Segmenter()
    streamed = [segment for frame in _frames(meeting) for segment in segmenter.push(frame)]
    streamed += segmenter.flush()
    # The same segmenter again: flush() must have forgotten everything, webrtcvad included.
    again = segmenter.segments(meeting)
    duration_s = meeting.size / SAMPLE_RATE
    for whole in (meeting_segments, again):
        assert len(whole) == len(streamed)
        for live, file in zip(streamed, whole, strict=True):
            assert file.start_s == live.start_s
            assert file.end_s == min(live.end_s, duration_s)
            assert np.array_equal(file.samples, live.samples[: file.samples.size])


def test_flush_closes_open_speech_at_the_last_frame(jfk):
    segmenter = Segmenter()
    for frame in _frames(jfk[: round(1.5 * SAMPLE_RATE)]):
        assert segmenter.push(frame) == []
    with pytest.raises(UsageError, match="flush"):
        segmenter.segments(jfk)
    (segment,) = segmenter.flush()
    assert (segment.start_s, segment.end_s) == (0.0, 1.5)
    assert segment.samples.size == round(1.5 * SAMPLE_RATE)
    assert segmenter.flush() == []
    assert len(segmenter.segments(jfk)) >= 1


def test_segments_fit_whisper_and_cover_the_meeting(meeting, meeting_segments):
    assert len(meeting_segments) >= 20
    assert all(0 < s.duration_s <= 22.0 for s in meeting_segments)
    assert all(a.end_s <= b.start_s for a, b in pairwise(meeting_segments))
    loud_speech = _raw_voiced(meeting, 3) & (_levels_db(meeting) > -30)
    assert _covered(meeting_segments, loud_speech.size)[loud_speech].mean() >= 0.99


def test_no_segment_in_the_meetings_silent_stretch(meeting, meeting_segments):
    start, end = (round(edge / FRAME_S) for edge in SILENCE)
    assert _levels_db(meeting)[start:end].max() < -50
    # webrtcvad alone calls some of this room tone speech, so the test can fail.
    assert _raw_voiced(meeting)[start:end].sum() > 50
    for segment in meeting_segments:
        assert not SILENCE[0] <= segment.start_s <= SILENCE[1]
        overlap = min(segment.end_s, SILENCE[1]) - max(segment.start_s, SILENCE[0])
        # The segment before may run on while the noise floor catches up with the room tone.
        assert overlap <= 3.0


def test_steady_noise_after_digital_silence_is_not_speech(meeting):
    room_tone = meeting[round(125 * SAMPLE_RATE) : round(135 * SAMPLE_RATE)]
    samples = np.concatenate([_silence(1.0), room_tone, _silence(1.0), room_tone])
    assert _raw_voiced(samples).sum() > 50
    assert Segmenter().segments(samples) == []


@pytest.mark.parametrize(("burst_ms", "count"), [(30, 0), (90, 0), (150, 0), (600, 1), (1500, 1)])
def test_short_bursts_are_dropped_as_clicks(jfk, burst_ms, count):
    onset = round(0.33 * SAMPLE_RATE)  # "And", the loudest start in the clip
    burst = jfk[onset : onset + burst_ms * SAMPLE_RATE // 1000]
    samples = np.concatenate([_silence(1.0), burst, _silence(1.0)])
    assert len(Segmenter().segments(samples)) == count


@pytest.mark.parametrize(("gap_ms", "extra"), [(30, 0), (60, 0), (300, 0), (600, 0), (2000, 1)])
def test_a_short_gap_inside_speech_does_not_split_it(jfk, gap_ms, extra):
    baseline = len(Segmenter().segments(jfk))
    # Inside "what your country can do", voiced on both sides. (Digital silence early in the
    # clip would pull the noise floor under JFK's tape hiss and merge his first two segments.)
    cut = round(6.3 * SAMPLE_RATE)
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
        loud = np.flatnonzero(_levels_db(samples) > -35)
        parts.append(samples[loud[0] * FRAME_SAMPLES : (loud[-1] + 1) * FRAME_SAMPLES])
    return np.concatenate(parts)


@pytest.mark.parametrize("max_segment_s", [22.0, 15.0, 8.0])
def test_long_speech_is_split_at_a_quiet_point(unbroken_speech, max_segment_s):
    # A long min_silence_ms so that only the length cap can end a segment.
    segments = Segmenter(min_silence_ms=3000, max_segment_s=max_segment_s).segments(unbroken_speech)
    assert len(segments) >= unbroken_speech.size / SAMPLE_RATE // max_segment_s + 1
    assert all(s.duration_s <= max_segment_s for s in segments)
    levels = _levels_db(unbroken_speech)
    for before, after in pairwise(segments):
        assert before.end_s == after.start_s  # nothing lost at a split
        cut = round(before.end_s / FRAME_S)
        searched = levels[cut - round(min(5.0, max_segment_s / 2) / FRAME_S) : cut]
        assert np.mean(levels[cut - 2 : cut + 3]) <= np.percentile(searched, 20)
        assert np.mean(levels[cut - 2 : cut + 3]) <= np.max(searched) - 15


def test_memory_stays_bounded_on_a_long_stream(meeting):
    frames = _frames(np.concatenate([meeting, meeting]))  # 11 minutes, 21 MB of PCM
    segmenter = Segmenter(min_silence_ms=3000)
    tracemalloc.start()
    try:
        for frame in frames:
            segmenter.push(frame)
        segmenter.flush()
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 6_000_000
