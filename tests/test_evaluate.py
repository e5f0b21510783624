"""WER evaluation: normalization, error counting, manifest reading and the evaluate loop."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
import soundfile

from appliance.errors import UsageError
from appliance.evaluate import Clip, Report, evaluate, normalize, read_manifest, score

MANIFEST = Path(__file__).parent / "data" / "speech" / "manifest.jsonl"
EXPECTED_SETS = {
    "ami_meetings",
    "notsofar",
    "quiet_speakers",
    "jfk",
    "librivox_sense_sensibility",
    "mfa_disfluency",
    "librispeech_fixtures",
    "commonvoice_en_words",
    "pocketsphinx_commands",
    "ami_lhotse_clip",
    "commonvoice_sv",
}


def _clip(text: str, language: str = "en", dataset: str = "hand", **kwargs: bool) -> Clip:
    # score() never opens the audio, so a name is enough here.
    return Clip(Path(f"{dataset}.flac"), text, language, dataset, **kwargs)


@pytest.mark.parametrize(
    ("text", "language", "expected"),
    [
        ("<cutoff-montreal> montreal <hes-forced> aligner", "en", "montreal aligner"),
        ("[laughter] montreal [laughter] forced <unk> aligner", "en", "montreal forced aligner"),
        ("<hes-montreal> <hes-forced> <hes-aligner>", "en", ""),
        ("Mr. Dashwood", "en", "mister dashwood"),
        ("Hello, WORLD!", "en", "hello world"),
        ("twenty five dollars", "en", "$25"),
        ("I have a thousand thoughts", "en", "i have a 1000 thoughts"),
        ("I'M ABIGAIL", "en", "i am abigail"),
        ("don't   stop\n now", "en", "do not stop now"),
        ("uh so um yes", "en", "so yes"),
        ("colour", "en", "color"),
        ("Får jag en kopp kaffe? Ölet är gott.", "sv", "får jag en kopp kaffe ölet är gott"),
        ("Låt oss [skratt] höra!", "sv", "låt oss höra"),
        ("  ", "sv", ""),
        (
            "[1.46-2.82] ES2011a.Headset-1: I'M ABIGAIL\n[3.36-4.36] ES2011a.Headset-2: CALL ME",
            "en",
            "i am abigail call me",
        ),
        ("SPEAKER_01: yes", "en", "yes"),
        ("Speaker 1: yes we can\n\nSpeaker 12: no", "en", "yes we can no"),
        ("Note: two things", "en", "note 2 things"),
    ],
)
def test_normalize(text: str, language: str, expected: str) -> None:
    assert normalize(text, language) == expected


@pytest.mark.parametrize(
    ("reference", "hypothesis", "ref_words", "subs", "dels", "ins"),
    [
        ("the cat sat", "the cat sat", 3, 0, 0, 0),
        ("the cat sat", "the dog sat", 3, 1, 0, 0),
        ("the cat sat on the mat", "the cat sat", 6, 0, 3, 0),
        ("the cat sat", "the cat sat down today", 3, 0, 0, 2),
        ("the cat sat", "", 3, 0, 3, 0),
        ("alpha bravo charlie delta echo", "xray alpha bravo kilo echo", 5, 1, 1, 1),
        ("Mr. Smith paid twenty five dollars.", "mister smith paid $25", 4, 0, 0, 0),
        ("[laughter] hello <unk> world", "Hello, world!", 2, 0, 0, 0),
    ],
)
def test_score_counts(
    reference: str, hypothesis: str, ref_words: int, subs: int, dels: int, ins: int
) -> None:
    result = score(_clip(reference), hypothesis, audio_s=1.0, processing_s=0.5)
    assert (result.ref_words, result.substitutions, result.deletions, result.insertions) == (
        ref_words,
        subs,
        dels,
        ins,
    )
    assert result.invented_words == 0


@pytest.mark.parametrize(
    ("clip", "hypothesis", "invented"),
    [
        (_clip("", expect_empty=True), "", 0),
        (_clip("", expect_empty=True), "Thank you.", 2),
        (_clip("", expect_empty=True), "[music] (applause)", 0),
        (_clip("<hes-montreal> <hes-forced>"), "montreal", 1),
        (_clip("", language="sv", expect_empty=True), "Tack för att ni tittade", 5),
    ],
)
def test_empty_reference_counts_invented_words(clip: Clip, hypothesis: str, invented: int) -> None:
    result = score(clip, hypothesis, audio_s=1.0, processing_s=0.1)
    assert result.invented_words == invented
    assert (result.ref_words, result.substitutions, result.deletions, result.insertions) == (
        0,
        0,
        0,
        0,
    )


def test_corpus_wer_is_word_weighted() -> None:
    report = Report(
        (
            score(_clip("yes", dataset="short"), "no", 1.0, 0.5),
            score(_clip("we met on monday to plan the spring budget", dataset="long"), "", 0, 0),
            score(_clip("the slides are ready", dataset="long"), "the slides are ready", 3, 1),
        )
    )
    short, long = report.sets
    assert (short.dataset, short.wer) == ("short", 1.0)
    assert (long.dataset, long.ref_words, long.errors) == ("long", 13, 9)
    assert long.wer == pytest.approx(9 / 13)
    # A mean of per-clip WERs would give (1 + 1 + 0) / 3; word weighting gives 10 / 14.
    assert report.corpus.wer == pytest.approx(10 / 14)
    assert report.corpus.rtf == pytest.approx(1.5 / 4.0)


def test_set_without_reference_words_has_no_wer() -> None:
    report = Report((score(_clip("", dataset="silence", expect_empty=True), "hello there", 0, 0),))
    row = report.sets[0]
    assert (row.wer, row.rtf, row.invented_words) == (None, None, 2)
    assert report.format().splitlines()[2].split() == ["silence", "1", "0", "-", "2", "0.0", "-"]
    assert json.loads(report.to_json())["corpus"]["wer"] is None


def _write_wav(path: Path, seconds: float, rate: int = 16000) -> Path:
    soundfile.write(path, np.zeros(int(seconds * rate), dtype=np.int16), rate)
    return path


@pytest.fixture
def manifest_dir(tmp_path: Path) -> Path:
    _write_wav(tmp_path / "silence.wav", 1.0)
    _write_wav(tmp_path / "hello.wav", 0.5)
    return tmp_path


def _line(**fields: object) -> str:
    base = {"audio": "hello.wav", "text": "hello", "language": "en", "set": "tiny"}
    return json.dumps({**base, **fields})


@pytest.mark.parametrize(
    ("second_line", "problem"),
    [
        ("{not json", "not valid JSON"),
        ('["a", "list"]', "expected a JSON object"),
        (json.dumps({"audio": "hello.wav", "language": "en", "set": "tiny"}), "missing key text"),
        (json.dumps({"text": "hi"}), "missing key audio, language, set"),
        (_line(audio="gone.wav"), "audio file missing"),
        (_line(language=None), "'language' must be a string"),
        (_line(expect_empty="yes"), "'expect_empty' must be true or false"),
        (_line(expect_empty=True), "'expect_empty' clip has reference text"),
    ],
)
def test_manifest_line_errors_name_file_and_line(
    manifest_dir: Path, second_line: str, problem: str
) -> None:
    path = manifest_dir / "manifest.jsonl"
    path.write_text(_line() + "\n" + second_line + "\n", encoding="utf-8")
    with pytest.raises(UsageError, match=re.escape(f"{path}:2: {problem}")):
        read_manifest(path)


def test_manifest_reads_clips_and_skips_blank_lines(manifest_dir: Path) -> None:
    path = manifest_dir / "manifest.jsonl"
    lines = [_line(), "", _line(audio="silence.wav", text="", set="quiet", expect_empty=True), ""]
    path.write_text("\n".join(lines), encoding="utf-8")
    assert read_manifest(path) == [
        Clip(manifest_dir / "hello.wav", "hello", "en", "tiny"),
        Clip(manifest_dir / "silence.wav", "", "en", "quiet", expect_empty=True),
    ]


@pytest.mark.parametrize(
    ("sets", "language", "message"),
    [
        ({"jfk", "nope"}, None, "unknown set nope in "),
        (
            {"nope"},
            None,
            "available: ami_lhotse_clip, ami_meetings, commonvoice_en_words, commonvoice_sv, jfk",
        ),
        (None, "de", "no clips in language 'de'"),
        (None, "de", "available: en, sv"),
        ({"jfk"}, "sv", "match the chosen sets and language"),
    ],
)
def test_manifest_selection_errors(
    sets: set[str] | None, language: str | None, message: str
) -> None:
    with pytest.raises(UsageError, match=re.escape(message)):
        read_manifest(MANIFEST, sets=sets, language=language)


def test_manifest_missing_file(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match=re.escape(f"cannot read manifest {tmp_path / 'x.jsonl'}")):
        read_manifest(tmp_path / "x.jsonl")


def test_real_manifest_parses_with_all_audio_present() -> None:
    clips = read_manifest(MANIFEST)
    assert {c.dataset for c in clips} == EXPECTED_SETS
    assert {c.language for c in clips} == {"en", "sv"}
    assert all(c.audio.is_file() for c in clips)
    assert len(clips) == sum(1 for line in MANIFEST.read_text().splitlines() if line.strip())


@pytest.mark.parametrize(
    ("sets", "language", "count"),
    [
        ({"jfk"}, None, 1),
        ({"jfk", "librivox_sense_sensibility"}, None, 6),
        (None, "sv", 11),
        ({"commonvoice_sv", "jfk"}, "sv", 11),
    ],
)
def test_real_manifest_selection(sets: set[str] | None, language: str | None, count: int) -> None:
    clips = read_manifest(MANIFEST, sets=sets, language=language)
    assert len(clips) == count
    assert all(sets is None or c.dataset in sets for c in clips)
    assert all(language is None or c.language == language for c in clips)


class FakeTranscriber:
    """Test seam standing in for whisper.cpp: the clip's own reference, or a planted error."""

    def __init__(self, altered: dict[str, str]) -> None:
        self.altered = altered

    def __call__(self, clip: Clip) -> str:
        return self.altered.get(clip.audio.name, clip.text)


