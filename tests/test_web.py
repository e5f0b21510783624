"""The HTTP API on a real aiohttp server on loopback, with real clients and the real engine."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import aiohttp
import jiwer
import numpy as np
import pytest
from smtp_server import Certificate, certificate  # noqa: F401 (a fixture, used by name)

from appliance import config as config_module
from appliance import paths
from appliance.engine.transcriber import DecodeOptions, Transcriber
from appliance.evaluate import normalize
from appliance.models import silero, store
from appliance.recording.audio import float_to_pcm16, load
from appliance.recording.segmenter import Segmenter
from appliance.service.tokens import Tokens
from appliance.service.web import Api
from appliance.store import Database

DATA = Path(__file__).parent / "data"
JFK = DATA / "speech" / "jfk" / "jfk.flac"
JFK_TEXT = (
    "And so my fellow Americans, ask not what your country can do for you, "
    "ask what you can do for your country."
)
URL = "/api/v1/transcriptions"
DEADLINE_S = 120.0


@pytest.fixture(scope="module")
def engine():
    """tiny.en q8_0, loaded once for the module, as the daemon holds it."""
    path = store.resolve("tiny.en", paths.models_dir(), "q8_0")
    with Transcriber(path, DecodeOptions(threads=2)) as loaded:
        yield loaded


def segmenter() -> Segmenter:
    return Segmenter(silero.path(paths.models_dir()))


class Clock:
    """Wall time the test moves by hand, so keep_hours passes without waiting."""

    def __init__(self) -> None:
        self.now = time.time()

    def __call__(self) -> float:
        return self.now


class Room:
    """A stand-in for the daemon's meeting state, the one thing the API asks of it: busy()
    is true while a meeting records or finishes. Counts the calls, so a test can tell the
    runner has looked."""

    def __init__(self) -> None:
        self.meeting = False
        self.asked = 0

    def busy(self) -> bool:
        self.asked += 1
        return self.meeting

    async def status(self) -> dict[str, Any]:
        meeting = {"id": 7, "title": "Board", "recipients": ["anna@example.com"]}
        return {"state": "recording", "meeting": meeting, "last_line": "the words of the room"}


class Server:
    """One test's API: state folder, tokens, the Api on 127.0.0.1:0 and a client session."""

    def __init__(self, tmp_path: Path, engine: Any, **web: Any) -> None:
        self.config = config_module.parse(
            {"storage": {"state_dir": str(tmp_path / "state")}, "web": {"listen": "x:1", **web}}
        )
        self.db = Database(self.config.database)
        self.room = Room()
        self.clock = Clock()
        self.api = Api(
            self.config,
            self.db,
            engine,
            segmenter,
            self.room.busy,
            self.room.status,
            clock=self.clock,
        )
        self.api.expire_every_s = 0.05  # the clock jumps; the sweep should see it soon
        tokens = Tokens(self.db)
        self.token = {name: tokens.add(name) for name in ("anna", "bo", "carl")}

    def auth(self, name: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token[name]}"}

    async def __aenter__(self) -> Server:
        await self.api.start("127.0.0.1", 0)
        self.runner = asyncio.create_task(self.api.run())
        self.http = aiohttp.ClientSession(self.api.url)
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.http.close()
        self.runner.cancel()
        await asyncio.gather(self.runner, return_exceptions=True)
        await self.api.close()
        self.db.close()

    async def post(self, name: str, data: Any, query: str, **headers: str) -> tuple[int, Any]:
        async with self.http.post(
            f"{URL}?{query}", data=data, headers={**self.auth(name), **headers}
        ) as response:
            return response.status, await response.json()

    async def get(self, name: str, path: str) -> aiohttp.ClientResponse:
        async with self.http.get(path, headers=self.auth(name)) as response:
            await response.read()
            return response

    async def wait_done(self, name: str, job_id: str) -> dict:
        """Poll as a client would until the job is done or failed."""
        deadline = time.monotonic() + DEADLINE_S
        while time.monotonic() < deadline:
            async with self.http.get(URL, headers=self.auth(name)) as response:
                listed = (await response.json())["transcriptions"]
            mine = next(j for j in listed if j["id"] == job_id)
            if mine["status"] in ("done", "failed"):
                return mine
            await asyncio.sleep(0.1)
        raise AssertionError(f"{job_id} not done in {DEADLINE_S} s")


