"""The recording stage: audio in (microphone or file), the spool on disk, the speech segmenter
(Silero VAD through onnxruntime), and one meeting's audio path to whatever transcribes it.

May import: config, errors, store, transcript, models (the VAD's weights). Never the engine,
delivery or service: the transcriber reaches a Recording through the Engine protocol.
"""
