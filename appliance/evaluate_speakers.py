"""Diarization error rate of speaker-labelled transcripts against the `.rttm` beside a clip
(pyannote.metrics), and with a `.stm` beside it, concatenated minimum-permutation WER (cpWER,
meeteval): both [eval] extras, like jiwer."""

from __future__ import annotations

import warnings
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from meeteval.io import STM
from meeteval.wer import api as meeteval_wer
from pyannote.core import Annotation, Timeline
from pyannote.core import Segment as Span
from pyannote.metrics.diarization import DiarizationErrorRate

from appliance.errors import UsageError
from appliance.evaluate import normalize
from appliance.transcript import Transcript

# No-score zone each side of every reference boundary, as md-eval's `-c 0.25` (NIST's usual
# setting); pyannote.metrics takes the whole width, hence 2 * COLLAR_S below.
COLLAR_S = 0.25


@dataclass(frozen=True)
class SpeakerResult:
    """Speaker time of one clip: scored, and lost to each kind of error (seconds)."""

    audio: str
    dataset: str
    reference_speakers: int
    found_speakers: int
    scored_s: float
    missed_s: float
    false_alarm_s: float
    confusion_s: float
    cp_errors: int = 0  # cpWER's word errors and reference words, when a .stm was there
    cp_words: int = 0

    @property
    def der(self) -> float | None:
        """Diarization error rate: missed, false alarm and confused time over scored time."""
        errors = self.missed_s + self.false_alarm_s + self.confusion_s
        return errors / self.scored_s if self.scored_s else None

    @property
    def cp_wer(self) -> float | None:
        """Word errors under the best mapping of found speakers to reference speakers."""
        return self.cp_errors / self.cp_words if self.cp_words else None

    @property
    def confusion(self) -> float | None:
        """Only the time given to the wrong speaker, over scored time."""
        return self.confusion_s / self.scored_s if self.scored_s else None


def rttm_beside(audio: Path) -> Path | None:
    """The clip's `.rttm` (same name), if there is one."""
    path = audio.with_suffix(".rttm")
    return path if path.is_file() else None


def cp_wer(stm: Path, transcript: Transcript, language: str) -> tuple[int, int]:
    """(word errors, reference words) of the labelled transcript against the speaker-attributed
    reference turns, both sides normalized as for WER; unlabelled segments are one speaker."""
    reference = []
    for line in stm.read_text(encoding="utf-8").splitlines():
        fields = line.split(maxsplit=5)
        if len(fields) == 6 and not line.startswith(";;"):
            words = normalize(fields[5], language)
            reference.append(" ".join([*fields[:5], words]))
    name = reference[0].split()[0] if reference else stm.stem
    found = [
        f"{name} 1 {(s.speaker or 'unknown').replace(' ', '_')} {s.start_s:.2f} {s.end_s:.2f} "
        f"{normalize(s.text, language)}"
        for s in transcript.segments
    ]
    if not found:  # meeteval refuses a recording without hypothesis lines: all deleted
        words = sum(len(line.split()) - 5 for line in reference)
        return words, words
    result = meeteval_wer.cpwer(STM.parse("\n".join(reference)), STM.parse("\n".join(found)))
    total = result[name]
    return int(total.errors), int(total.length)


def read_rttm(path: Path) -> list[tuple[float, float, str]]:
    """(start_s, end_s, speaker) of each SPEAKER line; a malformed line is a UsageError."""
    turns = []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        fields = line.split()
        if not fields or fields[0] != "SPEAKER":
            continue
        try:
            start, duration = float(fields[3]), float(fields[4])
            turns.append((start, start + duration, fields[7]))
        except (IndexError, ValueError):
            raise UsageError(f"{path}:{number}: not an RTTM SPEAKER line") from None
    return turns


def _annotation(turns: Iterable[tuple[float, float, str]]) -> Annotation:
    annotation = Annotation()
    for track, (start, end, speaker) in enumerate(turns):
        if end > start:
            annotation[Span(start, end), track] = speaker
    return annotation


def score_speakers(
    audio: str,
    dataset: str,
    reference: list[tuple[float, float, str]],
    found: list[tuple[float, float, str]],
    duration_s: float,
    cp: tuple[int, int] = (0, 0),
) -> SpeakerResult:
    """Score found turns (start_s, end_s, speaker: the labeller's, not the transcript's
    segments) against reference turns over the whole clip; cp is cp_wer's (errors, words)."""
    metric = DiarizationErrorRate(collar=2 * COLLAR_S, skip_overlap=False)
    extent = max([duration_s] + [end for _, end, _ in reference + found])
    with warnings.catch_warnings():
        warnings.simplefilter(
            "ignore"
        )  # pyannote warns about a whole-clip UEM being "approximated"
        parts = metric(
            _annotation(reference),
            _annotation(found),
            uem=Timeline([Span(0.0, extent)]),
            detailed=True,
        )
    return SpeakerResult(
        audio=audio,
        dataset=dataset,
        reference_speakers=len({speaker for _, _, speaker in reference}),
        found_speakers=len({speaker for _, _, speaker in found}),
        scored_s=parts["total"],
        missed_s=parts["missed detection"],
        false_alarm_s=parts["false alarm"],
        confusion_s=parts["confusion"],
        cp_errors=cp[0],
        cp_words=cp[1],
    )


def _percent(value: float | None) -> str:
    return f"{100 * value:6.1f}%" if value is not None else "      -"


def format_speakers(results: list[SpeakerResult]) -> str:
    """One line per clip, then the totals over all of them (time- and word-weighted)."""
    total = SpeakerResult(
        "total",
        "",
        0,
        0,
        sum(r.scored_s for r in results),
        sum(r.missed_s for r in results),
        sum(r.false_alarm_s for r in results),
        sum(r.confusion_s for r in results),
        sum(r.cp_errors for r in results),
        sum(r.cp_words for r in results),
    )
    lines = [
        f"speakers (DER, collar {COLLAR_S} s each side, overlap scored)",
        f"{'clip':<40} {'speakers':>8} {'found':>5} {'DER':>7} {'confused':>7} {'cpWER':>7}",
    ]
    for r in [*results, total]:
        counts = f"{r.reference_speakers:>8} {r.found_speakers:>5}" if r.dataset else " " * 14
        lines.append(
            f"{Path(r.audio).name:<40} {counts} {_percent(r.der)} {_percent(r.confusion)} "
            f"{_percent(r.cp_wer)}"
        )
    return "\n".join(lines)
