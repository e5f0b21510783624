"""The models folder: atomic writes, JSON sidecars, and verifying a file before whisper.cpp sees it."""

from __future__ import annotations

import contextlib
import datetime
import errno
import hashlib
import json
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, Iterator

from appliance import files
from appliance.errors import ApplianceError, CorruptModelError, ModelWriteError, SourceMissingError
from appliance.models.ggml import ModelFile, read_model

_HASH_CHUNK = 1 << 20


def model_path(directory: Path, name: str, quant: str) -> Path:
    """Where a model of this name and quant lives."""
    return directory / f"ggml-{name}-{quant}.bin"


def sidecar_path(model: Path) -> Path:
    """The JSON record beside a model file."""
    return model.with_suffix(".json")


def sha256_file(path: Path) -> str:
    """Hex sha256 of a file, read in chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(_HASH_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


class HashingWriter:
    """A file handle that hashes and counts what passes through it."""

    def __init__(self, handle: BinaryIO) -> None:
        self._handle = handle
        self.digest = hashlib.sha256()
        self.bytes = 0

    def write(self, data: bytes) -> int:
        """Write, hash and count."""
        self.digest.update(data)
        self.bytes += len(data)
        return self._handle.write(data)


def _write_error(directory: Path, err: OSError) -> ModelWriteError:
    if err.errno == errno.ENOSPC:
        return ModelWriteError(f"{directory}: disk full while writing the model")
    if err.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
        return ModelWriteError(f"{directory}: not writable ({err.strerror})")
    return ModelWriteError(f"{directory}: cannot write ({err.strerror})")


@contextlib.contextmanager
def atomic_file(target: Path) -> Iterator[HashingWriter]:
    """Write to a temp file beside target; fsync and rename on success, delete on failure."""
    try:
        with files.atomic_file(target) as handle:
            yield HashingWriter(handle)
    except ApplianceError:
        raise  # our own errors (some subclass OSError) already say what went wrong
    except OSError as err:
        raise _write_error(target.parent, err) from err


@dataclass(frozen=True)
class Sidecar:
    """What the installer recorded about a model file."""

    name: str
    quant: str
    source: str
    sha256: str
    bytes: int
    multilingual: bool
    created: str

    @staticmethod
    def now() -> str:
        """The creation time stamp, UTC, ISO 8601."""
        return datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")

    def save(self, model: Path) -> None:
        """Write the sidecar atomically beside the model."""
        with atomic_file(sidecar_path(model)) as out:
            out.write((json.dumps(self.__dict__, indent=2) + "\n").encode())

    @classmethod
    def load(cls, model: Path) -> "Sidecar | None":
        """The sidecar of a model, None when there is none."""
        path = sidecar_path(model)
        if not path.is_file():
            return None
        try:
            return cls(**json.loads(path.read_text(encoding="utf-8")))
        except (ValueError, TypeError) as err:
            raise CorruptModelError(f"{path}: unreadable model record ({err})") from err


def verify(model: Path) -> ModelFile:
    """Check size and sha256 against the sidecar, then the structure; raise on any fault."""
    if not model.is_file():
        raise SourceMissingError(f"{model}: model file not found")
    sidecar = Sidecar.load(model)
    if sidecar is not None:
        size = model.stat().st_size
        if size != sidecar.bytes:
            raise CorruptModelError(
                f"{model}: {size} bytes, the install recorded {sidecar.bytes} (truncated?)"
            )
        if sha256_file(model) != sidecar.sha256:
            raise CorruptModelError(f"{model}: sha256 differs from the install record")
    return read_model(model)


def resolve(spec: str, directory: Path, default_quant: str) -> Path:
    """A model file from a path, NAME-QUANT, or NAME (default quant first, then any quant)."""
    as_path = Path(spec)
    if as_path.is_file():
        return as_path
    for candidate in (directory / f"ggml-{spec}.bin", model_path(directory, spec, default_quant)):
        if candidate.is_file():
            return candidate
    others = installed(directory, spec)
    if others:
        return others[0]
    raise SourceMissingError(
        f"model {spec!r} is not installed in {directory}: run `appliance models install {spec}`"
    )


def installed(directory: Path, name: str | None = None) -> list[Path]:
    """The model files in a folder, or only those of one model name (any quant)."""
    if not directory.is_dir():
        return []
    paths = sorted(directory.glob("ggml-*.bin"))
    if name is None:
        return paths
    # ggml-NAME-QUANT.bin: quant names have no '-', so the name is all before the last one.
    return [p for p in paths if p.stem.rsplit("-", 1)[0] == f"ggml-{name}"]
