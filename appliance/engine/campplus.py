"""CAM++ (3D-Speaker's speaker-embedding network) in numpy: fbank frames in, 192 numbers out.

The layout follows 3D-Speaker's campplus model: a 2-D convolutional front (FCM), a TDNN, three
densely connected blocks of context-aware masked TDNN layers, statistics pooling, a dense layer.
Batch norms arrive folded into a scale and shift (appliance.models.speakers.convert).
"""

from __future__ import annotations

import numpy as np

# (layers, kernel, dilation) of the three dense blocks, as trained.
_BLOCKS = ((12, 3, 1), (24, 3, 2), (16, 3, 2))
_CAM_SEGMENT = 100  # frames averaged together for the CAM layer's segment context


def _relu(x: np.ndarray) -> np.ndarray:
    return np.maximum(x, 0.0, out=x)


# Activations are laid out channels first, (C, B, T) or (C, B, F, T), so that every
# convolution is one matrix product over the whole batch: small per-window products waste
# most of BLAS's time.


def _conv1d(x: np.ndarray, w: np.ndarray, stride: int = 1, dilation: int = 1) -> np.ndarray:
    """(C, B, T) by (O, C, K) with 'same' padding: (O, B, T / stride)."""
    out_c, channels, k = w.shape
    _, batch, frames = x.shape
    out_frames = (frames - 1) // stride + 1
    if k == 1:
        cols = x[:, :, ::stride] if stride > 1 else x
    else:
        pad = (k - 1) // 2 * dilation
        x = np.pad(x, ((0, 0), (0, 0), (pad, pad)))
        # im2col as K shifted copies, each contiguous along time.
        span = (out_frames - 1) * stride + 1
        cols = np.stack([x[:, :, i * dilation : i * dilation + span : stride] for i in range(k)], 1)
    product = w.reshape(out_c, -1) @ cols.reshape(channels * k, batch * out_frames)
    return product.reshape(out_c, batch, out_frames)


def _conv2d(x: np.ndarray, w: np.ndarray, stride: int = 1) -> np.ndarray:
    """(C, B, F, T) by (O, C, K, K), padding K // 2, stride on F only: (O, B, F / stride, T)."""
    out_c, channels, k, _ = w.shape
    _, batch, bins, frames = x.shape
    out_bins = (bins - 1) // stride + 1
    if k == 1:
        cols = x[:, :, ::stride]
    else:
        pad = k // 2
        x = np.pad(x, ((0, 0), (0, 0), (pad, pad), (pad, pad)))
        span = (out_bins - 1) * stride + 1
        shifted = [
            x[:, :, i : i + span : stride, j : j + frames] for i in range(k) for j in range(k)
        ]
        cols = np.stack(shifted, 1)
    product = w.reshape(out_c, -1) @ cols.reshape(channels * k * k, -1)
    return product.reshape(out_c, batch, out_bins, frames)


class CamPlusPlus:
    """The network with its weights; embed() is pure, so several threads may call it."""

    def __init__(self, weights: dict[str, np.ndarray]) -> None:
        self._w = weights

    def _norm(self, name: str, x: np.ndarray) -> np.ndarray:
        shape = (-1,) + (1,) * (x.ndim - 1)
        x *= self._w[f"{name}.scale"].reshape(shape)
        x += self._w[f"{name}.shift"].reshape(shape)
        return x

    def _res_block(self, name: str, x: np.ndarray, stride: int) -> np.ndarray:
        w = self._w
        out = _relu(self._norm(f"{name}.bn1", _conv2d(x, w[f"{name}.conv1.weight"], stride)))
        out = self._norm(f"{name}.bn2", _conv2d(out, w[f"{name}.conv2.weight"]))
        if f"{name}.shortcut.0.weight" in w:
            x = self._norm(f"{name}.shortcut.1", _conv2d(x, w[f"{name}.shortcut.0.weight"], stride))
        out += x
        return _relu(out)

    def _head(self, feats: np.ndarray) -> np.ndarray:
        """FCM: (B, 80, T) -> (320, B, T)."""
        x = _relu(self._norm("head.bn1", _conv2d(feats[None], self._w["head.conv1.weight"])))
        for layer in ("layer1", "layer2"):
            x = self._res_block(f"head.{layer}.0", x, 2)
            x = self._res_block(f"head.{layer}.1", x, 1)
        x = _relu(self._norm("head.bn2", _conv2d(x, self._w["head.conv2.weight"], 2)))
        channels, batch, bins, frames = x.shape
        return x.transpose(0, 2, 1, 3).reshape(channels * bins, batch, frames)

    def _cam(self, name: str, x: np.ndarray, dilation: int) -> np.ndarray:
        """Context-aware masking: a local conv gated by the utterance's and segment's means."""
        w = self._w
        local = _conv1d(x, w[f"{name}.linear_local.weight"], dilation=dilation)
        frames = x.shape[2]
        starts = np.arange(0, frames, _CAM_SEGMENT)
        segments = np.add.reduceat(x, starts, axis=2) / np.diff(np.append(starts, frames))
        context = x.mean(axis=2, keepdims=True) + np.repeat(segments, _CAM_SEGMENT, 2)[..., :frames]
        hidden = (
            _conv1d(context, w[f"{name}.linear1.weight"]) + w[f"{name}.linear1.bias"][:, None, None]
        )
        gate = (
            _conv1d(_relu(hidden), w[f"{name}.linear2.weight"])
            + w[f"{name}.linear2.bias"][:, None, None]
        )
        return local / (1.0 + np.exp(-gate))

    def _dense_block(self, number: int, x: np.ndarray, layers: int, dilation: int) -> np.ndarray:
        """Each layer's output joins the channels every later layer reads."""
        w = self._w
        growth = w[f"xvector.block{number}.tdnnd1.cam_layer.linear_local.weight"].shape[0]
        out = np.empty((x.shape[0] + layers * growth, *x.shape[1:]), dtype=np.float32)
        out[: x.shape[0]] = x
        filled = x.shape[0]
        for layer in range(1, layers + 1):
            name = f"xvector.block{number}.tdnnd{layer}"
            h = _relu(self._norm(f"{name}.nonlinear1.batchnorm", out[:filled].copy()))
            h = _conv1d(h, w[f"{name}.linear1.weight"])
            h = _relu(self._norm(f"{name}.nonlinear2.batchnorm", h))
            out[filled : filled + growth] = self._cam(f"{name}.cam_layer", h, dilation)
            filled += growth
        return out

    def embed(self, feats: np.ndarray) -> np.ndarray:
        """(B, T, 80) mean-normalized fbank frames -> (B, 192) speaker embeddings."""
        w = self._w
        x = self._head(np.ascontiguousarray(feats.transpose(0, 2, 1), dtype=np.float32))
        x = _conv1d(x, w["xvector.tdnn.linear.weight"], stride=2)
        x = _relu(self._norm("xvector.tdnn.nonlinear.batchnorm", x))
        for number, (layers, _kernel, dilation) in enumerate(_BLOCKS, start=1):
            x = self._dense_block(number, x, layers, dilation)
            h = _relu(self._norm(f"xvector.transit{number}.nonlinear.batchnorm", x))
            x = _conv1d(h, w[f"xvector.transit{number}.linear.weight"])
        x = _relu(self._norm("xvector.out_nonlinear.batchnorm", x))
        stats = np.concatenate([x.mean(axis=2), x.std(axis=2, ddof=1)], axis=0)
        dense = w["xvector.dense.linear.weight"][:, :, 0] @ stats
        return self._norm("xvector.dense.nonlinear.batchnorm", dense).T
