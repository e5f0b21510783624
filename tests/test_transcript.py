"""Transcript rendering: txt, srt, vtt, json, gap markers and the json round trip."""

from __future__ import annotations

import json
import re

import pytest

from appliance.errors import UsageError
from appliance.transcript import FORMATS, Gap, Segment, Transcript, from_json, render

MEETING = Transcript(
    segments=(
        Segment(0.0, 2.5, " Good morning, everyone. "),
        Segment(2.5, 3.0, "   "),
        Segment(3.0, 5.25, "Let's start with the budget."),
        Segment(5.25, 6.0, ""),
        Segment(100.0, 104.0, "We are back."),
    ),
    language="en",
    duration_s=104.0,
    gaps=(Gap(60.0, 99.5, "microphone lost"),),
)

EXPECTED = {
    "txt": (
        "Good morning, everyone.\n"
        "Let's start with the budget.\n"
        "[no audio 00:01:00–00:01:39: microphone lost]\n"
        "We are back.\n"
    ),
    "srt": (
        "1\n00:00:00,000 --> 00:00:02,500\nGood morning, everyone.\n\n"
        "2\n00:00:03,000 --> 00:00:05,250\nLet's start with the budget.\n\n"
        "3\n00:01:00,000 --> 00:01:39,500\n[no audio 00:01:00–00:01:39: microphone lost]\n\n"
        "4\n00:01:40,000 --> 00:01:44,000\nWe are back.\n"
    ),
    "vtt": (
        "WEBVTT\n\n"
        "00:00:00.000 --> 00:00:02.500\nGood morning, everyone.\n\n"
        "00:00:03.000 --> 00:00:05.250\nLet's start with the budget.\n\n"
        "00:01:00.000 --> 00:01:39.500\n[no audio 00:01:00–00:01:39: microphone lost]\n\n"
        "00:01:40.000 --> 00:01:44.000\nWe are back.\n"
    ),
}


@pytest.mark.parametrize("fmt", ["txt", "srt", "vtt"])
def test_render_meeting(fmt: str) -> None:
    assert render(MEETING, fmt) == EXPECTED[fmt]


@pytest.mark.parametrize(
    ("start_s", "end_s", "srt_timing"),
    [
        (0.0, 0.001, "00:00:00,000 --> 00:00:00,001"),
        (59.999, 60.0, "00:00:59,999 --> 00:01:00,000"),
        (59.9996, 61.0, "00:01:00,000 --> 00:01:01,000"),
        (3599.5, 3600.0, "00:59:59,500 --> 01:00:00,000"),
        (3600.0, 3661.5, "01:00:00,000 --> 01:01:01,500"),
        (360_000.0, 360_001.0, "100:00:00,000 --> 100:00:01,000"),
        (-2.0, -1.0, "00:00:00,000 --> 00:00:00,000"),
        (-0.5, 1.0, "00:00:00,000 --> 00:00:01,000"),
        (5.0, 4.0, "00:00:05,000 --> 00:00:05,000"),
    ],
)
def test_cue_timing(start_s: float, end_s: float, srt_timing: str) -> None:
    transcript = Transcript((Segment(start_s, end_s, "hello"),), "en", 10.0)
    assert render(transcript, "srt").splitlines()[1] == srt_timing
    assert render(transcript, "vtt").splitlines()[2] == srt_timing.replace(",", ".")


@pytest.mark.parametrize(
    ("gap", "marker"),
    [
        (Gap(723.2, 760.9, "microphone lost"), "[no audio 00:12:03–00:12:40: microphone lost]"),
        (Gap(3600.0, 3725.0, ""), "[no audio 01:00:00–01:02:05]"),
        (Gap(-3.0, 2.0, "disk full"), "[no audio 00:00:00–00:00:02: disk full]"),
    ],
)
def test_gap_marker(gap: Gap, marker: str) -> None:
    assert render(Transcript((), "en", 4000.0, (gap,)), "txt") == marker + "\n"


