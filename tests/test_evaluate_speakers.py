"""Speaker scores of `appliance eval`: DER (pyannote.metrics) and cpWER (meeteval)."""

from __future__ import annotations

from pathlib import Path

import pytest

from appliance.errors import UsageError
from appliance.evaluate_speakers import cp_wer, format_speakers, read_rttm, score_speakers
from appliance.transcript import Segment, Transcript

AMI = Path(__file__).resolve().parent / "data" / "speech" / "ami_meetings" / "ES2003a_0000-0030"
REFERENCE = [(0.0, 4.0, "ann"), (4.0, 10.0, "bo")]


def _transcript(*segments: Segment) -> Transcript:
    return Transcript(segments, "en", 10.0)


@pytest.mark.parametrize(
    "found, der, confusion",
    [
        # Right turns under other names: no error.
        ([(0.0, 4.0, "Speaker 2"), (4.0, 10.0, "Speaker 1")], 0.0, 0.0),
        # One speaker for all: ann's 3.5 scored s are confused (the shorter, under the best map).
        ([(0.0, 10.0, "Speaker 1")], 3.5 / 9, 3.5 / 9),
        # No turns: all missed.
        ([], 1.0, 0.0),
        # bo's turn not covered after 7 s: 2.75 s missed.
        ([(0.0, 4.0, "Speaker 1"), (4.0, 7.0, "Speaker 2")], 2.75 / 9, 0.0),
    ],
)
def test_der_and_confusion(found, der, confusion):
    result = score_speakers("clip.flac", "set", REFERENCE, found, 10.0)
    # 10 s of speech less 0.25 s each side of the boundaries at 0, 4 and 10 s.
    assert result.scored_s == pytest.approx(9.0)
    assert result.der == pytest.approx(der, abs=0.001)
    assert result.confusion == pytest.approx(confusion, abs=0.001)


def test_cpwer_on_an_ami_clip_counts_words_under_the_best_speaker_mapping():
    turns = [line.split(maxsplit=5) for line in AMI.with_suffix(".stm").read_text().splitlines()]
    perfect = _transcript(
        *(Segment(float(t[3]), float(t[4]), t[5], f"Speaker {t[2]}") for t in turns)
    )
    errors, words = cp_wer(AMI.with_suffix(".stm"), perfect, "en")
    assert errors == 0 and words > 50
    one_voice = _transcript(
        *(Segment(s.start_s, s.end_s, s.text, "Speaker 1") for s in perfect.segments)
    )
    errors, _ = cp_wer(AMI.with_suffix(".stm"), one_voice, "en")
    assert errors > 0  # the second speaker's words are all missing under one speaker
    assert cp_wer(AMI.with_suffix(".stm"), _transcript(), "en") == (words, words)


def test_read_rttm_and_a_bad_line(tmp_path):
    assert read_rttm(AMI.with_suffix(".rttm"))[0][2].startswith("ME")
    bad = tmp_path / "bad.rttm"
    bad.write_text("SPEAKER x 1 zero 1.0 <NA> <NA> a <NA> <NA>\n")
    with pytest.raises(UsageError, match=r"bad\.rttm:1: not an RTTM SPEAKER line"):
        read_rttm(bad)


def test_the_table_has_a_line_per_clip_and_a_total():
    result = score_speakers("clip.flac", "set", REFERENCE, [(0.0, 10.0, "S")], 10.0)
    table = format_speakers([result, result]).splitlines()
    assert len(table) == 5 and table[-1].startswith("total") and "38.9%" in table[-1]
