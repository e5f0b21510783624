"""The web page's upload: a recording (trimmed if asked) becomes a meeting from a file, so its
transcript shows on the page as it is made and goes by email to whoever is named."""

from __future__ import annotations

import asyncio
import logging
import re
import shutil
import uuid
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import numpy as np
import soundfile
from aiohttp import web

from appliance.errors import AudioError, UsageError
from appliance.recording.audio import SAMPLE_RATE, load

_LOGGER = logging.getLogger(__name__)
_CHUNK = 1 << 16
_LANGUAGE = re.compile(r"(?:[a-z]{2,3}|auto)?")


def trim(source: Path, target: Path, start_s: float, end_s: float) -> float:
    """Decode source, keep start_s to end_s (0: to the end), write 16 kHz PCM16 WAV; seconds kept."""
    samples = load(source)
    last = int(end_s * SAMPLE_RATE) if end_s else samples.size
    kept = samples[int(start_s * SAMPLE_RATE) : last]
    if not kept.size:
        raise AudioError("nothing is left between the trim points")
    soundfile.write(target, np.ascontiguousarray(kept), SAMPLE_RATE, subtype="PCM_16")
    return kept.size / SAMPLE_RATE


def _seconds(text: str, name: str) -> float:
    try:
        value = float(text or 0)
    except ValueError:
        raise UsageError(f"{name} {text[:20]!r} is not a number of seconds") from None
    if not 0 <= value <= 8 * 3600:
        raise UsageError(f"{name} must be 0 to 28800 seconds")
    return value


class Uploads:
    """GET and POST /upload, for Pages."""

    def __init__(self, pages: Any, folder: Path, max_bytes: int) -> None:
        self.pages = pages
        self.folder = folder
        self.max_bytes = max_bytes
        self._cleanups: set[asyncio.Task] = set()
        # A meeting made from an upload is recovered from its own spool after a restart, so
        # what is left here then is no longer needed.
        shutil.rmtree(folder, ignore_errors=True)
        folder.mkdir(parents=True, exist_ok=True, mode=0o700)

    async def form(self, request: web.Request) -> web.Response:
        """The upload form."""
        return self.pages.page(
            "upload",
            request,
            heading="Upload a recording",
            message=request.query.get("message", "")[:200],
            # What browsers record (WebM, MP4) only ffmpeg reads; libsndfile does not.
            can_record=shutil.which("ffmpeg") is not None,
        )

    async def post(self, request: web.Request) -> web.StreamResponse:
        """Save, trim, and start a meeting from the file; then its page."""
        name = uuid.uuid4().hex
        body, wav = self.folder / f"{name}.body", self.folder / f"{name}.wav"
        try:
            fields = await self._receive(request, body)
            if not self.pages.form_ok(request, fields.get("csrf_token")):
                raise web.HTTPForbidden(text="the form's CSRF token is missing or wrong")
            start_s = _seconds(fields.get("start_s", ""), "start")
            end_s = _seconds(fields.get("end_s", ""), "end")
            if end_s and end_s <= start_s:
                raise UsageError("the end must come after the start")
            language = fields.get("language", "")
            if not _LANGUAGE.fullmatch(language):
                raise UsageError(f"language {language[:20]!r} is not a code like en or auto")
            to = tuple(a for a in re.split(r"[\s,;]+", fields.get("to", "")) if a)
            try:
                await asyncio.to_thread(trim, body, wav, start_s, end_s)
            except AudioError as err:
                raise UsageError(str(err).removeprefix(f"{body}: ")) from err
            title = fields.get("title", "")[:200] or fields.get("filename", "")[:200]
            started = await self.pages.daemon.meetings.start(title, to, language, str(wav))
            meeting_id = started["meeting"]["id"]
        except UsageError as err:
            wav.unlink(missing_ok=True)
            raise web.HTTPSeeOther(f"/upload?{urlencode({'message': str(err)})}") from err
        finally:
            body.unlink(missing_ok=True)
        task = asyncio.create_task(self._remove_when_read(meeting_id, wav))
        self._cleanups.add(task)
        task.add_done_callback(self._cleanups.discard)
        _LOGGER.info("web: meeting %d started from an upload", meeting_id)
        raise web.HTTPSeeOther(f"/meetings/{meeting_id}")

    async def _receive(self, request: web.Request, body: Path) -> dict[str, str]:
        """The form's fields, with the file written to body (at most max_bytes)."""
        fields: dict[str, str] = {}
        reader = await request.multipart()
        size = 0
        async for part in reader:
            if part.name == "audio":
                fields["filename"] = Path(part.filename or "").stem
                with open(body, "wb") as out:
                    while chunk := await part.read_chunk(_CHUNK):
                        size += len(chunk)
                        if size > self.max_bytes:
                            raise UsageError("the file is over [web] max_upload_mb")
                        await asyncio.to_thread(out.write, chunk)
            elif part.name in ("csrf_token", "title", "to", "language", "start_s", "end_s"):
                fields[part.name] = (await part.text())[:4000]
        if not size:
            raise UsageError("choose a recording to upload")
        return fields

    async def _remove_when_read(self, meeting_id: int, wav: Path) -> None:
        while self.pages.daemon.meetings.current is not None and (
            self.pages.daemon.meetings.current.meeting.id == meeting_id
        ):
            await asyncio.sleep(1.0)
        wav.unlink(missing_ok=True)
