"""The audio spool on a real file system: spans read back, torn writes, modes, errors."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import numpy as np
import pytest

from appliance.errors import ApplianceError, AudioError
from appliance.recording import spool
from appliance.recording.audio import SAMPLE_RATE, float_to_pcm16, pcm16_to_float
from appliance.recording.spool import Spool, SpoolError, SpoolMissingError


def _ramp(seconds: float, first: int = 0) -> bytes:
    """Distinct PCM16 samples, so a span read from the wrong place cannot pass."""
    count = round(seconds * SAMPLE_RATE)
    return ((np.arange(first, first + count) % 65536) - 32768).astype("<i2").tobytes()


def test_spans_read_back_exactly(tmp_path):
    path = tmp_path / "1.pcm"
    pcm = _ramp(2.0)
    with Spool.create(path) as writer:
        for start in range(0, len(pcm), 3200):  # 100 ms chunks, as the microphone delivers
            writer.append(pcm[start : start + 3200])
        assert writer.duration_s == pytest.approx(2.0)
    everything = pcm16_to_float(pcm)
    assert spool.duration_s(path) == pytest.approx(2.0)
    assert np.array_equal(spool.read(path), everything)
    assert np.array_equal(spool.read(path, 0.5, 1.25), everything[8000:20000])
    assert np.array_equal(spool.read(path, 1.5), everything[24000:])


@pytest.mark.parametrize(
    "start_s, end_s, first, last",
    [
        (-1.0, None, 0, 32000),  # before the start: from the start
        (1.9, 5.0, 30400, 32000),  # past the end: to the end
        (3.0, 4.0, 32000, 32000),  # wholly past the end: nothing
        (1.0, 0.5, 16000, 16000),  # end before start: nothing
    ],
)
def test_spans_are_clamped_to_the_file(tmp_path, start_s, end_s, first, last):
    path = tmp_path / "1.pcm"
    pcm = _ramp(2.0)
    with Spool.create(path) as writer:
        writer.append(pcm)
    samples = spool.read(path, start_s, end_s)
    assert samples.dtype == np.float32
    assert np.array_equal(samples, pcm16_to_float(pcm)[first:last])


def test_every_length_reads_back_whole(tmp_path):
    # 1001 samples / 16000 * 16000 is 1000.9999999999999 in floats: it must not lose a sample.
    for count in (1, 1001, 1003, 16001):
        path = tmp_path / f"{count}.pcm"
        with Spool.create(path) as writer:
            writer.append(_ramp(count / SAMPLE_RATE))
        assert spool.read(path).size == count


def test_a_second_reader_sees_synced_audio_before_close(tmp_path):
    path = tmp_path / "1.pcm"
    writer = Spool.create(path, sync_interval_s=3600.0)
    writer.append(_ramp(0.5))
    writer.sync()
    # What the recovery path and the backlog reader do while the meeting is still recording.
    assert spool.duration_s(path) == pytest.approx(0.5)
    writer.append(_ramp(0.25, first=8000))
    writer.sync()
    assert np.array_equal(spool.read(path, 0.5), pcm16_to_float(_ramp(0.25, first=8000)))
    writer.close()
    writer.close()  # twice is harmless


def test_file_is_0600_in_a_new_0700_folder(tmp_path):
    path = tmp_path / "state" / "spool" / "7.pcm"
    Spool.create(path).close()
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700


def test_create_never_truncates_an_existing_meeting(tmp_path):
    path = tmp_path / "1.pcm"
    path.write_bytes(_ramp(0.1))
    with pytest.raises(SpoolError, match=str(path)) as caught:
        Spool.create(path)
    assert isinstance(caught.value, ApplianceError) and isinstance(caught.value, OSError)
    assert path.read_bytes() == _ramp(0.1)


def test_resume_drops_a_torn_half_sample_and_appends(tmp_path):
    path = tmp_path / "1.pcm"
    with Spool.create(path) as writer:
        writer.append(_ramp(1.0))
    with path.open("ab") as torn:  # the power failed halfway through a sample
        torn.write(b"\x7f")
    with Spool.resume(path) as writer:
        assert writer.duration_s == pytest.approx(1.0)
        writer.append(_ramp(0.5, first=16000))
        assert writer.duration_s == pytest.approx(1.5)
    assert path.stat().st_size == 2 * 24000
    assert np.array_equal(spool.read(path), pcm16_to_float(_ramp(1.5)))


def test_odd_length_chunks_are_refused(tmp_path):
    path = tmp_path / "1.pcm"
    with Spool.create(path) as writer:
        with pytest.raises(AudioError, match=str(path)):
            writer.append(b"\x00\x01\x02")
        writer.append(float_to_pcm16(np.zeros(10, dtype=np.float32)))
    assert path.stat().st_size == 20


@pytest.mark.parametrize(
    "call",
    [
        lambda path: Spool.resume(path),
        lambda path: spool.duration_s(path),
        lambda path: spool.read(path, 1.0, 2.0),
    ],
)
def test_a_missing_spool_is_a_file_not_found_naming_it(tmp_path, call):
    path = tmp_path / "missing.pcm"
    with pytest.raises(SpoolMissingError, match=str(path)) as caught:
        call(path)
    assert isinstance(caught.value, FileNotFoundError)


def test_a_full_disk_is_an_os_error_naming_the_file():
    # /dev/full: every write fails with ENOSPC, a real full disk without filling one.
    with (
        Spool.resume(Path("/dev/full")) as writer,
        pytest.raises(SpoolError, match=r"/dev/full: .*No space left") as caught,
    ):
        writer.append(_ramp(0.1))
    assert isinstance(caught.value, OSError)


def test_a_spool_folder_that_is_a_file_is_an_os_error_naming_it(tmp_path):
    blocker = tmp_path / "spool"
    blocker.write_text("not a folder")
    with pytest.raises(SpoolError, match=str(blocker)) as caught:
        Spool.create(blocker / "1.pcm")
    assert isinstance(caught.value, OSError)


def test_reading_a_folder_is_an_os_error_naming_it(tmp_path):
    os.mkdir(tmp_path / "1.pcm")
    with pytest.raises(SpoolError, match=str(tmp_path / "1.pcm")):
        spool.read(tmp_path / "1.pcm")
