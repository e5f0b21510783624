"""docs/configuration.md and deploy/config.example.toml, generated from `config.describe()`."""

from __future__ import annotations

import argparse
import dataclasses
import sys
import textwrap
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from appliance import config
from appliance.config_values import toml_value

MARKDOWN = Path("docs/configuration.md")
EXAMPLE = Path("deploy/config.example.toml")
_WIDTH = 99
_COMMAND = (
    "python -m tools.reference --markdown docs/configuration.md "
    "--example deploy/config.example.toml"
)

# Example values for keys whose default is empty or says nothing; every other key's example
# is its default. tests/test_config.py checks that each one parses and names a real key.
EXAMPLES: dict[tuple[str, str], Any] = {
    ("room", "name"): "Boardroom, 3rd floor",
    ("room", "language"): "sv",
    ("room", "default_participants"): ["team@example.com", "minutes@example.com"],
    ("room", "calendar"): "/etc/meeting-appliance/boardroom.ics",
    ("room", "timezone"): "Europe/Stockholm",
    ("room", "vocabulary"): ["Ebenezer Ademesoye", "Kubernetes", "OKR"],
    ("audio", "device"): "USB",
    ("transcriber", "model"): "base",
    ("transcriber", "models_dir"): "/var/lib/meeting-appliance/models",
    ("smtp", "host"): "smtp.example.com",
    ("smtp", "username"): "appliance@example.com",
    ("smtp", "password_file"): "smtp-password",
    ("smtp", "from"): "boardroom@example.com",
    ("delivery", "allowed_domains"): ["example.com"],
    ("button", "pin"): 17,
    ("button", "led_pin"): 27,
    ("web", "listen"): "0.0.0.0:8080",
    ("web", "certificate"): "/etc/meeting-appliance/web-cert.pem",
    ("web", "key"): "/etc/meeting-appliance/web-key.pem",
}

_UNITS = (
    ("_ms", "milliseconds"),
    ("_s", "seconds"),
    ("_hours", "hours"),
    ("_days", "days"),
    ("_mb", "megabytes"),
)
_KINDS = {
    "language": 'an ISO 639-1 code ("en", "sv", ...) or "auto"',
    "address": "an email address (user@domain)",
    "addresses": "a list of email addresses",
    "domains": "a list of domain names",
    "timezone": 'an IANA time zone name ("Europe/Stockholm") or empty',
    "term": "a list of names or terms, each 1 to 40 printable characters",
    "listen": 'HOST:PORT ("0.0.0.0:8080", "[::]:8080") or empty',
}

_INTRO = """\
The appliance reads one TOML file: `/etc/meeting-appliance/config.toml`, or the file named by
`$MEETING_APPLIANCE_CONFIG`, or `--config PATH` on any `appliance` command.

- A missing file means every default; a missing key keeps its default.
- An unknown section or key, a wrong type or a value out of range is an error that names the
  file and the key path: the daemon does not start on a typo.
- `appliance check-config` checks the file and what it points at (the model, the microphone,
  the password file, the state folder, the calendar) and prints one line per problem.
- `appliance run --dump-config` prints the effective config with the password file masked.
- `deploy/install.sh` writes a config with every key below commented out at its default.
"""

_SECRETS = """\
## The SMTP password

The password never goes in `config.toml`. `[smtp] password_file` names either a file (an
absolute path, readable by the service user and by no one else) or, as a bare name, a systemd
credential: the unit has `LoadCredential=smtp-password:/etc/meeting-appliance/smtp-password`,
so with `password_file = "smtp-password"` systemd copies that root-only (0600) file into the
service's `$CREDENTIALS_DIRECTORY` at start. The installer creates it empty; put the password
in it (one line) and `systemctl restart meeting-appliance`.
"""


def unit(key: str) -> str:
    """The unit a key's name carries (`_ms`, `_s`, `_days`), or an empty string."""
    for suffix, name in _UNITS:
        if key.endswith(suffix):
            return name
    return ""


def type_name(default: Any) -> str:
    """The TOML type a key takes, from its default."""
    if isinstance(default, tuple):
        return "list of strings"
    return {bool: "boolean", int: "integer", float: "number", str: "string"}[type(default)]


def allowed(default: Any, rules: dict[str, Any]) -> str:
    """The values a key accepts, in words."""
    if "choices" in rules:
        return "one of " + ", ".join(f'"{c}"' for c in rules["choices"])
    if "min" in rules:
        return f"{_number(rules['min'])} to {_number(rules['max'])}"
    if "kind" in rules:
        return _KINDS.get(rules["kind"], f"a valid {rules['kind']}")
    return f"any {type_name(default)}"


