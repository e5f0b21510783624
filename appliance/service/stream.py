"""A live transcription over a WebSocket: PCM16 chunks in, segments out as windows finish.

The client sends binary messages of mono 16 kHz PCM16 (as a satellite microphone does) and
then the text message `end`; each speech segment the VAD closes is decoded (when no meeting
needs the engine) and sent back as `{"type": "segment", ...}`, and after `end`, once the last
one is sent, `{"type": "done", "id": ID}`. The audio is spooled as it comes; the result is then
a transcription like any posted one. A client that goes away before `end` leaves nothing.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from typing import TYPE_CHECKING

from aiohttp import WSMsgType, web

from appliance.recording.audio import SAMPLE_RATE
from appliance.recording.segmenter import SpeechSegment
from appliance.service import decoding
from appliance.service.parsing import Upload
from appliance.transcript import Segment

if TYPE_CHECKING:
    from appliance.service.web import Api

_LOGGER = logging.getLogger(__name__)

END = "end"
_MAX_MESSAGE = 1 << 20  # a second of audio is 32 kB; a chunk over 1 MB is not a microphone's


class Stream:
    """One WebSocket client's live transcription."""

    def __init__(self, api: Api, owner: str, upload: Upload, language: str) -> None:
        self.api = api
        self.owner = owner
        self.upload = upload
        self.language = language
        self.segmenter = api.segmenter()
        self.path = api.jobs.temp_path(f"stream-{uuid.uuid4().hex}")
        self.segments: list[Segment] = []
        self._speech: asyncio.Queue[SpeechSegment | None] = asyncio.Queue()
        self._carry = b""
        self.size = 0  # bytes received

    async def serve(self, request: web.Request) -> web.WebSocketResponse:
        """Take audio until `end`, then store the result and say done."""
        ws = web.WebSocketResponse(max_msg_size=_MAX_MESSAGE, heartbeat=30.0)
        await ws.prepare(request)
        decoder = asyncio.create_task(self._decode(ws))
        try:
            if await self._receive(ws):
                for segment in await asyncio.to_thread(self.segmenter.flush):
                    self._speech.put_nowait(segment)
                self._speech.put_nowait(None)
                await decoder
                self._store()
                await ws.send_json({"type": "done", "id": self.upload.id})
            await ws.close()
        except Exception as err:  # one client's failure is its own, not the daemon's
            _LOGGER.exception("API stream %s of %s failed", self.upload.id, self.owner)
            await ws.close(code=1011, message=type(err).__name__.encode())
        finally:
            decoder.cancel()
            self.path.unlink(missing_ok=True)
        return ws

    async def _receive(self, ws: web.WebSocketResponse) -> bool:
        """Spool and segment audio messages; True once the client sent `end`."""
        with open(self.path, "wb") as spool:
            async for message in ws:
                if message.type == WSMsgType.TEXT and message.data.strip() == END:
                    return True
                if message.type != WSMsgType.BINARY:
                    await ws.close(code=1003, message=b"send PCM16 as binary, then 'end'")
                    return False
                self.size += len(message.data)
                if self.size > self.api.max_bytes:
                    await ws.close(code=1009, message=b"over [web] max_upload_mb")
                    return False
                await asyncio.to_thread(spool.write, message.data)
                await self._push(message.data)
        return False

    async def _push(self, data: bytes) -> None:
        data = self._carry + data
        whole = len(data) - len(data) % 2  # a chunk may split a sample; keep its first byte
        self._carry = data[whole:]
        for segment in await asyncio.to_thread(self.segmenter.push, data[:whole]):
            self._speech.put_nowait(segment)

    async def _decode(self, ws: web.WebSocketResponse) -> None:
        while (segment := await self._speech.get()) is not None:
            await self.api.runner.idle()
            decoded = await decoding.transcribe(self.api.engine, [segment], self.language)
            self.segments += decoded
            for piece in decoded:
                if not ws.closed:
                    await ws.send_json(
                        {
                            "type": "segment",
                            "start_s": round(piece.start_s, 2),
                            "end_s": round(piece.end_s, 2),
                            "text": piece.text,
                        }
                    )

    def _store(self) -> None:
        jobs = self.api.jobs
        upload = self.upload
        duration_s = self.size // 2 / SAMPLE_RATE
        job = jobs.add(
            self.owner, upload.id, self.language, upload.receivers, self.path, duration_s
        )
        jobs.finish(job, self.segments, self.language)
        _LOGGER.info(
            "API stream %s of %s done (%.1f s of audio)", upload.id, self.owner, duration_s
        )