class FakeClock:
    """Test seam for timing: every reading is `step_s` later than the last."""

    def __init__(self, step_s: float) -> None:
        self.now = 0.0
        self.step_s = step_s

    def __call__(self) -> float:
        self.now += self.step_s
        return self.now


LIBRIVOX = "sense_and_sensibility_01_austen_64kb-{}.flac"


def test_evaluate_real_clips_with_planted_errors() -> None:
    clips = read_manifest(MANIFEST, sets={"jfk", "librivox_sense_sensibility"})
    transcriber = FakeTranscriber(
        {
            # one deletion ("john"), one substitution ("young" -> "old"), one insertion ("today")
            LIBRIVOX.format("0870"): "and mister dashwood had then leisure to consider how much "
            "there might be prudently in his power to do for them",
            LIBRIVOX.format("0880"): "he was not an ill disposed old man",
            LIBRIVOX.format("0930"): "he might even have been made amiable himself today",
        }
    )
    calls: list[tuple[str, int, int]] = []
    report = evaluate(clips, transcriber, lambda *call: calls.append(call), clock=FakeClock(0.25))

    jfk, librivox = report.sets
    assert (jfk.dataset, jfk.clips, jfk.ref_words, jfk.errors, jfk.wer) == ("jfk", 1, 22, 0, 0.0)
    assert (librivox.clips, librivox.ref_words, librivox.errors) == (5, 71, 3)
    assert librivox.wer == pytest.approx(3 / 71)
    assert report.corpus.wer == pytest.approx(3 / 93)
    assert jfk.audio_s == pytest.approx(11.0)
    assert jfk.processing_s == pytest.approx(0.25)
    assert report.corpus.rtf == pytest.approx(6 * 0.25 / report.corpus.audio_s)
    assert calls == [("evaluate", done, 6) for done in range(7)]

    table = report.format()
    assert re.search(r"^librivox_sense_sensibility\s+5\s+71\s+4\.2%\s+0\s", table, re.M)
    assert re.search(r"^total\s+6\s+93\s+3\.2%\s+0\s", table, re.M)
    document = json.loads(report.to_json())
    assert document["corpus"]["errors"] == 3
    assert [row["dataset"] for row in document["sets"]] == ["jfk", "librivox_sense_sensibility"]
    assert len(document["clips"]) == 6


