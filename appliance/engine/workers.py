"""TranscriberPool: N whisper.cpp decoding states on one copy of the weights, fed from one queue."""

from __future__ import annotations

import ctypes
import functools
import logging
import queue
import re
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from appliance.engine.transcriber import (
    DecodeOptions,
    Transcriber,
    WindowTranscriber,
    _whisper,
    decoded_segments,
    load_context,
)
from appliance.engine.windows import set_window_params
from appliance.errors import ApplianceError, UsageError
from appliance.recording.audio import SAMPLE_RATE
from appliance.transcript import Segment

_LOGGER = logging.getLogger(__name__)


class BindingError(ApplianceError, RuntimeError):
    """The bundled libwhisper cannot be called through ctypes safely (missing, other layout)."""


# whisper.h of whisper.cpp 1.8.5, the version in pywhispercpp 1.5.1. Only the
# sizes and offsets matter; check_layout() compares them with the compiled library at load.
class _ContextParams(ctypes.Structure):
    _fields_ = [
        ("use_gpu", ctypes.c_bool),
        ("flash_attn", ctypes.c_bool),
        ("gpu_device", ctypes.c_int),
        ("dtw_token_timestamps", ctypes.c_bool),
        ("dtw_aheads_preset", ctypes.c_int),
        ("dtw_n_top", ctypes.c_int),
        ("dtw_n_heads", ctypes.c_size_t),
        ("dtw_heads", ctypes.c_void_p),
        ("dtw_mem_size", ctypes.c_size_t),
    ]


class _Greedy(ctypes.Structure):
    _fields_ = [("best_of", ctypes.c_int)]


class _BeamSearch(ctypes.Structure):
    _fields_ = [("beam_size", ctypes.c_int), ("patience", ctypes.c_float)]


class _VadParams(ctypes.Structure):
    _fields_ = [
        ("threshold", ctypes.c_float),
        ("min_speech_duration_ms", ctypes.c_int),
        ("min_silence_duration_ms", ctypes.c_int),
        ("max_speech_duration_s", ctypes.c_float),
        ("speech_pad_ms", ctypes.c_int),
        ("samples_overlap", ctypes.c_float),
    ]


_B, _I, _F, _P, _S = ctypes.c_bool, ctypes.c_int, ctypes.c_float, ctypes.c_void_p, ctypes.c_char_p


class _FullParams(ctypes.Structure):
    _fields_ = [
        ("strategy", _I),
        ("n_threads", _I),
        ("n_max_text_ctx", _I),
        ("offset_ms", _I),
        ("duration_ms", _I),
        ("translate", _B),
        ("no_context", _B),
        ("no_timestamps", _B),
        ("single_segment", _B),
        ("print_special", _B),
        ("print_progress", _B),
        ("print_realtime", _B),
        ("print_timestamps", _B),
        ("token_timestamps", _B),
        ("thold_pt", _F),
        ("thold_ptsum", _F),
        ("max_len", _I),
        ("split_on_word", _B),
        ("max_tokens", _I),
        ("debug_mode", _B),
        ("audio_ctx", _I),
        ("tdrz_enable", _B),
        ("suppress_regex", _S),
        ("initial_prompt", _S),
        ("carry_initial_prompt", _B),
        ("prompt_tokens", _P),
        ("prompt_n_tokens", _I),
        ("language", _S),
        ("detect_language", _B),
        ("suppress_blank", _B),
        ("suppress_nst", _B),
        ("temperature", _F),
        ("max_initial_ts", _F),
        ("length_penalty", _F),
        ("temperature_inc", _F),
        ("entropy_thold", _F),
        ("logprob_thold", _F),
        ("no_speech_thold", _F),
        ("greedy", _Greedy),
        ("beam_search", _BeamSearch),
        ("new_segment_callback", _P),
        ("new_segment_callback_user_data", _P),
        ("progress_callback", _P),
        ("progress_callback_user_data", _P),
        ("encoder_begin_callback", _P),
        ("encoder_begin_callback_user_data", _P),
        ("abort_callback", _P),
        ("abort_callback_user_data", _P),
        ("logits_filter_callback", _P),
        ("logits_filter_callback_user_data", _P),
        ("grammar_rules", _P),
        ("n_grammar_rules", ctypes.c_size_t),
        ("i_start_rule", ctypes.c_size_t),
        ("grammar_penalty", _F),
        ("vad", _B),
        ("vad_model_path", _S),
        ("vad_params", _VadParams),
    ]


