"""A meeting transcript (timed segments, recording gaps) and its txt, srt, vtt and json forms."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from appliance.errors import UsageError

FORMATS = ("txt", "srt", "vtt", "json")


@dataclass(frozen=True)
class Segment:
    """One stretch of transcribed speech."""

    start_s: float
    end_s: float
    text: str
    speaker: str | None = None  # "Speaker 2" once speaker turns are labelled
    # (start_s, end_s) of each word of text.split(), from whisper.cpp's token times, where the
    # decoder gave them (not stored or rendered: speaker turns cut a segment between words).
    words: tuple[tuple[float, float], ...] = field(default=(), compare=False, repr=False)


@dataclass(frozen=True)
class Gap:
    """A stretch the recorder could not capture, with the reason (e.g. "microphone lost")."""

    start_s: float
    end_s: float
    reason: str


@dataclass(frozen=True)
class Transcript:
    """The whole meeting: segments in time order, the spoken language and any recording gaps."""

    segments: tuple[Segment, ...]
    language: str
    duration_s: float
    gaps: tuple[Gap, ...] = ()

    @property
    def text(self) -> str:
        """The spoken text, one segment per line."""
        return "\n".join(t for t in (_one_line(s.text) for s in self.segments) if t)


@dataclass(frozen=True)
class _Cue:
    """One timed line of output: a segment's text or a gap's marker."""

    start_s: float
    end_s: float
    text: str
    speaker: str | None = None


def _one_line(text: str) -> str:
    # A blank line ends an srt/vtt cue and txt is one line per segment, so inner line breaks go.
    return " ".join(text.split())


def _clamp(start_s: float, end_s: float) -> tuple[float, float]:
    start_s = max(0.0, start_s)
    return start_s, max(start_s, end_s)


def _clean_segments(transcript: Transcript) -> list[Segment]:
    """Segments with text, times clamped, in time order."""
    segments = [
        Segment(*_clamp(s.start_s, s.end_s), _one_line(s.text), s.speaker)
        for s in transcript.segments
        if _one_line(s.text)
    ]
    return sorted(segments, key=lambda s: (s.start_s, s.end_s))


def _clean_gaps(transcript: Transcript) -> list[Gap]:
    """Gaps with times clamped, in time order."""
    gaps = [Gap(*_clamp(g.start_s, g.end_s), _one_line(g.reason)) for g in transcript.gaps]
    return sorted(gaps, key=lambda g: (g.start_s, g.end_s))


def _clock(seconds: float) -> str:
    """Whole seconds as HH:MM:SS, for gap markers."""
    whole = int(seconds)
    return f"{whole // 3600:02d}:{whole // 60 % 60:02d}:{whole % 60:02d}"


def _gap_marker(gap: Gap) -> str:
    reason = f": {gap.reason}" if gap.reason else ""
    return f"[no audio {_clock(gap.start_s)}–{_clock(gap.end_s)}{reason}]"


def _cues(transcript: Transcript) -> list[_Cue]:
    """Segments and gap markers merged in time order; a gap sorts before speech starting with it."""
    gaps = [(g.start_s, 0, g.end_s, _gap_marker(g), "") for g in _clean_gaps(transcript)]
    speech = [(s.start_s, 1, s.end_s, s.text, s.speaker or "") for s in _clean_segments(transcript)]
    return [
        _Cue(start, end, text, speaker or None)
        for start, _, end, text, speaker in sorted(gaps + speech)
    ]


def _timestamp(seconds: float, separator: str) -> str:
    """HH:MM:SS<sep>mmm, rounded to the millisecond; hours grow past two digits if they must."""
    millis = round(seconds * 1000)
    hours, millis = divmod(millis, 3_600_000)
    minutes, millis = divmod(millis, 60_000)
    secs, millis = divmod(millis, 1000)
    return f"{hours:02d}:{minutes:02d}:{secs:02d}{separator}{millis:03d}"


def _escape_vtt(text: str) -> str:
    # WebVTT cue text is markup: a bare "<" or "&" starts a tag or entity; "-->" is forbidden.
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def _voice(cue: _Cue) -> str:
    """A WebVTT voice tag naming the speaker, or nothing."""
    return f"<v {_escape_vtt(cue.speaker)}>" if cue.speaker else ""


def _render_txt(transcript: Transcript) -> str:
    """One line per segment; with speakers, one "Speaker 2: ..." paragraph per turn."""
    cues = _cues(transcript)
    if not any(cue.speaker for cue in cues):
        return "".join(f"{cue.text}\n" for cue in cues)
    paragraphs: list[list[str]] = []
    previous: str | None = None
    for cue in cues:
        if cue.speaker is None or cue.speaker != previous:
            paragraphs.append([f"{cue.speaker}: {cue.text}" if cue.speaker else cue.text])
        else:
            paragraphs[-1].append(cue.text)
        previous = cue.speaker
    return "\n".join(" ".join(words) + "\n" for words in paragraphs)


def _prefixed(cue: _Cue) -> str:
    return f"{cue.speaker}: {cue.text}" if cue.speaker else cue.text


def _timing(cue: _Cue, separator: str) -> str:
    return f"{_timestamp(cue.start_s, separator)} --> {_timestamp(cue.end_s, separator)}"


def _render_srt(transcript: Transcript) -> str:
    blocks = [
        f"{number}\n{_timing(cue, ',')}\n{_prefixed(cue)}\n"
        for number, cue in enumerate(_cues(transcript), start=1)
    ]
    return "\n".join(blocks)


def _render_vtt(transcript: Transcript) -> str:
    blocks = [
        f"{_timing(cue, '.')}\n{_voice(cue)}{_escape_vtt(cue.text)}\n" for cue in _cues(transcript)
    ]
    return "\n".join(["WEBVTT\n", *blocks])


def _segment_json(segment: Segment) -> dict[str, Any]:
    """A segment's JSON object; "speaker" only once speaker turns are labelled."""
    item: dict[str, Any] = {
        "start_s": segment.start_s,
        "end_s": segment.end_s,
        "text": segment.text,
    }
    if segment.speaker is not None:
        item["speaker"] = segment.speaker
    return item


