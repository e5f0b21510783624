"""Map a CTranslate2 Whisper model onto the tensors, header and vocabulary whisper.cpp expects."""

from __future__ import annotations

from typing import Iterator

import numpy as np

from appliance.errors import CorruptModelError
from appliance.models.ctranslate2 import Ct2Whisper
from appliance.models.ggml import Hparams, Quant, header_ftype

_END_OF_TEXT = "<|endoftext|>"


def _byte_decoder() -> dict[str, int]:
    """Inverse of GPT-2's byte-to-printable-character table used by Whisper's BPE vocabulary."""
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1)]
    printable += range(ord("®"), ord("ÿ") + 1)
    table = {chr(b): b for b in printable}
    extra = 0
    for b in range(256):
        if b not in printable:
            table[chr(256 + extra)] = b
            extra += 1
    return table


def token_bytes(vocabulary: list[str]) -> list[bytes]:
    """The regular (non-special) tokens as raw bytes, as whisper.cpp's vocabulary wants them."""
    try:
        count = vocabulary.index(_END_OF_TEXT)
    except ValueError:
        raise CorruptModelError(f"vocabulary has no {_END_OF_TEXT} token") from None
    decoder = _byte_decoder()
    try:
        return [bytes(decoder[ch] for ch in token) for token in vocabulary[:count]]
    except KeyError as err:
        raise CorruptModelError(f"vocabulary token with non-byte-level character {err}") from err


def _layers(model: Ct2Whisper, side: str) -> int:
    count = 0
    while f"{side}/layer_{count}/ffn/linear_0/weight" in model.variables:
        count += 1
    return count


def hparams(model: Ct2Whisper, quant: Quant) -> Hparams:
    """The whisper.cpp header for this model stored as quant."""
    conv1 = model.variables["encoder/conv1/weight"].shape
    n_vocab, n_text_state = model.variables["decoder/embeddings/weight"].shape
    n_text_ctx = model.variables["decoder/position_encodings/encodings"].shape[0]
    n_audio_ctx, n_audio_state = model.variables["encoder/position_encodings/encodings"].shape
    if len(model.vocabulary) != n_vocab:
        raise CorruptModelError(
            f"{model.origin}: vocabulary has {len(model.vocabulary)} tokens, weights {n_vocab}"
        )
    return Hparams(
        n_vocab=n_vocab,
        n_audio_ctx=n_audio_ctx,
        n_audio_state=n_audio_state,
        n_audio_head=model.scalar("encoder/num_heads"),
        n_audio_layer=_layers(model, "encoder"),
        n_text_ctx=n_text_ctx,
        n_text_state=n_text_state,
        n_text_head=model.scalar("decoder/num_heads"),
        n_text_layer=_layers(model, "decoder"),
        n_mels=conv1[1],
        ftype=header_ftype(quant),
    )


def _linear(model: Ct2Whisper, src: str, dst: list[str], bias: bool = True):
    """Split a (possibly fused) CTranslate2 linear layer into whisper.cpp's projections."""
    weights = np.split(model.weight(f"{src}/weight"), len(dst))
    biases = np.split(model.weight(f"{src}/bias"), len(dst)) if bias else [None] * len(dst)
    for name, weight, b in zip(dst, weights, biases):
        yield f"{name}.weight", weight
        # CTranslate2 stores a zero bias for Whisper's key projection, which has none.
        if b is not None and not name.endswith(".key"):
            yield f"{name}.bias", b


def _norm(model: Ct2Whisper, src: str, dst: str):
    yield f"{dst}.weight", model.weight(f"{src}/gamma")
    yield f"{dst}.bias", model.weight(f"{src}/beta")


def _block(model: Ct2Whisper, src: str, dst: str, cross: bool):
    yield from _norm(model, f"{src}/self_attention/layer_norm", f"{dst}.attn_ln")
    attn = [f"{dst}.attn.{p}" for p in ("query", "key", "value")]
    yield from _linear(model, f"{src}/self_attention/linear_0", attn)
    yield from _linear(model, f"{src}/self_attention/linear_1", [f"{dst}.attn.out"])
    if cross:
        yield from _norm(model, f"{src}/attention/layer_norm", f"{dst}.cross_attn_ln")
        yield from _linear(model, f"{src}/attention/linear_0", [f"{dst}.cross_attn.query"])
        kv = [f"{dst}.cross_attn.key", f"{dst}.cross_attn.value"]
        yield from _linear(model, f"{src}/attention/linear_1", kv)
        yield from _linear(model, f"{src}/attention/linear_2", [f"{dst}.cross_attn.out"])
    yield from _norm(model, f"{src}/ffn/layer_norm", f"{dst}.mlp_ln")
    yield from _linear(model, f"{src}/ffn/linear_0", [f"{dst}.mlp.0"])
    yield from _linear(model, f"{src}/ffn/linear_1", [f"{dst}.mlp.2"])


def tensors(model: Ct2Whisper, hp: Hparams) -> Iterator[tuple[str, np.ndarray]]:
    """Every whisper.cpp tensor as float32, named and shaped as whisper.cpp loads it."""
    for conv in ("conv1", "conv2"):
        yield f"encoder.{conv}.weight", model.weight(f"encoder/{conv}/weight")
        # whisper.cpp adds the conv bias as a (channels, 1) column.
        yield f"encoder.{conv}.bias", model.weight(f"encoder/{conv}/bias").reshape(-1, 1)
    yield "encoder.positional_embedding", model.weight("encoder/position_encodings/encodings")
    for i in range(hp.n_audio_layer):
        yield from _block(model, f"encoder/layer_{i}", f"encoder.blocks.{i}", cross=False)
    yield from _norm(model, "encoder/layer_norm", "encoder.ln_post")
    yield "decoder.positional_embedding", model.weight("decoder/position_encodings/encodings")
    yield "decoder.token_embedding.weight", model.weight("decoder/embeddings/weight")
    for i in range(hp.n_text_layer):
        yield from _block(model, f"decoder/layer_{i}", f"decoder.blocks.{i}", cross=True)
    yield from _norm(model, "decoder/layer_norm", "decoder.ln")
