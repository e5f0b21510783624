"""ggml's own quantizer, called in the libggml that comes with pywhispercpp (built or wheel)."""

from __future__ import annotations

import ctypes
import functools
import importlib.util
from pathlib import Path

import numpy as np

from appliance.errors import SourceMissingError
from appliance.models.ggml import F16, F32, Quant


def _candidates() -> list[Path]:
    spec = importlib.util.find_spec("_pywhispercpp")
    if spec is None or spec.origin is None:
        return []
    here = Path(spec.origin).parent
    # A wheel puts the libraries beside the extension; auditwheel-style builds in *.libs.
    folders = [here, *here.glob("*.libs"), *here.glob("pywhispercpp*/lib")]
    return [lib for folder in folders for lib in sorted(folder.glob("libggml-base*.so*"))]


@functools.cache
def libggml() -> ctypes.CDLL:
    """Load libggml-base from the pywhispercpp install that whisper.cpp itself will use."""
    for path in _candidates():
        try:
            lib = ctypes.CDLL(str(path))
        except OSError:
            continue
        lib.ggml_quantize_chunk.restype = ctypes.c_size_t
        lib.ggml_quantize_chunk.argtypes = [
            ctypes.c_int,
            ctypes.c_void_p,
            ctypes.c_void_p,
            ctypes.c_int64,
            ctypes.c_int64,
            ctypes.c_int64,
            ctypes.c_void_p,
        ]
        lib.ggml_row_size.restype = ctypes.c_size_t
        lib.ggml_row_size.argtypes = [ctypes.c_int, ctypes.c_int64]
        return lib
    raise SourceMissingError("libggml-base not found beside pywhispercpp: reinstall pywhispercpp")


def encode(values: np.ndarray, quant: Quant) -> bytes:
    """The bytes of a tensor stored as quant (rows along the last axis)."""
    if quant is F32:
        return np.ascontiguousarray(values, dtype="<f4").tobytes()
    if quant is F16:
        return np.ascontiguousarray(values, dtype="<f2").tobytes()
    rows = np.ascontiguousarray(values.reshape(-1, values.shape[-1]), dtype=np.float32)
    n_rows, n_per_row = rows.shape
    lib = libggml()
    size = lib.ggml_row_size(quant.ggml_type, n_per_row) * n_rows
    out = np.empty(size, dtype=np.uint8)
    written = lib.ggml_quantize_chunk(
        quant.ggml_type, rows.ctypes.data, out.ctypes.data, 0, n_rows, n_per_row, None
    )
    if written != size or size != quant.nbytes(values.shape):
        raise RuntimeError(f"ggml_quantize_chunk wrote {written} bytes, expected {size}")
    return out.tobytes()
