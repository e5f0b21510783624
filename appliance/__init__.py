"""On-device meeting transcriber: record, segment, transcribe with whisper.cpp, email."""

__version__ = "0.1.0"
