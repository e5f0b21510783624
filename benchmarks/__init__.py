"""Benchmarks: accuracy, speed and memory of every model and quant, against faster-whisper.

`python -m benchmarks.run` installs what it measures, runs each configuration in a fresh
worker process (benchmarks.worker) one after another, and writes docs/benchmarks.md and .json.
"""