def _plain(value: Any) -> Any:
    """A ctypes value or a binding's value as plain Python, so the two can be compared."""
    if isinstance(value, ctypes.Structure):
        return {name: _plain(getattr(value, name)) for name, _ in value._fields_}
    if isinstance(value, bytes):
        return value.decode()
    if value is None or isinstance(value, (bool, int, float, str, dict)):
        return value
    if hasattr(value, "__int__"):  # a binding enum
        return int(value)
    return {n: getattr(value, n) for n in dir(value) if not n.startswith("_")}  # a sub-struct


def check_layout(lib: ctypes.CDLL, pw: Any) -> None:
    """Raise BindingError unless our structs match the compiled library's, field by field.

    The binding's own objects were compiled against the real whisper.h: every default it
    reports must sit at our offset; glibc's malloc_usable_size bounds the size of the struct
    whisper_*_default_params_by_ref allocates, so a field added at the end is caught too.
    """
    usable = getattr(ctypes.CDLL(None), "malloc_usable_size", None)
    if usable is not None:
        usable.restype, usable.argtypes = ctypes.c_size_t, [ctypes.c_void_p]
    pairs = [(lib.whisper_context_default_params_by_ref(), pw.whisper_context_default_params())]
    strategy = pw.whisper_sampling_strategy
    for which in (strategy.WHISPER_SAMPLING_GREEDY, strategy.WHISPER_SAMPLING_BEAM_SEARCH):
        pairs.append(
            (
                lib.whisper_full_default_params_by_ref(int(which)),
                pw.whisper_full_default_params(which),
            )
        )
    try:
        for pointer, theirs in pairs:
            ours = pointer.contents
            size = ctypes.sizeof(ours)
            if usable is not None and not size <= usable(pointer) < size + 16:
                raise BindingError(
                    f"{type(ours).__name__.strip('_')}: {usable(pointer)} bytes "
                    f"allocated, {size} expected"
                )
            for name, _ in ours._fields_:
                try:
                    expected = getattr(theirs, name)
                except (AttributeError, TypeError):  # not exposed, or a callback
                    continue
                if name in ("suppress_regex", "initial_prompt", "prompt_tokens", "vad_model_path"):
                    continue  # the binding shows a missing pointer as "" or ()
                if _plain(getattr(ours, name)) != _plain(expected):
                    raise BindingError(
                        f"{type(ours).__name__.strip('_')}.{name} is not where "
                        "whisper.h 1.8.5 puts it"
                    )
            if isinstance(ours, _FullParams) and (
                ours.grammar_penalty != 100.0 or ours.vad_params.speech_pad_ms != 30
            ):
                raise BindingError("whisper_full_params ends differently from whisper.h 1.8.5")
    finally:
        lib.whisper_free_context_params(pairs[0][0])
        for pointer, _ in pairs[1:]:
            lib.whisper_free_params(pointer)


@dataclass(frozen=True)
class Bindings:
    """The bundled libwhisper through ctypes: the very copy the binding loaded, checked."""

    lib: ctypes.CDLL
    path: Path
    version: str

    def default_params(self, beam: bool) -> _FullParams:
        """A copy of whisper_full_default_params, owned by Python."""
        pointer = self.lib.whisper_full_default_params_by_ref(1 if beam else 0)
        try:
            return _FullParams.from_buffer_copy(pointer.contents)
        finally:
            self.lib.whisper_free_params(pointer)


def _loaded_libwhisper(pw: Any) -> Path:
    """The libwhisper the extension loaded (auditwheel renames it), found in our memory map."""
    for line in Path("/proc/self/maps").read_text().splitlines():
        fields = line.split(maxsplit=5)  # address perms offset dev inode [path]
        if len(fields) == 6 and re.search(r"/libwhisper[^/]*\.so", fields[5]):
            return Path(fields[5].strip())
    # A source build may link whisper.cpp into the extension itself.
    return Path(pw.__file__)


@functools.cache
def bindings() -> Bindings:
    """Load and check the ctypes view of libwhisper once; BindingError if it cannot be trusted."""
    pw = _whisper()
    path = _loaded_libwhisper(pw)
    lib = ctypes.CDLL(str(path))  # the same handle: the loader already has this file
    ptr = ctypes.c_void_p
    signatures = {
        "whisper_context_default_params_by_ref": (ctypes.POINTER(_ContextParams), []),
        "whisper_full_default_params_by_ref": (ctypes.POINTER(_FullParams), [_I]),
        "whisper_free_context_params": (None, [ptr]),
        "whisper_free_params": (None, [ptr]),
        "whisper_init_from_file_with_params_no_state": (ptr, [_S, _ContextParams]),
        "whisper_init_state": (ptr, [ptr]),
        "whisper_free_state": (None, [ptr]),
        "whisper_free": (None, [ptr]),
        "whisper_full_with_state": (_I, [ptr, ptr, _FullParams, ctypes.POINTER(_F), _I]),
        "whisper_full_n_segments_from_state": (_I, [ptr]),
        "whisper_full_get_segment_t0_from_state": (ctypes.c_int64, [ptr, _I]),
        "whisper_full_get_segment_t1_from_state": (ctypes.c_int64, [ptr, _I]),
        "whisper_full_get_segment_text_from_state": (_S, [ptr, _I]),
        "whisper_lang_id": (_I, [_S]),
        "whisper_lang_str": (_S, [_I]),
        "whisper_version": (_S, []),
    }
    missing = [name for name in signatures if not hasattr(lib, name)]
    if missing:
        raise BindingError(f"{path.name} does not export {', '.join(missing)}")
    for name, (restype, argtypes) in signatures.items():
        function = getattr(lib, name)
        function.restype, function.argtypes = restype, argtypes
    check_layout(lib, pw)
    return Bindings(lib, path, lib.whisper_version().decode())


