"""The fault drill: meetings killed with SIGKILL at random moments while the mail server goes down.

Each meeting plays the dev meeting in real time into `appliance run` (its own process) and is
killed once, at a random moment of one phase: recording, finishing (after `stop`), delivering
(the mail server down), or mid-SMTP (the server holding its reply to DATA). The mail server, a
real aiosmtpd on 127.0.0.1, is also down for a random stretch around some kills. After each kill
the daemon starts again; once the server is back, `appliance retry` pushes what waits. At the end
every meeting's recipient should hold exactly one email. Writes a "Fault drill" section into the
benchmark report: meetings lost, duplicate emails, audio lost per kill while recording.
"""

from __future__ import annotations

import argparse
import asyncio
import email
import json
import random
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

from aiosmtpd.controller import Controller

from appliance.recording import spool
from benchmarks import report_sections
from benchmarks.appliance_cli import APPLIANCE
from benchmarks.machine import command_line, describe

_ROOT = Path(__file__).resolve().parent.parent
MEETING = _ROOT / "tests" / "data" / "meetings" / "dev-meeting-01.flac"
PHASES = ("recording", "finishing", "delivering", "mid-SMTP")


def _say(text: str) -> None:
    print(f"bench faults: {text}", file=sys.stderr, flush=True)


class _Handler:
    """Keeps every accepted message per recipient; can hold its DATA reply to be killed in."""

    def __init__(self) -> None:
        self.received: dict[str, list[bytes]] = defaultdict(list)
        self.hold_s = 0.0
        self.in_data = threading.Event()

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        self.in_data.set()
        if self.hold_s:
            await asyncio.sleep(self.hold_s)
        for address in envelope.rcpt_tos:
            self.received[address].append(envelope.content)
        return "250 2.0.0 queued"


class _Server:
    """aiosmtpd on a fixed port that can go down and come back."""

    def __init__(self, handler: _Handler, port: int) -> None:
        self.handler, self.port = handler, port
        self._controller: Controller | None = None

    def up(self) -> None:
        if self._controller is None:
            self._controller = Controller(self.handler, hostname="127.0.0.1", port=self.port)
            self._controller.start()

    def down(self) -> None:
        if self._controller is not None:
            self._controller.stop()
            self._controller = None


