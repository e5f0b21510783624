"""whisper.cpp's ggml model file: the tensor layout it expects, and reading it back to verify."""

from __future__ import annotations

import struct
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, Callable, Iterator

import numpy as np

from appliance.errors import CorruptModelError

MAGIC = 0x67676D6C  # "ggml"
# whisper.cpp stores a quantized file's ftype as QNT_VERSION * 1000 + ftype.
QNT_VERSION = 2
QNT_VERSION_FACTOR = 1000
N_FFT_BINS = 201  # 1 + n_fft / 2 with Whisper's n_fft = 400
MAX_TOKEN_BYTES = 128  # whisper.cpp's own quantizer reads tokens into a 129-byte buffer
# Far above any Whisper (large has 32 layers, 128 mels): a bound so a damaged header is
# reported at once instead of walking millions of phantom layers.
MAX_LAYERS = 256
MAX_MELS = 512


@dataclass(frozen=True)
class Quant:
    """A weight type whisper.cpp can load: ggml type id, file ftype id, block geometry."""

    name: str
    ggml_type: int
    ftype: int
    block_size: int
    block_bytes: int

    def nbytes(self, shape: tuple[int, ...]) -> int:
        """Bytes taken by a tensor of this type and numpy shape (rows of shape[-1])."""
        elements = int(np.prod(shape))
        return elements // self.block_size * self.block_bytes

    def fits(self, row: int) -> bool:
        """Whether rows of this length can be stored in this type."""
        return row % self.block_size == 0


# ggml's enum ggml_type / ggml_ftype values and block sizes: part of the file format.
F32 = Quant("f32", 0, 0, 1, 4)
F16 = Quant("f16", 1, 1, 1, 2)
QUANTS = {
    q.name: q
    for q in (
        F16,
        Quant("q8_0", 8, 7, 32, 34),
        Quant("q5_1", 7, 9, 32, 24),
        Quant("q5_0", 6, 8, 32, 22),
        Quant("q4_0", 2, 2, 32, 18),
        Quant("q5_K", 13, 13, 256, 176),
        Quant("q4_K", 12, 12, 256, 144),
    )
}
_BY_TYPE = {q.ggml_type: q for q in (F32, *QUANTS.values())}
_BY_FTYPE = {q.ftype: q for q in QUANTS.values()}

# Tensors whisper.cpp's quantize example never quantizes (kept f32 in every file).
KEEP_F32 = frozenset(
    {
        "encoder.conv1.bias",
        "encoder.conv2.bias",
        "encoder.positional_embedding",
        "decoder.positional_embedding",
    }
)


@dataclass(frozen=True)
class Hparams:
    """The eleven int32 header fields of a whisper.cpp model file."""

    n_vocab: int
    n_audio_ctx: int
    n_audio_state: int
    n_audio_head: int
    n_audio_layer: int
    n_text_ctx: int
    n_text_state: int
    n_text_head: int
    n_text_layer: int
    n_mels: int
    ftype: int

    @property
    def multilingual(self) -> bool:
        """whisper.cpp's own rule: multilingual vocabularies have at least 51865 tokens."""
        return self.n_vocab >= 51865

    @property
    def quant(self) -> Quant:
        """The weight type the header announces."""
        ftype = self.ftype % QNT_VERSION_FACTOR
        if ftype not in _BY_FTYPE:
            raise CorruptModelError(f"unsupported ftype {self.ftype}")
        return _BY_FTYPE[ftype]

    def pack(self) -> bytes:
        """The header fields as whisper.cpp reads them."""
        return struct.pack("<11i", *(getattr(self, f) for f in self.__dataclass_fields__))


def header_ftype(quant: Quant) -> int:
    """The ftype value to write in the header for a weight type."""
    if quant in (F32, F16):
        return quant.ftype
    return QNT_VERSION * QNT_VERSION_FACTOR + quant.ftype


def _block(prefix: str, width: int, cross: bool) -> dict[str, tuple[int, ...]]:
    shapes: dict[str, tuple[int, ...]] = {}
    attentions = ("attn", "cross_attn") if cross else ("attn",)
    for attn in attentions:
        shapes[f"{prefix}.{attn}_ln.weight"] = (width,)
        shapes[f"{prefix}.{attn}_ln.bias"] = (width,)
        for proj in ("query", "key", "value", "out"):
            shapes[f"{prefix}.{attn}.{proj}.weight"] = (width, width)
            if proj != "key":  # Whisper's key projection has no bias
                shapes[f"{prefix}.{attn}.{proj}.bias"] = (width,)
    shapes[f"{prefix}.mlp_ln.weight"] = (width,)
    shapes[f"{prefix}.mlp_ln.bias"] = (width,)
    shapes[f"{prefix}.mlp.0.weight"] = (4 * width, width)
    shapes[f"{prefix}.mlp.0.bias"] = (4 * width,)
    shapes[f"{prefix}.mlp.2.weight"] = (width, 4 * width)
    shapes[f"{prefix}.mlp.2.bias"] = (width,)
    return shapes


