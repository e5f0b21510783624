"""One meeting's audio path with the real model: nothing dropped, backlog from disk, recovery."""

from __future__ import annotations

import asyncio
from pathlib import Path

import jiwer
import numpy as np
import pytest

from appliance.engine.transcriber import DecodeOptions, Transcriber
from appliance.evaluate import normalize
from appliance.recording import audio, spool
from appliance.recording.capture import FileSource
from appliance.recording.meeting import Recording, SpoolReplay
from appliance.recording.segmenter import Segmenter
from appliance.recording.spool import Spool
from appliance.store import FINISHING, Database

DATA = Path(__file__).parent / "data"
MEETING = DATA / "meetings" / "dev-meeting-01.flac"
REFERENCE = (DATA / "meetings" / "dev-meeting-01.txt").read_text()


class SpyTranscriber(Transcriber):
    """The real engine, noting which speech it was given (a seam, not a fake)."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.heard: list[tuple[float, float, bytes]] = []

    async def transcribe_async(self, segments, language=None):
        self.heard += [(s.start_s, s.end_s, audio.float_to_pcm16(s.samples)) for s in segments]
        return await super().transcribe_async(segments, language)


@pytest.fixture(scope="module")
def engine(tiny_en_installed):
    with SpyTranscriber(tiny_en_installed["q5_1"], DecodeOptions(threads=2)) as spy:
        yield spy


def _record(
    tmp_path, engine, source, queue_segments=8, crash_after_first_commit=False, language="en"
):
    """Run a Recording of source into a fresh database; returns (db, meeting, recording)."""
    db = Database(tmp_path / "appliance.db")
    meeting = db.create("test", language, (), "file")
    path = tmp_path / f"{meeting.id}.pcm"
    recording = Recording(
        meeting,
        db,
        source,
        engine,
        Segmenter(),
        path,
        Spool.create(path),
        queue_segments=queue_segments,
    )

    async def run():
        task = asyncio.create_task(recording.run())
        if not crash_after_first_commit:
            await task
            return
        # Once the whole file is in the spool (a live spool holds all that was heard before
        # the crash) and the first window is committed.
        while db.meeting(meeting.id).transcribed_s == 0 or recording.capturing:
            await asyncio.sleep(0.05)
        task.cancel()  # as abrupt as the loop allows: the process "dies" here
        with pytest.raises(asyncio.CancelledError):
            await task

    asyncio.run(run())
    return db, meeting, recording


def _wer(db, meeting_id) -> float:
    """WER of the stored transcript against the meeting's reference, as a fraction."""
    heard = normalize(" ".join(s.text for s in db.transcript(meeting_id).segments), "en")
    return jiwer.wer(normalize(REFERENCE, "en"), heard)


def test_live_path_loses_nothing_even_when_behind(tmp_path, engine):
    """Every segment the VAD finds reaches the model with its exact samples, from memory or
    read back from the spool once the in-memory queue is full."""
    expected = [
        (s.start_s, s.end_s, audio.float_to_pcm16(s.samples))
        for s in Segmenter().segments(audio.load(MEETING))
    ]
    engine.heard.clear()
    db, meeting, recording = _record(tmp_path, engine, FileSource(MEETING), queue_segments=1)
    assert engine.heard == expected
    stored = db.meeting(meeting.id)
    assert stored.state == FINISHING
    assert stored.audio_s == pytest.approx(spool.duration_s(recording.spool_path))
    assert stored.audio_s == pytest.approx(len(audio.load(MEETING)) / 16000, abs=0.05)
    wer = _wer(db, meeting.id)
    assert wer < 0.30, wer  # the file pipeline scores 25.2 % on this recording (docs/benchmarks.md)


def test_recovery_after_a_crash_finishes_from_the_spool(tmp_path, engine):
    """Cut a run short, then replay the spool from the committed point: each stretch is
    transcribed once and the result matches an uninterrupted run."""
    clip = DATA / "meetings" / "dev-meeting-01.flac"
    db, meeting, recording = _record(
        tmp_path, engine, FileSource(clip), crash_after_first_commit=True
    )
    crashed = db.meeting(meeting.id)
    assert 0 < crashed.transcribed_s < spool.duration_s(recording.spool_path)
    before = db.transcript(meeting.id).segments

    replay = Recording(
        crashed,
        db,
        SpoolReplay(recording.spool_path, crashed.transcribed_s),
        engine,
        Segmenter(),
        recording.spool_path,
        offset_s=crashed.transcribed_s,
    )
    asyncio.run(replay.run())
    after = db.transcript(meeting.id).segments
    assert after[: len(before)] == before
    assert len(set(after)) == len(after), after  # nothing stored twice
    assert all(s.start_s >= crashed.transcribed_s - 1e-6 for s in after[len(before) :])
    recovered = db.meeting(meeting.id)
    assert recovered.audio_s == pytest.approx(spool.duration_s(recording.spool_path))
    wer = _wer(db, meeting.id)
    assert wer < 0.30, wer


def test_a_meeting_in_auto_stores_the_language_it_was_heard_in(tmp_path, engine):
    db, meeting, _ = _record(
        tmp_path, engine, FileSource(DATA / "speech" / "jfk" / "jfk.flac"), language="auto"
    )
    assert meeting.language == "auto"
    assert db.meeting(meeting.id).language == "en"  # what tiny.en decodes in


def test_spool_replay_is_bit_exact(tmp_path):
    samples = audio.load(DATA / "speech" / "jfk" / "jfk.flac")
    path = tmp_path / "1.pcm"
    with Spool.create(path) as writer:
        writer.append(audio.float_to_pcm16(samples))

    async def collect(start_s):
        return b"".join([chunk async for chunk in SpoolReplay(path, start_s).stream()])

    assert asyncio.run(collect(0.0)) == audio.float_to_pcm16(samples)
    tail = asyncio.run(collect(5.0))
    assert tail == audio.float_to_pcm16(samples[5 * 16000 :])
    assert np.frombuffer(tail, "<i2").size == samples.size - 5 * 16000
