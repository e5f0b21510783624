"""A meeting's spooled audio (PCM16 mono 16 kHz) served as WAV, with HTTP Range for seeking."""

from __future__ import annotations

import asyncio
import struct
from pathlib import Path

from aiohttp import web

from appliance.recording.audio import SAMPLE_RATE

_HEADER_BYTES = 44
_CHUNK = 1 << 18


def wav_header(data_bytes: int) -> bytes:
    """The 44-byte RIFF header of a PCM16 mono SAMPLE_RATE WAV holding data_bytes of samples."""
    return b"".join(
        (
            b"RIFF",
            struct.pack("<I", 36 + data_bytes),
            b"WAVEfmt ",
            struct.pack("<IHHIIHH", 16, 1, 1, SAMPLE_RATE, SAMPLE_RATE * 2, 2, 16),
            b"data",
            struct.pack("<I", data_bytes),
        )
    )


def _span(request: web.Request, total: int) -> tuple[int, int] | None:
    """The bytes asked for as [start, stop), None for the whole; HTTP 416 if unsatisfiable."""
    if "Range" not in request.headers:
        return None
    try:
        wanted = request.http_range
    except ValueError:
        wanted = slice(total, None)  # malformed or several ranges: refused below
    start, stop = wanted.start or 0, wanted.stop
    if start < 0:  # "bytes=-N": the last N bytes
        start, stop = max(0, total + start), None
    stop = total if stop is None else min(stop, total)
    if start >= stop:
        raise web.HTTPRequestRangeNotSatisfiable(headers={"Content-Range": f"bytes */{total}"})
    return start, stop


async def serve(request: web.Request, path: Path) -> web.StreamResponse:
    """The spool at path as audio/wav (206 for a Range); HTTPNotFound when it is gone."""
    try:
        handle = await asyncio.to_thread(open, path, "rb")
    except FileNotFoundError:
        raise web.HTTPNotFound(text="the audio of this meeting is no longer kept") from None
    with handle:
        # What a meeting still recording adds later is not in this answer; a torn half sample
        # at the end is left out.
        samples = (await asyncio.to_thread(lambda: path.stat().st_size)) & ~1
        total = _HEADER_BYTES + samples
        span = _span(request, total)
        start, stop = span or (0, total)
        response = web.StreamResponse(
            status=206 if span else 200,
            headers={
                "Content-Type": "audio/wav",
                "Accept-Ranges": "bytes",
                "Cache-Control": "no-store",
            },
        )
        if span:
            response.headers["Content-Range"] = f"bytes {start}-{stop - 1}/{total}"
        response.content_length = stop - start
        await response.prepare(request)
        try:
            if start < _HEADER_BYTES:
                await response.write(wav_header(samples)[start:stop])
            offset = max(start, _HEADER_BYTES)
            await asyncio.to_thread(handle.seek, offset - _HEADER_BYTES)
            while offset < stop:
                chunk = await asyncio.to_thread(handle.read, min(_CHUNK, stop - offset))
                if not chunk:
                    break  # the file cannot shrink (retention unlinks it), but never spin
                await response.write(chunk)
                offset += len(chunk)
            await response.write_eof()
        except ConnectionResetError:
            pass  # a player asks for a range, then often drops it for another: not an error
        return response
