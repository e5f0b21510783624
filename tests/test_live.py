"""The whole live path: a real PortAudio capture device (PulseAudio fed from a file) into the
daemon, start, stop, and the stored transcript scored against the reference."""

from __future__ import annotations

import json
import time
from pathlib import Path

import jiwer
import pytest

from appliance.evaluate import normalize
from appliance.transcribe import DecodeOptions, Transcriber
from appliance.vad import Segmenter
from appliance.virtual_mic import DEVICE, VirtualMicrophone
from test_daemon import Daemon

MEETING = Path(__file__).parent / "data" / "meetings" / "dev-meeting-01.flac"
REFERENCE = normalize(MEETING.with_suffix(".txt").read_text(), "en")


def test_live_meeting_through_a_capture_device(tmp_path, tiny_en_installed):
    model = tiny_en_installed["q5_1"]
    with Transcriber(model, DecodeOptions(threads=2)) as engine:
        offline = engine.transcribe_file(MEETING, Segmenter(), "en").text
    offline_wer = jiwer.wer(REFERENCE, normalize(offline, "en"))

    with VirtualMicrophone(tmp_path / "pulse") as microphone:
        daemon = Daemon(tmp_path, f'[transcriber]\nmodels_dir = "{model.parent}"\n'
                        f'[audio]\ndevice = "{DEVICE}"\nsamplerate = 16000\n', env=microphone.env)
        try:
            daemon.start()
            meeting_id = int(daemon.cli("start", "--to", "anna@example.com").stdout)
            player = microphone.play(MEETING)
            time.sleep(30)
            status = daemon.status()
            assert status["state"] == "recording" and status["backlog_s"] < 30
            assert player.wait(timeout=600) == 0
            time.sleep(1.0)  # the last words still on their way through PulseAudio
            stopped = time.monotonic()
            daemon.cli("stop", "--wait")
            final_s = time.monotonic() - stopped
            meeting = daemon.wait_for_state(meeting_id, ("done",), 60)
            text = daemon.cli("show", str(meeting_id)).stdout
            assert daemon.stop() == 0
        finally:
            daemon.close()
    live_wer = jiwer.wer(REFERENCE, normalize(text, "en"))
    print(f"live WER {live_wer:.3f}, offline {offline_wer:.3f}, stop to final {final_s:.1f} s, "
          f"audio {meeting['audio_s']:.1f} s")
    assert meeting["audio_s"] >= 330
    assert live_wer <= offline_wer + 0.02
