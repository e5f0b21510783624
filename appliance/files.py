"""Files that survive a power cut: written whole or not at all, their names made durable."""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO


def fsync_path(path: Path) -> None:
    """fsync a file, or a folder so that the names created or renamed in it are durable."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@contextlib.contextmanager
def atomic_file(target: Path, mode: int = 0o644, folder_mode: int = 0o755) -> Iterator[BinaryIO]:
    """A handle on a temporary file beside target that becomes target, synced, once the block
    ends without an exception; on one the temporary file is removed and target is untouched."""
    directory = target.parent
    directory.mkdir(parents=True, exist_ok=True, mode=folder_mode)
    fd, temporary = tempfile.mkstemp(dir=directory, prefix=f".{target.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as handle:
            yield handle
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(temporary, mode)
        os.replace(temporary, target)
        fsync_path(directory)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


def write_atomic(target: Path, data: bytes, mode: int = 0o644, folder_mode: int = 0o755) -> None:
    """Write data so that target is either as before or complete, even across a power cut."""
    with atomic_file(target, mode, folder_mode) as handle:
        handle.write(data)
