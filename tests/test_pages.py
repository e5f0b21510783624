"""The web page (issue 20, first part) inside a real Daemon on loopback: login, sessions, CSRF,
the rate limit, meetings and downloads; nothing of a transcript without a session."""

from __future__ import annotations

import asyncio
import dataclasses
import io
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import aiohttp
import numpy as np
import pytest
import soundfile

from appliance import config as config_module
from appliance import paths
from appliance.delivery.outbox import Outbox
from appliance.engine.transcriber import DecodeOptions, Transcriber
from appliance.models import store
from appliance.recording.audio import SAMPLE_RATE
from appliance.service.daemon import Daemon
from appliance.service.login import MAX_FAILURES
from appliance.service.tokens import Tokens
from appliance.store import DONE, Database
from appliance.transcript import Segment

PASSWORD = "correct horse battery"
JFK = Path(__file__).parent / "data" / "speech" / "jfk" / "jfk.flac"
TITLE = "Budget <script>alert(1)</script>"
WORDS = "we agree on <b>forty</b> percent"


@pytest.fixture(scope="module")
def engine():
    path = store.resolve("tiny.en", paths.models_dir(), "q5_1")
    with Transcriber(path, DecodeOptions(threads=2)) as loaded:
        yield loaded


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture
def box(tmp_path):
    """A config on loopback, the password set with the CLI, one finished meeting, a token."""
    port = _free_port()
    path = tmp_path / "config.toml"
    path.write_text(
        f'[storage]\nstate_dir = "{tmp_path / "state"}"\n'
        f'[control]\nsocket = "{tmp_path / "control.sock"}"\n'
        f'[web]\nlisten = "127.0.0.1:{port}"\n'
    )
    result = subprocess.run(
        [sys.executable, "-m", "appliance", "web", "set-password", "--config", str(path)],
        input=PASSWORD + "\n",
        capture_output=True,
        text=True,
        env=os.environ,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    config = config_module.load(path)
    db = Database(config.database)
    meeting = db.create(TITLE, "en", ("anna@example.com",), "microphone")
    db.add_segments(meeting.id, [Segment(1.0, 4.5, WORDS)], 4.5)
    db.set_audio(meeting.id, 5.0)
    db.set_state(meeting.id, DONE)
    token = Tokens(db).add("script")
    db.close()
    return config, f"http://127.0.0.1:{port}", token


def run(config, engine, scenario):
    async def main():
        daemon = Daemon(config, engine=engine)
        running = asyncio.create_task(daemon.run())
        base = f"http://{config.web.listen}"
        deadline = time.monotonic() + 60
        async with aiohttp.ClientSession(base, cookie_jar=aiohttp.CookieJar(unsafe=True)) as http:
            while True:
                try:
                    async with http.get("/login"):
                        break
                except aiohttp.ClientConnectionError:
                    assert time.monotonic() < deadline and not running.done()
                    await asyncio.sleep(0.1)
            try:
                await scenario(http)
            finally:
                daemon._shutdown.set()
                assert await running == 0

    asyncio.run(main())


async def _csrf(http: aiohttp.ClientSession, path: str) -> str:
    async with http.get(path) as response:
        page = await response.text()
    return page.split('name="csrf_token" value="', 1)[1].split('"', 1)[0]


async def _login(http: aiohttp.ClientSession, password: str = PASSWORD) -> aiohttp.ClientResponse:
    csrf = await _csrf(http, "/login")
    async with http.post(
        "/login", data={"password": password, "csrf_token": csrf}, allow_redirects=False
    ) as response:
        await response.read()
        return response


def test_nothing_without_a_session(box, engine):
    config, _, _ = box

    async def scenario(http):
        for path in (
            "/",
            "/meetings",
            "/meetings/1",
            "/meetings/1/transcript.srt",
            "/meetings/1/audio",
            "/meetings/1/delete",
            "/now/events",
        ):
            async with http.get(path, allow_redirects=False) as response:
                assert (response.status, response.headers["Location"]) == (303, "/login")
                assert "forty" not in await response.text()
        for path in ("/stop", "/meetings/1/resend", "/meetings/1/delete"):
            async with http.post(path, data={"confirm": "yes"}, allow_redirects=False) as answer:
                assert (answer.status, answer.headers["Location"]) == (303, "/login")
        async with http.get("/login") as response:
            page = await response.text()
        assert "forty" not in page and "Budget" not in page

    run(config, engine, scenario)


def test_login_meetings_download_logout(box, engine):
    config, _, _ = box

    async def scenario(http):
        wrong = await _login(http, "not the password")
        assert wrong.status == 401
        response = await _login(http)
        assert (response.status, response.headers["Location"]) == (303, "/")
        cookie = response.headers["Set-Cookie"]
        assert "HttpOnly" in cookie and "SameSite=Strict" in cookie
        async with http.get("/meetings") as response:
            page = await response.text()
        assert (
            "Budget &lt;script&gt;alert(1)&lt;/script&gt;" in page and "<script>alert" not in page
        )
        async with http.get("/meetings/1") as response:
            page = await response.text()
        assert "we agree on &lt;b&gt;forty&lt;/b&gt; percent" in page and "0:00:01" in page
        async with http.get("/meetings/1/transcript.srt") as response:
            assert response.headers["Content-Disposition"].endswith('meeting-1.srt"')
            assert (await response.text()).startswith("1\n00:00:01,000 --> 00:00:04,500\n")
        async with http.get("/meetings/2") as response:
            assert response.status == 404
        csrf = await _csrf(http, "/")
        async with http.post("/logout", data={"csrf_token": csrf}, allow_redirects=False) as out:
            assert (out.status, out.headers["Location"]) == (303, "/login")
        async with http.get("/meetings", allow_redirects=False) as response:
            assert response.status == 303

    run(config, engine, scenario)


def test_forms_need_the_csrf_token(box, engine):
    config, _, _ = box

    async def scenario(http):
        async with http.post(
            "/login", data={"password": PASSWORD, "csrf_token": "guess"}, allow_redirects=False
        ) as response:
            assert response.status == 403
        await _login(http)
        for data in ({}, {"csrf_token": "guess"}):
            async with http.post("/start", data=data, allow_redirects=False) as response:
                assert response.status == 403
        csrf = await _csrf(http, "/")
        async with http.post(
            "/start", data={"csrf_token": csrf, "to": "not-an-address"}, allow_redirects=False
        ) as response:
            assert response.status == 303 and "not+an+email+address" in response.headers["Location"]
        async with http.post("/stop", data={"csrf_token": csrf}) as response:
            assert "no meeting is recording" in await response.text()

    run(config, engine, scenario)


def test_login_rate_limit(box, engine):
    config, _, _ = box

    async def scenario(http):
        for _ in range(MAX_FAILURES):
            assert (await _login(http, "wrong password")).status == 401
        assert (await _login(http)).status == 429  # even the right one, for a while

    run(config, engine, scenario)


def test_an_api_token_works_for_scripts(box, engine):
    config, _, token = box

    async def scenario(http):
        headers = {"Authorization": f"Bearer {token}"}
        async with http.get("/meetings/1/transcript.txt", headers=headers) as response:
            assert response.status == 200 and "forty" in await response.text()

    run(config, engine, scenario)


def _upload_form(csrf: str, audio: bytes, **fields: str) -> aiohttp.FormData:
    form = aiohttp.FormData()
    form.add_field("csrf_token", csrf)
    for name, value in fields.items():
        form.add_field(name, value)
    form.add_field("audio", audio, filename="jfk.flac", content_type="audio/flac")
    return form


def test_upload_trims_and_transcribes(box, engine):
    config, _, _ = box

    async def scenario(http):
        await _login(http)
        csrf = await _csrf(http, "/upload")
        for form, reason in (
            (_upload_form(csrf, b""), "choose a recording"),
            (_upload_form(csrf, b"plain text, not audio"), "not audio"),
            (_upload_form(csrf, JFK.read_bytes(), end_s="2", start_s="3"), "after the start"),
            (_upload_form(csrf, JFK.read_bytes(), to="nobody"), "not an email address"),
        ):
            async with http.post("/upload", data=form) as response:
                assert reason in await response.text()
        async with http.post(
            "/upload", data=_upload_form("guess", JFK.read_bytes()), allow_redirects=False
        ) as response:
            assert response.status == 403
        form = _upload_form(csrf, JFK.read_bytes(), start_s="0.5", end_s="6", title="Trimmed")
        async with http.post("/upload", data=form, allow_redirects=False) as response:
            assert response.status == 303
            page = response.headers["Location"]
        assert page == "/meetings/2"
        # At once, while it is still being transcribed: delete and resend are refused.
        for action in ("delete", "resend"):
            form = {"csrf_token": csrf, "confirm": "yes"}
            async with http.post(f"{page}/{action}", data=form) as response:
                assert response.url.path == page and "is still" in await response.text()
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            async with http.get(page) as response:
                text = await response.text()
            busy = any(f", {state}</p>" in text for state in ("recording", "finishing"))
            if "fellow" in text.lower() and not busy:
                break
            await asyncio.sleep(0.5)
        assert "Trimmed" in text and "0:00:05" in text and "fellow" in text.lower()
        uploads = config.state_dir / "uploads"
        while list(uploads.iterdir()) and time.monotonic() < deadline:
            await asyncio.sleep(0.2)
        assert list(uploads.iterdir()) == []  # the trimmed copy goes once it is read

    run(config, engine, scenario)


def test_hear_resend_and_delete_a_meeting(box, engine):
    """The meeting page: lines that play from the kept audio (WAV, with Range), speaker labels,
    the email sent again as a new message with its delivery shown, and a confirmed delete."""
    config, _, _ = box
    # Audio kept a day after the transcript is final (the default, 0, deletes it at once).
    config = dataclasses.replace(
        config, storage=dataclasses.replace(config.storage, keep_audio_days=1.0)
    )
    db = Database(config.database)
    db.label_segments(1, (Segment(1.0, 4.5, WORDS, "Speaker 1"),))
    Outbox(db, config).enqueue(db.meeting(1), db.transcript(1))  # as the hand-off does
    db.close()
    tone = (np.sin(np.arange(5 * SAMPLE_RATE) / 10) * 8000).astype("<i2")
    config.spool_dir.mkdir(parents=True, exist_ok=True)
    spool = config.spool_dir / "1.pcm"
    spool.write_bytes(tone.tobytes())
    maildir = config.maildir / "new"

    async def delivered(http: aiohttp.ClientSession, count: int) -> str:
        deadline = time.monotonic() + 60
        while True:
            async with http.get("/meetings/1") as response:
                page = await response.text()
            if len(list(maildir.glob("*"))) == count and "delivered" in page:
                return page
            assert time.monotonic() < deadline, page
            await asyncio.sleep(0.2)

    async def scenario(http):
        await _login(http)
        csrf = await _csrf(http, "/meetings/1")
        for path, data in (
            ("/meetings/1/resend", {"csrf_token": "guess"}),
            ("/meetings/1/delete", {"csrf_token": "guess", "confirm": "yes"}),
        ):
            async with http.post(path, data=data, allow_redirects=False) as response:
                assert response.status == 403
        page = await delivered(http, 1)
        assert '<audio id="player"' in page and 'data-start="1.00"' in page
        assert '<span class="speaker">Speaker 1:</span>' in page
        assert "<td>anna@example.com</td><td>delivered</td>" in page

        async with http.get("/meetings/1/audio") as response:
            assert (response.status, response.content_type) == (200, "audio/wav")
            wav = await response.read()
        samples, rate = soundfile.read(io.BytesIO(wav), dtype="int16")
        assert rate == SAMPLE_RATE and np.array_equal(samples, tone)
        for asked, status, expected in (
            ("bytes=0-3", 206, wav[:4]),
            ("bytes=40-99", 206, wav[40:100]),
            ("bytes=-10", 206, wav[-10:]),
            (f"bytes={len(wav) - 2}-", 206, wav[-2:]),
            (f"bytes={len(wav)}-", 416, None),
        ):
            async with http.get("/meetings/1/audio", headers={"Range": asked}) as response:
                assert response.status == status, asked
                if expected is not None:
                    assert await response.read() == expected
                    first = len(wav) - len(expected) if asked.startswith("bytes=-") else None
                    assert response.headers["Content-Range"].endswith(f"/{len(wav)}")
                    assert first is None or response.headers["Content-Range"].startswith(
                        f"bytes {first}-"
                    )

        async with http.post("/meetings/1/resend", data={"csrf_token": csrf}) as response:
            assert "being sent again" in await response.text()
        await delivered(http, 2)
        ids = {m.read_text().split("Message-ID:", 1)[1].split()[0] for m in maildir.glob("*")}
        assert len(ids) == 2  # a new message, not a duplicate a mail system would drop
        assert len(list(config.outbox_dir.glob("*.eml"))) == 1  # the first one's file is gone

        async with http.get("/meetings/1/delete") as response:
            page = await response.text()
        assert "Budget &lt;script&gt;" in page and "<script>alert" not in page
        form = {"csrf_token": csrf}
        async with http.post("/meetings/1/delete", data=form, allow_redirects=False) as response:
            assert response.headers["Location"] == "/meetings/1/delete"  # not confirmed
        form["confirm"] = "yes"
        async with http.post("/meetings/1/delete", data=form) as response:
            assert response.url.path == "/meetings" and "was deleted" in await response.text()
        async with http.get("/meetings/1") as response:
            assert response.status == 404
        async with http.get("/meetings/1/audio") as response:
            assert response.status == 404

    run(config, engine, scenario)
    assert not spool.exists() and not list(config.outbox_dir.glob("*.eml"))
    db = Database(config.database)
    assert db.meeting(1) is None
    for table in ("segments", "outbox_messages", "outbox_recipients"):
        assert db.db.execute(f"SELECT COUNT(*) FROM {table}").fetchone()[0] == 0
    db.close()
