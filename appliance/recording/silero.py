"""The one door to onnxruntime: Silero VAD's probability of speech per 32 ms frame."""

from __future__ import annotations

import functools
from pathlib import Path

import numpy as np

from appliance.models import silero as weights

FRAME_SAMPLES = 512  # 32 ms at 16 kHz: the frame the model was trained on
CONTEXT_SAMPLES = 64  # each frame is scored with the last 64 samples of the one before
# Frames per call (2 s): onnxruntime keeps the activations of the largest call it has made,
# 1.5 MB for 64 frames against 15 MB for 512 (its limit), for 10 % more time on a whole file.
BLOCK_FRAMES = 64
_STATE_SHAPE = (1, 1, 128)


class SileroModel:
    """One loaded ONNX session; run() is safe from several threads at once."""

    def __init__(self, model_path: Path) -> None:
        import onnxruntime

        options = onnxruntime.SessionOptions()
        # One thread: the VAD runs beside whisper.cpp's workers, which have the cores.
        options.intra_op_num_threads = 1
        options.inter_op_num_threads = 1
        options.log_severity_level = 3  # its graph-pruning warnings are not ours to fix
        self._session = onnxruntime.InferenceSession(
            str(weights.verify(model_path)), options, providers=["CPUExecutionProvider"]
        )

    def new_state(self) -> SileroState:
        """A stream's starting point: silence before it."""
        zeros = np.zeros(_STATE_SHAPE, dtype=np.float32)
        return SileroState(zeros, zeros.copy(), np.zeros(CONTEXT_SAMPLES, dtype=np.float32))

    def probabilities(self, frames: np.ndarray, state: SileroState) -> np.ndarray:
        """Speech probability of each row of frames (n x 512 float32), continuing state."""
        out = []
        for first in range(0, len(frames), BLOCK_FRAMES):
            block = frames[first : first + BLOCK_FRAMES]
            context = np.empty((len(block), CONTEXT_SAMPLES), dtype=np.float32)
            context[0] = state.context
            context[1:] = block[:-1, -CONTEXT_SAMPLES:]
            probs, state.h, state.c = self._session.run(
                None,
                {"input": np.concatenate([context, block], axis=1), "h": state.h, "c": state.c},
            )
            state.context = block[-1, -CONTEXT_SAMPLES:].copy()
            out.append(np.asarray(probs, dtype=np.float32).reshape(-1))
        return np.concatenate(out) if out else np.zeros(0, dtype=np.float32)


class SileroState:
    """What the model carries from one frame of a stream to the next."""

    def __init__(self, h: np.ndarray, c: np.ndarray, context: np.ndarray) -> None:
        self.h, self.c, self.context = h, c, context


@functools.lru_cache(maxsize=4)
def load(model_path: Path) -> SileroModel:
    """The model at model_path, loaded once per process and shared by every Segmenter."""
    return SileroModel(model_path)
