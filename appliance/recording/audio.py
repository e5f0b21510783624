"""PCM constants and pure helpers: decode a file, convert and resample blocks of samples."""

from __future__ import annotations

import logging
import math
import shutil
import subprocess
import tempfile
from pathlib import Path

import numpy as np
import soundfile
import soxr

from appliance.errors import AudioError

_LOGGER = logging.getLogger(__name__)

SAMPLE_RATE = 16000
"""Samples per second after decoding: the rate Silero VAD and Whisper both take."""

MAX_DURATION_S = 8 * 3600.0
"""Longest file `load` accepts by default: a working day, about 1.8 GB of float32 at 16 kHz."""

# About a second per read: Python overhead stays negligible, and a decode error in a
# truncated FLAC loses at most this much of the audio before it.
_BLOCK_FRAMES = 16384
# libsndfile quietly shortens a WAV whose header claims more data than the file holds, or an
# Ogg stream cut mid-page; only its log ("data : 352000 (should be 175978)") tells.
_DAMAGE_NOTES = ("should be", "lacks an end-of-stream")
_PCM16_SCALE = np.float32(1 / 32768)


def pcm16_to_float(data: bytes | np.ndarray) -> np.ndarray:
    """Little-endian 16-bit PCM (bytes or an int16 array) as float32 in [-1, 1)."""
    if isinstance(data, np.ndarray):
        if data.dtype != np.int16:
            raise AudioError(f"PCM16 samples must be int16, got {data.dtype}")
        pcm = data
    else:
        if len(data) % 2:
            raise AudioError(f"PCM16 data must have an even number of bytes, got {len(data)}")
        pcm = np.frombuffer(data, dtype="<i2")
    return pcm.astype(np.float32) * _PCM16_SCALE


def float_to_pcm16(samples: np.ndarray) -> bytes:
    """Float samples as little-endian 16-bit PCM, clipping anything outside [-1, 1]."""
    scaled = np.rint(np.asarray(samples, dtype=np.float32) * 32768.0)
    return np.clip(scaled, -32768, 32767).astype("<i2").tobytes()


def to_mono(samples: np.ndarray) -> np.ndarray:
    """A (frames,) or (frames, channels) block of int16 or float as mono float32 (channel mean)."""
    samples = np.asarray(samples)
    if samples.dtype == np.int16:
        samples = pcm16_to_float(samples)
    elif samples.dtype.kind != "f":
        raise AudioError(f"samples must be int16 or float, got {samples.dtype}")
    if samples.ndim == 2:
        samples = samples.mean(axis=1, dtype=np.float32)
    elif samples.ndim != 1:
        raise AudioError(
            f"samples must be shaped (frames,) or (frames, channels), got {samples.shape}"
        )
    return np.ascontiguousarray(samples, dtype=np.float32)


def to_mono_16k(samples: np.ndarray, rate: int) -> np.ndarray:
    """Downmix and resample one self-contained block; a stream of blocks needs a Resampler."""
    mono = to_mono(samples)
    if rate == SAMPLE_RATE:
        return mono
    return soxr.resample(mono, rate, SAMPLE_RATE).astype(np.float32, copy=False)


class Resampler:
    """Mono 16 kHz float32 from a stream of blocks at any rate.

    Resampling each block on its own restarts the filter at every edge, which clicks and
    drifts in length; this keeps one soxr stream, so the capture callback's blocks join up
    exactly as one long signal would. Keep one Resampler per stream and call flush() at its end.
    """

    def __init__(self, rate: int) -> None:
        if rate <= 0:
            raise AudioError(f"sample rate must be positive, got {rate}")
        self.rate = rate
        self._stream = (
            None
            if rate == SAMPLE_RATE
            else soxr.ResampleStream(rate, SAMPLE_RATE, 1, dtype="float32")
        )

    def resample(self, block: np.ndarray) -> np.ndarray:
        """The 16 kHz mono samples this block completes (the filter holds back a few)."""
        mono = to_mono(block)
        return mono if self._stream is None else self._stream.resample_chunk(mono)

    def flush(self) -> np.ndarray:
        """The samples still held in the filter; call once when the stream ends."""
        if self._stream is None:
            return np.empty(0, dtype=np.float32)
        return self._stream.resample_chunk(np.empty(0, dtype=np.float32), last=True)


def load(path: Path, max_duration_s: float = MAX_DURATION_S) -> np.ndarray:
    """Decode an audio file to mono 16 kHz float32 in [-1, 1].

    libsndfile reads WAV, FLAC, OGG (Vorbis, Opus) and MP3; anything else goes to ffmpeg when
    it is on PATH. A truncated or damaged file yields the audio before the damage and logs a
    warning, because a recorder that lost power mid-meeting still leaves a useful prefix.
    Every other problem is an AudioError whose message starts with the path.
    """
    path = Path(path)
    check_readable(path)
    try:
        sound = soundfile.SoundFile(path)
    except soundfile.SoundFileError as err:
        ffmpeg = shutil.which("ffmpeg")
        if ffmpeg is None:
            raise AudioError(
                f"{path}: not audio, or a format libsndfile cannot read ({_reason(err)})"
            ) from err
        _LOGGER.debug(
            "%s: libsndfile cannot read it (%s); decoding with ffmpeg", path, _reason(err)
        )
        return _load_ffmpeg(path, ffmpeg, max_duration_s)
    with sound:
        return _load_soundfile(path, sound, max_duration_s)


