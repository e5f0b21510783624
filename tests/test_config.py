"""The config file: defaults, every key's checks, file errors, the env override, round trips."""

from __future__ import annotations

import dataclasses
import math
import os
import subprocess
import sys
import tomllib
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from appliance import config
from appliance.config import Config, ConfigError
from tools import reference

ROWS = config.describe()
SECTIONS = sorted({row[0] for row in ROWS})


def _attr(section: Any, key: str) -> Any:
    """A section's value for a TOML key (the key `from` is the attribute `from_`)."""
    for item in dataclasses.fields(section):
        if item.metadata.get("key", item.name) == key:
            return getattr(section, item.name)
    raise KeyError(key)


def _toml(value: Any) -> Any:
    """A default as tomllib would hand it over (tuples are TOML arrays: lists)."""
    return list(value) if isinstance(value, tuple) else value


def _parse_error(data: dict, source: str = "test.toml") -> str:
    with pytest.raises(ConfigError) as caught:
        config.parse(data, source)
    return str(caught.value)


def test_an_empty_document_is_every_default():
    assert config.parse({}) == Config()
    assert config.parse({name: {} for name in SECTIONS}) == Config()


@pytest.mark.parametrize(
    "section, key, default", [row[:3] for row in ROWS], ids=[f"{r[0]}.{r[1]}" for r in ROWS]
)
def test_every_key_accepts_its_default(section, key, default):
    parsed = config.parse({section: {key: _toml(default)}})
    assert _attr(getattr(parsed, section), key) == default
    assert parsed == Config()


@pytest.mark.parametrize(
    "section, key, value",
    [(s, k, v) for (s, k), v in reference.EXAMPLES.items()],
    ids=[f"{s}.{k}" for s, k in reference.EXAMPLES],
)
def test_every_section_takes_other_good_values(section, key, value):
    parsed = config.parse({section: {key: value}})
    expected = tuple(value) if isinstance(value, list) else value
    assert _attr(getattr(parsed, section), key) == expected
    assert parsed != Config()


@pytest.mark.parametrize(
    "section, key, value, expected",
    [
        ("audio", "device", 2, "2"),  # an index may be given as a number
        ("audio", "retry_max_s", 5, 5.0),  # an integer where a number is wanted
        ("room", "default_participants", [" a@example.com "], ("a@example.com",)),
        ("room", "language", "auto", "auto"),
        ("room", "timezone", "Europe/Stockholm", "Europe/Stockholm"),
        ("smtp", "security", "tls", "tls"),
        ("smtp", "port", 65535, 65535),
        ("vad", "pad_ms", 0, 0),
        ("vad", "threshold", 0.35, 0.35),
        ("vad", "max_segment_s", 30, 30.0),
        ("button", "pin", -1, -1),
        ("storage", "keep_audio_days", 0, 0.0),
    ],
)
def test_values_are_cleaned(section, key, value, expected):
    assert _attr(getattr(config.parse({section: {key: value}}), section), key) == expected


