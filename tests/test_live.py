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

MEETING = Path(__file__).parent / "data" / "meetings" / "dev-meeting-02.flac"
# Four AMI clips of the meeting after its silent stretch: ten speakers at -54 to -69 dBFS, room
# tone between them. Played in real time, 119 s where dev-meeting-01's 334 s made this the
# slowest test of the suite. Both cuts fall between segments of the reference, in silence. Of
# the stretches tried, its file-pipeline WER moves least with the capture's start (31.6-33.3 %
# for -0.1 to +1.4 s of it, against 33.9-42.1 % for the meeting's first 98 s).
EXCERPT_S = (216.0, 335.0)


def _excerpt(folder: Path) -> tuple[Path, str]:
    """The excerpt as a WAV file, the same samples, and its reference: the .stm segments inside
    it in the order the .stm gives them."""
    start_s, end_s = EXCERPT_S
    reference = []
    for line in MEETING.with_suffix(".stm").read_text().splitlines():
        _name, _channel, _speaker, begin, end, text = line.split(maxsplit=5)
        inside = start_s <= float(begin) and float(end) <= end_s
        assert inside or float(end) <= start_s or float(begin) >= end_s, f"{line!r} is cut"
        if inside:
            reference.append(text)
    rate = soundfile.info(MEETING).samplerate
    samples, _ = soundfile.read(
        MEETING, dtype="int16", start=round(start_s * rate), stop=round(end_s * rate)
    )
    path = folder / "excerpt.wav"
    soundfile.write(path, samples, rate, subtype="PCM_16")
    return path, normalize(" ".join(reference), "en")


def _wer(engine: Transcriber, path: Path, reference: str) -> float:
    """WER of the file pipeline (`appliance transcribe`) on one recording."""
    return jiwer.wer(
        reference, normalize(engine.transcribe_file(path, Segmenter(), "en").text, "en")
    )


def test_live_meeting_through_a_capture_device(tmp_path, tiny_en_installed, virtual_microphone):
    model = tiny_en_installed["q5_1"]
    excerpt, reference = _excerpt(tmp_path)
    length_s = EXCERPT_S[1] - EXCERPT_S[0]
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
        player = virtual_microphone.play(excerpt)
        # Real time: the transcriber keeps up, so what waits for it stays bounded while the
        # excerpt plays: at most one window filling (speech is packed into 30 s windows) and
        # one in the transcriber. Falling behind would grow it without bound; the excerpt holds
        # 80.6 s of speech by the file pipeline's segmenter, so even a stalled transcriber
        # would cross the bound before the end. Measured at load 6 on two cores: at most 56.9 s
        # (a 28.8 s window in the transcriber, a 28.0 s segment waiting), the bound's own case.
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
        assert len(backlog_s) > length_s / 4 and max(backlog_s) < 2 * WINDOW_S, backlog_s
        # The last words are still on their way through PulseAudio: a second more of audio.
        heard_s = daemon.status()["audio_s"]
        daemon.wait_for_status(lambda s: s["audio_s"] >= heard_s + 1.0, 30, "the last second")
        daemon.cli("stop", "--wait")
        meeting = daemon.wait_for_state(meeting_id, ("done",), 60)
        text = daemon.cli("show", str(meeting_id)).stdout
        assert daemon.stop() == 0
    finally:
        daemon.close()
    assert meeting["audio_s"] >= length_s - 1
    recording = tmp_path / "recording.wav"
    soundfile.write(
        recording,
        spool.read(tmp_path / "state" / "spool" / f"{meeting_id}.pcm"),
        16000,
        subtype="PCM_16",
    )
    with Transcriber(model, DecodeOptions(threads=2)) as engine:
        offline = _wer(engine, recording, reference)
    live = jiwer.wer(reference, normalize(text, "en"))
    print(f"WER live {live:.3f}; file pipeline on the recording {offline:.3f}")
    # The capture is bit-exact but starts up to a second or so before or after the playback;
    # tiny.en moves with that shift alone (on this excerpt 31.6-33.3 % for -0.1 to +1.4 s of
    # it, 32.9 % on the excerpt as cut), so the pipelines are compared on the same audio: the
    # recording the daemon kept. The live path packs its windows as speech arrives (a window
    # waits at most MAX_WAIT_S), the file path all at once, so their window boundaries differ
    # by as much as a shifted start does: 3 points (6 words of the 228) bound the difference.
    # Measured: 31.6 % live against 31.6 % on the recording, in each of three runs; the bound
    # on the live WER itself is the worst start measured plus those 3 points.
    assert live <= offline + 0.03
    assert live <= 0.36
