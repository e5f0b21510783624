"""Model tooling: convert CTranslate2 weights to ggml, quantize, install and verify."""