@pytest.mark.parametrize(
    "section, key, value, message",
    [
        # types
        ("room", "name", 5, "room.name: expected a string, got 5"),
        ("room", "name", ["a"], "room.name: expected a string"),
        ("vad", "pad_ms", "400", "vad.pad_ms: expected an integer, got '400'"),
        ("vad", "pad_ms", 400.0, "vad.pad_ms: expected an integer, got 400.0"),
        ("vad", "min_speech_ms", True, "vad.min_speech_ms: expected an integer, got True"),
        ("audio", "retry_max_s", "30", "audio.retry_max_s: expected a number, got '30'"),
        ("audio", "retry_max_s", math.nan, "audio.retry_max_s: expected a number, got nan"),
        ("audio", "retry_max_s", False, "audio.retry_max_s: expected a number, got False"),
        (
            "room",
            "default_participants",
            "a@example.com",
            "room.default_participants: expected a list of strings",
        ),
        (
            "room",
            "default_participants",
            ["a@example.com", 5],
            "room.default_participants: expected a list of strings",
        ),
        ("room", "name", "a\x00b", "room.name: contains a NUL character"),
        # ranges
        ("smtp", "port", 0, "smtp.port: 0 is out of range (1 to 65535)"),
        ("smtp", "port", 65536, "smtp.port: 65536 is out of range (1 to 65535)"),
        ("vad", "threshold", 0.99, "vad.threshold: 0.99 is out of range (0.05 to 0.95)"),
        ("vad", "max_segment_s", 30.5, "vad.max_segment_s: 30.5 is out of range (5.0 to 30.0)"),
        ("vad", "max_segment_s", math.inf, "vad.max_segment_s: inf is out of range"),
        ("button", "pin", -2, "button.pin: -2 is out of range (-1 to 53)"),
        (
            "delivery",
            "give_up_days",
            0,
            "delivery.give_up_days: 0.0 is out of range (0.01 to 365.0)",
        ),
        ("transcriber", "workers", 9, "transcriber.workers: 9 is out of range (1 to 8)"),
        # choices and kinds
        ("smtp", "security", "ssl", "smtp.security: 'ssl' is not one of starttls, tls, none"),
        ("smtp", "from", "appliance", "smtp.from: 'appliance' is not an email address"),
        ("smtp", "from", "a@b.c\nBcc: x@y.z", "is not an email address"),
        (
            "room",
            "default_participants",
            ["a@example.com", "bob"],
            "room.default_participants: 'bob' is not an email address",
        ),
        (
            "delivery",
            "allowed_domains",
            ["exa mple.com"],
            "delivery.allowed_domains: 'exa mple.com' is not a domain name",
        ),
        ("room", "language", "english", "room.language: 'english' is not a language code"),
        ("room", "language", "EN", "room.language: 'EN' is not a language code"),
        (
            "room",
            "timezone",
            "Mars/Olympus_Mons",
            "room.timezone: 'Mars/Olympus_Mons' is not an IANA",
        ),
        ("room", "timezone", "America", "room.timezone: 'America' is not an IANA"),
        ("room", "timezone", "x" * 300, "room.timezone: 'xxx"),
    ],
)
def test_bad_values_name_file_key_and_rule(section, key, value, message):
    text = _parse_error({section: {key: value}})
    assert text.startswith("test.toml: ") and message in text
    assert len(text.splitlines()) == 1


@pytest.mark.parametrize(
    "data, message",
    [
        ({"rooms": {}}, "test.toml: unknown section [rooms] (known: room, audio, vad,"),
        ({"room": 5}, "test.toml: [room] must be a table, got 5"),
        ({"room": {"nmae": "x"}}, "test.toml: room.nmae: unknown key (known: name, language,"),
        ({"smtp": {"from_": "a@example.com"}}, "test.toml: smtp.from_: unknown key"),
        ({"smtp": {"password": "hunter2"}}, "test.toml: smtp.password: unknown key"),
        ({"room": {"na\nme": 1}}, "test.toml: room.'na\\nme': unknown key"),
        ({"ro\nom": {}}, "test.toml: unknown section ['ro\\nom']"),
    ],
)
def test_unknown_sections_and_keys(data, message):
    text = _parse_error(data)
    assert text.startswith(message)
    assert len(text.splitlines()) == 1


def test_a_missing_file_means_defaults(tmp_path):
    loaded = config.load(tmp_path / "absent.toml")
    assert loaded == Config()
    assert loaded.source == f"{tmp_path / 'absent.toml'} (missing: defaults)"


@pytest.mark.parametrize(
    "content, message",
    [
        (b"[room\nname = 1", "not valid TOML"),
        (b'[room]\nname = "unterminated\n', "not valid TOML"),
        (b'[room]\nname = "caf\xe9"\n', "not UTF-8 text (byte 18)"),
        (b"[room]\nname = 5\n", "room.name: expected a string, got 5"),
    ],
)
def test_bad_files_are_one_line_naming_the_file(tmp_path, content, message):
    path = tmp_path / "config.toml"
    path.write_bytes(content)
    with pytest.raises(ConfigError) as caught:
        config.load(path)
    assert str(caught.value).startswith(f"{path}: ") and message in str(caught.value)
    assert "\n" not in str(caught.value)


