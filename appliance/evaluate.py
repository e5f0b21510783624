"""Word error rate and real-time factor of a transcriber over a manifest of reference clips."""

from __future__ import annotations

import json
import logging
import re
import time
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import jiwer
import soundfile
from whisper_normalizer.basic import BasicTextNormalizer
from whisper_normalizer.english import EnglishTextNormalizer

from appliance.engine.windows import WINDOW_S
from appliance.errors import UsageError

_LOGGER = logging.getLogger(__name__)

_REQUIRED = ("audio", "text", "language", "set")
# Corpus annotations such as <cutoff-montreal>, <unk> or [laughter] are not spoken words.
_TAGS = re.compile(r"<[^>]*>|\[[^\]]*\]")
# A speaker label opening a line ("ES2011a.Headset-1: ..." in a reference, "Speaker 2: ..." in
# our own transcripts): a token with a digit in it, or "Speaker N", then a colon; it annotates
# who spoke and is not spoken itself.
_SPEAKER = re.compile(r"^\s*(?:[\w.-]*\d[\w.-]*|Speaker \d+):\s", re.MULTILINE)
_ENGLISH = EnglishTextNormalizer()
_BASIC = BasicTextNormalizer()


@dataclass(frozen=True)
class Clip:
    """One reference recording from a manifest."""

    audio: Path
    text: str
    language: str
    dataset: str
    expect_empty: bool = False


@dataclass(frozen=True)
class ClipResult:
    """What the transcriber made of one clip, counted against the normalized reference."""

    audio: str
    dataset: str
    reference: str
    hypothesis: str
    ref_words: int
    substitutions: int
    deletions: int
    insertions: int
    invented_words: int
    audio_s: float
    processing_s: float


@dataclass(frozen=True)
class SetRow:
    """Totals over the clips of one set, or the whole corpus."""

    dataset: str
    clips: int
    ref_words: int
    errors: int
    invented_words: int
    audio_s: float
    processing_s: float

    @property
    def wer(self) -> float | None:
        """Word errors per reference word; None when the set has no reference words."""
        return self.errors / self.ref_words if self.ref_words else None

    @property
    def rtf(self) -> float | None:
        """Real-time factor: processing seconds per audio second; None without audio."""
        return self.processing_s / self.audio_s if self.audio_s else None

    @classmethod
    def total(cls, dataset: str, results: Iterable[ClipResult]) -> SetRow:
        """Sum clip results; WER stays word-weighted because errors and words are summed apart."""
        results = list(results)
        return cls(
            dataset=dataset,
            clips=len(results),
            ref_words=sum(r.ref_words for r in results),
            errors=sum(r.substitutions + r.deletions + r.insertions for r in results),
            invented_words=sum(r.invented_words for r in results),
            audio_s=sum(r.audio_s for r in results),
            processing_s=sum(r.processing_s for r in results),
        )


@dataclass(frozen=True)
class Report:
    """Per-clip results with per-set and corpus totals."""

    results: tuple[ClipResult, ...]

    @property
    def sets(self) -> list[SetRow]:
        """One row per set, in the order the sets first appear."""
        names = dict.fromkeys(r.dataset for r in self.results)
        return [SetRow.total(n, (r for r in self.results if r.dataset == n)) for n in names]

    @property
    def corpus(self) -> SetRow:
        """Totals over every clip."""
        return SetRow.total("total", self.results)

    def format(self) -> str:
        """A readable table, one line per set and a closing total."""
        header = (
            f"{'set':<28} {'clips':>5} {'ref words':>9} {'WER':>7} "
            f"{'invented':>8} {'audio s':>8} {'RTF':>6}"
        )
        rule = "-" * len(header)
        rows = [_format_row(row) for row in self.sets]
        return "\n".join([header, rule, *rows, rule, _format_row(self.corpus)])

    def deletions(self, dataset: str) -> int:
        """Reference words of one set that were not heard at all."""
        return sum(r.deletions for r in self.results if r.dataset == dataset)

    def to_json(self, baseline: Report | None = None) -> str:
        """Sets, corpus and clips as a JSON document, and the model alone's if given."""

        def row(r: SetRow) -> dict[str, Any]:
            return {**asdict(r), "wer": r.wer, "rtf": r.rtf}

        document: dict[str, Any] = {
            "sets": [row(r) for r in self.sets],
            "corpus": row(self.corpus),
            "clips": [asdict(r) for r in self.results],
        }
        if baseline is not None:
            document["baseline"] = json.loads(baseline.to_json())
        return json.dumps(document, ensure_ascii=False, indent=2)


def fits_one_window(clip: Clip) -> bool:
    """Whether the model alone can hear the whole clip in one window (to 10 ms: a 30 s cut
    of a recording may hold a sample more)."""
    return round(soundfile.info(str(clip.audio)).duration, 2) <= WINDOW_S


def compare(ours: Report, alone: Report) -> str:
    """Per set, on the clips that fit one window: our WER, the model alone's, and deletions."""
    header = (
        f"{'set (clips that fit one window)':<32} {'words':>6} {'ours':>7} {'alone':>7} "
        f"{'diff':>7} {'del ours':>8} {'del alone':>9}"
    )
    lines = [header, "-" * len(header)]
    whole = {r.audio for r in alone.results}
    for base in alone.sets:
        same = [r for r in ours.results if r.dataset == base.dataset and r.audio in whole]
        mine = SetRow.total(base.dataset, same)
        if mine.wer is None or base.wer is None:
            continue
        ours_deleted = sum(r.deletions for r in same)
        lines.append(
            f"{base.dataset:<32} {base.ref_words:>6} {100 * mine.wer:>6.1f}% "
            f"{100 * base.wer:>6.1f}% {100 * (mine.wer - base.wer):>+6.1f} "
            f"{ours_deleted:>8} {alone.deletions(base.dataset):>9}"
        )
    return "\n".join(lines)


