"""What the HTTP API accepts from a request: ids, languages, receivers, body types, tokens.

Pure functions of the request's text, each either returning a checked value or raising
BadRequest with one line that says what was wrong, so no input can make a handler fail.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from appliance.errors import ApplianceError, UsageError
from appliance.service.decoding import RawFormat
from appliance.service.tokens import check_name

_ID = re.compile(r"^[A-Za-z0-9._-]{1,64}$")
_LANGUAGE = re.compile(r"^(?:[a-z]{2,3}|auto)$")
_TOKEN = re.compile(r"^[A-Za-z0-9._~+/=-]{1,256}$")
_RAW_TYPE = "audio/l16"
MAX_RECEIVERS = 16
FORMATS = ("json", "txt", "srt", "vtt")


class BadRequest(ApplianceError, ValueError):
    """A request the API does not accept; the message is the one-line reason sent back."""


@dataclass(frozen=True)
class Upload:
    """The query of a POST or a stream: the client's id, the language, who may read it."""

    id: str
    language: str | None
    receivers: tuple[str, ...]


def _one(query: Mapping[str, Sequence[str]], key: str) -> str | None:
    values = query.get(key, ())
    if len(values) > 1:
        raise BadRequest(f"{key} given {len(values)} times")
    return values[0] if values else None


def _shown(value: str) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


def parse_id(value: str | None) -> str:
    """The client's own id: letters, digits and -_. at most 64."""
    if value is None:
        raise BadRequest("id is missing")
    if not _ID.fullmatch(value) or value in (".", ".."):
        raise BadRequest(f"id {_shown(value)} must be 1 to 64 letters, digits or -_.")
    return value


def parse_upload(query: Mapping[str, Sequence[str]]) -> Upload:
    """id, language and receivers of a POST or a stream; unknown parameters are refused."""
    unknown = sorted(set(query) - {"id", "language", "receiver"})
    if unknown:
        raise BadRequest(f"unknown parameter {_shown(unknown[0])}")
    language = _one(query, "language")
    if language is not None and not _LANGUAGE.fullmatch(language):
        raise BadRequest(f'language {_shown(language)} is not a code like "en" or "auto"')
    receivers = tuple(dict.fromkeys(query.get("receiver", ())))
    if len(receivers) > MAX_RECEIVERS:
        raise BadRequest(f"{len(receivers)} receivers, at most {MAX_RECEIVERS}")
    for name in receivers:
        try:
            check_name(name)
        except UsageError as err:
            raise BadRequest(f"receiver {_shown(name)} is not a token name") from err
    return Upload(parse_id(_one(query, "id")), language, receivers)


def parse_format(query: Mapping[str, Sequence[str]]) -> str:
    """The ?format= of a GET: json (default), txt, srt or vtt."""
    unknown = sorted(set(query) - {"format"})
    if unknown:
        raise BadRequest(f"unknown parameter {_shown(unknown[0])}")
    fmt = _one(query, "format") or "json"
    if fmt not in FORMATS:
        raise BadRequest(f"format {_shown(fmt)} is not one of {', '.join(FORMATS)}")
    return fmt


def parse_content_type(header: str | None) -> RawFormat | None:
    """RawFormat for `audio/L16; rate=R; channels=C` (little-endian unless
    `endianness=big-endian`), None for anything else: a file whose bytes tell its type."""
    if not header:
        return None
    kind, *params = header.split(";")
    if kind.strip().lower() != _RAW_TYPE:
        return None
    values: dict[str, str] = {}
    for param in params:
        key, equals, value = param.partition("=")
        if not equals:
            raise BadRequest(f"Content-Type parameter {_shown(param.strip())} has no value")
        values[key.strip().lower()] = value.strip().strip('"').lower()
    rate = _number(values.pop("rate", "16000"), "rate", 1000, 384000)
    channels = _number(values.pop("channels", "1"), "channels", 1, 32)
    order = values.pop("endianness", "little-endian")
    if order not in ("little-endian", "big-endian"):
        raise BadRequest(f"endianness {_shown(order)} is not little-endian or big-endian")
    if values:
        raise BadRequest(f"unknown Content-Type parameter {_shown(sorted(values)[0])}")
    return RawFormat(rate, channels, order == "big-endian")


def _number(text: str, name: str, low: int, high: int) -> int:
    if not text.isascii() or not text.isdigit() or not low <= int(text) <= high:
        raise BadRequest(f"{name} {_shown(text)} is not a whole number from {low} to {high}")
    return int(text)


def parse_bearer(header: str | None) -> str | None:
    """The token of `Authorization: Bearer TOKEN`, or None if there is no well-formed one."""
    if not header:
        return None
    scheme, _, token = header.strip().partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer" or not _TOKEN.fullmatch(token):
        return None
    return token
