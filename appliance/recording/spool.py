"""A meeting's raw audio on disk as it arrives (PCM16 mono 16 kHz), synced at least every second."""

from __future__ import annotations

import errno
import os
import time
from pathlib import Path

import numpy as np

from appliance.errors import ApplianceError, AudioError
from appliance.files import fsync_path
from appliance.recording.audio import SAMPLE_RATE, pcm16_to_float

_BYTES_PER_SAMPLE = 2


class SpoolError(ApplianceError, OSError):
    """The spool file cannot be written or read (disk full, permissions)."""


class SpoolMissingError(SpoolError, FileNotFoundError):
    """A meeting's spool file is not there."""


class DiskFullError(SpoolError):
    """The spool's disk is full, or down to the space kept for the database and the email."""


def free_bytes(directory: Path) -> int:
    """Bytes an unprivileged writer may still use on the file system holding directory."""
    stats = os.statvfs(directory)
    return stats.f_bavail * stats.f_frsize


class Spool:
    """Append-only writer of one meeting's audio; a power cut loses at most sync_interval_s."""

    def __init__(
        self, path: Path, handle: int, sync_interval_s: float = 1.0, reserve_bytes: int = 0
    ) -> None:
        self.path = path
        self._fd = handle
        self._bytes = os.fstat(handle).st_size
        self._sync_interval_s = sync_interval_s
        self._synced_at = time.monotonic()
        self._dirty = False
        # Writing stops while this much is still free: the database and the email need it.
        self.reserve_bytes = reserve_bytes

    @classmethod
    def create(cls, path: Path, sync_interval_s: float = 1.0, reserve_bytes: int = 0) -> Spool:
        """A new, empty spool file (0600) in a 0700 folder; an existing file is never truncated.

        append raises DiskFullError once less than reserve_bytes would be left free."""
        spool = cls._open(Path(path), os.O_CREAT | os.O_EXCL, sync_interval_s)
        spool.reserve_bytes = reserve_bytes
        # A new file's name is only durable once its folder is synced too.
        try:
            fsync_path(spool.path.parent)
        except OSError as err:
            spool.close()
            raise SpoolError(f"{spool.path}: cannot sync its folder: {err.strerror}") from err
        return spool

    @classmethod
    def resume(cls, path: Path, sync_interval_s: float = 1.0) -> Spool:
        """Reopen a spool after a crash, dropping half a sample left by a torn write."""
        spool = cls._open(Path(path), 0, sync_interval_s)
        if spool._bytes % _BYTES_PER_SAMPLE:
            spool._bytes -= 1
            try:
                os.ftruncate(spool._fd, spool._bytes)
            except OSError as err:
                spool.close()
                raise SpoolError(
                    f"{spool.path}: cannot drop a torn half sample: {err.strerror}"
                ) from err
            spool._dirty = True
        return spool

    @classmethod
    def _open(cls, path: Path, flags: int, sync_interval_s: float) -> Spool:
        try:
            path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
            fd = os.open(path, os.O_WRONLY | os.O_APPEND | flags, 0o600)
        except FileNotFoundError as err:
            raise SpoolMissingError(f"{path}: no such spool file") from err
        except OSError as err:
            raise SpoolError(f"{path}: cannot open the audio spool: {err.strerror}") from err
        return cls(path, fd, sync_interval_s)

    @property
    def duration_s(self) -> float:
        """Seconds written so far."""
        return self._bytes / _BYTES_PER_SAMPLE / SAMPLE_RATE

    def append(self, pcm: bytes) -> None:
        """Write PCM16 bytes straight to the file; fsync when the interval has passed."""
        if len(pcm) % _BYTES_PER_SAMPLE:
            # Half a sample would shift every later sample by a byte: noise from then on.
            raise AudioError(
                f"{self.path}: PCM16 data must have an even number of bytes, got {len(pcm)}"
            )
        try:
            if self.reserve_bytes and free_bytes(self.path.parent) - len(pcm) < self.reserve_bytes:
                raise OSError(errno.ENOSPC, "less free than the reserve")
            written = 0
            view = memoryview(pcm)
            while written < len(pcm):
                written += os.write(self._fd, view[written:])
        except OSError as err:
            # A partial write is taken back: the file stays whole samples, and the space free.
            try:
                os.ftruncate(self._fd, self._bytes)
            except OSError:
                pass
            if err.errno in (errno.ENOSPC, errno.EDQUOT):
                raise DiskFullError(f"{self.path}: the disk is full ({err.strerror})") from err
            raise SpoolError(f"{self.path}: cannot write the audio spool: {err.strerror}") from err
        self._bytes += len(pcm)
        self._dirty = True
        if time.monotonic() - self._synced_at >= self._sync_interval_s:
            self.sync()

    def sync(self) -> None:
        """Force everything written onto the disk."""
        if self._dirty:
            try:
                os.fsync(self._fd)
            except OSError as err:
                raise SpoolError(
                    f"{self.path}: cannot sync the audio spool: {err.strerror}"
                ) from err
            self._dirty = False
        self._synced_at = time.monotonic()

    def close(self) -> None:
        """Sync and close."""
        if self._fd < 0:
            return
        try:
            self.sync()
        finally:
            os.close(self._fd)
            self._fd = -1

    def __enter__(self) -> Spool:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def duration_s(path: Path) -> float:
    """Seconds of audio in a spool file (a torn half sample is not counted)."""
    try:
        size = os.stat(path).st_size
    except FileNotFoundError as err:
        raise SpoolMissingError(f"{path}: no such spool file") from err
    except OSError as err:
        raise SpoolError(f"{path}: cannot read the audio spool: {err.strerror}") from err
    return size // _BYTES_PER_SAMPLE / SAMPLE_RATE


def read(path: Path, start_s: float = 0.0, end_s: float | None = None) -> np.ndarray:
    """Float32 samples of [start_s, end_s) from a spool file, read by seeking, clamped to it."""
    total = round(duration_s(path) * SAMPLE_RATE)
    first = min(total, max(0, round(start_s * SAMPLE_RATE)))
    last = total if end_s is None else min(total, max(first, round(end_s * SAMPLE_RATE)))
    try:
        with open(path, "rb") as handle:
            handle.seek(first * _BYTES_PER_SAMPLE)
            data = handle.read((last - first) * _BYTES_PER_SAMPLE)
    except OSError as err:
        raise SpoolError(f"{path}: cannot read the audio spool: {err.strerror}") from err
    return pcm16_to_float(data[: len(data) - len(data) % _BYTES_PER_SAMPLE])