class _Daemon:
    """`appliance run` with its own config, started and killed."""

    def __init__(self, root: Path, port: int, models: Path) -> None:
        self.root = root
        self.config = root / "config.toml"
        self.config.write_text(
            f'[storage]\nstate_dir = "{root / "state"}"\nmin_free_mb = 10\nkeep_audio_days = 1\n'
            f'[control]\nsocket = "{root / "control.sock"}"\n'
            f'[transcriber]\nmodels_dir = "{models}"\n'
            f'[smtp]\nhost = "127.0.0.1"\nport = {port}\nsecurity = "none"\ntimeout_s = 30\n'
        )
        self.process: subprocess.Popen | None = None
        self.log = open(root / "daemon.log", "ab")  # noqa: SIM115 (closed in close())

    def start(self) -> None:
        self.process = subprocess.Popen(
            [*APPLIANCE, "run", "--config", str(self.config)], stdout=self.log, stderr=self.log
        )
        self.until(lambda: self.cli("status", check=False).returncode == 0, 180, "ready")

    def kill(self) -> None:
        self.process.kill()
        self.process.wait()

    def close(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            self.process.wait(120)
        self.log.close()

    def cli(self, *args: str, check: bool = True) -> subprocess.CompletedProcess:
        done = subprocess.run(
            [*APPLIANCE, *args, "--config", str(self.config)],
            capture_output=True,
            text=True,
            timeout=600,
        )
        if check and done.returncode != 0:
            raise RuntimeError(f"appliance {' '.join(args)}: {done.stderr.strip()}")
        return done

    def status(self) -> dict:
        return json.loads(self.cli("status", "--json").stdout)

    def meetings(self) -> list[dict]:
        return json.loads(self.cli("meetings", "--json").stdout)

    @staticmethod
    def until(condition, timeout_s: float, what: str, interval_s: float = 0.2) -> Any:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            found = condition()
            if found:
                return found
            time.sleep(interval_s)
        raise RuntimeError(f"{what}: not within {timeout_s:g} s")


def _kill_in(
    phase: str, daemon: _Daemon, server: _Server, rng: random.Random, recipient: str
) -> float | None:
    """Run one meeting into its phase and SIGKILL the daemon there; the audio lost, if recording."""
    started = time.monotonic()
    meeting_id = int(
        daemon.cli("start", "--from-file", str(MEETING), "--realtime", "--to", recipient).stdout
    )
    if phase == "recording":
        wait_s = rng.uniform(3.0, 15.0)
        daemon.until(lambda: daemon.status()["audio_s"] >= wait_s, 60, "recording")
        daemon.kill()
        recorded_s = time.monotonic() - started
        spooled_s = spool.duration_s(daemon.root / "state" / "spool" / f"{meeting_id}.pcm")
        return max(0.0, recorded_s - spooled_s)
    daemon.until(lambda: daemon.status()["audio_s"] >= rng.uniform(4.0, 10.0), 60, "recording")
    if phase == "finishing":
        daemon.cli("stop")
        time.sleep(rng.uniform(0.0, 1.0))  # the random moment of the kill
    elif phase == "delivering":
        server.down()
        daemon.cli("stop", "--wait")  # returns once the refused attempt is recorded
    else:
        server.handler.in_data.clear()
        server.handler.hold_s = 5.0
        daemon.cli("stop")
        daemon.until(server.handler.in_data.is_set, 120, "the DATA command")
        time.sleep(rng.uniform(0.0, 2.0))  # somewhere inside the held reply
    daemon.kill()
    server.handler.hold_s = 0.0
    return None


def drill(meetings: int, seed: int, scratch: Path, models: Path, port: int) -> dict:
    """Run the drill; what was lost and duplicated."""
    rng = random.Random(seed)
    handler = _Handler()
    server = _Server(handler, port)
    server.up()
    daemon = _Daemon(scratch, port, models)
    lost_audio: list[float] = []
    phases: list[str] = []
    outages = 0
    try:
        daemon.start()
        for number in range(meetings):
            phase = PHASES[number % len(PHASES)]
            phases.append(phase)
            outage = phase != "mid-SMTP" and rng.random() < 0.5
            if outage:
                server.down()
                outages += 1
            lost = _kill_in(phase, daemon, server, rng, f"m{number}@example.com")
            if lost is not None:
                lost_audio.append(lost)
            _say(f"meeting {number + 1}/{meetings}: killed while {phase}, server down: {outage}")
            daemon.start()
            time.sleep(rng.uniform(0.0, 5.0))  # the server's random stretch down
            server.up()
            daemon.cli("retry")
        daemon.until(
            lambda: all(m["state"] in ("done", "failed") for m in daemon.meetings()),
            600,
            "every meeting settled",
            1.0,
        )
        states = [m["state"] for m in daemon.meetings()]
    finally:
        daemon.close()
        server.down()
    copies = [len(handler.received.get(f"m{n}@example.com", [])) for n in range(meetings)]
    distinct = [
        len(
            {
                email.message_from_bytes(raw)["Message-ID"]
                for raw in handler.received[f"m{n}@example.com"]
            }
        )
        for n in range(meetings)
    ]
    return {
        "meetings": meetings,
        "seed": seed,
        "phases": {p: phases.count(p) for p in PHASES},
        "outages": outages,
        "states": {s: states.count(s) for s in set(states)},
        "lost": sum(1 for c in copies if c == 0),
        "duplicates": sum(max(0, c - 1) for c in copies),
        "duplicate_message_ids": sum(max(0, d - 1) for d in distinct),
        "audio_lost_s": [round(v, 2) for v in lost_audio],
    }


def render(result: dict, machine: dict, command: str) -> str:
    """The report section."""
    lost = result["audio_lost_s"]
    return "\n".join(
        [
            "## Fault drill",
            "",
            f"`{command}` on {machine.get('cpu', 'this machine')}, {machine.get('cores', '?')} "
            f"cores, load average at the start "
            f"{', '.join(f'{v:.2f}' for v in machine.get('load_average', ()))}: "
            f"{result['meetings']} meetings (seed {result['seed']}), each killed with SIGKILL once "
            f"({', '.join(f'{n} while {p}' for p, n in result['phases'].items())}), the mail "
            f"server down around {result['outages']} of the kills, the daemon started again "
            "after each and `appliance retry` once the server was back.",
            "",
            "| measure | value | target |",
            "|---|---|---|",
            f"| meetings whose recipient got no email | {result['lost']} | 0 |",
            f"| duplicate emails | {result['duplicates']} ({result['duplicate_message_ids']} "
            "with a different Message-ID) | 0 |",
            f"| audio lost per kill while recording, max / median of {len(lost)} | "
            f"{max(lost, default=0):.2f} s / {statistics.median(lost) if lost else 0:.2f} s | "
            "≤ 1.5 s |",
            f"| final states | {', '.join(f'{n} {s}' for s, n in result['states'].items())} | |",
            "",
            "Audio lost is the wall time from `start` to the kill less the seconds in the spool, "
            "so the start-up of the capture counts as lost. A mid-SMTP kill falls inside the "
            "server's reply to DATA, held 5 s: aiosmtpd drops a message whose client has gone "
            "before the reply, and the restarted daemon sends it again, once. A server that kept "
            "such a message would show it twice, with the same Message-ID (delivery is at least "
            "once, never lost).",
            "",
        ]
    )


def main(argv: list[str] | None = None) -> int:
    """Parse arguments, run the drill, write the section."""
    parser = argparse.ArgumentParser(prog="python -m benchmarks.faults", description=__doc__)
    parser.add_argument("--output", type=Path, default=Path("docs/benchmarks.md"))
    parser.add_argument("--meetings", type=int, default=20, help="meetings, one kill each")
    parser.add_argument("--seed", type=int, default=18, help="random seed of the kill moments")
    parser.add_argument("--port", type=int, default=8025, help="the mail server's port")
    parser.add_argument(
        "--models", type=Path, default=_ROOT / "models", help="models folder with tiny.en q5_1"
    )
    args = parser.parse_args(argv)
    machine = describe(_ROOT)
    with tempfile.TemporaryDirectory(prefix="bench-faults-") as scratch:
        result = drill(args.meetings, args.seed, Path(scratch), args.models, args.port)
    _say(json.dumps(result))
    report_sections.write(
        args.output, render(result, machine, command_line("benchmarks.faults", argv))
    )
    _say(f"wrote the fault drill section of {args.output}")
    return 0 if result["lost"] == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
