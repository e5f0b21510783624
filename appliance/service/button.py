"""The start/stop button and the status LED on the Pi's GPIO pins (gpiozero)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any

from appliance.config import ButtonConfig

_LOGGER = logging.getLogger(__name__)

IDLE, RECORDING, BUSY, ERROR = "idle", "recording", "busy", "error"
# LED pattern per appliance state: (on seconds, off seconds), None = steady.
_PATTERNS: dict[str, tuple[float, float] | None] = {
    RECORDING: None,
    BUSY: (0.5, 0.5),
    ERROR: (0.1, 0.1),
}


def led_for(state: str, fault: bool = False) -> str:
    """The LED for a daemon state (recording, finishing, delivering, idle): steady while
    recording, off idle, blinking while busy, fast blinking while something is wrong."""
    if fault:
        return ERROR
    return {"recording": RECORDING, "idle": IDLE}.get(state, BUSY)


class Panel:
    """Button presses and holds handed to the event loop; the LED showing the state."""

    def __init__(
        self,
        config: ButtonConfig,
        loop: asyncio.AbstractEventLoop,
        on_press: Callable[[], Any],
        on_hold: Callable[[], Any],
        pin_factory: Any = None,
    ) -> None:
        self._loop = loop
        self._on_press = on_press
        self._on_hold = on_hold
        self._held = False
        self.button = self.led = None
        self.state = IDLE
        if config.pin < 0 and config.led_pin < 0:
            return
        from gpiozero import LED, Button  # gpiozero probes pin drivers at import; only if used

        if config.pin >= 0:
            self.button = Button(
                config.pin, hold_time=config.hold_s, bounce_time=0.05, pin_factory=pin_factory
            )
            self.button.when_held = self._held_down
            self.button.when_released = self._released
        if config.led_pin >= 0:
            self.led = LED(config.led_pin, pin_factory=pin_factory)

    # gpiozero calls these from its own thread: only hand over to the loop.
    def _held_down(self) -> None:
        self._held = True
        self._loop.call_soon_threadsafe(self._on_hold)

    def _released(self) -> None:
        if self._held:
            self._held = False  # the hold already cancelled; a release is not also a press
            return
        self._loop.call_soon_threadsafe(self._on_press)

    def show(self, state: str) -> None:
        """Set the LED: off idle, on recording, blinking busy, fast blink on error."""
        if state == self.state:
            return
        self.state = state
        if self.led is None:
            return
        pattern = _PATTERNS.get(state, ())
        if pattern is None:
            self.led.on()
        elif pattern:
            self.led.blink(on_time=pattern[0], off_time=pattern[1])
        else:
            self.led.off()

    def close(self) -> None:
        """Release the pins."""
        for device in (self.button, self.led):
            if device is not None:
                device.close()