def test_a_folder_is_not_a_readable_file(tmp_path):
    with pytest.raises(ConfigError, match=rf"^{tmp_path}: cannot read: Is a directory$"):
        config.load(tmp_path)


def test_an_unreadable_file_is_one_line(tmp_path):
    """Mode 000, read by a user other than root (root reads anything)."""
    path = tmp_path / "config.toml"
    path.write_text("[room]\n")
    path.chmod(0)
    code = (
        "import sys; from appliance import config\n"
        "try: config.load(sys.argv[1])\n"
        "except config.ConfigError as e: print(e)"
    )
    command = [sys.executable, "-c", code, str(path)]
    if os.geteuid() == 0:
        tmp_path.chmod(0o755)
        command = ["setpriv", "--reuid=nobody", "--regid=nogroup", "--clear-groups", *command]
    out = subprocess.run(
        command, capture_output=True, text=True, check=True, cwd=Path(__file__).parents[1]
    ).stdout
    assert out == f"{path}: cannot read: Permission denied\n"


def test_the_environment_names_the_default_file(tmp_path, monkeypatch):
    path = tmp_path / "elsewhere.toml"
    path.write_text('[room]\nname = "Annex"\n')
    monkeypatch.setenv(config.ENV_PATH, str(path))
    assert config.default_path() == path
    loaded = config.load()
    assert loaded.room.name == "Annex" and loaded.source == str(path)
    monkeypatch.delenv(config.ENV_PATH)
    assert config.default_path() == config.DEFAULT_PATH


def _everything_changed() -> Config:
    data: dict[str, dict[str, Any]] = {}
    for (section, key), value in reference.EXAMPLES.items():
        data.setdefault(section, {})[key] = value
    data["audio"]["retry_max_s"] = 12.5
    data["smtp"]["security"] = "tls"
    return config.parse(data, "changed")


@pytest.mark.parametrize("built", [Config(), _everything_changed()], ids=["defaults", "changed"])
def test_to_toml_round_trips(built):
    assert config.parse(tomllib.loads(built.to_toml(mask_secrets=False))) == built


def test_to_toml_masks_the_password_file():
    built = _everything_changed()
    text = built.to_toml()
    assert "smtp-password" not in text and 'password_file = "********"' in text
    again = config.parse(tomllib.loads(text))
    assert again.smtp.password_file == "********"
    assert dataclasses.replace(again, smtp=built.smtp) == built
    assert 'password_file = ""' in Config().to_toml()  # nothing to mask: shown empty


# --- fuzz ------------------------------------------------------------------------------------

_KEYS = {section: [row[1] for row in ROWS if row[0] == section] for section in SECTIONS}
_text = st.text(st.characters(blacklist_categories=("Cs",)), max_size=300)
_names = _text
_scalars = st.one_of(
    _text,
    st.integers(min_value=-(2**63), max_value=2**63 - 1),
    st.floats(),
    st.booleans(),
    st.datetimes(),
    st.dates(),
    st.times(),
    st.sampled_from(
        [
            "",
            "auto",
            "en",
            "tls",
            "a@example.com",
            "example.com",
            "Europe/Stockholm",
            "tiny.en",
            "q5_1",
        ]
    ),
)
_values = st.recursive(
    _scalars,
    lambda inner: st.one_of(st.lists(inner, max_size=4), st.dictionaries(_text, inner, max_size=3)),
    max_leaves=8,
)


@st.composite
def _documents(draw: Any) -> dict[str, Any]:
    document: dict[str, Any] = {}
    for name in draw(st.lists(st.one_of(st.sampled_from(SECTIONS), _names), max_size=4)):
        if draw(st.integers(0, 9)) == 0:
            document[name] = draw(_values)  # a section that is not a table
            continue
        keys = st.one_of(st.sampled_from(_KEYS.get(name) or ["x"]), _names)
        document[name] = draw(st.dictionaries(keys, _values, max_size=5))
    return document


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(_documents())
def test_parse_returns_a_config_or_one_line_naming_the_source(document):
    try:
        parsed = config.parse(document, "fuzz.toml")
    except ConfigError as err:
        text = str(err)
        assert text.startswith("fuzz.toml: ") and len(text.splitlines()) == 1
    else:
        assert isinstance(parsed, Config)
