"""Telling systemd how the daemon is doing: READY, STATUS, the watchdog, and where logs go."""

from __future__ import annotations

import asyncio
import logging
import os
import sys

_LOGGER = logging.getLogger(__name__)


class Notifier:
    """sd_notify(3) through systemd-python; does nothing when systemd did not start us."""

    def __init__(self, environ: dict[str, str] | None = None) -> None:
        env = os.environ if environ is None else environ
        self.enabled = bool(env.get("NOTIFY_SOCKET"))
        usec = env.get("WATCHDOG_USEC", "")
        pid = env.get("WATCHDOG_PID", "")
        # The watchdog is ours only if no PID is named or it names us (systemd's rule).
        ours = not pid or pid == str(os.getpid())
        self.watchdog_s = int(usec) / 2e6 if usec.isdigit() and int(usec) > 0 and ours else None
        self._status = ""

    def _send(self, message: str) -> None:
        if not self.enabled:
            return
        from systemd import daemon  # only under systemd; the import costs nothing elsewhere

        if not daemon.notify(message):
            _LOGGER.debug("sd_notify refused %r", message)

    def ready(self, status: str) -> None:
        """The model is loaded and warm: systemd may consider the service started."""
        self._status = status
        self._send(f"READY=1\nSTATUS={status}")

    def status(self, status: str) -> None:
        """A state change, shown by `systemctl status`; repeats are not sent."""
        if status != self._status:
            self._status = status
            self._send(f"STATUS={status}")

    def stopping(self) -> None:
        """Shutdown has begun."""
        self._send("STOPPING=1")

    async def watchdog(self) -> None:
        """Ping the watchdog from the event loop: a loop that stalls stops the pings."""
        if self.watchdog_s is None:
            return
        while True:
            self._send("WATCHDOG=1")
            await asyncio.sleep(self.watchdog_s)


def setup_logging(level: int = logging.INFO, environ: dict[str, str] | None = None) -> None:
    """Log to journald when systemd connected our stderr to it, else to stderr with times."""
    env = os.environ if environ is None else environ
    handler: logging.Handler
    if _stderr_is_journal(env.get("JOURNAL_STREAM", "")):
        from systemd.journal import JournalHandler

        handler = JournalHandler(SYSLOG_IDENTIFIER="meeting-appliance")
        handler.setFormatter(logging.Formatter("%(name)s: %(message)s"))
    else:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)


def _stderr_is_journal(journal_stream: str) -> bool:
    """True when $JOURNAL_STREAM names the device and inode of our stderr (systemd.exec(5))."""
    try:
        device, inode = (int(part) for part in journal_stream.split(":"))
        stat = os.fstat(sys.stderr.fileno())
    except (ValueError, OSError):
        return False
    return (stat.st_dev, stat.st_ino) == (device, inode)
