"""The one check of an email address, for the config, `start --to` and delivery alike."""

from __future__ import annotations

import re

_ATEXT = r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+"
_LOCAL = re.compile(rf"{_ATEXT}(?:\.{_ATEXT})*")
_LABEL = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?")


def address_problem(address: str) -> str:
    """Why an address cannot be sent to, or "" for a plain ASCII user@domain.

    Nothing that could add a header or a second address passes: no spaces, angle brackets,
    commas, quotes or encoded words.
    """
    if not address:
        return "empty address"
    if not address.isascii():
        return "non-ASCII addresses are not supported"
    if len(address) > 254:
        return "longer than 254 characters"
    local, at, domain = address.rpartition("@")
    if not at or not local:
        return "not an email address (no user@domain)"
    if "=?" in address:
        return "looks like an encoded word (=?...?=)"
    if len(local) > 64 or not _LOCAL.fullmatch(local):
        return "the part before @ has characters or dots an address may not have"
    if not all(_LABEL.fullmatch(label) for label in domain.split(".")):
        return "the part after @ is not a host name"
    return ""