def _format_row(row: SetRow) -> str:
    wer = f"{100 * row.wer:.1f}%" if row.wer is not None else "-"
    rtf = f"{row.rtf:.2f}" if row.rtf is not None else "-"
    return (
        f"{row.dataset:<28} {row.clips:>5} {row.ref_words:>9} {wer:>7} "
        f"{row.invented_words:>8} {row.audio_s:>8.1f} {rtf:>6}"
    )


def normalize(text: str, language: str) -> str:
    """Text reduced to comparable words: no annotation tags, Whisper's normalizer, single spaces."""
    text = _SPEAKER.sub(" ", _TAGS.sub(" ", text))
    text = _ENGLISH(text) if language == "en" else _BASIC(text)
    return " ".join(text.split())


def _parse_line(line: str, where: str, folder: Path) -> Clip:
    """One manifest line as a Clip, or a UsageError naming file:line and the problem."""
    try:
        item = json.loads(line)
    except json.JSONDecodeError as err:
        raise UsageError(f"{where}: not valid JSON: {err.msg}") from err
    if not isinstance(item, dict):
        raise UsageError(f"{where}: expected a JSON object, got {type(item).__name__}")
    missing = [key for key in _REQUIRED if key not in item]
    if missing:
        raise UsageError(f"{where}: missing key {', '.join(missing)}")
    for key in _REQUIRED:
        if not isinstance(item[key], str):
            raise UsageError(f"{where}: {key!r} must be a string, not {item[key]!r}")
    expect_empty = item.get("expect_empty", False)
    if not isinstance(expect_empty, bool):
        raise UsageError(f"{where}: 'expect_empty' must be true or false, not {expect_empty!r}")
    if expect_empty and item["text"].strip():
        raise UsageError(f"{where}: 'expect_empty' clip has reference text {item['text']!r}")
    audio = folder / item["audio"]
    if not audio.is_file():
        raise UsageError(f"{where}: audio file missing: {audio}")
    return Clip(audio, item["text"], item["language"], item["set"], expect_empty)


def read_manifest(
    path: Path | str, sets: set[str] | None = None, language: str | None = None
) -> list[Clip]:
    """The clips of a JSON-lines manifest, optionally only some sets and one language."""
    path = Path(path)
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except OSError as err:
        raise UsageError(f"cannot read manifest {path}: {err.strerror or err}") from err
    clips = [
        _parse_line(line, f"{path}:{number}", path.parent)
        for number, line in enumerate(lines, start=1)
        if line.strip()
    ]
    available = sorted({c.dataset for c in clips})
    unknown = sorted(set(sets or ()) - set(available))
    if unknown:
        raise UsageError(
            f"unknown set {', '.join(unknown)} in {path}; available: {', '.join(available)}"
        )
    languages = sorted({c.language for c in clips})
    if language is not None and language not in languages:
        raise UsageError(
            f"no clips in language {language!r} in {path}; available: {', '.join(languages)}"
        )
    chosen = [
        c
        for c in clips
        if (sets is None or c.dataset in sets) and (language is None or c.language == language)
    ]
    if not chosen:
        raise UsageError(f"no clips in {path} match the chosen sets and language")
    return chosen


def score(clip: Clip, hypothesis: str, audio_s: float, processing_s: float) -> ClipResult:
    """Count one clip's word errors; an empty reference only counts invented words."""
    reference = normalize(clip.text, clip.language)
    heard = normalize(hypothesis, clip.language)
    if reference:
        out = jiwer.process_words(reference, heard)
        substitutions, deletions, insertions = out.substitutions, out.deletions, out.insertions
        ref_words = out.hits + substitutions + deletions
        invented = 0
    else:
        # Nothing was said, so there is no rate to divide by; any word heard here was invented.
        substitutions = deletions = insertions = ref_words = 0
        invented = len(heard.split())
    return ClipResult(
        audio=str(clip.audio),
        dataset=clip.dataset,
        reference=reference,
        hypothesis=heard,
        ref_words=ref_words,
        substitutions=substitutions,
        deletions=deletions,
        insertions=insertions,
        invented_words=invented,
        audio_s=audio_s,
        processing_s=processing_s,
    )


def evaluate(
    clips: Iterable[Clip],
    transcribe: Callable[[Clip], str],
    progress: Callable[[str, int, int], None] | None = None,
    *,
    clock: Callable[[], float] = time.perf_counter,
) -> Report:
    """Transcribe every clip, timing each call with `clock`, and score the results."""
    clips = list(clips)
    results = []
    for done, clip in enumerate(clips):
        if progress:
            progress("evaluate", done, len(clips))
        audio_s = soundfile.info(str(clip.audio)).duration
        started = clock()
        hypothesis = transcribe(clip)
        processing_s = clock() - started
        _LOGGER.debug("%s: %r", clip.audio, hypothesis)
        results.append(score(clip, hypothesis, audio_s, processing_s))
    if progress:
        progress("evaluate", len(clips), len(clips))
    return Report(tuple(results))
