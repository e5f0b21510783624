"""TranscriberPool: N states on one model give exactly one Transcriber's text and timestamps."""

from __future__ import annotations

import asyncio
import ctypes
from pathlib import Path

import numpy as np
import pytest

from appliance import cli
from appliance.engine import workers
from appliance.engine.transcriber import DecodeOptions, Transcriber, _whisper, pack
from appliance.engine.workers import Decoded, TranscriberPool
from appliance.evaluate import read_manifest
from appliance.models import catalog
from appliance.recording.audio import SAMPLE_RATE, load
from appliance.recording.segmenter import Segmenter

DATA = Path(__file__).parent / "data"
MEETING = DATA / "meetings" / "dev-meeting-01.flac"
# The first 75 s of the dev meeting: three windows packed from 2-5 speech segments each.
MEETING_S = 110.0
# One whisper.cpp thread per worker, for the reference too: only the number of workers differs.
OPTIONS = DecodeOptions(threads=1)


@pytest.fixture(scope="module")
def model(tiny_en_installed) -> Path:
    return tiny_en_installed[catalog.DEFAULT_QUANT]


@pytest.fixture(scope="module")
def pool(model):
    """Two workers on shared weights, recording who decoded what."""
    decoded: list[Decoded] = []
    with TranscriberPool(model, OPTIONS, workers=2, on_decoded=decoded.append) as running:
        running.decoded = decoded
        yield running


@pytest.fixture(scope="module")
def clips() -> list[np.ndarray]:
    """Four short English dev clips, one window each."""
    chosen = read_manifest(DATA / "speech" / "manifest.jsonl", language="en")[:4]
    return [load(clip.audio) for clip in chosen]


@pytest.fixture(scope="module")
def meeting_speech():
    samples = load(MEETING)[: int(MEETING_S * SAMPLE_RATE)]
    return Segmenter().segments(samples)


@pytest.fixture(scope="module")
def reference(model, clips, meeting_speech):
    """One Transcriber (one context, one state): clip by clip and the meeting's start."""
    with Transcriber(model, OPTIONS) as one:
        return [one.transcribe_window(c) for c in clips], one.transcribe(meeting_speech)


# ---------------------------------------------------------------- structure


def _swapped(fields, a: str, b: str):
    """fields with a and b in each other's place, as a reordered whisper.h would have them."""
    return [(b if n == a else a if n == b else n, t) for n, t in fields]


def test_the_ctypes_view_matches_the_bundled_libwhisper() -> None:
    found = workers.bindings()  # checked against the binding's own defaults on the way
    assert found.version == "1.8.5" and "libwhisper" in found.path.name


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        (
            _swapped(workers._FullParams._fields_, "logprob_thold", "no_speech_thold"),
            "not where whisper.h",
        ),
        (workers._FullParams._fields_[:-1], "bytes allocated"),  # vad_params missing
    ],
)
def test_a_struct_unlike_the_library_is_refused(fields, message) -> None:
    lib = ctypes.CDLL(str(workers.bindings().path))  # a fresh handle: its restypes are its own

    class Other(ctypes.Structure):
        _fields_ = fields

    lib.whisper_context_default_params_by_ref.restype = ctypes.POINTER(workers._ContextParams)
    lib.whisper_full_default_params_by_ref.restype = ctypes.POINTER(Other)
    lib.whisper_full_default_params_by_ref.argtypes = [ctypes.c_int]
    with pytest.raises(workers.BindingError, match=message):
        workers.check_layout(lib, _whisper())


def test_workers_are_states_on_one_shared_model(pool) -> None:
    info = pool.worker_info()
    assert pool.shared_weights and pool.workers == len(info) == 2
    assert len({w.state for w in info}) == 2 and all(w.state for w in info)
    assert len({w.context for w in info}) == 1 and info[0].context
    assert [w.threads for w in info] == [1, 1]
    assert all(w.thread.is_alive() for w in info) and len({w.thread.ident for w in info}) == 2


def test_separate_models_have_no_shared_state(model) -> None:
    with TranscriberPool(model, DecodeOptions(threads=2), workers=2, shared_weights=False) as own:
        info = own.worker_info()
        assert not own.shared_weights
        assert [(w.state, w.context, w.threads) for w in info] == [(None, None, 2)] * 2


# ---------------------------------------------------------------- same output as one worker


