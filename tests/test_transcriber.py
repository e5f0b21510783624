"""Transcriber workers: N contexts give exactly one worker's text, timestamps and languages."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import numpy as np
import pytest

from appliance import cli
from appliance.engine.transcriber import DecodeOptions, Timing, Transcriber
from appliance.engine.windows import pack, packed
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
def pair(model):
    """Two workers, recording who decoded what."""
    decoded: list[Timing] = []
    with Transcriber(model, OPTIONS, workers=2, on_decoded=decoded.append) as running:
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
    """One worker: clip by clip and the meeting's start."""
    with Transcriber(model, OPTIONS) as one:
        return [one.transcribe_window(c) for c in clips], one.transcribe(meeting_speech)


# ---------------------------------------------------------------- structure


def test_each_worker_is_a_thread_with_a_context_of_its_own(pair, model) -> None:
    assert pair.workers == 2 and len(pair._contexts) == 2
    assert len({id(c) for c in pair._contexts}) == 2
    assert all(t.is_alive() for t in pair._threads) and len({t.ident for t in pair._threads}) == 2


# ---------------------------------------------------------------- same output as one worker


def test_clips_side_by_side_equal_one_worker(pair, clips, reference) -> None:
    pair.decoded.clear()

    async def all_at_once():
        return await asyncio.gather(*(asyncio.wrap_future(pair.submit(c)) for c in clips))

    decoded = asyncio.run(all_at_once())
    assert [d.segments for d in decoded] == reference[0]
    assert {d.language for d in decoded} == {"en"}
    assert {d.worker for d in pair.decoded} == {0, 1}  # both workers decoded


def test_meeting_windows_spread_over_workers_equal_one_worker(
    pair, meeting_speech, reference
) -> None:
    pair.decoded.clear()
    done = []
    result = pair.transcribe(meeting_speech, progress=lambda d, t: done.append((d, t)))
    assert result == reference[1]  # text, timestamps and languages, in order
    assert len(result.segments) > 5 and done[-1][0] == done[-1][1] >= 3
    assert result.language == "en" and len(result.languages) == done[-1][1]
    assert {d.worker for d in pair.decoded} == {0, 1}


def test_a_file_of_one_window_gets_every_workers_thread(pair, clips, meeting_speech) -> None:
    pair.decoded.clear()
    pair.transcribe(Segmenter().segments(clips[0]))
    assert [d.threads for d in pair.decoded] == [2]  # 2 workers x 1 thread, on the one window
    pair.decoded.clear()
    pair.transcribe(meeting_speech)  # three windows: one thread each, side by side
    assert len(pair.decoded) >= 3 and {d.threads for d in pair.decoded} == {1}


def test_windows_are_packed_as_the_speech_arrives(meeting_speech) -> None:
    taken = []

    def arriving():
        for segment in meeting_speech:
            taken.append(segment)
            yield segment

    windows = packed(arriving())
    first = next(windows)
    # Out as soon as the segment after it did not fit: before the rest of the speech was found.
    assert len(taken) == len(first.pieces) + 1 < len(meeting_speech)
    whole = pack(meeting_speech)
    streamed = [first, *windows]
    assert [w.pieces for w in streamed] == [w.pieces for w in whole]
    assert all(np.array_equal(a.samples, b.samples) for a, b in zip(streamed, whole, strict=True))


class _TimedSegmenter(Segmenter):
    """A real Segmenter that notes when its stream ran out (a seam for the timing only)."""

    exhausted = 0.0

    def stream(self, samples):
        yield from super().stream(samples)
        self.exhausted = time.perf_counter()


def test_a_file_is_decoded_while_its_speech_is_still_being_found(pair) -> None:
    segmenter = _TimedSegmenter()
    pair.decoded.clear()
    done = []
    transcript = pair.transcribe_file(MEETING, segmenter, progress=lambda d, t: done.append((d, t)))
    # The meeting's first windows reached the workers while its last minutes were being scored.
    assert min(d.started for d in pair.decoded) < segmenter.exhausted
    sequential = pair.transcribe(Segmenter().segments(load(MEETING))).segments
    assert list(transcript.segments) == sequential and len(sequential) > 20
    duration = round(transcript.duration_s)
    assert done[-1] == (duration, duration) and [d for d, _ in done] == sorted(d for d, _ in done)


def test_a_window_decodes_the_same_whatever_was_decoded_before(
    model, clips, meeting_speech
) -> None:
    # A context keeps the encoder's output of earlier windows; with flash attention whisper.cpp
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


def test_the_async_facade_gives_what_the_blocking_call_gives(pair, meeting_speech, reference):
    async def in_a_loop():
        ticks = 0

        async def tick():
            nonlocal ticks
            while True:
                ticks += 1
                await asyncio.sleep(0.01)

        ticker = asyncio.create_task(tick())
        result = await pair.transcribe_async(meeting_speech)
        ticker.cancel()
        return result, ticks

    result, ticks = asyncio.run(in_a_loop())
    assert result == reference[1]
    assert ticks > 10  # the loop went on while the workers decoded


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


def test_a_bad_window_fails_alone(pair, clips, reference) -> None:
    bad = pair.submit(np.array(["not", "audio"]))
    good = pair.submit(clips[0])
    with pytest.raises(ValueError):
        bad.result()
    assert good.result().segments == reference[0][0]


def test_close_finishes_the_queue_then_refuses(model, clips) -> None:
    running = Transcriber(model, OPTIONS, workers=2)
    futures = [running.submit(c) for c in clips[:2]]
    running.close()
    assert all(f.done() and not f.exception() for f in futures)
    with pytest.raises(RuntimeError, match="closed"):
        running.submit(clips[0])
    running.close()  # twice is harmless
    assert not any(t.is_alive() for t in running._threads)


def test_workers_must_be_positive(model, capsys) -> None:
    with pytest.raises(ValueError):
        Transcriber(model, OPTIONS, workers=0)
    assert cli.main(["transcribe", "--model", str(model), "--workers", "0", str(MEETING)]) == 2
    assert "--workers must be 1 or more" in capsys.readouterr().err