def test_gap_sorts_by_time_among_segments() -> None:
    transcript = Transcript(
        segments=(Segment(0.0, 1.0, "before"), Segment(20.0, 21.0, "after")),
        language="en",
        duration_s=21.0,
        gaps=(Gap(20.0, 20.0, "usb reset"), Gap(5.0, 15.0, "microphone lost")),
    )
    assert render(transcript, "txt").splitlines() == [
        "before",
        "[no audio 00:00:05–00:00:15: microphone lost]",
        "[no audio 00:00:20–00:00:20: usb reset]",
        "after",
    ]


@pytest.mark.parametrize(
    ("fmt", "expected"),
    [("txt", ""), ("srt", ""), ("vtt", "WEBVTT\n")],
)
def test_only_empty_segments_render_nothing(fmt: str, expected: str) -> None:
    transcript = Transcript((Segment(0.0, 1.0, ""), Segment(1.0, 2.0, " \n\t")), "en", 2.0)
    assert render(transcript, fmt) == expected
    assert transcript.text == ""


@pytest.mark.parametrize(
    ("text", "txt_line"),
    [
        ("two\nlines", "two lines"),
        ("a\n\nblank line would end a cue", "a blank line would end a cue"),
        ("  padded\t ", "padded"),
    ],
)
def test_segment_text_becomes_one_line(text: str, txt_line: str) -> None:
    transcript = Transcript((Segment(0.0, 1.0, text),), "en", 1.0)
    assert render(transcript, "txt") == txt_line + "\n"
    assert render(transcript, "srt").splitlines()[2] == txt_line
    assert transcript.text == txt_line


@pytest.mark.parametrize(
    ("text", "cue_text"),
    [
        ("Q&A at five", "Q&amp;A at five"),
        ("x < y > z", "x &lt; y &gt; z"),
        ("a --> b", "a --&gt; b"),
    ],
)
def test_vtt_escapes_markup(text: str, cue_text: str) -> None:
    transcript = Transcript((Segment(0.0, 1.0, text),), "en", 1.0)
    assert render(transcript, "vtt").splitlines()[3] == cue_text


SRT_TIMING = re.compile(r"^(\d{2,}):(\d{2}):(\d{2}),(\d{3}) --> (\d{2,}):(\d{2}):(\d{2}),(\d{3})$")


def _seconds(h: str, m: str, s: str, ms: str) -> int:
    return ((int(h) * 60 + int(m)) * 60 + int(s)) * 1000 + int(ms)


@pytest.mark.parametrize(
    "transcript",
    [
        MEETING,
        Transcript(
            tuple(Segment(i * 0.7, i * 0.7 + 1.3, f"cue {i}") for i in range(30)),
            "en",
            25.0,
            (Gap(10.0, 12.0, "microphone lost"),),
        ),
        Transcript((Segment(9.0, 3.0, "backwards"), Segment(-1.0, 0.5, "early")), "en", 9.0),
    ],
)
def test_srt_structure(transcript: Transcript) -> None:
    blocks = render(transcript, "srt").rstrip("\n").split("\n\n")
    for number, block in enumerate(blocks, start=1):
        index, timing, text = block.split("\n")
        assert index == str(number)
        match = SRT_TIMING.match(timing)
        assert match, timing
        assert _seconds(*match.group(1, 2, 3, 4)) <= _seconds(*match.group(5, 6, 7, 8))
        assert text.strip() == text and text


@pytest.mark.parametrize(
    "transcript",
    [
        MEETING,
        Transcript((), "en", 0.0),
        Transcript((Segment(0.5, 1.25, "Får jag en kopp kaffe?"),), "sv", 1.25),
        Transcript((Segment(0.1, 0.30000000000000004, "float noise"),), "en", 0.4),
    ],
)
def test_json_round_trip(transcript: Transcript) -> None:
    text = render(transcript, "json")
    back = from_json(text)
    assert back.language == transcript.language
    assert back.duration_s == transcript.duration_s
    assert back.gaps == transcript.gaps
    assert back.text == transcript.text
    assert from_json(render(back, "json")) == back
    assert json.loads(text)["segments"] == [
        {"start_s": s.start_s, "end_s": s.end_s, "text": s.text} for s in back.segments
    ]