def test_clips_side_by_side_equal_one_transcriber(pool, clips, reference) -> None:
    pool.decoded.clear()

    async def all_at_once():
        return await asyncio.gather(*(asyncio.wrap_future(pool.submit(c)) for c in clips))

    assert asyncio.run(all_at_once()) == reference[0]
    assert {d.worker for d in pool.decoded} == {0, 1}  # both states decoded


def test_meeting_windows_spread_over_workers_equal_one_transcriber(
    pool, meeting_speech, reference
) -> None:
    pool.decoded.clear()
    done = []
    result = pool.transcribe(meeting_speech, progress=lambda d, t: done.append((d, t)))
    assert result == reference[1]  # text and timestamps, in order
    assert len(result) > 5 and done[-1][0] == done[-1][1] >= 3
    assert {d.worker for d in pool.decoded} == {0, 1}


def test_a_file_of_one_window_gets_every_workers_thread(pool, clips, meeting_speech) -> None:
    pool.decoded.clear()
    pool.transcribe(Segmenter().segments(clips[0]))
    assert [d.threads for d in pool.decoded] == [2]  # 2 workers x 1 thread, on the one window
    pool.decoded.clear()
    pool.transcribe(meeting_speech)  # three windows: one thread each, side by side
    assert len(pool.decoded) >= 3 and {d.threads for d in pool.decoded} == {1}


def test_a_window_decodes_the_same_whatever_was_decoded_before(
    model, clips, meeting_speech
) -> None:
    # A state keeps the encoder's output of earlier windows; with flash attention whisper.cpp
    # reads it padded to 1536 positions, unmasked: windows of every length in turn, long and short.
    windows = [w.samples for w in pack(meeting_speech)] + clips
    assert max(w.size for w in windows) > 25 * 16000 and min(w.size for w in windows) < 10 * 16000
    with Transcriber(model, OPTIONS) as one:
        in_turn = [one.transcribe_window(w) for w in windows]
    alone = []
    for window in windows:
        with Transcriber(model, OPTIONS) as fresh:
            alone.append(fresh.transcribe_window(window))
    assert in_turn == alone


def test_separate_models_equal_one_transcriber(model, clips, reference) -> None:
    with TranscriberPool(model, OPTIONS, workers=2, shared_weights=False) as own:
        futures = [own.submit(c) for c in clips[:2]]
        assert [f.result() for f in futures] == reference[0][:2]


def test_command_with_workers_prints_what_one_worker_prints(model, tmp_path, capsys) -> None:
    # Files of one window each: three workers give it their three threads.
    files = [
        str(DATA / "speech" / "jfk" / "jfk.flac"),
        str(tmp_path / "gone.flac"),
        str(sorted((DATA / "speech" / "librispeech_fixtures").glob("*.flac"))[0]),
    ]
    outputs = []
    for workers_n, threads_n in (("1", "3"), ("3", "1")):
        code = cli.main(
            [
                "transcribe",
                "--model",
                str(model),
                "--threads",
                threads_n,
                "--workers",
                workers_n,
                *files,
            ]
        )
        outputs.append((code, *capsys.readouterr()))
    assert outputs[0] == outputs[1]
    code, out, err = outputs[0]
    assert code == 1 and out.count("==> ") == 2 and "gone.flac" in err


# ---------------------------------------------------------------- errors and shutdown


def test_a_bad_window_fails_alone(pool, clips, reference) -> None:
    bad = pool.submit(np.array(["not", "audio"]))
    good = pool.submit(clips[0])
    with pytest.raises(ValueError):
        bad.result()
    assert good.result() == reference[0][0]


def test_close_finishes_the_queue_then_refuses(model, clips) -> None:
    running = TranscriberPool(model, OPTIONS, workers=2)
    futures = [running.submit(c) for c in clips[:2]]
    running.close()
    assert all(f.done() and not f.exception() for f in futures)
    with pytest.raises(RuntimeError, match="closed"):
        running.submit(clips[0])
    running.close()  # twice is harmless
    assert all(not w.thread.is_alive() and w.state is None for w in running.worker_info())


def test_workers_must_be_positive(model, capsys) -> None:
    with pytest.raises(ValueError):
        TranscriberPool(model, OPTIONS, workers=0)
    assert cli.main(["transcribe", "--model", str(model), "--workers", "0", str(MEETING)]) == 2
    assert "--workers must be 1 or more" in capsys.readouterr().err