def layout(hp: Hparams) -> dict[str, tuple[int, ...]]:
    """Every tensor whisper.cpp loads for these hparams, with its numpy shape."""
    s, t = hp.n_audio_state, hp.n_text_state
    shapes: dict[str, tuple[int, ...]] = {
        "encoder.conv1.weight": (s, hp.n_mels, 3),
        "encoder.conv1.bias": (s, 1),
        "encoder.conv2.weight": (s, s, 3),
        "encoder.conv2.bias": (s, 1),
        "encoder.positional_embedding": (hp.n_audio_ctx, s),
    }
    for i in range(hp.n_audio_layer):
        shapes.update(_block(f"encoder.blocks.{i}", s, cross=False))
    shapes["encoder.ln_post.weight"] = (s,)
    shapes["encoder.ln_post.bias"] = (s,)
    shapes["decoder.positional_embedding"] = (hp.n_text_ctx, t)
    shapes["decoder.token_embedding.weight"] = (hp.n_vocab, t)
    for i in range(hp.n_text_layer):
        shapes.update(_block(f"decoder.blocks.{i}", t, cross=True))
    shapes["decoder.ln.weight"] = (t,)
    shapes["decoder.ln.bias"] = (t,)
    return shapes


def tensor_quant(name: str, shape: tuple[int, ...], quant: Quant) -> Quant:
    """The type a tensor is stored in: as whisper.cpp's quantize example decides it."""
    if name in KEEP_F32 or len(shape) == 1:
        return F32
    if len(shape) == 3:  # conv kernels: ggml's im2col wants f16 even in quantized files
        return F16
    return quant


@dataclass(frozen=True)
class TensorEntry:
    """One tensor record of a model file: where its data starts and how it is stored."""

    name: str
    shape: tuple[int, ...]
    quant: Quant
    offset: int


@dataclass(frozen=True)
class ModelFile:
    """What a structural walk of a ggml model file found."""

    hparams: Hparams
    filters: np.ndarray
    tokens: list[bytes]
    tensors: list[TensorEntry]


def _read(handle: BinaryIO, size: int, what: str, path: Path) -> bytes:
    data = handle.read(size)
    if len(data) != size:
        raise CorruptModelError(f"{path}: truncated in {what}")
    return data