def check_readable(path: Path) -> None:
    """Turn a missing, unreadable or empty file into one clear AudioError."""
    try:
        with path.open("rb") as handle:
            empty = not handle.read(1)
    except FileNotFoundError as err:
        raise AudioError(f"{path}: no such file") from err
    except IsADirectoryError as err:
        raise AudioError(f"{path}: is a directory, not an audio file") from err
    except PermissionError as err:
        raise AudioError(f"{path}: permission denied") from err
    except OSError as err:
        raise AudioError(f"{path}: cannot read ({err.strerror})") from err
    if empty:
        raise AudioError(f"{path}: file is empty (0 bytes)")


def _load_soundfile(path: Path, sound: soundfile.SoundFile, max_duration_s: float) -> np.ndarray:
    """Decode block by block through one resampler, so only the 16 kHz result is ever whole."""
    if sound.frames == 0:
        raise AudioError(f"{path}: holds no audio (0 frames)")
    seconds = sound.frames / sound.samplerate
    if seconds > max_duration_s:
        raise AudioError(f"{path}: {seconds:.0f} s of audio is over the {max_duration_s:g} s limit")
    truncated = any(note in sound.extra_info for note in _DAMAGE_NOTES)
    resampler = Resampler(sound.samplerate)
    out = _Output(math.ceil(sound.frames * SAMPLE_RATE / sound.samplerate) + 64)
    read = 0
    while True:
        try:
            block = sound.read(_BLOCK_FRAMES, dtype="float32", always_2d=True)
        except soundfile.SoundFileError as err:
            if not read:
                raise AudioError(f"{path}: cannot decode ({_reason(err)})") from err
            truncated = True
            break
        if not len(block):
            break
        read += len(block)
        if read > max_duration_s * sound.samplerate:
            raise AudioError(f"{path}: audio runs over the {max_duration_s:g} s limit")
        out.append(resampler.resample(block))
    out.append(resampler.flush())
    if not read:
        raise AudioError(f"{path}: holds no audio (nothing decodable)")
    if truncated or read < sound.frames:
        _LOGGER.warning(
            "%s: truncated or damaged; using the first %.1f s", path, read / sound.samplerate
        )
    return _clip(out.result())


def ffmpeg_decode(ffmpeg: str, path: Path, sample_format: str, seconds: float = 0.0) -> list[str]:
    """The command that decodes path's first audio stream (its first `seconds` if set) to raw
    mono 16 kHz samples of sample_format (f32le, s16le) on stdout."""
    limit = ["-t", f"{seconds:g}"] if seconds else []
    return [
        *(ffmpeg, "-nostdin", "-hide_banner", "-loglevel", "error", "-i", str(path)),
        *("-map", "0:a:0", *limit, "-ac", "1", "-ar", str(SAMPLE_RATE)),
        *("-f", sample_format, "pipe:1"),
    ]


def _load_ffmpeg(path: Path, ffmpeg: str, max_duration_s: float) -> np.ndarray:
    """Decode with ffmpeg to f32le mono 16 kHz; the length limit applies as the data arrives."""
    command = ffmpeg_decode(ffmpeg, path, "f32le")
    limit = int(max_duration_s * SAMPLE_RATE) * 4
    data = bytearray()
    # stderr goes to a file: a pipe nobody reads while stdout drains could fill and stall ffmpeg.
    with tempfile.TemporaryFile() as log:
        with subprocess.Popen(command, stdout=subprocess.PIPE, stderr=log) as process:
            while chunk := process.stdout.read(1 << 20):
                data += chunk
                if len(data) > limit:
                    process.kill()
                    raise AudioError(f"{path}: audio runs over the {max_duration_s:g} s limit")
        log.seek(0)
        lines = log.read().decode(errors="replace").strip().splitlines()
    reason = lines[-1] if lines else f"ffmpeg exited with status {process.returncode}"
    if len(data) < 4:
        if process.returncode:
            raise AudioError(f"{path}: not audio, or a format ffmpeg cannot read ({reason})")
        raise AudioError(f"{path}: holds no audio (0 frames)")
    samples = np.frombuffer(data, dtype="<f4", count=len(data) // 4)
    if process.returncode:
        _LOGGER.warning(
            "%s: truncated or damaged; using the first %.1f s (%s)",
            path,
            samples.size / SAMPLE_RATE,
            reason,
        )
    return _clip(samples)


class _Output:
    """A float32 buffer sized from the header up front, so the result is never copied whole."""

    def __init__(self, capacity: int) -> None:
        self._array = np.empty(capacity, dtype=np.float32)
        self._size = 0

    def append(self, chunk: np.ndarray) -> None:
        """Add samples, growing by an eighth if the header undercounted."""
        end = self._size + chunk.size
        if end > self._array.size:
            self._array.resize(max(end, self._array.size + self._array.size // 8), refcheck=False)
        self._array[self._size : end] = chunk
        self._size = end

    def result(self) -> np.ndarray:
        """The samples written, trimmed in place."""
        self._array.resize(self._size, refcheck=False)
        return self._array


def _clip(samples: np.ndarray) -> np.ndarray:
    """Clip in place: float files and resampler overshoot can leave [-1, 1]."""
    return np.clip(samples, -1.0, 1.0, out=samples)


def _reason(err: Exception) -> str:
    """libsndfile's own words for an error, without soundfile's prefix."""
    return getattr(err, "error_string", None) or str(err)