def run(tmp_path: Path, engine: Any, scenario: Callable[[Server], Awaitable[Any]], **web: Any):
    async def main() -> Any:
        async with Server(tmp_path, engine, **web) as server:
            return await scenario(server)

    return asyncio.run(main())


def wer(text: str) -> float:
    return jiwer.wer(normalize(JFK_TEXT, "en"), normalize(text, "en"))


def test_upload_poll_fetch_by_owner_and_receiver_then_deleted(tmp_path, engine):
    async def scenario(server: Server) -> None:
        status, body = await server.post("anna", JFK.read_bytes(), "id=jfk-1&receiver=bo")
        assert (status, body) == (202, {"id": "jfk-1", "status": "queued"})
        assert (await server.wait_done("anna", "jfk-1"))["status"] == "done"
        assert len(list(server.config.api_spool_dir.glob("*.pcm"))) == 1

        owner = await server.get("anna", f"{URL}/jfk-1")
        result = await owner.json()
        assert result["status"] == "done" and result["language"] == "en"
        assert result["duration_s"] == pytest.approx(11.0, abs=0.1)
        assert wer(result["text"]) < 0.2
        assert result["segments"] and all(s["end_s"] > s["start_s"] for s in result["segments"])
        assert (await server.get("anna", f"{URL}/jfk-1")).status == 200  # bo has not yet

        receiver = await server.get("bo", f"{URL}/jfk-1?format=srt")
        assert receiver.status == 200 and receiver.content_type == "application/x-subrip"
        assert "00:00:0" in await receiver.text()
        for name in ("anna", "bo"):
            assert (await server.get(name, f"{URL}/jfk-1")).status == 404
        assert list(server.config.api_spool_dir.iterdir()) == []

    run(tmp_path, engine, scenario)


def test_raw_pcm_at_any_rate_and_channel_count(tmp_path, engine):
    samples = load(JFK)
    stereo = np.repeat(samples[::2, None], 2, axis=1)  # 8 kHz, two channels
    raw = float_to_pcm16(stereo.reshape(-1))

    async def scenario(server: Server) -> None:
        kind = "audio/L16; rate=8000; channels=2"
        status, _ = await server.post("anna", raw, "id=raw&language=en", **{"Content-Type": kind})
        assert status == 202
        done = await server.wait_done("anna", "raw")
        assert done["status"] == "done" and done["duration_s"] == pytest.approx(11.0, abs=0.1)
        text = await (await server.get("anna", f"{URL}/raw?format=txt")).text()
        assert wer(text) < 0.3

    run(tmp_path, engine, scenario)


def test_tokens_and_owners(tmp_path, engine):
    async def scenario(server: Server) -> None:
        for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": "Basic x"}):
            async with server.http.get(URL, headers=headers) as response:
                assert response.status == 401
                assert response.headers["WWW-Authenticate"].startswith("Bearer")
        async with server.http.post(f"{URL}?id=x", data=b"abc") as response:
            assert response.status == 401
        assert (await server.post("anna", JFK.read_bytes(), "id=secret"))[0] == 202
        assert (await server.get("carl", f"{URL}/secret")).status == 404
        assert (await server.get("carl", f"{URL}/nothing")).status == 404
        async with server.http.delete(f"{URL}/secret", headers=server.auth("carl")) as response:
            assert response.status == 404
        listed = await (await server.get("carl", URL)).json()
        assert listed == {"transcriptions": []}
        mine = (await (await server.get("anna", URL)).json())["transcriptions"]
        assert [j["id"] for j in mine] == ["secret"] and "text" not in mine[0]
        async with server.http.delete(f"{URL}/secret", headers=server.auth("anna")) as response:
            assert response.status == 204
        assert (await server.get("anna", f"{URL}/secret")).status == 404
        server.api.tokens.revoke("anna")
        assert (await server.get("anna", URL)).status == 401

    run(tmp_path, engine, scenario)


