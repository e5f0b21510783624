"""The engine: whisper.cpp behind one door, speech packed into windows, the Transcriber.

`whisper` is the one module that touches the binding (pywhispercpp): model loads, log routing,
a context per worker. `windows` packs speech into Whisper's 30 s windows, `decoding` says how
whisper.cpp decodes and cleans its output, `transcriber` runs N workers behind one queue.

May import: config, errors, transcript, models, and recording's audio decoding and segmenter.
Never delivery or service.
"""
