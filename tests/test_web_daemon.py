"""The HTTP API inside `appliance run` (a real subprocess): tokens made by the CLI, jobs that
wait for a meeting, and a SIGKILL with jobs queued that loses none of them."""

from __future__ import annotations

import asyncio
import json
import signal
import socket
import time
from pathlib import Path

import aiohttp
import jiwer
from test_daemon import JFK, MEETING, Daemon

from appliance.evaluate import normalize

SPEECH = Path(__file__).parent / "data" / "speech"
CLIPS = {
    "jfk": (
        JFK,
        "And so my fellow Americans, ask not what your country can do for you, "
        "ask what you can do for your country.",
    ),
    "dashwood": (
        SPEECH / "librivox_sense_sensibility" / "sense_and_sensibility_01_austen_64kb-0880.flac",
        "he was not an ill disposed young man",
    ),
}
URL = "/api/v1/transcriptions"


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


async def _call(base: str, token: str, method: str, path: str, data: bytes | None = None):
    headers = {"Authorization": f"Bearer {token}"}
    async with (
        aiohttp.ClientSession(base) as http,
        http.request(method, path, data=data, headers=headers) as response,
    ):
        return response.status, await response.json()


def call(base: str, token: str, method: str, path: str, data: bytes | None = None):
    return asyncio.run(_call(base, token, method, path, data))


def wait_for_server(daemon: Daemon, base: str, token: str) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            call(base, token, "GET", "/api/v1/status")
            return
        except aiohttp.ClientConnectionError:
            time.sleep(0.2)
    raise AssertionError(f"the API never listened on {base}:\n{daemon.log_text()}")


def test_jobs_wait_for_the_meeting_and_survive_sigkill(tmp_path):
    port = _free_port()
    base = f"http://127.0.0.1:{port}"
    daemon = Daemon(tmp_path, f'[web]\nlisten = "127.0.0.1:{port}"\n')
    try:
        made = daemon.cli("tokens", "add", "anna")
        token = made.stdout.strip()
        assert len(made.stdout.splitlines()) == 1 and len(token) >= 40
        assert daemon.cli("tokens", "list").stdout.split()[0] == "anna"
        again = daemon.cli("tokens", "add", "anna", check=False)
        assert again.returncode == 2 and "exists" in again.stderr

        daemon.start()
        wait_for_server(daemon, base, token)
        daemon.cli("start", "--from-file", str(MEETING), "--realtime")
        for job_id, (path, _) in CLIPS.items():
            status, answer = call(base, token, "POST", f"{URL}?id={job_id}", path.read_bytes())
            assert (status, answer["status"]) == (202, "queued")
        status, state = call(base, token, "GET", "/api/v1/status")
        assert state["state"] == "recording"
        _, listed = call(base, token, "GET", URL)
        assert {j["status"] for j in listed["transcriptions"]} == {"queued"}
        daemon.process.kill()  # SIGKILL with both jobs queued and a meeting recording
        daemon.process.wait()
        daemon.log.close()

        daemon.start()  # recovers the meeting first, then the jobs
        wait_for_server(daemon, base, token)
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline:
            _, listed = call(base, token, "GET", URL)
            if all(j["status"] == "done" for j in listed["transcriptions"]):
                break
            time.sleep(0.5)
        assert [j["id"] for j in listed["transcriptions"]] == list(CLIPS), daemon.log_text()
        for job_id, (_, reference) in CLIPS.items():
            _, job = call(base, token, "GET", f"{URL}/{job_id}")
            assert job["status"] == "done", json.dumps(job)
            assert jiwer.wer(normalize(reference, "en"), normalize(job["text"], "en")) < 0.3
        assert call(base, token, "GET", f"{URL}/jfk")[0] == 404  # fetched by all: gone
        assert not list((tmp_path / "state" / "api").iterdir())

        daemon.cli("tokens", "revoke", "anna")
        assert call(base, token, "GET", URL)[0] == 401
        assert daemon.stop(signal.SIGTERM) == 0
    finally:
        daemon.close()
