"""Sending one rendered message: over SMTP within a total deadline, or into the local Maildir."""

from __future__ import annotations

import asyncio
import logging
import mailbox
import os
import socket
import ssl
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import aiosmtplib

from appliance.config import Config, SmtpConfig
from appliance.errors import ApplianceError
from appliance.files import fsync_path

_LOGGER = logging.getLogger(__name__)

ACCEPTED, TEMPORARY, PERMANENT = "accepted", "temporary", "permanent"
# QUIT after the message is in is politeness; it must not hold up recording the acceptance.
_QUIT_TIMEOUT_S = 5.0


class MailError(ApplianceError, OSError):
    """The mail settings cannot be used as they are (e.g. the password file is unreadable)."""


@dataclass(frozen=True)
class Outcome:
    """What became of one recipient, with the server's reply (or the Maildir file's path)."""

    status: str  # ACCEPTED, TEMPORARY or PERMANENT
    reply: str


Record = Callable[[dict[str, Outcome]], None]


class Sender(Protocol):
    """What the outbox needs from a mailer."""

    async def send(
        self, data: bytes, sender: str, recipients: Sequence[str], record: Record | None = None
    ) -> dict[str, Outcome]:
        """Send data to each recipient; record is called as soon as outcomes are known."""


def read_password(password_file: str, environ: Mapping[str, str] | None = None) -> str:
    """The AUTH password from its file; a bare name is a systemd credential when one is set."""
    environ = os.environ if environ is None else environ
    path = Path(password_file)
    credentials = environ.get("CREDENTIALS_DIRECTORY", "")
    if credentials and "/" not in password_file:
        path = Path(credentials) / password_file
    try:
        return path.read_text(encoding="utf-8").rstrip("\r\n")
    except (OSError, UnicodeDecodeError) as err:
        raise MailError(f"smtp.password_file {path}: cannot be read: {err}") from err


def _by_code(code: int, message: str) -> Outcome:
    reply = f"{code} {message}".strip()
    return Outcome(PERMANENT if 500 <= code < 600 else TEMPORARY, reply)


class Mailer:
    """Sends a message to many recipients in one SMTP session within timeout_s in total."""

    def __init__(
        self,
        smtp: SmtpConfig,
        tls_context: ssl.SSLContext | None = None,
        environ: Mapping[str, str] | None = None,
    ) -> None:
        self.smtp = smtp
        self._tls_context = tls_context
        self._environ = environ

    def _client(self) -> aiosmtplib.SMTP:
        security = self.smtp.security
        return aiosmtplib.SMTP(
            hostname=self.smtp.host,
            port=self.smtp.port,
            timeout=self.smtp.timeout_s,
            use_tls=security == "tls",
            start_tls=security == "starttls",
            tls_context=self._tls_context,
            # getfqdn() can wait on reverse DNS that a LAN without a resolver never answers.
            local_hostname=socket.gethostname(),
        )

    async def send(
        self, data: bytes, sender: str, recipients: Sequence[str], record: Record | None = None
    ) -> dict[str, Outcome]:
        """One SMTP session; every recipient ends accepted, temporary or permanent."""
        outcomes: dict[str, Outcome] = {}

        def decide(batch: dict[str, Outcome]) -> None:
            outcomes.update(batch)
            if record is not None:
                record(batch)

        client = self._client()
        # The step under way, set by _transact. Only the replies to RCPT and DATA are about the
        # message; a failure before them is about this box's settings or the server's health,
        # so it is retried, never final.
        stage = ["connect"]
        try:
            # aiosmtplib's timeout is per socket operation; the deadline is for the whole send.
            async with asyncio.timeout(self.smtp.timeout_s):
                await self._transact(client, data, sender, recipients, decide, stage)
        except TimeoutError:
            failure = Outcome(
                TEMPORARY, f"no answer within {self.smtp.timeout_s:g} s (during {stage[0]})"
            )
        except aiosmtplib.SMTPResponseException as err:
            failure = (
                _by_code(err.code, err.message)
                if stage[0] == "data"
                else Outcome(TEMPORARY, f"{err.code} {err.message} (during {stage[0]})")
            )
        except (aiosmtplib.SMTPException, OSError) as err:
            failure = Outcome(TEMPORARY, f"{err} (during {stage[0]})")
        else:
            failure = None
        finally:
            # After a timeout the protocol is out of step; close, never reuse.
            client.close()
        undecided = [r for r in recipients if r not in outcomes]
        if failure is not None and undecided:
            decide({r: failure for r in undecided})
        return outcomes

    def _password(self) -> str:
        if not self.smtp.username:
            return ""
        if not self.smtp.password_file:
            raise MailError("smtp.username is set but smtp.password_file is empty")
        return read_password(self.smtp.password_file, self._environ)

    async def _transact(
        self,
        client: aiosmtplib.SMTP,
        data: bytes,
        sender: str,
        recipients: Sequence[str],
        decide: Record,
        stage: list[str],
    ) -> None:
        stage[0] = "auth"
        password = self._password()  # read per send: a fixed file needs no restart
        stage[0] = "connect"
        await client.connect()
        if self.smtp.username:
            stage[0] = "auth"
            await client.login(self.smtp.username, password)
        stage[0] = "mail"
        await client.mail(sender)
        stage[0] = "rcpt"
        accepted = []
        for recipient in recipients:
            try:
                await client.rcpt(recipient)
            except aiosmtplib.SMTPRecipientRefused as err:
                decide({recipient: _by_code(err.code, err.message)})
            else:
                accepted.append(recipient)
        if accepted:
            stage[0] = "data"
            response = await client.data(data)
            decide({r: Outcome(ACCEPTED, f"{response.code} {response.message}") for r in accepted})
        stage[0] = "quit"
        try:
            await client.quit(timeout=_QUIT_TIMEOUT_S)
        except (aiosmtplib.SMTPException, OSError):
            pass  # everything that mattered has been answered


class MaildirMailer:
    """Delivers into a local Maildir (0700 folders, 0600 files): the default with no SMTP host."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self.last_path: Path | None = None  # the file the last message went into

    async def send(
        self, data: bytes, sender: str, recipients: Sequence[str], record: Record | None = None
    ) -> dict[str, Outcome]:
        """One file for all recipients (one mailbox); a write error is temporary."""
        try:
            path = await asyncio.to_thread(self._deliver, data)
        except OSError as err:
            outcomes = {r: Outcome(TEMPORARY, f"Maildir {self.path}: {err}") for r in recipients}
        else:
            self.last_path = path
            outcomes = {r: Outcome(ACCEPTED, str(path)) for r in recipients}
        if record is not None:
            record(outcomes)
        return outcomes

    def _deliver(self, data: bytes) -> Path:
        self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        box = mailbox.Maildir(self.path, create=True)
        for sub in ("", "tmp", "new", "cur"):
            os.chmod(self.path / sub, 0o700)
        key = box.add(data)
        # Maildir.add puts a message without flags in new/ under its key.
        path = self.path / "new" / key
        os.chmod(path, 0o600)
        # The outbox records this as delivered: it must survive a power cut.
        fsync_path(path)
        fsync_path(path.parent)
        return path


def mailer_for(config: Config, tls_context: ssl.SSLContext | None = None) -> Mailer | MaildirMailer:
    """SMTP when [smtp] host is set, else the Maildir under state_dir."""
    if config.smtp.host:
        return Mailer(config.smtp, tls_context)
    return MaildirMailer(config.maildir)
