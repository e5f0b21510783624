"""How whisper.cpp decodes (DecodeOptions) and what its output becomes: segments, loops cut."""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from appliance.transcript import Segment

# A unit of 1-12 characters, within a word, repeated five or more times ("a-a-a-a-a-a").
_CHAR_LOOP = re.compile(r"(\S{1,12}?)\1{4,}")
_MAX_PHRASE = 10  # words in the longest repeated phrase collapsed
_MAX_REPEATS = 2  # times a phrase may follow itself before the rest is a loop


@dataclass(frozen=True)
class DecodeOptions:
    """How whisper.cpp decodes; defaults chosen for meetings on a small CPU."""

    threads: int = 2
    language: str | None = None  # None: English for .en models, detected otherwise
    beam_size: int = 1  # 1 = greedy
    no_speech_thold: float = 0.6
    logprob_thold: float = -1.0
    # No sampled fallback by default: on the English dev clips it cost 0.66 WER points against
    # pure greedy (35.96 %, the same as faster-whisper); loops are cut by collapse_repeats.
    # When set, only a window failing the thresholds above is re-decoded, one candidate each.
    temperature_inc: float = 0.0
    # Names and terms of the room ([room] vocabulary), given to the decoder as its prompt.
    prompt: str = ""

    def whisper_params(self) -> dict[str, Any]:
        """The whisper_full_params fields these options set, by name (nested structs as dicts)."""
        if self.beam_size <= 1:
            search: dict[str, Any] = {"greedy": {"best_of": 1}}
        else:
            search = {"beam_search": {"beam_size": self.beam_size, "patience": -1.0}}
        return {
            **search,
            "n_threads": self.threads,
            "no_context": True,  # no conditioning on previous text: it feeds repetition loops
            "suppress_blank": True,
            "suppress_nst": True,
            "no_speech_thold": self.no_speech_thold,
            "logprob_thold": self.logprob_thold,
            "temperature_inc": self.temperature_inc,
            "print_progress": False,
            "print_realtime": False,
            "print_timestamps": False,
            # Every window's prompt: with no_context it is all the decoder is given before.
            **({"initial_prompt": self.prompt} if self.prompt else {}),
        }


@dataclass(frozen=True)
class Decoded:
    """One window as whisper.cpp decoded it: segments (window times), and its language."""

    segments: list[Segment]
    language: str  # the code it decoded with, detected if asked for "auto"; "" if none


def _word_key(word: str) -> str:
    return re.sub(r"\W", "", word).lower()


def collapse_repeats(text: str) -> str:
    """Cut decoder loops: a phrase of up to ten words said more than twice in a row is kept twice."""
    text = _CHAR_LOOP.sub(r"\1", text)
    words = text.split()
    keys = [_word_key(w) for w in words]
    out: list[int] = []  # indexes of kept words
    i = 0
    while i < len(words):
        skipped = False
        for n in range(1, _MAX_PHRASE + 1):
            if len(out) < n * _MAX_REPEATS or not keys[i]:
                continue
            phrase = [keys[j] for j in out[-n:]]
            previous = [keys[j] for j in out[-n * _MAX_REPEATS : -n]]
            if keys[i : i + n] == phrase and previous == phrase * (_MAX_REPEATS - 1):
                i += n
                skipped = True
                break
        if not skipped:
            out.append(i)
            i += 1
    return " ".join(words[j] for j in out)


def word_times(
    text: str, tokens: Iterable[tuple[int, int, bytes]]
) -> tuple[tuple[float, float], ...]:
    """(start_s, end_s) of each word of text from its text tokens' (t0, t1 in 10 ms ticks,
    bytes); none if the tokens do not spell text's words (a decoder loop was cut from it)."""
    words: list[list] = []
    for t0, t1, piece in tokens:
        if not words or piece.startswith(b" "):
            words.append([t0, t1, piece])
        else:
            words[-1][1], words[-1][2] = t1, words[-1][2] + piece
    spelled = [w[2].decode("utf-8", "replace").strip() for w in words]
    times = [(w[0] / 100, w[1] / 100) for w, word in zip(words, spelled, strict=True) if word]
    if [word for word in spelled if word] != text.split():
        return ()
    return tuple(times)


def decoded_segments(
    rows: Iterable[tuple[int, int, bytes, list[tuple[int, int, bytes]]]],
) -> list[Segment]:
    """Segments from whisper.cpp's (t0, t1 in 10 ms ticks, UTF-8 text, text tokens) rows,
    loops cut, each word's times from its tokens."""
    out = []
    for t0, t1, raw, tokens in rows:
        text = collapse_repeats(raw.decode("utf-8", "replace").strip())
        if text:
            out.append(Segment(t0 / 100, t1 / 100, text, words=word_times(text, tokens)))
    return out
