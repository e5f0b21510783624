"""The button and LED driving a real daemon in this process (gpiozero's MockFactory is the one
fake: the pins), with the real model, database and Maildir, and a microphone that is missing."""

from __future__ import annotations

import asyncio
import mailbox
import os
import signal
import time

from gpiozero.pins.mock import MockFactory

from appliance import config as config_file
from appliance.service.button import ERROR, IDLE
from appliance.service.daemon import Daemon
from appliance.service.notify import Notifier
from appliance.store import DONE

_BUTTON, _LED = 17, 27


async def _until(condition, timeout_s: float, what: str):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        found = condition()
        if found:
            return found
        await asyncio.sleep(0.05)
    raise AssertionError(f"{what}: not within {timeout_s:g} s")


async def _press(pin, hold_s: float = 0.1) -> None:
    pin.drive_low()  # pressed (pull-up button)
    await asyncio.sleep(hold_s)  # how long the finger stays down: the input, not a wait
    pin.drive_high()


def test_press_starts_and_stops_hold_cancels_and_the_led_shows_the_missing_microphone(
    tmp_path, tiny_en_installed
):
    config = config_file.parse(
        {
            "room": {"default_participants": ["anna@example.com"]},
            "storage": {"state_dir": str(tmp_path / "state"), "min_free_mb": 1},
            "control": {"socket": str(tmp_path / "control.sock")},
            "transcriber": {"models_dir": str(tiny_en_installed["q5_1"].parent)},
            "audio": {"device": "nonexistent", "retry_max_s": 1.0},
            "button": {"pin": _BUTTON, "led_pin": _LED, "hold_s": 0.5},
        }
    )
    factory = MockFactory()

    async def scenario() -> int:
        daemon = Daemon(config, pin_factory=factory, notifier=Notifier(environ={}))
        running = asyncio.create_task(daemon.run())
        await _until(lambda: daemon.panel is not None, 120, "the daemon ready")
        button = factory.pin(_BUTTON)
        assert daemon.panel.state == IDLE and not factory.pin(_LED).state

        await _press(button)
        recording = await _until(lambda: daemon.meetings.current, 10, "a meeting started")
        await _until(lambda: daemon.panel.state == ERROR, 10, "the LED showing the fault")
        status = await daemon.meetings.status()
        assert status["state"] == "recording"
        assert status["problems"][0].startswith("microphone missing since ")

        await _press(button)
        first = recording.meeting.id
        await _until(lambda: daemon.db.meeting(first).state == DONE, 60, "the meeting done")
        await _until(lambda: daemon.panel.state == IDLE, 10, "the LED off again")

        await _press(button)
        second = (await _until(lambda: daemon.meetings.current, 10, "a second meeting")).meeting
        await _press(button, hold_s=1.0)  # held past hold_s: cancel, and no press on release
        await _until(lambda: daemon.db.meeting(second.id) is None, 10, "the meeting discarded")
        assert daemon.meetings.current is None
        assert not daemon.meetings.spool_path(second.id).exists()

        assert [m.id for m in daemon.db.meetings()] == [first]
        gaps = daemon.db.transcript(first).gaps
        assert len(gaps) == 1 and gaps[0].reason.startswith("microphone lost: ")
        os.kill(os.getpid(), signal.SIGTERM)  # as systemd stops it
        return await running

    assert asyncio.run(scenario()) == 0
    assert len(list(mailbox.Maildir(tmp_path / "state" / "maildir", create=False))) == 1
