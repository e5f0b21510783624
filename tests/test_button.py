"""The button and LED through gpiozero's own MockFactory."""

from __future__ import annotations

import asyncio
import time

import pytest
from gpiozero.pins.mock import MockFactory

from appliance.config import ButtonConfig
from appliance.service.button import BUSY, ERROR, IDLE, RECORDING, Panel


@pytest.fixture
def factory():
    return MockFactory()


async def _panel(factory, hold_s=0.3):
    events: list[str] = []
    got = asyncio.Event()

    def note(name):
        def handler():
            events.append(name)
            got.set()

        return handler

    panel = Panel(
        ButtonConfig(pin=17, led_pin=27, hold_s=hold_s),
        asyncio.get_running_loop(),
        note("press"),
        note("hold"),
        pin_factory=factory,
    )
    return panel, events, got


def test_press_and_hold(factory):
    async def run():
        panel, events, got = await _panel(factory)
        pin = factory.pin(17)
        pin.drive_low()  # pressed (pull-up button)
        await asyncio.sleep(0.1)
        pin.drive_high()
        await asyncio.wait_for(got.wait(), 2)
        got.clear()
        pin.drive_low()
        await asyncio.wait_for(got.wait(), 2)  # held past hold_s
        pin.drive_high()
        await asyncio.sleep(0.2)  # a release after a hold must not also count as a press
        panel.close()
        return events

    assert asyncio.run(run()) == ["press", "hold"]


def _led_changes(pin, seconds):
    pin.clear_states()
    time.sleep(seconds)
    return [state.state for state in pin.states]


def test_led_patterns(factory):
    async def run():
        panel, _events, _got = await _panel(factory)
        led = factory.pin(27)
        panel.show(RECORDING)
        assert led.state
        panel.show(IDLE)
        assert not led.state
        panel.show(BUSY)
        slow = await asyncio.to_thread(_led_changes, led, 1.3)
        panel.show(ERROR)
        fast = await asyncio.to_thread(_led_changes, led, 1.3)
        panel.close()
        return slow, fast

    slow, fast = asyncio.run(run())
    assert 2 <= len(slow) <= 4  # toggles every 0.5 s
    assert len(fast) >= 9  # toggles every 0.1 s


def test_no_pins_configured_means_no_gpio(factory):
    async def run():
        panel = Panel(
            ButtonConfig(),
            asyncio.get_running_loop(),
            lambda: None,
            lambda: None,
            pin_factory=factory,
        )
        panel.show(RECORDING)  # nothing to drive; must not fail
        panel.close()
        return panel

    panel = asyncio.run(run())
    assert panel.button is None and panel.led is None
