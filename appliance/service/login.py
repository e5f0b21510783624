"""The web page's login: one admin password (scrypt), sessions, CSRF tokens, a rate limit."""

from __future__ import annotations

import argparse
import getpass
import hashlib
import hmac
import secrets
import sys
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from appliance import config as config_file
from appliance.errors import UsageError
from appliance.service.schema import migrate
from appliance.store import Database

_STEPS = (
    """CREATE TABLE web_password (
        id INTEGER PRIMARY KEY CHECK (id = 1),
        hash BLOB NOT NULL,
        salt BLOB NOT NULL,
        n INTEGER NOT NULL,
        r INTEGER NOT NULL,
        p INTEGER NOT NULL,
        set_at REAL NOT NULL
    )""",
)
# scrypt at n=2**14, r=8: 16 MB and about 50 ms per try here, what OWASP suggests as a floor; a
# login is rare, a guesser pays it on every try.
_N, _R, _P = 2**14, 8, 1
MIN_LENGTH = 10
SESSION_S = 12 * 3600.0
# At most this many failed logins from one address in the window, then 429 until it passes.
MAX_FAILURES = 5
FAILURE_WINDOW_S = 300.0


def _hash(password: str, salt: bytes, n: int, r: int, p: int) -> bytes:
    return hashlib.scrypt(password.encode("utf-8"), salt=salt, n=n, r=r, p=p, maxmem=64 << 20)


class Password:
    """The admin password in the daemon's database, as an scrypt hash."""

    def __init__(self, db: Database) -> None:
        self.db = db
        migrate(db, "web_password", _STEPS)

    def set(self, password: str) -> None:
        """Replace the password; UsageError if it is too short."""
        if len(password) < MIN_LENGTH:
            raise UsageError(f"the password needs at least {MIN_LENGTH} characters")
        salt = secrets.token_bytes(16)
        self.db.db.execute(
            "INSERT OR REPLACE INTO web_password (id, hash, salt, n, r, p, set_at) "
            "VALUES (1, ?, ?, ?, ?, ?, ?)",
            (_hash(password, salt, _N, _R, _P), salt, _N, _R, _P, time.time()),
        )

    def check(self, password: str) -> bool:
        """Whether password is the one set (False if none is)."""
        row = self.db.db.execute("SELECT hash, salt, n, r, p FROM web_password").fetchone()
        if row is None:
            return False
        stored, salt, n, r, p = row
        return hmac.compare_digest(stored, _hash(password, salt, n, r, p))


@dataclass
class Session:
    """One logged-in browser: its cookie value, its CSRF token and when it ends."""

    id: str
    csrf: str
    expires: float


@dataclass
class Sessions:
    """Logged-in browsers, in memory: a restart logs everyone out, which is acceptable."""

    clock: Callable[[], float] = time.monotonic
    _open: dict[str, Session] = field(default_factory=dict)
    _failures: dict[str, deque[float]] = field(default_factory=dict)

    def start(self) -> Session:
        """A new session."""
        session = Session(
            secrets.token_urlsafe(32), secrets.token_urlsafe(32), self.clock() + SESSION_S
        )
        self._open[session.id] = session
        return session

    def get(self, session_id: str | None) -> Session | None:
        """The session of a cookie, if it is open."""
        session = self._open.get(session_id or "")
        if session is not None and session.expires < self.clock():
            del self._open[session.id]
            return None
        return session

    def end(self, session: Session) -> None:
        """Log out."""
        self._open.pop(session.id, None)

    def allowed(self, client: str) -> bool:
        """Whether client may try a password now."""
        recent = self._failures.get(client)
        while recent and recent[0] < self.clock() - FAILURE_WINDOW_S:
            recent.popleft()
        return not recent or len(recent) < MAX_FAILURES

    def failed(self, client: str) -> None:
        """Count a wrong password from client."""
        self._failures.setdefault(client, deque()).append(self.clock())


def csrf_ok(expected: str, given: Any) -> bool:
    """A form's csrf_token against the session's, in constant time."""
    return isinstance(given, str) and hmac.compare_digest(expected.encode(), given.encode())


def _read_password() -> str:
    if sys.stdin.isatty():
        first = getpass.getpass("new password: ")
        if getpass.getpass("again: ") != first:
            raise UsageError("the two passwords differ")
        return first
    return sys.stdin.readline().rstrip("\r\n")


def _cmd_set_password(args: argparse.Namespace) -> int:
    config = config_file.load(Path(args.config) if args.config else None)
    password = _read_password()
    db = Database(config.database)
    try:
        Password(db).set(password)
    finally:
        db.close()
    print("password set", file=sys.stderr)
    return 0


def add_commands(commands: Any) -> None:
    """Register `appliance web set-password` on the top-level subparsers."""
    web = commands.add_parser("web", help="the web page's login")
    actions = web.add_subparsers(dest="action", required=True, metavar="ACTION")
    setting = actions.add_parser(
        "set-password",
        help="set the web page's password: read from standard input (first line), or asked "
        "twice on a terminal; stored as an scrypt hash",
    )
    setting.set_defaults(func=_cmd_set_password)
