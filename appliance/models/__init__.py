"""Weights on disk: the models folder, and installing into it (whisper CTranslate2 weights
converted to ggml and quantized; Silero VAD's ONNX file), each file verified by its sidecar.

May import: errors, progress. Read by recording (the VAD) and the engine (whisper).
"""
