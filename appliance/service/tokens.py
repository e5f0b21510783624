"""API tokens: random, shown once, stored only as a hash, checked in constant time."""

from __future__ import annotations

import argparse
import datetime
import hashlib
import hmac
import re
import secrets
import time
from pathlib import Path
from typing import Any

from appliance import config as config_file
from appliance.errors import UsageError
from appliance.service.schema import migrate
from appliance.store import Database

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.@-]{0,63}$")
_STEPS = (
    """CREATE TABLE api_tokens (
        name TEXT PRIMARY KEY,
        hash BLOB NOT NULL,
        created_at REAL NOT NULL
    )""",
)


def check_name(name: str) -> str:
    """A token's name: letters, digits and `_.@-`, at most 64; UsageError otherwise."""
    if not _NAME.fullmatch(name):
        raise UsageError(
            f"token name {name!r} must be 1 to 64 letters, digits or _.@- (starting with a "
            "letter or digit)"
        )
    return name


def _digest(token: str) -> bytes:
    # A token carries 256 random bits, so a plain SHA-256 is enough: there is nothing to guess
    # that a slow KDF would protect, and each request would pay for one.
    return hashlib.sha256(token.encode("utf-8", "surrogateescape")).digest()


class Tokens:
    """The api_tokens table of the daemon's database."""

    def __init__(self, db: Database) -> None:
        self.db = db
        migrate(db, "api_tokens", _STEPS)

    def add(self, name: str) -> str:
        """A new token for name, returned once; UsageError if name already has one."""
        check_name(name)
        token = secrets.token_urlsafe(32)
        with self.db.tx() as tx:
            if tx.execute("SELECT 1 FROM api_tokens WHERE name = ?", (name,)).fetchone():
                raise UsageError(f"a token named {name!r} exists; revoke it first")
            tx.execute(
                "INSERT INTO api_tokens (name, hash, created_at) VALUES (?, ?, ?)",
                (name, _digest(token), time.time()),
            )
        return token

    def names(self) -> list[tuple[str, float]]:
        """Every token's name and creation time, by name."""
        return self.db.db.execute(
            "SELECT name, created_at FROM api_tokens ORDER BY name"
        ).fetchall()

    def revoke(self, name: str) -> None:
        """Delete name's token; UsageError if there is none."""
        if not self.db.db.execute("DELETE FROM api_tokens WHERE name = ?", (name,)).rowcount:
            raise UsageError(f"no token named {name!r}")

    def owner(self, token: str) -> str | None:
        """The name a presented token belongs to, or None.

        Every stored hash is compared, with hmac.compare_digest, so the time taken tells
        nothing about how close a guess came or which entry it was near.
        """
        presented = _digest(token)
        found = None
        for name, stored in self.db.db.execute("SELECT name, hash FROM api_tokens"):
            if hmac.compare_digest(presented, stored):
                found = name
        return found


def _open(args: argparse.Namespace) -> Tokens:
    config = config_file.load(Path(args.config) if args.config else None)
    return Tokens(Database(config.database))


def _cmd_add(args: argparse.Namespace) -> int:
    tokens = _open(args)
    try:
        print(tokens.add(args.name))
    finally:
        tokens.db.close()
    return 0


def _cmd_list(args: argparse.Namespace) -> int:
    tokens = _open(args)
    try:
        for name, created in tokens.names():
            when = datetime.datetime.fromtimestamp(created).strftime("%Y-%m-%d %H:%M")
            print(f"{name}  {when}")
    finally:
        tokens.db.close()
    return 0


def _cmd_revoke(args: argparse.Namespace) -> int:
    tokens = _open(args)
    try:
        tokens.revoke(args.name)
    finally:
        tokens.db.close()
    return 0


def add_commands(commands: Any) -> None:
    """Register `appliance tokens add|list|revoke` on the top-level subparsers."""
    tokens = commands.add_parser("tokens", help="make, list and revoke HTTP API tokens")
    actions = tokens.add_subparsers(dest="action", required=True, metavar="ACTION")
    add = actions.add_parser(
        "add", help="make a token for NAME and print it once (only its hash is kept)"
    )
    add.add_argument("name", help="who the token is for (also the owner name in the API)")
    add.set_defaults(func=_cmd_add)
    listing = actions.add_parser("list", help="list token names and when each was made")
    listing.set_defaults(func=_cmd_list)
    revoke = actions.add_parser("revoke", help="delete NAME's token; its requests fail at once")
    revoke.add_argument("name", help="the token's name")
    revoke.set_defaults(func=_cmd_revoke)
