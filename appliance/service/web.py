"""The HTTP API on the office network (aiohttp, on the daemon's loop): transcriptions by token.

Who may see what: a token's name is its owner; a transcription is read by its owner and the
receivers named when it was posted, and by nobody else, to whom it does not exist (404).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sqlite3
import ssl
import time
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from aiohttp import web

from appliance.config import Config
from appliance.errors import AudioError, UsageError
from appliance.recording.segmenter import Segmenter
from appliance.service import decoding, openapi, stream
from appliance.service.decoding import Runner
from appliance.service.jobs import DONE, Jobs
from appliance.service.pages import Pages
from appliance.service.parsing import (
    BadRequest,
    parse_bearer,
    parse_content_type,
    parse_format,
    parse_upload,
)
from appliance.service.tokens import Tokens
from appliance.store import Database
from appliance.transcript import render

_LOGGER = logging.getLogger(__name__)

PREFIX = "/api/v1"
# A client told the queue is full tries again after this many seconds.
RETRY_AFTER_S = 30
# How often transcriptions past keep_hours are looked for when no request asks (every GET
# also looks first), so nothing is kept much longer than the admin allows.
EXPIRE_EVERY_S = 60.0
_CHUNK = 1 << 16
_PUBLIC = (f"{PREFIX}/openapi.json",)
_TEXT_TYPES = {"txt": "text/plain", "srt": "application/x-subrip", "vtt": "text/vtt"}


OWNER = web.RequestKey("owner", str)


def _query(request: web.Request) -> dict[str, list[str]]:
    """The query string as each key's list of values."""
    return {key: request.query.getall(key) for key in request.query}


def _error(status: int, reason: str, **headers: str) -> web.Response:
    return web.json_response({"error": reason}, status=status, headers=headers)


