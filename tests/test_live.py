"""The whole live path: a real PortAudio capture device (PulseAudio fed from a file) into the
daemon, start, stop, and the stored transcript scored against the reference."""

from __future__ import annotations

import time
from pathlib import Path

import jiwer
import soundfile
from test_daemon import Daemon

from appliance.engine.transcriber import DecodeOptions, Transcriber
from appliance.engine.windows import WINDOW_S
from appliance.evaluate import normalize
from appliance.recording import spool
from appliance.recording.segmenter import Segmenter
from appliance.service.control import request
from tools.virtual_mic import DEVICE

MEETING = Path(__file__).parent / "data" / "meetings" / "dev-meeting-01.flac"
REFERENCE = normalize(MEETING.with_suffix(".txt").read_text(), "en")


def _wer(engine: Transcriber, path: Path) -> float:
    """WER of the file pipeline (`appliance transcribe`) on one recording."""
    return jiwer.wer(
        REFERENCE, normalize(engine.transcribe_file(path, Segmenter(), "en").text, "en")
    )


def test_live_meeting_through_a_capture_device(tmp_path, tiny_en_installed, virtual_microphone):
    model = tiny_en_installed["q5_1"]
    daemon = Daemon(
        tmp_path,
        f'[transcriber]\nmodels_dir = "{model.parent}"\n'
        f'[audio]\ndevice = "{DEVICE}"\nsamplerate = 16000\n',
        env=virtual_microphone.env,
        storage="keep_audio_days = 1\n",  # the recording is read back below
    )
    try:
        daemon.start()
        meeting_id = int(daemon.cli("start", "--to", "anna@example.com").stdout)
        player = virtual_microphone.play(MEETING)
        # Real time: the transcriber keeps up, so what waits for it stays bounded while the
        # whole meeting plays: at most one window filling (speech is packed into 30 s windows)
        # and one in the transcriber. Falling behind would grow it without bound.
        backlog_s = []
        while player.poll() is None:
            # Over the socket from this process: a CLI started every 2 s would load the cores
            # the capture and the transcriber need.
            status = request(tmp_path / "control.sock", "status")
            assert status["state"] == "recording"
            backlog_s.append(status["backlog_s"])
            time.sleep(2.0)  # the sampling interval of the keep-up check, not a wait for a result
        assert player.returncode == 0
        print(f"backlog_s every ~2 s while playing: {backlog_s}")
        assert len(backlog_s) > 50 and max(backlog_s) < 2 * WINDOW_S, backlog_s
        # The last words are still on their way through PulseAudio: a second more of audio.
        heard_s = daemon.status()["audio_s"]
        daemon.wait_for_status(lambda s: s["audio_s"] >= heard_s + 1.0, 30, "the last second")
        daemon.cli("stop", "--wait")
        meeting = daemon.wait_for_state(meeting_id, ("done",), 60)
        text = daemon.cli("show", str(meeting_id)).stdout
        assert daemon.stop() == 0
    finally:
        daemon.close()
    assert meeting["audio_s"] >= 330
    recording = tmp_path / "recording.wav"
    soundfile.write(
        recording,
        spool.read(tmp_path / "state" / "spool" / f"{meeting_id}.pcm"),
        16000,
        subtype="PCM_16",
    )
    with Transcriber(model, DecodeOptions(threads=2)) as engine:
        offline_recording = _wer(engine, recording)
        offline_file = _wer(engine, MEETING)
    live = jiwer.wer(REFERENCE, normalize(text, "en"))
    print(
        f"WER live {live:.3f}; file pipeline on the recording {offline_recording:.3f}, on the "
        f"original file {offline_file:.3f}"
    )
    # The capture is bit-exact but starts a second or so before the playback; tiny.en moves by
    # up to 2.7 points with the leading silence alone (25.2-28.0 % for 0-0.5 s of it), so the
    # pipelines are compared on the same audio: the recording the daemon kept. The live path
    # packs its windows as speech arrives (a window waits at most MAX_WAIT_S), the file path all
    # at once, so their window boundaries differ by as much as a shifted start does: the same
    # 3 points bound both. Measured: 30.1 % live against 28.0 % (and 28.6 against 26.7 before
    # the test's timing changed where the capture starts).
    assert live <= offline_recording + 0.03
    assert live <= 0.31