def test_evaluate_counts_invented_words_on_silence(manifest_dir: Path) -> None:
    path = manifest_dir / "manifest.jsonl"
    lines = [_line(), _line(audio="silence.wav", text="", set="quiet", expect_empty=True)]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    transcriber = FakeTranscriber({"silence.wav": "Thanks for watching!"})

    report = evaluate(read_manifest(path), transcriber, clock=FakeClock(0.1))

    tiny, quiet = report.sets
    assert (tiny.ref_words, tiny.errors, tiny.invented_words) == (1, 0, 0)
    assert (quiet.ref_words, quiet.wer, quiet.invented_words) == (0, None, 3)
    assert quiet.audio_s == pytest.approx(1.0)
    assert quiet.rtf == pytest.approx(0.1)
    assert (report.corpus.wer, report.corpus.invented_words) == (0.0, 3)


@pytest.mark.parametrize(
    ("seconds", "fits"),
    [(5.0, True), (30.0, True), (30.0000625, True), (30.01, False), (31.0, False)],
)
def test_a_clip_fits_one_window_to_10_ms(tmp_path, seconds, fits) -> None:
    from appliance.evaluate import fits_one_window

    audio = tmp_path / "clip.wav"
    soundfile.write(audio, np.zeros(round(seconds * 16000), dtype=np.int16), 16000)
    assert fits_one_window(Clip(audio, "x", "en", "set")) is fits
