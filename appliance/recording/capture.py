"""Where a meeting's audio comes from: the microphone (sounddevice) or an uploaded file."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import shutil
import stat
import subprocess
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import numpy as np
import soundfile

from appliance.errors import AudioError
from appliance.recording.audio import (
    SAMPLE_RATE,
    Resampler,
    check_readable,
    ffmpeg_decode,
    float_to_pcm16,
    to_mono,
)
from appliance.transcript import Gap

_LOGGER = logging.getLogger(__name__)

_BLOCK_S = 0.1  # PortAudio block and file chunk: small enough for live pacing, cheap to hand over
_SILENT_LIMIT_S = 2.0  # no callback for this long means the device is gone
# A PulseAudio null sink woken by its first recorder took 1.1-1.9 s to deliver a block.
_FIRST_BLOCK_LIMIT_S = 5.0
_FIRST_RETRY_S = 0.5
_OVERFLOW_REPORT_S = 60.0  # a struggling device logs once a minute, not ten times a second
_QUEUED_BLOCKS = 600  # a minute of blocks may wait for the loop; past that they are dropped
_SILENCE_CHUNK = 10 * SAMPLE_RATE  # a long outage's zeros go out in pieces of this many samples


_FILE_KINDS = {
    stat.S_IFDIR: "a folder",
    stat.S_IFIFO: "a FIFO",
    stat.S_IFCHR: "a character device",
    stat.S_IFBLK: "a block device",
    stat.S_IFSOCK: "a socket",
}


def upload(path: Path, speed: float = 0.0) -> FileSource:
    """A FileSource for a regular file only: opening a FIFO would block until a writer came."""
    try:
        info = os.stat(path)
    except FileNotFoundError:
        raise AudioError(f"{path}: no such file") from None
    except OSError as err:
        raise AudioError(f"{path}: {err.strerror or err}") from err
    if not stat.S_ISREG(info.st_mode):
        kind = _FILE_KINDS.get(stat.S_IFMT(info.st_mode), "not a file")
        raise AudioError(f"{path}: {kind}, not a regular file")
    return FileSource(path, speed=speed)


class FileSource:
    """An audio file read in blocks, as fast as it is taken or paced like a live microphone."""

    def __init__(self, path: Path, speed: float = 0.0) -> None:
        self.path = Path(path)
        self.speed = speed  # 0: as fast as the consumer takes it; 1: real time; 8: 8x real time
        self._stopped = False
        check_readable(self.path)
        try:
            with soundfile.SoundFile(self.path) as sound:
                self._soundfile = sound.frames > 0
        except soundfile.SoundFileError:
            self._soundfile = False
        if not self._soundfile:
            self._probe_ffmpeg()

    def _probe_ffmpeg(self) -> None:
        """Refuse now, not mid-meeting, what ffmpeg cannot decode either (decodes 0.1 s)."""
        ffmpeg = shutil.which("ffmpeg")
        if ffmpeg is None:
            raise AudioError(
                f"{self.path}: not audio, or a format libsndfile cannot read "
                "(and ffmpeg is not installed)"
            )
        probe = subprocess.run(
            ffmpeg_decode(ffmpeg, self.path, "s16le", seconds=0.1),
            stdin=subprocess.DEVNULL,
            capture_output=True,
            timeout=60,
        )
        if probe.returncode:
            lines = probe.stderr.decode(errors="replace").strip().splitlines()
            reason = lines[-1] if lines else f"ffmpeg exited with status {probe.returncode}"
            raise AudioError(f"{self.path}: not audio, or a format ffmpeg cannot read ({reason})")

    def stop(self) -> None:
        """End the stream at the next block."""
        self._stopped = True

    async def stream(self) -> AsyncIterator[bytes | Gap]:
        """PCM16 16 kHz mono blocks; paced by the wall clock when speed is set."""
        blocks = self._soundfile_blocks() if self._soundfile else self._ffmpeg_blocks()
        started = time.monotonic()
        sent_s = 0.0
        # aclosing: a stop closes the file or kills ffmpeg now, not when the generator is GC'd.
        async with contextlib.aclosing(blocks):
            async for pcm in blocks:
                if self._stopped:
                    break
                if not pcm:
                    continue  # the resampler's first blocks may all be held in its filter
                yield pcm
                sent_s += len(pcm) / (2 * SAMPLE_RATE)
                if self.speed > 0:
                    await asyncio.sleep(max(0.0, started + sent_s / self.speed - time.monotonic()))
                else:
                    await asyncio.sleep(0)  # let the transcriber and the socket run meanwhile

    async def _soundfile_blocks(self) -> AsyncIterator[bytes]:
        with soundfile.SoundFile(self.path) as sound:
            resampler = Resampler(sound.samplerate)
            frames = max(1, int(sound.samplerate * _BLOCK_S))
            while True:
                try:
                    block = sound.read(frames, dtype="float32", always_2d=True)
                except soundfile.SoundFileError as err:
                    if not sound.tell():
                        raise AudioError(f"{self.path}: cannot decode ({err})") from err
                    _LOGGER.warning(
                        "%s: damaged after %.1f s; keeping what was read (%s)",
                        self.path,
                        sound.tell() / sound.samplerate,
                        err,
                    )
                    break
                if not len(block):
                    break
                yield float_to_pcm16(resampler.resample(block))
            yield float_to_pcm16(resampler.flush())

    async def _ffmpeg_blocks(self) -> AsyncIterator[bytes]:
        command = ffmpeg_decode(shutil.which("ffmpeg") or "ffmpeg", self.path, "s16le")
        process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
        size = int(SAMPLE_RATE * _BLOCK_S) * 2
        got = False
        try:
            while chunk := await asyncio.to_thread(process.stdout.read, size):
                got = True
                yield chunk[: len(chunk) - len(chunk) % 2]
        finally:
            process.kill()
            process.wait()
        if not got:
            raise AudioError(f"{self.path}: not audio, or a format ffmpeg cannot read")


class MicrophoneSource:
    """A PortAudio input device; an outage becomes retries and one gap, never an exception."""

    def __init__(self, device: str = "", retry_max_s: float = 30.0, samplerate: int = 0) -> None:
        self.device = device
        self.retry_max_s = retry_max_s
        self.samplerate = samplerate  # 0: the device's default rate
        self._stopped = asyncio.Event()
        self._queue: asyncio.Queue = asyncio.Queue()
        self._heard_at = 0.0  # monotonic time the newest block taken from the device arrived
        self._overflows = 0
        self._overflow_reported_at: float | None = None
        # While no device is heard: "microphone missing since 10:02:03: why" (never heard in
        # this meeting) or "microphone lost since ...", for `status`; "" while recording.
        self.problem = ""

    def stop(self) -> None:
        """End the stream; a gap still open is closed at the time of stopping."""
        self._stopped.set()
        self._queue.put_nowait(None)

    async def stream(self) -> AsyncIterator[bytes | Gap]:
        """PCM16 16 kHz mono blocks; after an outage, one Gap and as much silence as it lasted.

        The timeline stays wall-clock: the silence stands for the time no device was heard,
        from the last block before the outage to the first one after it (or to stop()).
        """
        position_s = 0.0
        lost_reason = ""
        lost_at = self._heard_at = time.monotonic()  # a device missing at the start: from now
        delay = _FIRST_RETRY_S
        while not self._stopped.is_set():
            try:
                # aclosing: the device is released as soon as our consumer stops, not at GC.
                async with contextlib.aclosing(self._capture()) as blocks:
                    async for pcm in blocks:
                        if lost_reason:
                            # The first block back began recording one block before it arrived.
                            lost = round(
                                max(0.0, self._heard_at - _BLOCK_S - lost_at) * SAMPLE_RATE
                            )
                            for item in _gap(position_s, lost, lost_reason):
                                yield item
                            position_s += lost / SAMPLE_RATE
                            _LOGGER.warning("microphone back after %.1f s", lost / SAMPLE_RATE)
                            lost_reason = self.problem = ""
                            delay = _FIRST_RETRY_S
                        yield pcm
                        position_s += len(pcm) / (2 * SAMPLE_RATE)
                if self._stopped.is_set():
                    break
                reason = "the device ended the stream"
            except _DeviceFault as err:
                reason = str(err)
            if not lost_reason:
                heard = position_s > 0
                _LOGGER.warning("microphone lost: %s", reason)
                lost_reason, lost_at = reason, self._heard_at
                since = time.strftime("%H:%M:%S", time.localtime())
                self.problem = (
                    f"microphone {'lost' if heard else 'missing'} since {since}: {reason}"
                )
            try:
                await asyncio.wait_for(self._stopped.wait(), delay)
            except TimeoutError:
                pass
            delay = min(self.retry_max_s, delay * 2)
        if lost_reason:
            lost = round(max(0.0, time.monotonic() - lost_at) * SAMPLE_RATE)
            for item in _gap(position_s, lost, lost_reason):
                yield item

    async def _capture(self) -> AsyncIterator[bytes]:
        """One open stream until it ends or stops; raises _DeviceFault when it cannot run."""
        import sounddevice as sd  # PortAudio enumerates devices at import: only when recording

        loop = asyncio.get_running_loop()
        try:
            _reinitialize(sd)
            index = find_device(sd, self.device)
            info = sd.query_devices(index)
            rate = self.samplerate or int(info["default_samplerate"])
            channels = min(2, int(info["max_input_channels"]))
            queue = self._queue = asyncio.Queue()

            def callback(indata, _frames, _time, status) -> None:
                # PortAudio's thread: copy and hand over, nothing else.
                loop.call_soon_threadsafe(self._arrive, queue, indata.copy(), bool(status))

            def finished() -> None:
                loop.call_soon_threadsafe(queue.put_nowait, None)

            stream = sd.InputStream(
                device=index,
                samplerate=rate,
                channels=channels,
                dtype="float32",
                blocksize=int(rate * _BLOCK_S),
                callback=callback,
                finished_callback=finished,
            )
            stream.start()
        except (sd.PortAudioError, ValueError, OSError) as err:
            raise _DeviceFault(str(err).splitlines()[0] or type(err).__name__) from err
        resampler = Resampler(rate)
        limit_s = _FIRST_BLOCK_LIMIT_S
        try:
            while not self._stopped.is_set():
                try:
                    item = await asyncio.wait_for(queue.get(), limit_s)
                except TimeoutError as err:
                    raise _DeviceFault(f"no audio for {limit_s:g} s") from err
                if item is None:
                    break
                block, self._heard_at = item
                limit_s = _SILENT_LIMIT_S
                if pcm := float_to_pcm16(resampler.resample(to_mono(block))):
                    yield pcm
            if pcm := float_to_pcm16(resampler.flush()):
                yield pcm
        finally:
            try:
                stream.abort()
                stream.close()
            except sd.PortAudioError:
                pass

    def _arrive(self, queue: asyncio.Queue, block: np.ndarray, overflowed: bool) -> None:
        """On the loop: stamp a block with its arrival and queue it, unless the queue is full."""
        if overflowed:
            self._note_overflow()
        if queue.qsize() >= _QUEUED_BLOCKS:
            self._note_overflow()
            return
        queue.put_nowait((block, time.monotonic()))

    def _note_overflow(self) -> None:
        self._overflows += 1
        now = time.monotonic()
        if (
            self._overflow_reported_at is None
            or now - self._overflow_reported_at >= _OVERFLOW_REPORT_S
        ):
            _LOGGER.warning(
                "microphone: %d block(s) overflowed since the last report (audio dropped)",
                self._overflows,
            )
            self._overflows = 0
            self._overflow_reported_at = now


def _gap(start_s: float, samples: int, reason: str) -> Iterator[bytes | Gap]:
    """A Gap of this many samples from start_s, then that many zeros in pieces."""
    yield Gap(start_s, start_s + samples / SAMPLE_RATE, f"microphone lost: {reason}")
    for done in range(0, samples, _SILENCE_CHUNK):
        yield bytes(2 * min(_SILENCE_CHUNK, samples - done))


class _DeviceFault(Exception):
    """The microphone cannot be opened or stopped working (handled inside MicrophoneSource)."""


def _reinitialize(sd) -> None:
    """Make PortAudio list devices afresh, so a microphone plugged in since is found."""
    # sounddevice 0.5.6 has no public call for this. A failed _initialize leaves nothing to
    # terminate, and terminating then would fail every retry after it.
    if sd._initialized:
        sd._terminate()
    sd._initialize()


def find_device(sd, device: str) -> int:
    """An input device index from "" (default), an index, or part of a name."""
    inputs = [
        (i, d["name"]) for i, d in enumerate(sd.query_devices()) if d["max_input_channels"] > 0
    ]
    if not device:
        index = sd.default.device[0]
        if index is None or index < 0:
            if not inputs:
                raise ValueError("no input device")
            return inputs[0][0]
        return int(index)
    if device.isdigit():
        if any(i == int(device) for i, _ in inputs):
            return int(device)
        raise ValueError(f"no input device with index {device}")
    matches = [i for i, name in inputs if device.lower() in name.lower()]
    if not matches:
        names = ", ".join(repr(name) for _, name in inputs) or "none"
        raise ValueError(f"no input device named {device!r} (inputs: {names})")
    return matches[0]