class _StateDecoder:
    """One whisper_state on the shared context, with its own copy of the decoding parameters."""

    def __init__(self, found: Bindings, context: int, options: DecodeOptions) -> None:
        self._lib = found.lib
        self._context = context
        self.state = self._lib.whisper_init_state(context)
        if not self.state:
            raise MemoryError("whisper_init_state failed")
        self.params = found.default_params(beam=options.beam_size > 1)
        for name, value in options.whisper_params().items():
            if isinstance(value, dict):  # the greedy / beam_search sub-structs
                for field, item in value.items():
                    setattr(getattr(self.params, name), field, item)
            elif isinstance(value, str):  # char * fields take bytes, kept alive by ctypes
                setattr(self.params, name, value.encode())
            else:
                setattr(self.params, name, value)
        self.threads = options.threads  # per window unless decode is given another count

    def decode(self, samples: np.ndarray, language: str, threads: int) -> list[Segment]:
        """whisper_full_with_state on one window; ctypes lets go of the GIL meanwhile."""
        lib, state = self._lib, self.state
        # As the binding sets language: the canonical code, or "" to detect.
        lang_id = lib.whisper_lang_id(language.encode()) if language != "auto" else -1
        self.params.language = lib.whisper_lang_str(lang_id) if lang_id >= 0 else b""
        audio = np.ascontiguousarray(samples, dtype=np.float32)
        set_window_params(self.params, threads)
        pcm = audio.ctypes.data_as(ctypes.POINTER(ctypes.c_float))
        if lib.whisper_full_with_state(self._context, state, self.params, pcm, audio.size) != 0:
            raise RuntimeError("whisper_full_with_state failed")
        return decoded_segments(
            (
                lib.whisper_full_get_segment_t0_from_state(state, i),
                lib.whisper_full_get_segment_t1_from_state(state, i),
                lib.whisper_full_get_segment_text_from_state(state, i),
            )
            for i in range(lib.whisper_full_n_segments_from_state(state))
        )

    def close(self) -> None:
        if self.state:
            self._lib.whisper_free_state(self.state)
            self.state = None


class _ModelDecoder:
    """A worker with a model of its own: the N-models comparison, and the fallback."""

    state = None

    def __init__(self, model_path: Path, options: DecodeOptions) -> None:
        self._transcriber = Transcriber(model_path, options)
        self.threads = options.threads

    def decode(self, samples: np.ndarray, language: str, threads: int) -> list[Segment]:
        return self._transcriber.transcribe_window(samples, language, threads)

    def close(self) -> None:
        self._transcriber.close()


@dataclass(frozen=True)
class Decoded:
    """One window a worker decoded (time.perf_counter seconds), for benchmarks and tests."""

    worker: int
    started: float
    finished: float
    audio_s: float
    threads: int


@dataclass(frozen=True)
class WorkerInfo:
    """What one worker is: its thread, its whisper.cpp threads, its state and context."""

    index: int
    thread: threading.Thread
    threads: int  # read back from the worker's own whisper_full_params
    state: int | None  # whisper_state address; None for a worker with a model of its own
    context: int | None  # whisper_context address, shared by every worker on shared weights


