"""The one door to libwhisper: pywhispercpp's binding, whisper.cpp's log, model loads, contexts.

Nothing else imports `_pywhispercpp`. Every worker owns a whole whisper.cpp context (weights,
KV caches, buffers) and its own parameters object, all pywhispercpp's: the binding compiled
those against whisper.h, so no struct layout is copied here. One context per worker also
measured faster than states sharing one copy of the weights (docs/benchmarks.md, "Parallel
workers"), at the cost of a copy of the weights per worker.
"""

from __future__ import annotations

import atexit
import logging
import threading
from pathlib import Path
from typing import Any

import numpy as np

from appliance import languages
from appliance.engine.decoding import Decoded, DecodeOptions, decoded_segments
from appliance.engine.windows import set_window_params
from appliance.errors import CorruptModelError, UsageError

_WHISPER_LOG = logging.getLogger("whisper.cpp")
_LOG_HOOK = threading.Lock()
_hooked = False
_GGML_LOG_ERROR = 4  # enum ggml_log_level
_LOAD = threading.Lock()  # one model load at a time, so its error lines are its own
_load_errors: list[str] | None = None  # collecting only while a load runs


def _log(level: int, text: str) -> None:
    if level == _GGML_LOG_ERROR and _load_errors is not None:
        _load_errors.append(text.strip())
    _WHISPER_LOG.debug("%s", text.rstrip())


def _binding() -> Any:
    """Import the binding and route whisper.cpp's own log lines into logging at DEBUG."""
    global _hooked
    import _pywhispercpp as pw

    with _LOG_HOOK:
        if not _hooked:
            pw.whisper_log_set(_log)
            # ggml logs while unloading at interpreter exit, when a Python callback can no
            # longer take the GIL (Fatal Python error, exit 134): restore the C logger first.
            atexit.register(pw.whisper_log_set, None)
            _hooked = True
    return pw


def checked_language(model_path: Path, multilingual: bool, language: str | None) -> str:
    """The language code to decode with: English for .en models, else given or detected."""
    language = language or ("auto" if multilingual else "en")
    if problem := languages.refusal(language, model_path.name, multilingual):
        raise UsageError(f"language {language!r}: {problem}")
    return language


def _load(model_path: Path, pw: Any) -> Any:
    """Run whisper.cpp's model load; CorruptModelError with its reason if it failed.

    pywhispercpp hands back a context object even when whisper.cpp returned NULL, so a failed
    load is told by the error line whisper.cpp logs.
    """
    global _load_errors
    params = pw.whisper_context_default_params()
    # Flash attention: measured 1.1x (q8_0) to 2.8x (q5_1) faster encoding on x86 here.
    params.flash_attn = True
    with _LOAD:
        _load_errors = errors = []
        try:
            context = pw.whisper_init_from_file_with_params(str(model_path), params)
        finally:
            _load_errors = None
    if not context or errors:
        reason = next((e for e in errors if "failed to load model" not in e), "") or "see the log"
        raise CorruptModelError(f"{model_path}: whisper.cpp could not load the model: {reason}")
    return context


class Context:
    """One worker's whisper.cpp context and decoding parameters; one decode at a time."""

    def __init__(self, model_path: Path, options: DecodeOptions) -> None:
        self._pw = pw = _binding()
        self._ctx = _load(model_path, pw)
        strategy = pw.whisper_sampling_strategy
        self._params = params = pw.whisper_full_default_params(
            strategy.WHISPER_SAMPLING_GREEDY
            if options.beam_size <= 1
            else strategy.WHISPER_SAMPLING_BEAM_SEARCH
        )
        for name, value in options.whisper_params().items():
            setattr(params, name, value)
        # Per-token times, where speaker turns cut a segment; computed after decoding, they
        # leave the words as they were (dev-meeting-01: byte-identical text, a test).
        params.token_timestamps = True

    def decode(self, samples: np.ndarray, language: str, threads: int) -> Decoded:
        """Decode one window (at most 30 s) with `threads` threads; times are the window's.

        The binding lets go of the GIL inside whisper_full, so contexts decode side by side.
        """
        pw, ctx = self._pw, self._ctx
        audio = np.ascontiguousarray(samples, dtype=np.float32)
        self._params.language = language  # "auto" (the binding passes it as "") detects
        set_window_params(self._params, threads)
        if pw.whisper_full(ctx, self._params, audio, audio.size) != 0:
            raise RuntimeError("whisper_full failed")
        segments = decoded_segments(
            (
                pw.whisper_full_get_segment_t0(ctx, i),
                pw.whisper_full_get_segment_t1(ctx, i),
                pw.whisper_full_get_segment_text(ctx, i),
                self._tokens(i),
            )
            for i in range(pw.whisper_full_n_segments(ctx))
        )
        lang_id = pw.whisper_full_lang_id(ctx)
        return Decoded(segments, (pw.whisper_lang_str(lang_id) or "") if lang_id >= 0 else "")

    def _tokens(self, segment: int) -> list[tuple[int, int, bytes]]:
        """(t0, t1 in 10 ms ticks, bytes) of each text token of a decoded segment."""
        pw, ctx = self._pw, self._ctx
        last_text = pw.whisper_token_eot(ctx)  # special tokens ([_BEG_], [_TT_..]) follow it
        out = []
        for index in range(pw.whisper_full_n_tokens(ctx, segment)):
            data = pw.whisper_full_get_token_data(ctx, segment, index)
            if data.id < last_text:
                out.append((data.t0, data.t1, pw.whisper_token_to_bytes(ctx, data.id)))
        return out

    def log_timings(self, reset: bool = True) -> None:
        """Have whisper.cpp log its time per stage (mel, encode, decode) since the last reset."""
        self._pw.whisper_print_timings(self._ctx)
        if reset:
            self._pw.whisper_reset_timings(self._ctx)

    def close(self) -> None:
        """Free the context: its weights and buffers."""
        if self._ctx is not None:
            self._pw.whisper_free(self._ctx)
            self._ctx = None