def test_json_round_trip_is_exact_for_clean_transcript() -> None:
    transcript = Transcript(
        (Segment(0.0, 1.5, "Hej då"), Segment(1.5, 2.0, "ok")), "sv", 2.0, (Gap(2.0, 3.0, "x"),)
    )
    assert from_json(render(transcript, "json")) == transcript


def test_json_drops_empty_segments_and_clamps() -> None:
    transcript = Transcript((Segment(-1.0, -2.0, "early"), Segment(1.0, 2.0, " ")), "en", 2.0)
    assert json.loads(render(transcript, "json"))["segments"] == [
        {"start_s": 0.0, "end_s": 0.0, "text": "early"}
    ]


@pytest.mark.parametrize(
    ("document", "fragment"),
    [
        ("{not json", "not valid JSON"),
        ('{"language": "en", "duration_s": 1}', "missing key 'segments'"),
        ('{"segments": [], "duration_s": 1}', "missing key 'language'"),
        ('{"language": "en", "duration_s": 1, "segments": [{"start_s": 0}]}', "'end_s'"),
        (
            '{"language": "en", "duration_s": 1, "segments": [{"start_s": "0", "end_s": 1, '
            '"text": "a"}]}',
            "segments[0].start_s must be a number",
        ),
        ('{"language": 7, "duration_s": 1, "segments": []}', "language must be a string"),
        ("[1, 2]", "wrong shape"),
    ],
)
def test_from_json_rejects_malformed(document: str, fragment: str) -> None:
    with pytest.raises(UsageError, match=re.escape(fragment)):
        from_json(document)


@pytest.mark.parametrize("fmt", ["pdf", "TXT", ""])
def test_unknown_format(fmt: str) -> None:
    with pytest.raises(UsageError) as caught:
        render(MEETING, fmt)
    assert repr(fmt) in str(caught.value)
    assert all(choice in str(caught.value) for choice in FORMATS)
    assert isinstance(caught.value, ValueError)


LABELLED = Transcript(
    (
        Segment(0.0, 2.0, "Good morning.", "Speaker 1"),
        Segment(2.0, 3.0, "Shall we start?", "Speaker 1"),
        Segment(3.5, 5.0, "Yes <now>.", "Speaker 2"),
    ),
    "en",
    10.0,
    (Gap(6.0, 8.0, "microphone lost"),),
)


@pytest.mark.parametrize(
    "fmt, expected",
    [
        (
            "txt",
            "Speaker 1: Good morning. Shall we start?\n\nSpeaker 2: Yes <now>.\n\n"
            "[no audio 00:00:06–00:00:08: microphone lost]\n",
        ),
        ("srt", "1\n00:00:00,000 --> 00:00:02,000\nSpeaker 1: Good morning.\n"),
        ("vtt", "00:00:03.500 --> 00:00:05.000\n<v Speaker 2>Yes &lt;now&gt;.\n"),
    ],
)
def test_speakers_in_every_format(fmt, expected):
    assert expected in render(LABELLED, fmt)


def test_json_carries_the_speaker_and_reads_it_back():
    document = json.loads(render(LABELLED, "json"))
    assert [s["speaker"] for s in document["segments"]] == ["Speaker 1", "Speaker 1", "Speaker 2"]
    assert from_json(render(LABELLED, "json")) == LABELLED
    with pytest.raises(UsageError, match=r"segments\[0\]\.speaker must be a string"):
        from_json(render(LABELLED, "json").replace('"Speaker 1"', "7", 1))
