"""Read a CTranslate2 Whisper model (model.bin, config, vocabulary) into numpy arrays."""

from __future__ import annotations

import json
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, Sequence

import numpy as np

from appliance.errors import CorruptModelError, SourceMissingError

# Order of CTranslate2's DataType enum (include/ctranslate2/types.h).
_DTYPES = ("float32", "int8", "int16", "int32", "float16", "bfloat16")
_SUPPORTED_BINARY_VERSIONS = (5, 6)
_SPEC_NAME = "WhisperSpec"


class _JoinedReader:
    """Reads several files as one stream: a model.bin split across packages."""

    def __init__(self, parts: Sequence[Path]) -> None:
        self._parts = list(parts)
        self._index = 0
        self._handle: BinaryIO | None = None
        self.name = " + ".join(str(p) for p in self._parts)

    def __enter__(self) -> "_JoinedReader":
        return self

    def __exit__(self, *exc: object) -> None:
        if self._handle is not None:
            self._handle.close()

    def read(self, size: int) -> bytes:
        """Read up to size bytes, crossing part boundaries."""
        chunks = []
        while size > 0 and self._index < len(self._parts):
            if self._handle is None:
                self._handle = open(self._parts[self._index], "rb")
            chunk = self._handle.read(size)
            if not chunk:
                self._handle.close()
                self._handle = None
                self._index += 1
                continue
            chunks.append(chunk)
            size -= len(chunk)
        return b"".join(chunks)


@dataclass(frozen=True)
class Ct2Whisper:
    """A CTranslate2 Whisper model held in memory: variables by name and the vocabulary."""

    variables: dict[str, np.ndarray]
    vocabulary: list[str]
    origin: str

    def weight(self, name: str) -> np.ndarray:
        """A float32 weight, dequantized when the model stores it as int8/int16 with a scale."""
        try:
            value = self.variables[name]
        except KeyError:
            raise CorruptModelError(f"{self.origin}: variable {name!r} is missing") from None
        scale = self.variables.get(name + "_scale")
        if value.dtype == np.uint16:  # bfloat16 kept as raw bits
            value = (value.astype(np.uint32) << 16).view(np.float32)
        value = value.astype(np.float32)
        if scale is not None:
            scale = scale.astype(np.float32)
            if scale.ndim == 0:
                value = value / scale
            else:
                value = value / scale.reshape((-1,) + (1,) * (value.ndim - 1))
        return value

    def scalar(self, name: str) -> int:
        """An integer hyper-parameter stored as a 0-d variable (num_heads, ...)."""
        try:
            return int(self.variables[name])
        except KeyError:
            raise CorruptModelError(f"{self.origin}: variable {name!r} is missing") from None


def _read_exact(reader: _JoinedReader, size: int, what: str) -> bytes:
    data = reader.read(size)
    if len(data) != size:
        raise CorruptModelError(
            f"{reader.name} is truncated: {what} needs {size} bytes, only {len(data)} left"
        )
    return data


def _read_string(reader: _JoinedReader) -> str:
    (length,) = struct.unpack("<H", _read_exact(reader, 2, "a name length"))
    raw = _read_exact(reader, length, "a name")
    return raw[:-1].decode("utf-8", errors="replace")


def read_model_bin(parts: Sequence[Path]) -> dict[str, np.ndarray]:
    """Parse model.bin (possibly split into parts) into named arrays, aliases resolved."""
    for part in parts:
        if not part.is_file():
            raise SourceMissingError(f"{part}: model file not found")
    variables: dict[str, np.ndarray] = {}
    with _JoinedReader(parts) as reader:
        (version,) = struct.unpack("<I", _read_exact(reader, 4, "the header"))
        if version not in _SUPPORTED_BINARY_VERSIONS:
            raise CorruptModelError(
                f"{reader.name}: not a CTranslate2 model we can read (binary version {version})"
            )
        spec = _read_string(reader)
        if spec != _SPEC_NAME:
            raise CorruptModelError(f"{reader.name}: a {spec!r} model, not a Whisper model")
        _read_exact(reader, 4, "the spec revision")
        (count,) = struct.unpack("<I", _read_exact(reader, 4, "the variable count"))
        for _ in range(count):
            name = _read_string(reader)
            rank = _read_exact(reader, 1, f"{name} rank")[0]
            shape = struct.unpack(f"<{rank}I", _read_exact(reader, 4 * rank, f"{name} shape"))
            dtype_id = _read_exact(reader, 1, f"{name} dtype")[0]
            if dtype_id >= len(_DTYPES):
                raise CorruptModelError(f"{reader.name}: {name} has unknown dtype {dtype_id}")
            (nbytes,) = struct.unpack("<I", _read_exact(reader, 4, f"{name} size"))
            dtype = _DTYPES[dtype_id]
            raw = _read_exact(reader, nbytes, f"variable {name}")
            array = np.frombuffer(raw, dtype=np.uint16 if dtype == "bfloat16" else dtype)
            if array.size != int(np.prod(shape)):
                raise CorruptModelError(f"{reader.name}: {name} size does not match its shape")
            variables[name] = array.reshape(shape)
        (aliases,) = struct.unpack("<I", _read_exact(reader, 4, "the alias count"))
        for _ in range(aliases):
            alias, target = _read_string(reader), _read_string(reader)
            if target not in variables:
                raise CorruptModelError(f"{reader.name}: alias {alias} names missing {target}")
            variables[alias] = variables[target]
        if reader.read(1):
            raise CorruptModelError(f"{reader.name}: trailing bytes after the last variable")
    return variables


def read_vocabulary(directory: Path) -> list[str]:
    """The token strings, from vocabulary.json or vocabulary.txt."""
    as_json = directory / "vocabulary.json"
    as_text = directory / "vocabulary.txt"
    try:
        if as_json.is_file():
            tokens = json.loads(as_json.read_text(encoding="utf-8"))
            if not isinstance(tokens, list) or not all(isinstance(t, str) for t in tokens):
                raise CorruptModelError(f"{as_json}: expected a JSON list of strings")
            return tokens
        if as_text.is_file():
            lines = as_text.read_text(encoding="utf-8").split("\n")
            if lines and lines[-1] == "":
                lines.pop()
            return lines
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise CorruptModelError(f"{directory}: unreadable vocabulary ({err})") from err
    raise SourceMissingError(f"{directory}: no vocabulary.json or vocabulary.txt")


def load(parts: Sequence[Path], vocabulary_dir: Path) -> Ct2Whisper:
    """Load a CTranslate2 Whisper model from its model.bin part(s) and vocabulary folder."""
    vocabulary = read_vocabulary(vocabulary_dir)
    variables = read_model_bin(parts)
    return Ct2Whisper(variables, vocabulary, origin=" + ".join(str(p) for p in parts))
