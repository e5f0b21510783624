"""The API's transcriptions turned into text: uploads made into 16 kHz PCM, then decoded on the
daemon's engine when no meeting needs it.

`transcribe` and `check_language` are the one place that calls the engine, so moving to
another engine interface means changing those two functions only.
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from appliance.errors import AudioError, UsageError
from appliance.recording.audio import (
    SAMPLE_RATE,
    float_to_pcm16,
    load,
    pcm16_to_float,
    to_mono_16k,
)
from appliance.recording.segmenter import Segmenter, SpeechSegment
from appliance.service.jobs import Job, Jobs
from appliance.transcript import Segment

_LOGGER = logging.getLogger(__name__)

# A job's speech goes to the engine this many seconds at a time, and a meeting that starts
# meanwhile waits for at most one batch: two 30 s windows.
BATCH_S = 60.0
# How often a job waiting for a meeting to finish looks again.
_IDLE_POLL_S = 0.5


@dataclass(frozen=True)
class RawFormat:
    """Raw PCM16 as the body of a request: rate, channels and byte order."""

    rate: int = SAMPLE_RATE
    channels: int = 1
    big_endian: bool = False


async def transcribe(engine: Any, speech: Sequence[SpeechSegment], language: str) -> list[Segment]:
    """Decode speech segments on the daemon's engine, off the event loop."""
    return (await engine.transcribe_async(speech, language)).segments


def check_language(engine: Any, language: str | None) -> str:
    """The language code the engine will decode with; UsageError if it cannot."""
    return engine.check_language(language)


def to_pcm(source: Path, target: Path, raw: RawFormat | None) -> float:
    """Decode an uploaded body (raw PCM16 if raw is given, else an audio file) into mono
    16 kHz PCM16 at target, synced; its duration in seconds. AudioError if it is not audio."""
    if raw is None:
        samples = load(source)
    else:
        data = source.read_bytes()
        frame = 2 * raw.channels
        if len(data) % frame:
            raise AudioError(
                f"raw PCM16 with {raw.channels} channels needs a multiple of {frame} bytes, "
                f"got {len(data)}"
            )
        pcm = np.frombuffer(data, dtype=">i2" if raw.big_endian else "<i2").astype(np.int16)
        samples = to_mono_16k(pcm.reshape(-1, raw.channels), raw.rate)
    if not samples.size:
        raise AudioError("the body holds no audio samples")
    with open(target, "wb") as out:
        out.write(float_to_pcm16(samples))
        out.flush()
        os.fsync(out.fileno())
    return samples.size / SAMPLE_RATE


def batches(speech: Sequence[SpeechSegment], limit_s: float = BATCH_S) -> list[list[SpeechSegment]]:
    """Consecutive segments grouped into runs of at most limit_s seconds (a longer segment alone)."""
    groups: list[list[SpeechSegment]] = []
    total = limit_s
    for segment in speech:
        if total + segment.duration_s > limit_s:
            groups.append([])
            total = 0.0
        groups[-1].append(segment)
        total += segment.duration_s
    return groups


class Runner:
    """Decodes queued jobs one after the other, `workers` at a time, whenever busy() is false."""

    def __init__(
        self,
        jobs: Jobs,
        engine: Any,
        segmenter: Callable[[], Segmenter],
        busy: Callable[[], bool],
        workers: int = 1,
    ) -> None:
        self.jobs = jobs
        self.engine = engine
        self.segmenter = segmenter
        self.busy = busy
        self.workers = workers
        self._wake = asyncio.Event()

    def wake(self) -> None:
        """A job was queued."""
        self._wake.set()

    async def run(self) -> None:
        """Work until cancelled; a job cut off here is queued again by Jobs.recover()."""
        await asyncio.gather(*(self._work() for _ in range(self.workers)))

    async def _work(self) -> None:
        while True:
            await self.idle()
            job = self.jobs.next_queued()
            if job is None:
                self._wake.clear()
                await self._wake.wait()
                continue
            self.jobs.start(job)
            self._wake.set()  # another worker may take the next one
            try:
                segments = await self._transcribe(job)
            except asyncio.CancelledError:
                raise
            except (AudioError, UsageError, OSError) as err:
                _LOGGER.warning("API transcription %s of %s failed: %s", job.id, job.owner, err)
                self.jobs.fail(job, str(err))
            except Exception as err:  # one bad job must not stop the others
                _LOGGER.exception("API transcription %s of %s failed", job.id, job.owner)
                self.jobs.fail(job, f"{type(err).__name__}: {err}")
            else:
                self.jobs.finish(job, segments, job.language)
                _LOGGER.info(
                    "API transcription %s of %s done (%.1f s of audio)",
                    job.id,
                    job.owner,
                    job.duration_s,
                )

    async def idle(self) -> None:
        """Return once no meeting needs the engine."""
        while self.busy():
            await asyncio.sleep(_IDLE_POLL_S)

    async def _transcribe(self, job: Job) -> list[Segment]:
        path = self.jobs.audio_path(job)
        speech = await asyncio.to_thread(self._segment, path)
        segments: list[Segment] = []
        for batch in batches(speech):
            await self.idle()
            segments += await transcribe(self.engine, batch, job.language)
        return segments

    def _segment(self, path: Path) -> list[SpeechSegment]:
        try:
            data = path.read_bytes()
        except FileNotFoundError as err:
            raise AudioError("audio spool missing") from err
        return self.segmenter().segments(pcm16_to_float(data))