def read_model(path: Path) -> ModelFile:
    """Walk a ggml Whisper file; raise CorruptModelError on anything whisper.cpp would trip on."""
    try:
        size = path.stat().st_size
        handle = open(path, "rb")
    except OSError as err:
        raise CorruptModelError(f"{path}: cannot read model file ({err.strerror})") from err
    with handle:
        (magic,) = struct.unpack("<I", _read(handle, 4, "the magic", path))
        if magic != MAGIC:
            raise CorruptModelError(f"{path}: not a ggml Whisper model (bad magic)")
        hp = Hparams(*struct.unpack("<11i", _read(handle, 44, "the header", path)))
        try:
            quant = hp.quant
        except CorruptModelError as err:
            raise CorruptModelError(f"{path}: {err}") from None
        counts = (hp.n_vocab, hp.n_audio_ctx, hp.n_audio_state, hp.n_audio_head, hp.n_text_ctx,
                  hp.n_text_state, hp.n_text_head, hp.n_mels, hp.n_audio_layer, hp.n_text_layer)
        if (min(counts) <= 0 or max(hp.n_audio_layer, hp.n_text_layer) > MAX_LAYERS
                or hp.n_mels > MAX_MELS):
            raise CorruptModelError(f"{path}: implausible header {hp}")
        n_mel, n_fft = struct.unpack("<2i", _read(handle, 8, "the mel filters", path))
        if n_mel != hp.n_mels or n_fft != N_FFT_BINS:
            raise CorruptModelError(f"{path}: mel filterbank is {n_mel}x{n_fft}")
        filters = np.frombuffer(_read(handle, 4 * n_mel * n_fft, "the mel filters", path), "<f4")
        (n_tokens,) = struct.unpack("<i", _read(handle, 4, "the vocabulary", path))
        if not 0 < n_tokens <= hp.n_vocab:
            raise CorruptModelError(f"{path}: vocabulary of {n_tokens} tokens")
        tokens = []
        for _ in range(n_tokens):
            (length,) = struct.unpack("<I", _read(handle, 4, "the vocabulary", path))
            if length > MAX_TOKEN_BYTES:
                raise CorruptModelError(f"{path}: a token of {length} bytes")
            tokens.append(_read(handle, length, "the vocabulary", path))
        expected = layout(hp)
        entries = []
        while handle.tell() < size:
            n_dims, name_len, ttype = struct.unpack("<3i", _read(handle, 12, "a tensor", path))
            if not 1 <= n_dims <= 4 or not 0 < name_len < 256 or ttype not in _BY_TYPE:
                raise CorruptModelError(f"{path}: malformed tensor record at {handle.tell() - 12}")
            dims = struct.unpack(f"<{n_dims}i", _read(handle, 4 * n_dims, "a tensor", path))
            name = _read(handle, name_len, "a tensor name", path).decode("utf-8", "replace")
            shape = tuple(reversed(dims))
            if expected.get(name) != shape:
                raise CorruptModelError(f"{path}: unexpected tensor {name} {shape}")
            stored = _BY_TYPE[ttype]
            if stored != tensor_quant(name, shape, quant):
                raise CorruptModelError(f"{path}: {name} stored as {stored.name}")
            entries.append(TensorEntry(name, shape, stored, handle.tell()))
            nbytes = stored.nbytes(shape)
            if handle.tell() + nbytes > size:
                raise CorruptModelError(f"{path}: truncated in tensor {name}")
            handle.seek(nbytes, 1)
        missing = expected.keys() - {e.name for e in entries}
        if missing or len(entries) != len(expected):
            raise CorruptModelError(
                f"{path}: truncated or incomplete ({len(missing)} of {len(expected)} tensors missing)"
            )
    return ModelFile(hp, filters.reshape(n_mel, n_fft), tokens, entries)


def write_model(
    handle: BinaryIO,
    hp: Hparams,
    filters: np.ndarray,
    tokens: list[bytes],
    tensors: Iterator[tuple[str, np.ndarray]],
    encode: Callable[[np.ndarray, Quant], bytes],
    progress: Callable[[int, int], None] = lambda done, total: None,
) -> None:
    """Write a whole model file; tensors must be exactly the layout's, as float32."""
    expected = layout(hp)
    handle.write(struct.pack("<I", MAGIC))
    handle.write(hp.pack())
    handle.write(struct.pack("<2i", *filters.shape))
    handle.write(np.ascontiguousarray(filters, dtype="<f4").tobytes())
    handle.write(struct.pack("<i", len(tokens)))
    for token in tokens:
        handle.write(struct.pack("<I", len(token)))
        handle.write(token)
    written = set()
    for name, values in tensors:
        shape = tuple(values.shape)
        if expected.get(name) != shape:
            raise CorruptModelError(f"converted tensor {name} has shape {shape}")
        stored = tensor_quant(name, shape, hp.quant)
        encoded = encode(values, stored)
        handle.write(struct.pack("<3i", len(shape), len(name.encode()), stored.ggml_type))
        handle.write(struct.pack(f"<{len(shape)}i", *reversed(shape)))
        handle.write(name.encode())
        handle.write(encoded)
        written.add(name)
        progress(len(written), len(expected))
    if written != expected.keys():
        missing = sorted(expected.keys() - written)
        raise CorruptModelError(f"conversion left out {len(missing)} tensors, e.g. {missing[0]}")


def read_tensor(path: Path, entry: TensorEntry) -> np.ndarray:
    """Load one f16 or f32 tensor as float32 (for re-quantizing a full-precision file)."""
    if entry.quant not in (F16, F32):
        raise CorruptModelError(f"{path}: {entry.name} is already {entry.quant.name}")
    dtype = "<f2" if entry.quant is F16 else "<f4"
    with open(path, "rb") as handle:
        handle.seek(entry.offset)
        raw = handle.read(entry.quant.nbytes(entry.shape))
    return np.frombuffer(raw, dtype).astype(np.float32).reshape(entry.shape)


def iter_tensors(path: Path, model: ModelFile) -> Iterator[tuple[str, np.ndarray]]:
    """Every tensor of a full-precision file, as float32 arrays."""
    for entry in model.tensors:
        yield entry.name, read_tensor(path, entry)