class Api:
    """The API's application, its jobs and the runner that decodes them."""

    def __init__(
        self,
        config: Config,
        db: Database,
        engine: Any,
        segmenter: Callable[[], Segmenter],
        busy: Callable[[], bool],
        status: Callable[[], Awaitable[dict[str, Any]]],
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.config = config
        self.settings = config.web
        self.engine = engine
        self.status = status
        self.tokens = Tokens(db)
        keep_s = self.settings.keep_hours * 3600
        self.jobs = Jobs(db, config.api_spool_dir, keep_s, clock)
        self.runner = Runner(self.jobs, engine, segmenter, busy, config.transcriber.workers)
        self.segmenter = segmenter
        self.max_bytes = self.settings.max_upload_mb * 1_000_000
        # One upload decoded at a time: an hour of audio is 230 MB of float32 on a 4 GB Pi.
        self._decoding = asyncio.Semaphore(1)
        self.app = web.Application(middlewares=[self._auth], client_max_size=1 << 20)
        self.app.add_routes(
            [
                web.post(f"{PREFIX}/transcriptions", self.post),
                web.get(f"{PREFIX}/transcriptions", self.list),
                web.get(f"{PREFIX}/transcriptions/{{id}}", self.get),
                web.delete(f"{PREFIX}/transcriptions/{{id}}", self.delete),
                web.get(f"{PREFIX}/stream", self.stream),
                web.get(f"{PREFIX}/status", self.get_status),
                web.get(f"{PREFIX}/openapi.json", self.describe),
            ]
        )
        self.expire_every_s = EXPIRE_EVERY_S
        self._site: web.BaseSite | None = None
        self._app_runner: web.AppRunner | None = None

    # --- lifecycle ------------------------------------------------------------------------

    async def start(self, host: str, port: int) -> None:
        """Recover jobs left by the last run, then listen."""
        queued = self.jobs.recover()
        if queued:
            _LOGGER.info("%d API transcriptions waiting from before the restart", queued)
        self._app_runner = web.AppRunner(self.app, access_log=None, handle_signals=False)
        await self._app_runner.setup()
        self._site = web.TCPSite(self._app_runner, host, port, ssl_context=self._tls())
        await self._site.start()
        _LOGGER.info("HTTP API on %s", self.url)

    def _tls(self) -> ssl.SSLContext | None:
        certificate, key = self.settings.certificate, self.settings.key
        if not certificate and not key:
            return None
        if not (certificate and key):
            raise UsageError("[web] certificate and key must be set together (or neither)")
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        try:
            context.load_cert_chain(certificate, key)
        except (OSError, ssl.SSLError) as err:
            raise UsageError(
                f"[web] certificate {certificate} / key {key}: cannot load: {err}"
            ) from err
        return context

    @property
    def url(self) -> str:
        """Where the server listens, e.g. http://127.0.0.1:8080 (the real port if 0 was given)."""
        server = self._site._server if self._site else None
        host, port = server.sockets[0].getsockname()[:2] if server else ("", 0)
        scheme = "https" if self.settings.certificate else "http"
        return f"{scheme}://{f'[{host}]' if ':' in host else host}:{port}"

    async def run(self) -> None:
        """Decode queued jobs and delete expired ones until cancelled."""
        await asyncio.gather(self.runner.run(), self._expire())

    async def _expire(self) -> None:
        while True:
            self.jobs.expire()
            await asyncio.sleep(self.expire_every_s)

    async def close(self) -> None:
        """Stop listening; open requests are cut off (their uploads are discarded)."""
        if self._app_runner is not None:
            await self._app_runner.cleanup()

    # --- authentication -------------------------------------------------------------------

    @web.middleware
    async def _auth(self, request: web.Request, handler: Callable[..., Awaitable]) -> Any:
        if not request.path.startswith(f"{PREFIX}/") or request.path in _PUBLIC:
            return await handler(request)  # the pages check their own sessions
        token = parse_bearer(request.headers.get("Authorization"))
        owner = self.tokens.owner(token) if token else None
        if owner is None:
            reason = "a valid token is required (Authorization: Bearer TOKEN)"
            return _error(401, reason, **{"WWW-Authenticate": 'Bearer realm="appliance"'})
        request[OWNER] = owner
        try:
            return await handler(request)
        except BadRequest as err:
            return _error(400, str(err))

    # --- transcriptions -------------------------------------------------------------------

    async def post(self, request: web.Request) -> web.Response:
        """Queue a transcription of the body; idempotent per owner and id."""
        owner = request[OWNER]
        upload = parse_upload(_query(request))
        raw = parse_content_type(request.headers.get("Content-Type"))
        existing = self.jobs.owned(owner, upload.id)
        if existing is not None:
            return self._accepted(existing.id, existing.status)
        if request.content_length is not None and request.content_length > self.max_bytes:
            return self._too_large()
        if self.jobs.pending() >= self.settings.max_queue:
            return _error(
                429, "the transcription queue is full", **{"Retry-After": str(RETRY_AFTER_S)}
            )
        try:
            language = decoding.check_language(self.engine, upload.language)
        except UsageError as err:
            raise BadRequest(str(err)) from err
        name = uuid.uuid4().hex
        body, pcm = self.jobs.temp_path(f"{name}.body"), self.jobs.temp_path(name)
        try:
            if not await self._receive(request, body):
                return self._too_large()
            async with self._decoding:
                duration_s = await asyncio.to_thread(decoding.to_pcm, body, pcm, raw)
            job = self.jobs.add(owner, upload.id, language, upload.receivers, pcm, duration_s)
        except AudioError as err:
            raise BadRequest(str(err).removeprefix(f"{body}: ")) from err
        except sqlite3.IntegrityError:  # the same id posted twice at once: the first one won
            job = self.jobs.owned(owner, upload.id)
        except OSError as err:  # a full or failing disk: nothing half-stored is kept
            _LOGGER.error("API upload %s of %s could not be stored: %s", upload.id, owner, err)
            return _error(507, f"the box cannot store the upload now ({err.strerror or err})")
        finally:
            for path in (body, pcm):
                with contextlib.suppress(OSError):  # a failing disk must not hide the answer
                    path.unlink(missing_ok=True)
        _LOGGER.info(
            "API transcription %s of %s queued (%.1f s of audio)", job.id, owner, job.duration_s
        )
        self.runner.wake()
        return self._accepted(job.id, job.status)

    async def _receive(self, request: web.Request, path: Path) -> bool:
        """Write the body to path; False as soon as it is over the size limit."""
        size = 0
        with open(path, "wb") as out:
            async for chunk in request.content.iter_chunked(_CHUNK):
                size += len(chunk)
                if size > self.max_bytes:
                    return False
                await asyncio.to_thread(out.write, chunk)
        if not size:
            raise BadRequest("the body is empty; send the audio as the request body")
        return True

    def _too_large(self) -> web.Response:
        return _error(
            413, f"the body is over {self.settings.max_upload_mb} MB ([web] max_upload_mb)"
        )

    @staticmethod
    def _accepted(job_id: str, status: str) -> web.Response:
        return web.json_response({"id": job_id, "status": status}, status=202)

    async def get(self, request: web.Request) -> web.Response:
        """One transcription as JSON or as text; a done one fetched by every reader is deleted."""
        name = request[OWNER]
        fmt = parse_format(_query(request))
        self.jobs.expire()
        job = self.jobs.visible(name, request.match_info["id"])
        if job is None:
            return _error(404, "no such transcription")
        if fmt == "json":
            response = web.json_response(job.to_json())
        elif job.status != DONE:
            return web.json_response(job.to_json(), status=409)
        else:
            text = render(job.transcript(), fmt)
            response = web.Response(text=text, content_type=_TEXT_TYPES[fmt], charset="utf-8")
        if job.status == DONE and self.jobs.fetched(job, name):
            _LOGGER.info("API transcription %s of %s fetched by all; deleted", job.id, job.owner)
        return response

    async def delete(self, request: web.Request) -> web.Response:
        """The owner deletes a transcription (text and audio) at once."""
        job = self.jobs.owned(request[OWNER], request.match_info["id"])
        if job is None:
            return _error(404, "no such transcription")
        self.jobs.delete(job)
        _LOGGER.info("API transcription %s of %s deleted by its owner", job.id, job.owner)
        return web.Response(status=204)

    async def list(self, request: web.Request) -> web.Response:
        """The caller's transcriptions, as owner or receiver, without their text."""
        self.jobs.expire()
        jobs = self.jobs.readable_by(request[OWNER])
        return web.json_response({"transcriptions": [j.to_json(with_text=False) for j in jobs]})

    async def stream(self, request: web.Request) -> web.StreamResponse:
        """A live transcription over a WebSocket (stream.py)."""
        upload = parse_upload(_query(request))
        if self.jobs.owned(request[OWNER], upload.id) is not None:
            raise BadRequest(f"id {upload.id} is already used")
        try:
            language = decoding.check_language(self.engine, upload.language)
        except UsageError as err:
            raise BadRequest(str(err)) from err
        live = stream.Stream(self, request[OWNER], upload, language)
        return await live.serve(request)

    async def get_status(self, request: web.Request) -> web.Response:
        """The daemon's state, as `appliance status --json` without the meeting's words and
        addresses: a token lets its holder read its own transcripts, not the room's."""
        state = {k: v for k, v in (await self.status()).items() if k != "last_line"}
        if state.get("meeting"):
            state["meeting"] = {k: v for k, v in state["meeting"].items() if k != "recipients"}
        return web.json_response(state)

    async def describe(self, request: web.Request) -> web.Response:
        """The OpenAPI description of this API."""
        return web.json_response(openapi.document())


def _host_port(listen: str) -> tuple[str, int]:
    host, _, port = listen.rpartition(":")
    return host.strip("[]"), int(port)


async def serve(daemon: Any, segmenter: Callable[[Config], Segmenter]) -> None:
    """Run the API beside the daemon if `[web] listen` is set, until cancelled: its one wiring
    call. A live meeting always comes first: API jobs wait while one records or finishes."""
    config = daemon.config
    if not config.web.listen:
        return
    api = Api(
        config,
        daemon.db,
        daemon.engine,
        segmenter=lambda: segmenter(config),
        busy=lambda: daemon.meetings.state() in ("recording", "finishing"),
        status=daemon.meetings.status,
    )
    Pages(api.app, daemon, api.tokens, tls=bool(config.web.certificate))
    await api.start(*_host_port(config.web.listen))
    try:
        await api.run()
    finally:
        await api.close()
