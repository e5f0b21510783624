"""The API's request parsing, fuzzed: any query, Content-Type or Authorization header either
parses into checked values or is one BadRequest line, never another exception."""

from __future__ import annotations

import re

import pytest
from hypothesis import given
from hypothesis import strategies as st

from appliance.service.decoding import RawFormat
from appliance.service.parsing import (
    MAX_RECEIVERS,
    BadRequest,
    parse_bearer,
    parse_content_type,
    parse_format,
    parse_upload,
)

KEYS = st.sampled_from(["id", "language", "receiver", "format", "x", ""]) | st.text(max_size=8)
QUERIES = st.dictionaries(KEYS, st.lists(st.text(max_size=80), min_size=1, max_size=20))
_ID = re.compile(r"^[A-Za-z0-9._-]{1,64}$")


def _one_line(err: BadRequest) -> None:
    text = str(err)
    assert text and "\n" not in text and len(text) < 200


@given(QUERIES)
def test_upload_query_parses_or_is_one_line(query):
    try:
        upload = parse_upload(query)
    except BadRequest as err:
        _one_line(err)
        return
    assert _ID.fullmatch(upload.id) and upload.id not in (".", "..")
    assert set(query) <= {"id", "language", "receiver"}
    assert len(upload.receivers) <= MAX_RECEIVERS
    assert all(r.isascii() and r.isprintable() and ";" not in r for r in upload.receivers)


@given(QUERIES)
def test_format_query_parses_or_is_one_line(query):
    try:
        assert parse_format(query) in ("json", "txt", "srt", "vtt")
    except BadRequest as err:
        _one_line(err)


@given(
    st.one_of(
        st.none(),
        st.text(max_size=120),
        st.builds(
            lambda params: "audio/L16" + "".join(f"; {k}={v}" for k, v in params),
            st.lists(
                st.tuples(
                    st.sampled_from(["rate", "channels", "endianness", "x", "RATE"]),
                    st.text(max_size=12),
                ),
                max_size=4,
            ),
        ),
    )
)
def test_content_type_parses_or_is_one_line(header):
    try:
        raw = parse_content_type(header)
    except BadRequest as err:
        _one_line(err)
        return
    if raw is not None:
        assert 1000 <= raw.rate <= 384000 and 1 <= raw.channels <= 32


@given(st.one_of(st.none(), st.text(max_size=300)))
def test_bearer_is_a_token_or_none(header):
    token = parse_bearer(header)
    assert token is None or (token.isascii() and " " not in token and 0 < len(token) <= 256)


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        ("audio/L16", RawFormat(16000, 1, False)),
        ("audio/l16; rate=8000; channels=2", RawFormat(8000, 2, False)),
        ('AUDIO/L16; rate="44100"; endianness=big-endian', RawFormat(44100, 1, True)),
        ("audio/wav", None),
        ("application/octet-stream", None),
        (None, None),
    ],
)
def test_content_types(header, expected):
    assert parse_content_type(header) == expected


@pytest.mark.parametrize(
    "query",
    [{"id": ["a\n"]}, {"id": ["a"], "language": ["en\n"]}, {"id": ["a"], "receiver": ["bo\n"]}],
)
def test_a_trailing_line_break_is_refused(query):
    with pytest.raises(BadRequest):
        parse_upload(query)


@pytest.mark.parametrize(
    ("header", "token"),
    [("Bearer abc-_DEF", "abc-_DEF"), ("bearer  abc ", "abc"), ("Basic abc", None), ("", None)],
)
def test_bearer(header, token):
    assert parse_bearer(header) == token
