"""`appliance run` as a real subprocess: socket commands, READY, crash recovery, SIGTERM."""

from __future__ import annotations

import json
import mailbox
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import jiwer
import pytest

from appliance.evaluate import normalize
from appliance.recording import spool

DATA = Path(__file__).parent / "data"
JFK = DATA / "speech" / "jfk" / "jfk.flac"
MEETING = DATA / "meetings" / "dev-meeting-01.flac"
APPLIANCE = [sys.executable, "-m", "appliance"]


def wait_until(condition, timeout_s: float, what: str, interval_s: float = 0.2):
    """Poll condition() until it returns something true, and return that; fail after timeout_s."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        found = condition()
        if found:
            return found
        time.sleep(interval_s)
    raise AssertionError(f"{what}: not within {timeout_s:g} s")


class Daemon:
    """A daemon process with its own state dir, config and NOTIFY_SOCKET."""

    def __init__(
        self, root: Path, extra_config: str = "", env: dict | None = None, storage: str = ""
    ) -> None:
        self.root = root
        self.config = root / "config.toml"
        self.config.write_text(
            f'[storage]\nstate_dir = "{root / "state"}"\n{storage}'
            f'[control]\nsocket = "{root / "control.sock"}"\n' + extra_config
        )
        self.env = {**os.environ, **(env or {})}
        self.process: subprocess.Popen | None = None
        self.notify = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.notify.bind(str(root / "notify"))
        self.messages: list[str] = []
        # Drained all the time, as systemd does: a full datagram queue would block sd_notify.
        threading.Thread(target=self._drain, daemon=True).start()

    def _drain(self) -> None:
        while True:
            try:
                self.messages.append(self.notify.recv(4096).decode())
            except OSError:
                return

    def start(self) -> None:
        env = {**self.env, "NOTIFY_SOCKET": str(self.root / "notify"), "WATCHDOG_USEC": "2000000"}
        self.log = open(self.root / "daemon.log", "ab")  # noqa: SIM115 (closed in stop())
        self.process = subprocess.Popen(
            [*APPLIANCE, "run", "--config", str(self.config)],
            env=env,
            stdout=self.log,
            stderr=self.log,
        )
        self.wait_for_message("READY=1", 120)

    def wait_for_message(self, text: str, timeout_s: float) -> str:
        """Read sd_notify datagrams until one contains text."""
        deadline = time.monotonic() + timeout_s
        seen = 0
        while time.monotonic() < deadline:
            for message in self.messages[seen:]:
                if text in message:
                    self.messages.remove(message)
                    return message
                seen += 1
            time.sleep(0.05)
        raise AssertionError(f"no {text!r} from the daemon; log:\n{self.log_text()}")

    def log_text(self) -> str:
        return (self.root / "daemon.log").read_text(errors="replace")

    def cli(self, *args: str, check: bool = True) -> subprocess.CompletedProcess:
        result = subprocess.run(
            [*APPLIANCE, *args, "--config", str(self.config)],
            env=self.env,
            capture_output=True,
            text=True,
            timeout=600,
        )
        if check and result.returncode != 0:
            raise AssertionError(f"appliance {' '.join(args)}: {result.stderr}\n{self.log_text()}")
        return result

    def status(self) -> dict:
        return json.loads(self.cli("status", "--json").stdout)

    def meeting(self, meeting_id: int) -> dict:
        meetings = json.loads(self.cli("meetings", "--json").stdout)
        return next(m for m in meetings if m["id"] == meeting_id)

    def wait_for_state(self, meeting_id: int, states: tuple[str, ...], timeout_s: float) -> dict:
        try:
            return wait_until(
                lambda: (found := self.meeting(meeting_id))["state"] in states and found,
                timeout_s,
                f"meeting {meeting_id} in {states}",
                0.5,
            )
        except AssertionError as err:
            raise AssertionError(f"{err}:\n{self.log_text()}") from None

    def wait_for_status(self, condition, timeout_s: float, what: str) -> dict:
        """Poll `status --json` until condition(status) holds."""
        try:
            return wait_until(lambda: condition(s := self.status()) and s, timeout_s, what)
        except AssertionError as err:
            raise AssertionError(f"{err}:\n{self.log_text()}") from None

    def maildir(self) -> list:
        box = self.root / "state" / "maildir"
        return list(mailbox.Maildir(box, create=False)) if box.exists() else []

    def stop(self, sig: int = signal.SIGTERM) -> int:
        self.process.send_signal(sig)
        code = self.process.wait(timeout=180)
        self.log.close()
        return code

    def close(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.kill()
            self.process.wait()
        self.notify.close()


@pytest.fixture
def daemon(tmp_path, tiny_en_installed):
    models = tiny_en_installed["q5_1"].parent
    instance = Daemon(tmp_path, f'[transcriber]\nmodels_dir = "{models}"\n')
    yield instance
    instance.close()


def test_socket_commands_and_a_meeting_from_a_file(daemon):
    daemon.start()
    assert daemon.status()["state"] == "idle"
    refused = daemon.cli("stop", check=False)
    assert refused.returncode == 2 and "no meeting is recording" in refused.stderr
    meeting_id = int(
        daemon.cli(
            "start",
            "--from-file",
            str(MEETING),
            "--realtime",
            "--title",
            "Budget <Q3>",
            "--to",
            "anna@example.com",
        ).stdout
    )
    again = daemon.cli("start", "--from-file", str(JFK), check=False)
    assert again.returncode == 2 and f"meeting {meeting_id} is already recording" in again.stderr
    daemon.wait_for_message(f"STATUS=recording meeting {meeting_id}", 10)
    status = daemon.wait_for_status(lambda s: s["audio_s"] > 10, 60, "ten seconds recorded")
    assert status["state"] == "recording" and status["meeting"]["title"] == "Budget <Q3>"
    assert 8 < status["audio_s"] < 30 and status["elapsed_s"] >= status["audio_s"] - 1
    assert "outbox" in status
    assert int(daemon.cli("stop", "--wait").stdout.split()[0]) == meeting_id
    done = daemon.wait_for_state(meeting_id, ("done",), 60)
    assert 10 < done["audio_s"] < 30
    text = daemon.cli("show", str(meeting_id)).stdout
    assert text.strip()
    srt = daemon.cli("show", str(meeting_id), "--format", "srt").stdout
    assert srt.startswith("1\n00:00:")
    assert len(daemon.maildir()) == 1
    daemon.wait_for_message("WATCHDOG=1", 5)
    assert daemon.stop() == 0
    offline = daemon.cli("meetings", "--json")  # read straight from the database
    assert json.loads(offline.stdout)[0]["id"] == meeting_id


@pytest.mark.parametrize("workers", [1, 2])
def test_a_file_meeting_ends_by_itself_and_is_delivered(daemon, workers):
    with daemon.config.open("a") as config:
        config.write(f"workers = {workers}\nthreads = {3 - workers}\n")  # under [transcriber]
    daemon.start()
    meeting_id = int(
        daemon.cli("start", "--from-file", str(JFK), "--to", "anna@example.com").stdout
    )
    daemon.wait_for_state(meeting_id, ("done",), 120)
    text = daemon.cli("show", str(meeting_id)).stdout
    reference = (
        "And so, my fellow Americans, ask not what your country can do for you; ask "
        "what you can do for your country."
    )
    assert jiwer.wer(normalize(reference, "en"), normalize(text, "en")) < 0.1
    assert len(daemon.maildir()) == 1
    assert daemon.stop() == 0


def test_sigkill_mid_meeting_is_recovered_and_delivered_once(daemon):
    daemon.start()
    meeting_id = int(
        daemon.cli(
            "start", "--from-file", str(MEETING), "--realtime", "--to", "anna@example.com"
        ).stdout
    )
    started = time.monotonic()
    daemon.wait_for_status(lambda s: s["audio_s"] >= 15, 60, "15 s recorded")
    daemon.process.kill()  # SIGKILL: no chance to flush anything
    recorded_s = time.monotonic() - started
    daemon.process.wait()
    spooled_s = spool.duration_s(daemon.root / "state" / "spool" / f"{meeting_id}.pcm")
    assert recorded_s - spooled_s <= 1.5, (recorded_s, spooled_s)

    daemon.start()
    done = daemon.wait_for_state(meeting_id, ("done",), 120)
    assert done["audio_s"] == pytest.approx(spooled_s, abs=0.05)
    text = daemon.cli("show", str(meeting_id)).stdout
    assert len(text.split()) > 12  # the first 15 s of the meeting hold about 20 words
    assert "Speaker 1: " in text  # labelled from the spool: the live embeddings died with it
    assert len(daemon.maildir()) == 1  # handed to delivery exactly once
    assert daemon.stop() == 0
    daemon.start()  # a third start finds nothing left to recover or resend
    daemon.wait_for_status(
        lambda s: s["state"] == "idle" and s["outbox"]["delivered"] == 1, 60, "settled"
    )
    assert len(daemon.maildir()) == 1
    assert daemon.stop() == 0


def test_sigterm_during_a_meeting_finishes_it_and_exits_0(daemon):
    daemon.start()
    meeting_id = int(
        daemon.cli(
            "start", "--from-file", str(MEETING), "--realtime", "--to", "anna@example.com"
        ).stdout
    )
    daemon.wait_for_status(lambda s: s["audio_s"] > 8, 60, "eight seconds recorded")
    assert daemon.stop(signal.SIGTERM) == 0
    daemon.wait_for_message("STOPPING=1", 5)
    daemon.start()
    done = daemon.wait_for_state(meeting_id, ("done",), 60)
    assert 6 < done["audio_s"] < 20
    assert len(daemon.maildir()) == 1
    assert daemon.stop() == 0
