"""The OpenAPI 3.1 description of the HTTP API, served at /api/v1/openapi.json."""

from __future__ import annotations

from typing import Any

from appliance import __version__

_ID = {"name": "id", "in": "path", "required": True, "schema": {"type": "string"}}
_UPLOAD_QUERY = [
    {
        "name": "id",
        "in": "query",
        "required": True,
        "description": "The client's own id: letters, digits and -_. at most 64.",
        "schema": {"type": "string", "pattern": "^[A-Za-z0-9._-]{1,64}$"},
    },
    {
        "name": "language",
        "in": "query",
        "description": 'Spoken language, e.g. "en", or "auto"; default: the model\'s.',
        "schema": {"type": "string"},
    },
    {
        "name": "receiver",
        "in": "query",
        "description": "A token name that may also read the result (repeat for more).",
        "schema": {"type": "array", "items": {"type": "string"}},
        "explode": True,
    },
]
_ERROR = {
    "description": "One line saying why",
    "content": {
        "application/json": {
            "schema": {"type": "object", "properties": {"error": {"type": "string"}}}
        }
    },
}
_SEGMENT = {
    "type": "object",
    "properties": {
        "start_s": {"type": "number"},
        "end_s": {"type": "number"},
        "text": {"type": "string"},
    },
}
_TRANSCRIPTION = {
    "type": "object",
    "properties": {
        "id": {"type": "string"},
        "owner": {"type": "string"},
        "receivers": {"type": "array", "items": {"type": "string"}},
        "status": {"enum": ["queued", "transcribing", "done", "failed"]},
        "error": {"type": "string"},
        "language": {"type": "string"},
        "duration_s": {"type": "number"},
        "created_at": {"type": "number", "description": "Unix seconds"},
        "segments": {"type": "array", "items": _SEGMENT},
        "text": {"type": "string"},
    },
}


def _json(description: str, schema: dict[str, Any]) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def document() -> dict[str, Any]:
    """The whole description."""
    accepted = _json(
        "Queued (or, for an id already posted, its current status)",
        {"type": "object", "properties": {"id": {"type": "string"}, "status": {"type": "string"}}},
    )
    return {
        "openapi": "3.1.0",
        "info": {"title": "meeting-appliance transcription API", "version": __version__},
        "components": {
            "securitySchemes": {"token": {"type": "http", "scheme": "bearer"}},
            "schemas": {"Transcription": _TRANSCRIPTION},
        },
        "security": [{"token": []}],
        "paths": {
            "/api/v1/transcriptions": {
                "post": {
                    "summary": "Queue a transcription of the body",
                    "parameters": _UPLOAD_QUERY,
                    "requestBody": {
                        "required": True,
                        "description": "Raw PCM16 (audio/L16; rate=R; channels=C; little-endian "
                        "unless endianness=big-endian) or an audio file (WAV, FLAC, OGG, MP3, "
                        "anything ffmpeg reads).",
                        "content": {"audio/L16": {}, "application/octet-stream": {}},
                    },
                    "responses": {
                        "202": accepted,
                        "400": _ERROR,
                        "401": _ERROR,
                        "413": _ERROR,
                        "429": _ERROR,
                        "507": _ERROR,
                    },
                },
                "get": {
                    "summary": "The caller's transcriptions (as owner or receiver), no text",
                    "responses": {
                        "200": _json(
                            "The list",
                            {
                                "type": "object",
                                "properties": {
                                    "transcriptions": {"type": "array", "items": _TRANSCRIPTION}
                                },
                            },
                        ),
                        "401": _ERROR,
                    },
                },
            },
            "/api/v1/transcriptions/{id}": {
                "get": {
                    "summary": "One transcription; deleted once the owner and every receiver "
                    "have fetched it done",
                    "parameters": [
                        _ID,
                        {
                            "name": "format",
                            "in": "query",
                            "schema": {"enum": ["json", "txt", "srt", "vtt"], "default": "json"},
                        },
                    ],
                    "responses": {
                        "200": _json("The transcription", _TRANSCRIPTION),
                        "404": _ERROR,
                        "409": _json("txt, srt or vtt asked before it is done", _TRANSCRIPTION),
                    },
                },
                "delete": {
                    "summary": "Delete it (owner only)",
                    "parameters": [_ID],
                    "responses": {"204": {"description": "Deleted"}, "404": _ERROR},
                },
            },
            "/api/v1/stream": {
                "get": {
                    "summary": "WebSocket: binary PCM16 mono 16 kHz in, then the text 'end'; "
                    'JSON {"type": "segment", "start_s", "end_s", "text"} out as windows '
                    'finish, then {"type": "done", "id"}',
                    "parameters": _UPLOAD_QUERY,
                    "responses": {"101": {"description": "Switching to WebSocket"}},
                }
            },
            "/api/v1/status": {
                "get": {
                    "summary": "The daemon's state, as `appliance status --json`",
                    "responses": {"200": _json("State", {"type": "object"}), "401": _ERROR},
                }
            },
            "/api/v1/openapi.json": {
                "get": {
                    "summary": "This description",
                    "security": [],
                    "responses": {"200": {"description": "OpenAPI 3.1"}},
                }
            },
        },
    }
