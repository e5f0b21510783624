"""The spoken languages Whisper knows, and which of them a model can transcribe."""

from __future__ import annotations

# whisper.cpp's language table (g_lang in whisper.cpp 1.8), in its order; kept here so that
# reading the config needs no engine.
_TABLE = (
    "en zh de es ru ko fr ja pt tr pl ca nl ar sv it id hi fi vi he uk el ms cs ro da hu ta no "
    "th ur hr bg lt la mi ml cy sk te fa lv bn sr az sl kn et mk br eu is hy ne mn bs kk sq sw "
    "gl mr pa si km sn yo so af oc ka be tg sd gu am yi lo uz fo ht ps tk nn mt sa lb my bo tl "
    "mg as tt haw ln ha ba jw su yue"
)
WHISPER = frozenset(_TABLE.split())


def known(language: str) -> bool:
    """A code Whisper has, or "auto" (detect per meeting)."""
    return language == "auto" or language in WHISPER


def refusal(language: str, model_name: str, multilingual: bool) -> str:
    """Why a model cannot transcribe a language, or "" when it can."""
    if not known(language):
        return "not a language Whisper knows"
    if not multilingual and language != "en":
        return (
            f"{model_name} is English-only; {language!r} needs a multilingual model (base, small)"
        )
    return ""
