"""sd_notify messages on a real NOTIFY_SOCKET datagram socket, and where logs go."""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import sys

import pytest

from appliance.service.notify import Notifier, setup_logging


@pytest.fixture
def notify_socket(tmp_path):
    """A datagram socket like systemd's; yields (env, receive)."""
    path = tmp_path / "notify"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(path))
    sock.settimeout(5)
    old = os.environ.get("NOTIFY_SOCKET")
    os.environ["NOTIFY_SOCKET"] = str(path)  # sd_notify reads the real environment

    def receive() -> str:
        return sock.recv(4096).decode()

    yield {"NOTIFY_SOCKET": str(path)}, receive
    sock.close()
    if old is None:
        del os.environ["NOTIFY_SOCKET"]
    else:
        os.environ["NOTIFY_SOCKET"] = old


def test_ready_and_status_reach_the_socket(notify_socket):
    env, receive = notify_socket
    notifier = Notifier(env)
    notifier.ready("idle")
    assert receive() == "READY=1\nSTATUS=idle"
    notifier.status("recording meeting 1")
    assert receive() == "STATUS=recording meeting 1"
    notifier.status("recording meeting 1")  # unchanged: not sent again
    notifier.status("idle")
    assert receive() == "STATUS=idle"
    notifier.stopping()
    assert receive() == "STOPPING=1"


def test_watchdog_pings_at_half_the_interval(notify_socket):
    env, receive = notify_socket
    notifier = Notifier({**env, "WATCHDOG_USEC": "200000"})
    assert notifier.watchdog_s == pytest.approx(0.1)

    async def run():
        task = asyncio.create_task(notifier.watchdog())
        pings = [await asyncio.to_thread(receive) for _ in range(3)]
        task.cancel()
        return pings

    assert asyncio.run(run()) == ["WATCHDOG=1"] * 3


@pytest.mark.parametrize(
    "env, interval",
    [
        ({"WATCHDOG_USEC": "30000000"}, 15.0),
        ({"WATCHDOG_USEC": "30000000", "WATCHDOG_PID": "1"}, None),  # meant for another process
        ({"WATCHDOG_USEC": "0"}, None),
        ({"WATCHDOG_USEC": "abc"}, None),
        ({}, None),
    ],
)
def test_watchdog_interval(env, interval):
    assert Notifier(env).watchdog_s == interval


def test_nothing_sent_without_systemd(tmp_path):
    notifier = Notifier({})
    assert not notifier.enabled
    notifier.ready("idle")  # no socket: silently nothing
    asyncio.run(asyncio.wait_for(notifier.watchdog(), 1))  # returns at once


def test_logs_go_to_stderr_outside_systemd(capsys):
    setup_logging(logging.INFO, {})
    logging.getLogger("appliance.test").info("hello %s", "there")
    assert "INFO appliance.test: hello there" in capsys.readouterr().err


def test_journal_detected_from_journal_stream(tmp_path):
    target = tmp_path / "stderr"
    with open(target, "w") as handle:
        stat = os.fstat(handle.fileno())
        saved = sys.stderr
        sys.stderr = handle
        try:
            setup_logging(logging.INFO, {"JOURNAL_STREAM": f"{stat.st_dev}:{stat.st_ino}"})
            handler = logging.getLogger().handlers[0]
        finally:
            sys.stderr = saved
    assert type(handler).__name__ == "JournalHandler"
    setup_logging(logging.INFO, {})
