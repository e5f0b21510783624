"""A real aiosmtpd server on 127.0.0.1 whose answers each test can change, and a throwaway CA."""

from __future__ import annotations

import asyncio
import ssl
import subprocess
from collections import defaultdict
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, LoginPassword

USER, PASSWORD = "appliance", "s3cret pass"


class Handler:
    """Records each accepted message per recipient; told per test how to misbehave."""

    def __init__(self) -> None:
        self.received: dict[str, list[bytes]] = defaultdict(list)
        self.rcpt_replies: dict[str, str] = {}  # address -> reply instead of 250
        self.drop_data = 0  # abort the connection after the next n message bodies
        self.stall_data_s = 0.0  # wait this long before answering DATA (then 451)
        self.stall_rcpt_s = 0.0  # wait this long before answering each RCPT
        self.tls_messages = 0  # bodies that arrived over TLS
        self.logins: list[str] = []

    async def handle_RCPT(
        self, server: Any, session: Any, envelope: Any, address: str, rcpt_options: list[str]
    ) -> str:
        if self.stall_rcpt_s:
            await asyncio.sleep(self.stall_rcpt_s)
        reply = self.rcpt_replies.get(address)
        if reply:
            return reply
        envelope.rcpt_tos.append(address)
        return "250 2.1.5 OK"

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        if self.drop_data:
            self.drop_data -= 1
            server.transport.abort()  # the body arrived; the reply never will
            return "250 2.0.0 never seen"
        if self.stall_data_s:
            await asyncio.sleep(self.stall_data_s)
            return "451 4.4.2 too slow"
        for address in envelope.rcpt_tos:
            self.received[address].append(envelope.content)
        self.tls_messages += server.transport.get_extra_info("ssl_object") is not None
        return "250 2.0.0 queued"

    def authenticate(
        self, server: Any, session: Any, envelope: Any, mechanism: str, auth_data: Any
    ) -> AuthResult:
        """The aiosmtpd authenticator: one user, one password."""
        if (
            isinstance(auth_data, LoginPassword)
            and auth_data.login.decode() == USER
            and auth_data.password.decode() == PASSWORD
        ):
            self.logins.append(USER)
            return AuthResult(success=True)
        return AuthResult(success=False, handled=False)


class _Controller(Controller):
    """aiosmtpd's Controller, taught to listen on port 0 and learn the port it got."""

    def _trigger_server(self) -> None:
        self.port = self.server.sockets[0].getsockname()[1]
        super()._trigger_server()


class SmtpServer:
    """One server that a test can stop (down) and start again on the same port (back)."""

    def __init__(self, handler: Handler, **options: Any) -> None:
        self.handler = handler
        self.options = options
        self.port = 0
        self._controller: _Controller | None = None

    def start(self) -> None:
        """Listen on 127.0.0.1 (the port chosen at first start)."""
        self._controller = _Controller(
            self.handler, hostname="127.0.0.1", port=self.port, **self.options
        )
        self._controller.start()
        self.port = self._controller.port

    def stop(self) -> None:
        """Stop listening; connections are refused until start()."""
        if self._controller is not None:
            self._controller.stop()
            self._controller = None

    @property
    def running(self) -> bool:
        """Whether the server is listening."""
        return self._controller is not None

    def messages(self, address: str) -> list[bytes]:
        """What address has received, oldest first."""
        return self.handler.received.get(address, [])


@dataclass(frozen=True)
class Certificate:
    """A self-signed certificate for 127.0.0.1 and the contexts for each side."""

    cert: Path
    key: Path

    def server_context(self) -> ssl.SSLContext:
        """For aiosmtpd: the certificate and its key."""
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(self.cert, self.key)
        return context

    def client_context(self) -> ssl.SSLContext:
        """For the Mailer: trusts this certificate alone."""
        return ssl.create_default_context(cafile=str(self.cert))


@pytest.fixture(scope="session")
def certificate(tmp_path_factory: pytest.TempPathFactory) -> Certificate:
    """A throwaway certificate made with the openssl CLI once per session."""
    directory = tmp_path_factory.mktemp("tls")
    cert, key = directory / "cert.pem", directory / "key.pem"
    subprocess.run(
        [
            "openssl",
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
            "-keyout",
            str(key),
            "-out",
            str(cert),
            "-days",
            "1",
            "-subj",
            "/CN=localhost",
            "-addext",
            "subjectAltName=IP:127.0.0.1,DNS:localhost",
        ],
        check=True,
        capture_output=True,
    )
    return Certificate(cert, key)


def serve(handler: Handler | None = None, **options: Any) -> Iterator[SmtpServer]:
    """Start a server, yield it, stop it (for fixtures)."""
    server = SmtpServer(handler or Handler(), **options)
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def smtp() -> Iterator[SmtpServer]:
    """A plain SMTP server without AUTH."""
    yield from serve()