@pytest.mark.parametrize(
    ("query", "headers", "body", "reason"),
    [
        ("id=a%20b", {}, b"x", "id 'a b' must be"),
        ("id=..", {}, b"x", "id '..' must be"),
        ("", {}, b"x", "id is missing"),
        ("id=a&id=b", {}, b"x", "id given 2 times"),
        ("id=a&colour=red", {}, b"x", "unknown parameter 'colour'"),
        ("id=a&language=english", {}, b"x", "language 'english' is not a code"),
        ("id=a&language=sv", {}, b"x", "English-only"),
        ("id=a&receiver=a%3Bb", {}, b"x", "receiver 'a;b' is not a token name"),
        ("id=a", {"Content-Type": "audio/L16; rate=fast"}, b"xx", "rate 'fast' is not"),
        ("id=a", {"Content-Type": "audio/L16; channels=2"}, b"xx", "multiple of 4 bytes"),
        ("id=a", {"Content-Type": "audio/L16; colour=red"}, b"xx", "unknown Content-Type"),
        ("id=a", {}, b"", "the body is empty"),
        ("id=a", {}, b"just some text, not audio at all", "not audio"),
        ("id=a", {"Content-Type": "audio/wav"}, b"RIFF\x10\x00\x00\x00WAVEfmt ", "not audio"),
    ],
)
def test_bad_requests_get_400_with_one_line(tmp_path, engine, query, headers, body, reason):
    async def scenario(server: Server) -> None:
        status, answer = await server.post("anna", body, query, **headers)
        assert status == 400
        assert reason in answer["error"] and "\n" not in answer["error"]
        assert str(tmp_path) not in answer["error"]  # no server paths in answers
        assert (await (await server.get("anna", URL)).json())["transcriptions"] == []

    run(tmp_path, engine, scenario)


def test_oversized_bodies_get_413(tmp_path, engine):
    big = b"\0" * 1_500_000

    async def chunks():
        for start in range(0, len(big), 100_000):
            yield big[start : start + 100_000]

    async def scenario(server: Server) -> None:
        assert (await server.post("anna", big, "id=big"))[0] == 413  # Content-Length
        assert (await server.post("anna", chunks(), "id=big"))[0] == 413  # chunked
        assert list(server.config.api_spool_dir.iterdir()) == []

    run(tmp_path, engine, scenario, max_upload_mb=1)


def test_same_id_twice_is_one_job(tmp_path, engine):
    async def scenario(server: Server) -> None:
        first = await server.post("anna", JFK.read_bytes(), "id=twice")
        second = await server.post("anna", b"not even audio", "id=twice")
        assert first[0] == second[0] == 202 and second[1]["id"] == "twice"
        assert len((await (await server.get("anna", URL)).json())["transcriptions"]) == 1
        # Another owner's id of the same name is theirs alone.
        assert (await server.post("bo", JFK.read_bytes(), "id=twice"))[0] == 202

    run(tmp_path, engine, scenario)


def test_meeting_first_and_full_queue(tmp_path, engine):
    async def scenario(server: Server) -> None:
        server.room.meeting = True
        assert (await server.post("anna", JFK.read_bytes(), "id=one"))[0] == 202
        asked = server.room.asked
        deadline = time.monotonic() + DEADLINE_S
        while server.room.asked < asked + 3 and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        job = await (await server.get("anna", f"{URL}/one")).json()
        assert job["status"] == "queued"  # the runner looked, and waited for the meeting
        async with server.http.post(
            f"{URL}?id=two", data=JFK.read_bytes(), headers=server.auth("anna")
        ) as response:
            assert response.status == 429 and int(response.headers["Retry-After"]) > 0
        server.room.meeting = False
        assert (await server.wait_done("anna", "one"))["status"] == "done"
        assert (await server.post("anna", JFK.read_bytes(), "id=two"))[0] == 202

    run(tmp_path, engine, scenario, max_queue=1)


def test_unfetched_results_expire_after_keep_hours(tmp_path, engine):
    async def scenario(server: Server) -> None:
        await server.post("anna", JFK.read_bytes(), "id=old&receiver=bo")
        await server.wait_done("anna", "old")
        assert (await server.get("anna", f"{URL}/old")).status == 200  # bo has not fetched
        server.clock.now += 2 * 3600 - 60
        assert (await server.get("bo", URL)).status == 200
        assert len((await (await server.get("bo", URL)).json())["transcriptions"]) == 1
        server.clock.now += 120
        assert (await server.get("bo", f"{URL}/old")).status == 404
        assert (await (await server.get("anna", URL)).json())["transcriptions"] == []
        assert list(server.config.api_spool_dir.iterdir()) == []

    run(tmp_path, engine, scenario, keep_hours=2.0)