def example(section: str, key: str, default: Any) -> Any:
    """A value to show for a key: a hand-picked one for empty defaults, else the default."""
    return EXAMPLES.get((section, key), default)


def _number(value: float) -> str:
    return format(value, "g")  # 1.0 -> "1", 0.01 -> "0.01"


def _sections() -> list[tuple[str, str, list[tuple[str, Any, str, dict[str, Any]]]]]:
    """(section, its docstring, [(key, default, doc, rules)]) in the config's own order."""
    docs = {
        f.name: (f.default_factory.__doc__ or "").strip()
        for f in dataclasses.fields(config.Config)
        if f.name != "source"
    }
    grouped: dict[str, list[tuple[str, Any, str, dict[str, Any]]]] = {}
    for section, key, default, doc, rules in config.describe():
        grouped.setdefault(section, []).append((key, default, doc, rules))
    return [(name, docs.get(name, ""), keys) for name, keys in grouped.items()]


def _notes(default: Any, rules: dict[str, Any]) -> str:
    text = allowed(default, rules)
    if rules.get("secret"):
        text += " (masked by --dump-config)"
    return text


def markdown() -> str:
    """The configuration reference as Markdown."""
    out = [
        "# Configuration",
        "",
        f"<!-- Generated from appliance/config.py by `{_COMMAND}`; do not edit. -->",
        "",
        _INTRO,
    ]
    for section, doc, keys in _sections():
        out += [
            f"## [{section}]",
            "",
            doc,
            "",
            "| key | type | default | unit | allowed values | description |",
            "|---|---|---|---|---|---|",
        ]
        for key, default, text, rules in keys:
            cells = [
                f"`{key}`",
                type_name(default),
                f"`{toml_value(default)}`",
                unit(key) or "",
                _notes(default, rules),
                text,
            ]
            out.append("| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |")
        out += ["", "Example:", "", "```toml", f"[{section}]"]
        out += [
            f"{key} = {toml_value(example(section, key, default))}"
            for key, default, _text, _rules in keys
        ]
        out += ["```", ""]
    out.append(_SECRETS)
    return "\n".join(out).rstrip("\n") + "\n"


def example_config() -> str:
    """The installed config.toml: every key commented out at its default, with its doc."""
    out = [
        "# meeting-appliance: /etc/meeting-appliance/config.toml",
        "#",
        "# Every key is listed commented out at its default: remove the leading '#' of a",
        "# key to change it. A missing key keeps its default; an unknown key is an error.",
        "# `appliance check-config` checks this file; docs/configuration.md describes it.",
        "# Generated from appliance/config.py by `python -m tools.reference`.",
        "",
    ]
    for section, doc, keys in _sections():
        out += [f"# {doc}", f"[{section}]", ""]
        for key, default, text, rules in keys:
            notes = type_name(default)
            if rules.keys() & {"choices", "min", "kind"}:
                notes += ", " + allowed(default, rules)
            if rules.get("secret"):
                notes += ", masked by --dump-config"
            shown = example(section, key, default)
            if shown != default:
                notes += f"; e.g. {toml_value(shown)}"
            words = f"{text} ({notes})"
            out += textwrap.wrap(
                words,
                _WIDTH,
                initial_indent="# ",
                subsequent_indent="# ",
                break_long_words=False,
                break_on_hyphens=False,
            )
            out += [f"#{key} = {toml_value(default)}", ""]
    return "\n".join(out).rstrip("\n") + "\n"


def _write_or_check(path: Path, text: str, check: bool) -> bool:
    """Write text to path, or with check only report whether path already holds it."""
    if check:
        current = path.read_text(encoding="utf-8") if path.is_file() else None
        if current != text:
            print(f"{path}: out of date; run `{_COMMAND}`", file=sys.stderr)
            return False
        return True
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    print(f"wrote {path}", file=sys.stderr)
    return True


def main(argv: Sequence[str] | None = None) -> int:
    """Write (or with --check compare) the reference and the example config."""
    parser = argparse.ArgumentParser(prog="python -m tools.reference", description=__doc__)
    parser.add_argument("--markdown", type=Path, metavar="PATH", help="write the Markdown here")
    parser.add_argument("--example", type=Path, metavar="PATH", help="write the example here")
    parser.add_argument(
        "--check",
        action="store_true",
        help="write nothing; exit 1 if a file differs from what it would be",
    )
    args = parser.parse_args(argv)
    if not args.markdown and not args.example:
        parser.error("give --markdown PATH, --example PATH or both")
    ok = True
    if args.markdown:
        ok &= _write_or_check(args.markdown, markdown(), args.check)
    if args.example:
        ok &= _write_or_check(args.example, example_config(), args.check)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
