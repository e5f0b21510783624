"""What the benchmark measures: the configurations, the data, and how they are chosen."""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path

from appliance import paths
from appliance.models import catalog, store

ROOT = Path(__file__).resolve().parents[1]
MANIFEST = ROOT / "tests" / "data" / "speech" / "manifest.jsonl"
MEETING = ROOT / "tests" / "data" / "meetings" / "dev-meeting-01.flac"
MEETING_TEXT = MEETING.with_suffix(".txt")
# Both dev meetings: close-talk clips joined (01), real AMI meeting talk at mixed levels (02).
MEETINGS = (MEETING, ROOT / "tests" / "data" / "meetings" / "dev-meeting-02.flac")
MEETING_LANGUAGE = "en"
MEETING_RUNS = 3  # each engine transcribes the meeting this many times; the median is reported
SWEDISH_SET = "commonvoice_sv"
QUICK_SETS = ("jfk", "librivox_sense_sensibility")

WHISPER_CPP = "whisper.cpp"
FASTER_WHISPER = "faster-whisper"


@dataclass(frozen=True)
class Config:
    """One model in one weight type on one engine: one worker process, one table row."""

    engine: str
    model: str
    quant: str  # a ggml quant for whisper.cpp, a CTranslate2 compute_type for faster-whisper

    @property
    def id(self) -> str:
        """MODEL-QUANT, as --only takes it (compute types never collide with ggml quants)."""
        return f"{self.model}-{self.quant}"

    @property
    def multilingual(self) -> bool:
        """Whether the model has more than English (Whisper's English-only names end in .en)."""
        return not self.model.endswith(".en")

    @property
    def label(self) -> str:
        """Engine, model and quant for progress lines and headings."""
        return f"{self.engine} {self.model} {self.quant}"


def _cpp(model: str, *quants: str) -> list[Config]:
    return [Config(WHISPER_CPP, model, q) for q in quants]


def _peer(model: str, *compute_types: str) -> list[Config]:
    return [Config(FASTER_WHISPER, model, c) for c in compute_types]


# tiny.en's rows are 384 wide, so the k-quants (256-value blocks) do not fit it.
ALL = (
    *_cpp("tiny.en", "f16", "q8_0", "q5_1", "q5_0", "q4_0"),
    *_cpp("base", "f16", "q8_0", "q5_1", "q5_K", "q4_K"),
    *_peer("tiny.en", "int8", "float32"),
    *_peer("base", "int8", "float32"),
)
DEFAULT = Config(WHISPER_CPP, catalog.DEFAULT_MODEL, catalog.DEFAULT_QUANT)
"""What the appliance runs unless told otherwise: the row the comparisons are made with."""
# A smoke run: the default against f16 of the same model and its faster-whisper int8 peer.
QUICK = (DEFAULT.id, f"{DEFAULT.model}-f16", f"{DEFAULT.model}-int8")


def select(only: str | None, quick: bool) -> list[Config]:
    """The configurations to run, in table order; raises ValueError naming an unknown id."""
    if only:
        wanted = [name.strip() for name in only.split(",") if name.strip()]
    else:
        wanted = list(QUICK) if quick else [c.id for c in ALL]
    known = {c.id for c in ALL}
    unknown = [name for name in wanted if name not in known]
    if unknown:
        choices = ", ".join(c.id for c in ALL)
        raise ValueError(f"unknown configuration {', '.join(unknown)}; choose from {choices}")
    return [c for c in ALL if c.id in wanted]


def default_model(bench: str) -> Path | None:
    """The default model and quant in the checkout's models folder; None, said on stderr, if
    it is not installed."""
    model = store.model_path(paths.models_dir(), catalog.DEFAULT_MODEL, catalog.DEFAULT_QUANT)
    if model.exists():
        return model
    print(
        f"bench {bench}: error: {model} is not installed (make model installs it)", file=sys.stderr
    )
    return None