def _render_json(transcript: Transcript) -> str:
    document = {
        "language": transcript.language,
        "duration_s": transcript.duration_s,
        "segments": [_segment_json(s) for s in _clean_segments(transcript)],
        "gaps": [
            {"start_s": g.start_s, "end_s": g.end_s, "reason": g.reason}
            for g in _clean_gaps(transcript)
        ],
    }
    return json.dumps(document, ensure_ascii=False, indent=2) + "\n"


_RENDERERS = {"txt": _render_txt, "srt": _render_srt, "vtt": _render_vtt, "json": _render_json}


def render(transcript: Transcript, fmt: str) -> str:
    """The transcript as file content in one of FORMATS, ending in a newline unless empty."""
    try:
        renderer = _RENDERERS[fmt]
    except KeyError:
        choices = ", ".join(FORMATS)
        raise UsageError(f"unknown transcript format {fmt!r}; choose one of: {choices}") from None
    return renderer(transcript)


def _number(item: dict[str, Any], key: str, where: str) -> float:
    value = item[key]
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise UsageError(f"transcript JSON: {where}.{key} must be a number, not {value!r}")
    return float(value)


def _string(item: dict[str, Any], key: str, where: str) -> str:
    value = item[key]
    if not isinstance(value, str):
        raise UsageError(f"transcript JSON: {where}.{key} must be a string, not {value!r}")
    return value


def _speaker(item: dict[str, Any], where: str) -> str | None:
    value = item.get("speaker")
    if value is not None and not isinstance(value, str):
        raise UsageError(f"transcript JSON: {where}.speaker must be a string, not {value!r}")
    return value


def from_json(text: str) -> Transcript:
    """Read back what render(..., "json") wrote; a malformed document is a UsageError."""
    try:
        document = json.loads(text)
        segments = tuple(
            Segment(
                _number(item, "start_s", f"segments[{i}]"),
                _number(item, "end_s", f"segments[{i}]"),
                _string(item, "text", f"segments[{i}]"),
                _speaker(item, f"segments[{i}]"),
            )
            for i, item in enumerate(document["segments"])
        )
        gaps = tuple(
            Gap(
                _number(item, "start_s", f"gaps[{i}]"),
                _number(item, "end_s", f"gaps[{i}]"),
                _string(item, "reason", f"gaps[{i}]"),
            )
            for i, item in enumerate(document.get("gaps", []))
        )
        return Transcript(
            segments=segments,
            language=_string(document, "language", "document"),
            duration_s=_number(document, "duration_s", "document"),
            gaps=gaps,
        )
    except json.JSONDecodeError as err:
        raise UsageError(f"transcript JSON is not valid JSON: {err}") from err
    except KeyError as err:
        raise UsageError(f"transcript JSON: missing key {err}") from err
    except TypeError as err:
        raise UsageError(f"transcript JSON has the wrong shape: {err}") from err
