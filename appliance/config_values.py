"""What each value of the config must be: its type, range, choices and kind of text."""

from __future__ import annotations

import dataclasses
import re
import zoneinfo
from dataclasses import field
from typing import Any

from appliance import languages
from appliance.addresses import address_problem
from appliance.errors import ApplianceError

_DOMAIN = re.compile(r"^[A-Za-z0-9](?:[A-Za-z0-9.-]*[A-Za-z0-9])?$")
# Whisper's prompt holds at most 224 tokens; 40 terms of 40 characters stay well inside it.
MAX_TERMS = 40
MAX_TERM = 40


class ConfigError(ApplianceError, ValueError):
    """The config file is unreadable or a key in it has a value we do not accept."""


def check(item: dataclasses.Field, value: Any, where: str) -> Any:
    """One value against its field's type and rules; the cleaned value or ConfigError."""
    rules = item.metadata
    default = item.default if item.default is not dataclasses.MISSING else item.default_factory()
    kind = rules.get("kind")
    if isinstance(default, tuple):
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise ConfigError(f"{where}: expected a list of strings, got {shown(value)}")
        cleaned = tuple(v.strip() for v in value)
        if len(cleaned) > rules.get("max_items", len(cleaned)):
            raise ConfigError(f"{where}: {len(cleaned)} items, at most {rules['max_items']}")
        for v in cleaned:
            _check_text(v, kind, where)
        return cleaned
    if isinstance(default, bool) or isinstance(value, bool):
        if isinstance(default, bool) and isinstance(value, bool):
            return value
        raise ConfigError(f"{where}: expected {_type_name(default)}, got {shown(value)}")
    if isinstance(default, int) and not isinstance(default, bool):
        if not isinstance(value, int):
            raise ConfigError(f"{where}: expected an integer, got {shown(value)}")
    elif isinstance(default, float):
        if not isinstance(value, (int, float)) or value != value:
            raise ConfigError(f"{where}: expected a number, got {shown(value)}")
        value = float(value)
    elif isinstance(default, str):
        if item.name == "device" and isinstance(value, int):
            value = str(value)  # a device may be given by index
        if not isinstance(value, str):
            raise ConfigError(f"{where}: expected a string, got {shown(value)}")
        if "\x00" in value:
            raise ConfigError(f"{where}: contains a NUL character")
        _check_text(value, kind, where)
    low, high = rules.get("min"), rules.get("max")
    if low is not None and not low <= value <= high:
        raise ConfigError(f"{where}: {value!r} is out of range ({low} to {high})")
    choices = rules.get("choices")
    if choices and value not in choices:
        raise ConfigError(f"{where}: {value!r} is not one of {', '.join(choices)}")
    return value


def _check_text(value: str, kind: str | None, where: str) -> None:
    if kind == "term" and not (0 < len(value) <= MAX_TERM and value.isprintable()):
        raise ConfigError(
            f"{where}: {value!r} is not a term of 1 to {MAX_TERM} printable characters"
        )
    if kind in ("address", "addresses") and (problem := address_problem(value)):
        raise ConfigError(f"{where}: {value!r} is not an email address we can send to: {problem}")
    if kind == "domains" and not _DOMAIN.match(value):
        raise ConfigError(f"{where}: {value!r} is not a domain name")
    if kind == "timezone" and value and not _is_zone(value):
        raise ConfigError(f'{where}: {value!r} is not an IANA time zone like "Europe/Stockholm"')
    if kind == "listen" and value and not _is_listen(value):
        raise ConfigError(f'{where}: {value!r} is not HOST:PORT like "0.0.0.0:8080"')
    if kind == "language" and not languages.known(value):
        raise ConfigError(f'{where}: {value!r} is not a language code like "en" or "auto"')


def _is_listen(value: str) -> bool:
    host, _, port = value.rpartition(":")
    return bool(host) and port.isdigit() and 0 < int(port) < 65536


def _is_zone(name: str) -> bool:
    try:
        zoneinfo.ZoneInfo(name)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError, OSError):  # "America" is a folder
        return False
    return True


def printable(name: str) -> str:
    """A section or key name as typed, quoted when it holds a line break or other control."""
    return name if name.isprintable() else repr(name)


def _type_name(default: Any) -> str:
    names = {bool: "true or false", int: "an integer", float: "a number", str: "a string"}
    return names.get(type(default), "a value")


def shown(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _spec(doc: str, **rules: Any) -> Any:
    """A field's documentation and checks (choices, min, max, kind) kept beside its default."""
    return {"doc": doc, **rules}


def setting(default: Any, doc: str, **rules: Any) -> Any:
    """A config field: its default, and its documentation and checks as metadata."""
    if isinstance(default, (list, tuple)):
        return field(default_factory=lambda: tuple(default), metadata=_spec(doc, **rules))
    return field(default=default, metadata=_spec(doc, **rules))


def toml_value(value: Any) -> str:
    """A value as TOML: booleans, numbers, strings and lists of them."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(toml_value(v) for v in value) + "]"
    return '"' + str(value).replace("\\", "\\\\").replace('"', '\\"') + '"'
