"""The engine: whisper.cpp behind one door, speech packed into windows, the Transcriber.

May import: config, errors, transcript, models, and recording's audio decoding. Never delivery
or service.
"""
