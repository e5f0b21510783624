"""The control socket: one JSON request line in, one JSON reply line out, over a unix socket."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import socket
import stat
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from appliance.errors import ApplianceError, UsageError

_LOGGER = logging.getLogger(__name__)

MAX_REQUEST_BYTES = 64 * 1024
SOCKET_MODE = 0o660

# The one command table: each command's arguments and their types; anything else in a request
# is refused. The daemon's Meetings serves each with the async method of the same name.
COMMANDS: dict[str, dict[str, type | tuple[type, ...]]] = {
    "start": {"title": str, "to": list, "language": str, "from_file": str, "speed": float},
    "stop": {"wait": bool},
    "cancel": {},
    "status": {},
    "meetings": {},
    "show": {"id": int, "format": str},
    "retry": {},
    "resend": {"id": int},
    "delete": {"id": int},
}
_MAX_INT = 2**63 - 1  # SQLite's integers


class ControlError(ApplianceError, ConnectionError):
    """The daemon cannot be reached, or answered that a request failed."""


class ProtocolError(ApplianceError, ValueError):
    """A request on the control socket is not one we accept."""


@dataclass(frozen=True)
class Request:
    """One parsed control request."""

    command: str
    args: dict[str, Any]


def parse_request(line: bytes) -> Request:
    """Check one request line; ProtocolError with a one-line reason for anything malformed."""
    if len(line) > MAX_REQUEST_BYTES:
        raise ProtocolError(f"request longer than {MAX_REQUEST_BYTES} bytes")
    try:
        data = json.loads(line.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as err:
        raise ProtocolError(f"request is not a JSON line: {str(err).splitlines()[0]}") from err
    if not isinstance(data, dict) or not isinstance(data.get("command"), str):
        raise ProtocolError('request must be a JSON object with a "command" string')
    command = data.pop("command")
    allowed = COMMANDS.get(command)
    if allowed is None:
        raise ProtocolError(f"unknown command {command[:40]!r} (known: {', '.join(COMMANDS)})")
    for key, value in data.items():
        kind = allowed.get(key)
        if kind is None:
            raise ProtocolError(f"{command}: unknown argument {key[:40]!r}")
        accepted = (int, float) if kind is float else kind  # JSON has one number type
        if value is not None and (
            not isinstance(value, accepted) or (isinstance(value, bool) and kind is not bool)
        ):
            raise ProtocolError(f"{command}: {key} must be {kind.__name__}")
        if kind is int and value is not None and not -_MAX_INT <= value <= _MAX_INT:
            raise ProtocolError(f"{command}: {key} is out of range")
        if kind is list and value and not all(isinstance(v, str) for v in value):
            raise ProtocolError(f"{command}: {key} must be a list of strings")
        if isinstance(value, str) and "\x00" in value:
            raise ProtocolError(f"{command}: {key} contains a NUL character")
    return Request(command, {k: v for k, v in data.items() if v is not None})


Handler = Callable[[Request], Awaitable[dict[str, Any]]]


def handler_for(target: Any) -> Handler:
    """A Handler that runs each request as target's method named for the command."""
    missing = [name for name in COMMANDS if not callable(getattr(target, name, None))]
    if missing:
        raise TypeError(f"{type(target).__name__} does not serve {', '.join(missing)}")

    async def handle(request: Request) -> dict[str, Any]:
        return await getattr(target, request.command)(**request.args)

    return handle


class ControlServer:
    """Serves control requests on a unix socket, mode 0660, one request per connection."""

    def __init__(self, path: Path, handler: Handler) -> None:
        self.path = path
        self._handler = handler
        self._server: asyncio.AbstractServer | None = None
        self._connections: set[asyncio.Task] = set()

    async def start(self) -> None:
        """Bind the socket, replacing a stale one left by a killed daemon."""
        if _answers(self.path):
            raise ControlError(f"{self.path}: another daemon is already listening")
        with contextlib.suppress(FileNotFoundError):
            if stat.S_ISSOCK(os.lstat(self.path).st_mode):
                os.unlink(self.path)
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._server = await asyncio.start_unix_server(
                self._serve, path=str(self.path), limit=MAX_REQUEST_BYTES + 1
            )
            os.chmod(self.path, SOCKET_MODE)
        except OSError as err:
            raise ControlError(f"{self.path}: cannot listen: {err.strerror or err}") from err

    async def close(self) -> None:
        """Stop listening, end the connections still open, and remove the socket file."""
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
            self._server = None
        for task in self._connections:
            task.cancel()
        await asyncio.gather(*self._connections, return_exceptions=True)
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.path)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._connections.add(task)
        try:
            try:
                line = await asyncio.wait_for(reader.readuntil(b"\n"), 10.0)
                reply = await self._handler(parse_request(line))
                reply = {"ok": True, **reply}
            except (TimeoutError, asyncio.LimitOverrunError, asyncio.IncompleteReadError):
                reply = {
                    "ok": False,
                    "error": f"request must be one line of at most {MAX_REQUEST_BYTES} bytes",
                }
            except ApplianceError as err:
                # "usage": the request itself was wrong, so the client exits 2 as for a bad flag
                reply = {"ok": False, "error": str(err), "usage": isinstance(err, ValueError)}
            except Exception as err:  # a bug must not take the daemon down with one request
                _LOGGER.exception("control request failed")
                reply = {"ok": False, "error": f"internal error: {type(err).__name__}: {err}"}
            writer.write(json.dumps(reply).encode() + b"\n")
            await writer.drain()
        except (ConnectionError, OSError):
            pass  # the client went away; nothing to answer
        finally:
            self._connections.discard(task)
            writer.close()
            with contextlib.suppress(ConnectionError, OSError):
                await writer.wait_closed()


def _answers(path: Path) -> bool:
    """True when a live server accepts connections on the socket path."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as probe:
        probe.settimeout(1.0)
        try:
            probe.connect(str(path))
        except OSError:
            return False
    return True


def request(path: Path, command: str, timeout_s: float = 30.0, **args: Any) -> dict[str, Any]:
    """Send one request to the daemon and return its reply; UsageError if the daemon refused
    the request as given, ControlError if it could not be reached or failed."""
    payload = json.dumps({"command": command, **args}).encode() + b"\n"
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as conn:
        conn.settimeout(timeout_s)
        try:
            conn.connect(str(path))
        except (FileNotFoundError, ConnectionRefusedError) as err:
            raise ControlError(f"the daemon is not running (no answer on {path})") from err
        except PermissionError as err:
            raise ControlError(f"{path}: permission denied (join the service's group)") from err
        try:
            conn.sendall(payload)
            data = b""
            while not data.endswith(b"\n"):
                chunk = conn.recv(65536)
                if not chunk:
                    break
                data += chunk
        except TimeoutError as err:
            raise ControlError(
                f"the daemon did not answer {command!r} within {timeout_s:g} s"
            ) from err
    try:
        reply = json.loads(data)
    except json.JSONDecodeError as err:
        raise ControlError(f"the daemon's reply to {command!r} was cut off") from err
    if not reply.get("ok"):
        error = UsageError if reply.get("usage") else ControlError
        raise error(reply.get("error") or "request failed")
    return reply