class TranscriberPool(WindowTranscriber):
    """N workers decoding windows side by side; the same results as one Transcriber.

    With shared weights (the default where the bundled libwhisper allows it) the model is
    loaded once and each worker owns a whisper_state (KV caches, compute buffers): the
    memory of one model plus N states. Otherwise every worker loads its own model.
    """

    def __init__(
        self,
        model_path: Path,
        options: DecodeOptions = DecodeOptions(),
        workers: int = 2,
        shared_weights: bool | None = None,
        on_decoded: Callable[[Decoded], None] | None = None,
    ) -> None:
        if workers < 1:
            raise ValueError("workers must be at least 1")
        self._open(model_path, options)
        self.workers = workers
        self._ahead = workers  # one window more than workers in flight: none idles meanwhile
        self.threads = options.threads
        # A file of one window would leave all workers but one idle: it gets all their threads.
        self._alone_threads = workers * options.threads
        self._on_decoded = on_decoded
        self._context: int | None = None
        self._decoders: list[_StateDecoder | _ModelDecoder] = []
        try:
            binding = None if shared_weights is False else bindings()
        except BindingError as err:
            if shared_weights:
                raise
            _LOGGER.warning(
                "workers cannot share weights with this whisper.cpp build (%s): "
                "each of %d loads the model",
                err,
                workers,
            )
            binding = None
        self.shared_weights = binding is not None
        try:
            if binding is not None:
                context = _ContextParams.from_buffer_copy(
                    binding.lib.whisper_context_default_params_by_ref().contents
                )
                context.flash_attn = True  # as Transcriber
                self._context = load_context(
                    model_path,
                    lambda: binding.lib.whisper_init_from_file_with_params_no_state(
                        str(model_path).encode(), context
                    ),
                )
                for _ in range(workers):
                    self._decoders.append(_StateDecoder(binding, self._context, options))
            else:
                for _ in range(workers):
                    self._decoders.append(_ModelDecoder(model_path, options))
        except BaseException:
            self._free()
            raise
        self._jobs: queue.SimpleQueue[tuple[Future, np.ndarray, str, int] | None] = (
            queue.SimpleQueue()
        )
        self._closed = False
        self._closing = threading.Lock()
        self._threads = [
            threading.Thread(
                target=self._work, args=(i, d), name=f"whisper-worker-{i}", daemon=True
            )
            for i, d in enumerate(self._decoders)
        ]
        for thread in self._threads:
            thread.start()
        _LOGGER.info(
            "loaded %s: %d workers x %d threads, %s",
            model_path.name,
            workers,
            self.threads,
            "shared weights" if self.shared_weights else "a model each",
        )

    def worker_info(self) -> list[WorkerInfo]:
        """One entry per worker, in worker order."""
        return [
            WorkerInfo(i, t, d.threads, d.state, self._context)
            for i, (t, d) in enumerate(zip(self._threads, self._decoders, strict=False))
        ]

    def submit(
        self, samples: np.ndarray, language: str | None = None, threads: int | None = None
    ) -> Future[list[Segment]]:
        """Queue one window (at most 30 s, WINDOW_S from pack(); do not modify it meanwhile) for
        the next free worker, decoded with `threads` threads (default: the pool's per worker).

        Times in the result are the window's. A daemon awaits it with asyncio.wrap_future();
        the queue is not bounded here, so callers bound what they have in flight.
        """
        language = self.check_language(language) if language else self.language
        future: Future[list[Segment]] = Future()
        with self._closing:
            if self._closed:
                raise RuntimeError("the transcriber pool is closed")
            self._jobs.put((future, samples, language, threads or self.threads))
        return future

    _submit_window = submit

    def transcribe_window(self, samples: np.ndarray, language: str | None = None) -> list[Segment]:
        """Decode one window (at most 30 s) on the next free worker; times are the window's."""
        return self.submit(samples, language).result()

    def _work(self, index: int, decoder: _StateDecoder | _ModelDecoder) -> None:
        while (job := self._jobs.get()) is not None:
            future, samples, language, threads = job
            if not future.set_running_or_notify_cancel():
                continue
            started = time.perf_counter()
            try:
                result = decoder.decode(samples, language, threads)
            except Exception as err:  # the window fails, the worker goes on
                future.set_exception(err)
                continue
            if self._on_decoded is not None:
                self._on_decoded(
                    Decoded(
                        index, started, time.perf_counter(), len(samples) / SAMPLE_RATE, threads
                    )
                )
            future.set_result(result)

    def close(self) -> None:
        """Finish the queued windows, stop the workers and free the states and the model."""
        with self._closing:
            if self._closed:
                return
            self._closed = True
            for _ in self._threads:
                self._jobs.put(None)
        for thread in self._threads:
            thread.join()
        self._free()

    def _free(self) -> None:
        for decoder in self._decoders:
            decoder.close()
        if self._context:
            bindings().lib.whisper_free(self._context)
            self._context = None


def open_transcriber(
    model_path: Path, options: DecodeOptions, workers: int = 1
) -> Transcriber | TranscriberPool:
    """One context for one worker, else a pool of `workers` states on shared weights."""
    if workers < 1:
        raise UsageError(f"--workers must be 1 or more, not {workers}")
    if workers > 1:
        return TranscriberPool(model_path, options, workers=workers)
    return Transcriber(model_path, options)
