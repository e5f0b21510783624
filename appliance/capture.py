"""Where a meeting's audio comes from: the microphone (sounddevice) or an uploaded file."""

from __future__ import annotations

import asyncio
import logging
import shutil
import subprocess
import time
from pathlib import Path
from typing import AsyncIterator

import numpy as np
import soundfile

from .audio import SAMPLE_RATE, Resampler, check_readable, float_to_pcm16, to_mono
from .errors import AudioError
from .transcript import Gap

_LOGGER = logging.getLogger(__name__)

_BLOCK_S = 0.1  # PortAudio block and file chunk: small enough for live pacing, cheap to hand over
_SILENT_LIMIT_S = 2.0  # no callback for this long means the device is gone
_FIRST_RETRY_S = 0.5


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
        if not self._soundfile and shutil.which("ffmpeg") is None:
            raise AudioError(f"{self.path}: not audio, or a format libsndfile cannot read "
                             "(and ffmpeg is not installed)")

    def stop(self) -> None:
        """End the stream at the next block."""
        self._stopped = True

    async def stream(self) -> AsyncIterator[bytes | Gap]:
        """PCM16 16 kHz mono blocks; paced by the wall clock when speed is set."""
        blocks = self._soundfile_blocks() if self._soundfile else self._ffmpeg_blocks()
        started = time.monotonic()
        sent_s = 0.0
        async for pcm in blocks:
            if self._stopped:
                break
            yield pcm
            sent_s += len(pcm) / (2 * SAMPLE_RATE)
            if self.speed > 0:
                await asyncio.sleep(max(0.0, started + sent_s / self.speed - time.monotonic()))
            else:
                await asyncio.sleep(0)  # let the transcriber and the socket run between blocks

    async def _soundfile_blocks(self) -> AsyncIterator[bytes]:
        with soundfile.SoundFile(self.path) as sound:
            resampler = Resampler(sound.samplerate)
            frames = max(1, int(sound.samplerate * _BLOCK_S))
            while True:
                try:
                    block = sound.read(frames, dtype="float32", always_2d=True)
                except soundfile.SoundFileError as err:
                    _LOGGER.warning("%s: damaged after %.1f s; keeping what was read (%s)",
                                    self.path, sound.tell() / sound.samplerate, err)
                    break
                if not len(block):
                    break
                yield float_to_pcm16(resampler.resample(block))
            yield float_to_pcm16(resampler.flush())

    async def _ffmpeg_blocks(self) -> AsyncIterator[bytes]:
        command = [shutil.which("ffmpeg") or "ffmpeg", "-nostdin", "-hide_banner", "-loglevel",
                   "error", "-i", str(self.path), "-map", "0:a:0", "-ac", "1", "-ar",
                   str(SAMPLE_RATE), "-f", "s16le", "pipe:1"]
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
    """A PortAudio input device; faults become gaps and retries, never an exception."""

    def __init__(self, device: str = "", retry_max_s: float = 30.0, samplerate: int = 0) -> None:
        self.device = device
        self.retry_max_s = retry_max_s
        self.samplerate = samplerate  # 0: the device's default rate
        self._stopped = asyncio.Event()
        self._queue: asyncio.Queue = asyncio.Queue()
        self._overflows = 0

    def stop(self) -> None:
        """End the stream; a gap still open is closed at the time of stopping."""
        self._stopped.set()
        self._queue.put_nowait(None)

    async def stream(self) -> AsyncIterator[bytes | Gap]:
        """PCM16 16 kHz mono blocks from the device, a Gap and silence for any lost stretch."""
        started = time.monotonic()
        position_s = 0.0
        lost_reason = ""
        lost_at = 0.0
        delay = _FIRST_RETRY_S
        while not self._stopped.is_set():
            try:
                async for pcm in self._capture():
                    if lost_reason:
                        _LOGGER.warning("microphone back after %.1f s", position_s - lost_at)
                        lost_reason = ""
                        delay = _FIRST_RETRY_S
                    yield pcm
                    position_s += len(pcm) / (2 * SAMPLE_RATE)
                if self._stopped.is_set():
                    break
                reason = "no audio from the device"
            except _DeviceFault as err:
                reason = str(err)
            if not lost_reason:
                _LOGGER.warning("microphone lost: %s", reason)
                lost_reason, lost_at = reason, position_s
            with_silence = await self._wait_and_fill(delay, started, position_s)
            if with_silence:
                gap_end = position_s + len(with_silence) / (2 * SAMPLE_RATE)
                yield Gap(position_s, gap_end, f"microphone lost: {lost_reason}")
                yield with_silence
                position_s = gap_end
            delay = min(self.retry_max_s, delay * 2)

    async def _wait_and_fill(self, delay: float, started: float, position_s: float) -> bytes:
        """Wait before retrying; silence covering the wall-clock time the device was gone."""
        try:
            await asyncio.wait_for(self._stopped.wait(), delay)
        except asyncio.TimeoutError:
            pass
        missing = time.monotonic() - started - position_s
        return bytes(2 * int(missing * SAMPLE_RATE)) if missing > 0 else b""

    async def _capture(self) -> AsyncIterator[bytes]:
        """One open stream until it fails or stops; raises _DeviceFault when it cannot run."""
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
                loop.call_soon_threadsafe(queue.put_nowait, (indata.copy(), bool(status)))

            def finished() -> None:
                loop.call_soon_threadsafe(queue.put_nowait, None)

            stream = sd.InputStream(device=index, samplerate=rate, channels=channels,
                                    dtype="float32", blocksize=int(rate * _BLOCK_S),
                                    callback=callback, finished_callback=finished)
            stream.start()
        except (sd.PortAudioError, ValueError, OSError) as err:
            raise _DeviceFault(str(err).splitlines()[0] or type(err).__name__) from err
        resampler = Resampler(rate)
        try:
            while not self._stopped.is_set():
                try:
                    item = await asyncio.wait_for(queue.get(), _SILENT_LIMIT_S)
                except asyncio.TimeoutError as err:
                    raise _DeviceFault("the device stopped delivering audio") from err
                if item is None:
                    break
                block, overflowed = item
                if overflowed:
                    self._note_overflow()
                yield float_to_pcm16(resampler.resample(to_mono(block)))
            yield float_to_pcm16(resampler.flush())
        finally:
            try:
                stream.abort()
                stream.close()
            except sd.PortAudioError:
                pass

    def _note_overflow(self) -> None:
        self._overflows += 1
        if self._overflows in (1, 10, 100) or self._overflows % 1000 == 0:
            _LOGGER.warning("microphone: %d input overflows so far (audio dropped by the device)",
                            self._overflows)


class _DeviceFault(Exception):
    """The microphone cannot be opened or stopped working (handled inside MicrophoneSource)."""


def _reinitialize(sd) -> None:
    """Make PortAudio list devices afresh, so a microphone plugged in since is found."""
    sd._terminate()
    sd._initialize()


def find_device(sd, device: str) -> int:
    """An input device index from "" (default), an index, or part of a name."""
    inputs = [(i, d["name"]) for i, d in enumerate(sd.query_devices())
              if d["max_input_channels"] > 0]
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