def test_expiry_needs_no_request(tmp_path, engine):
    async def scenario(server: Server) -> None:
        await server.post("anna", JFK.read_bytes(), "id=unasked")
        await server.wait_done("anna", "unasked")
        spool = server.config.api_spool_dir
        assert list(spool.iterdir())
        server.clock.now += 3600 + 1
        deadline = time.monotonic() + DEADLINE_S
        while list(spool.iterdir()) and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        assert list(spool.iterdir()) == []
        assert server.api.jobs.readable_by("anna") == []

    run(tmp_path, engine, scenario, keep_hours=1.0)


def test_websocket_stream(tmp_path, engine):
    pcm = float_to_pcm16(load(JFK))

    async def scenario(server: Server) -> list[dict]:
        messages = []
        async with server.http.ws_connect(
            "/api/v1/stream?id=live&receiver=bo", headers=server.auth("anna")
        ) as ws:
            for start in range(0, len(pcm), 16001):  # odd sizes: a chunk may split a sample
                await ws.send_bytes(pcm[start : start + 16001])
            await ws.send_str("end")
            async for message in ws:
                messages.append(message.json())
        job = await (await server.get("bo", f"{URL}/live")).json()
        assert job["status"] == "done" and wer(job["text"]) < 0.3
        assert job["duration_s"] == pytest.approx(11.0, abs=0.1)
        return messages

    messages = run(tmp_path, engine, scenario)
    assert messages[-1] == {"type": "done", "id": "live"}
    segments = [m for m in messages[:-1] if m["type"] == "segment"]
    assert segments and len(segments) == len(messages) - 1
    assert wer(" ".join(s["text"] for s in segments)) < 0.3


def test_stream_refuses_text_and_leaves_nothing(tmp_path, engine):
    async def scenario(server: Server) -> None:
        async with server.http.ws_connect(
            "/api/v1/stream?id=bad", headers=server.auth("anna")
        ) as ws:
            await ws.send_bytes(b"\0\0" * 1600)
            await ws.send_str("hello")
            message = await ws.receive()
            assert message.type == aiohttp.WSMsgType.CLOSE and message.data == 1003
        assert (await server.get("anna", f"{URL}/bad")).status == 404
        assert list(server.config.api_spool_dir.iterdir()) == []

    run(tmp_path, engine, scenario)


def test_status_and_openapi(tmp_path, engine):
    async def scenario(server: Server) -> None:
        # The room's state, without its words or addresses: a token reads its own transcripts.
        state = await (await server.get("bo", "/api/v1/status")).json()
        assert state == {"state": "recording", "meeting": {"id": 7, "title": "Board"}}
        async with server.http.get("/api/v1/status") as response:
            assert response.status == 401
        async with server.http.get("/api/v1/openapi.json") as response:
            document = await response.json()
        assert document["openapi"].startswith("3.")
        assert {"/api/v1/transcriptions", "/api/v1/stream"} <= set(document["paths"])

    run(tmp_path, engine, scenario)


def test_no_transcript_text_in_logs_above_debug(tmp_path, engine, caplog):
    caplog.set_level(logging.DEBUG)

    async def scenario(server: Server) -> None:
        await server.post("anna", JFK.read_bytes(), "id=quiet")
        await server.wait_done("anna", "quiet")
        await server.get("anna", f"{URL}/quiet?format=txt")

    run(tmp_path, engine, scenario)
    above = [r.getMessage().lower() for r in caplog.records if r.levelno > logging.DEBUG]
    assert any("quiet" in line for line in above)  # the job was logged, by its id
    for word in ("fellow", "americans", "country"):
        assert not any(word in line for line in above)


def test_tls(tmp_path, engine, certificate: Certificate):
    async def scenario(server: Server) -> None:
        assert server.api.url.startswith("https://")
        connector = aiohttp.TCPConnector(ssl=certificate.client_context())
        async with (
            aiohttp.ClientSession(connector=connector) as https,
            https.get(server.api.url + URL, headers=server.auth("anna")) as response,
        ):
            assert response.status == 200

    run(
        tmp_path,
        engine,
        scenario,
        certificate=str(certificate.cert),
        key=str(certificate.key),
    )


def test_a_spool_that_cannot_be_written_is_507_and_keeps_nothing(tmp_path, engine):
    async def scenario(server: Server) -> None:
        spool = server.config.api_spool_dir
        spool.rmdir()
        spool.write_text("")  # a file where the folder was: every write into it fails
        status, answer = await server.post("anna", JFK.read_bytes(), "id=lost")
        assert status == 507 and "cannot store" in answer["error"]
        assert (await (await server.get("anna", URL)).json())["transcriptions"] == []

    run(tmp_path, engine, scenario)
