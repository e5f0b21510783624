"""Mailer against a real aiosmtpd on loopback (plain, STARTTLS, TLS, AUTH, failures); Maildir."""

from __future__ import annotations

import asyncio
import email
import email.policy
import mailbox
import stat
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from smtp_server import (  # noqa: F401
    PASSWORD,
    USER,
    Certificate,
    Handler,
    SmtpServer,
    certificate,  # the fixtures are used by name
    serve,
    smtp,
)

from appliance import config as config_module
from appliance.config import SmtpConfig
from appliance.delivery.mail import (
    ACCEPTED,
    PERMANENT,
    TEMPORARY,
    MaildirMailer,
    Mailer,
    MailError,
    Outcome,
    mailer_for,
    read_password,
)

# The AUTH-over-plain server is the brief's test case, not a setting anyone ships.
pytestmark = pytest.mark.filterwarnings("ignore:Requiring AUTH while not requiring TLS")

MESSAGE = (
    b"From: room@example.com\r\nTo: a@example.com\r\nSubject: hi\r\n"
    b"Message-ID: <1@example.com>\r\n\r\nHello there.\r\n.leading dot\r\n"
)
A, B, C = "a@example.com", "b@example.com", "c@example.com"


def smtp_config(port: int, **smtp: Any) -> SmtpConfig:
    settings = {"host": "127.0.0.1", "port": port, "security": "none", "timeout_s": 5.0, **smtp}
    return config_module.parse({"smtp": settings}).smtp


def send(
    mailer: Mailer | MaildirMailer,
    recipients: list[str],
    batches: list[dict[str, Outcome]] | None = None,
) -> dict[str, Outcome]:
    record = batches.append if batches is not None else None
    return asyncio.run(mailer.send(MESSAGE, "room@example.com", recipients, record))


def statuses(outcomes: dict[str, Outcome]) -> dict[str, str]:
    return {address: outcome.status for address, outcome in outcomes.items()}


def test_plain_send_reaches_each_recipient_once(smtp: SmtpServer) -> None:
    outcomes = send(Mailer(smtp_config(smtp.port)), [A, B])
    assert statuses(outcomes) == {A: ACCEPTED, B: ACCEPTED}
    assert outcomes[A].reply == "250 2.0.0 queued"
    assert smtp.messages(A) == [MESSAGE] and smtp.messages(B) == [MESSAGE]


@pytest.mark.parametrize(
    "reply, status",
    [
        ("550 5.1.1 no such user", PERMANENT),
        ("451 4.2.0 try later", TEMPORARY),
        ("552 5.2.2 mailbox full", PERMANENT),
    ],
)
def test_one_refused_recipient_does_not_stop_the_others(
    smtp: SmtpServer, reply: str, status: str
) -> None:
    smtp.handler.rcpt_replies[B] = reply
    batches: list[dict[str, Outcome]] = []
    outcomes = send(Mailer(smtp_config(smtp.port)), [A, B, C], batches)
    assert statuses(outcomes) == {A: ACCEPTED, B: status, C: ACCEPTED}
    assert outcomes[B].reply == reply
    # The refusal is recorded when the RCPT reply comes, the acceptance when DATA's does.
    assert [list(batch) for batch in batches] == [[B], [A, C]]
    assert smtp.messages(A) == [MESSAGE] and smtp.messages(B) == []


def test_421_closes_the_session_and_everyone_is_temporary(smtp: SmtpServer) -> None:
    smtp.handler.rcpt_replies[B] = "421 4.3.2 shutting down"
    outcomes = send(Mailer(smtp_config(smtp.port)), [A, B, C])
    assert statuses(outcomes) == {A: TEMPORARY, B: TEMPORARY, C: TEMPORARY}
    assert outcomes[B].reply.startswith("421")
    assert smtp.handler.received == {}


def test_connection_dropped_after_data_is_temporary(smtp: SmtpServer) -> None:
    smtp.handler.drop_data = 1
    outcomes = send(Mailer(smtp_config(smtp.port)), [A, B])
    assert statuses(outcomes) == {A: TEMPORARY, B: TEMPORARY}
    assert "during data" in outcomes[A].reply


def test_deadline_is_for_the_whole_send_not_each_reply(smtp: SmtpServer) -> None:
    # Each RCPT answers within the per-operation timeout; together they pass the deadline.
    smtp.handler.stall_rcpt_s = 0.4
    started = time.monotonic()
    outcomes = send(Mailer(smtp_config(smtp.port, timeout_s=1.0)), [A, B, C, "d@example.com"])
    elapsed = time.monotonic() - started
    assert set(statuses(outcomes).values()) == {TEMPORARY}
    assert outcomes[A].reply == "no answer within 1 s (during rcpt)"
    assert elapsed < 1.5
    assert smtp.handler.received == {}


def test_a_stalled_data_reply_times_out(smtp: SmtpServer) -> None:
    smtp.handler.stall_data_s = 3.0
    outcomes = send(Mailer(smtp_config(smtp.port, timeout_s=1.0)), [A])
    assert outcomes[A] == Outcome(TEMPORARY, "no answer within 1 s (during data)")


def test_server_down_is_temporary(smtp: SmtpServer) -> None:
    smtp.stop()
    outcomes = send(Mailer(smtp_config(smtp.port)), [A])
    assert outcomes[A].status == TEMPORARY and "during connect" in outcomes[A].reply


@pytest.fixture
def starttls_server(certificate: Certificate) -> Iterator[SmtpServer]:
    yield from serve(tls_context=certificate.server_context(), require_starttls=True)


def test_starttls(starttls_server: SmtpServer, certificate: Certificate) -> None:
    mailer = Mailer(
        smtp_config(starttls_server.port, security="starttls"),
        tls_context=certificate.client_context(),
    )
    assert statuses(send(mailer, [A])) == {A: ACCEPTED}
    assert starttls_server.handler.tls_messages == 1


def test_starttls_refuses_a_certificate_it_cannot_verify(starttls_server: SmtpServer) -> None:
    outcomes = send(Mailer(smtp_config(starttls_server.port, security="starttls")), [A])
    assert outcomes[A].status == TEMPORARY and "CERTIFICATE_VERIFY_FAILED" in outcomes[A].reply
    assert starttls_server.handler.received == {}


def test_starttls_never_falls_back_to_plain(smtp: SmtpServer, certificate: Certificate) -> None:
    mailer = Mailer(
        smtp_config(smtp.port, security="starttls"), tls_context=certificate.client_context()
    )
    outcomes = send(mailer, [A])
    assert outcomes[A].status == TEMPORARY and "STARTTLS" in outcomes[A].reply
    assert smtp.handler.received == {}


def test_implicit_tls(certificate: Certificate) -> None:
    for server in serve(ssl_context=certificate.server_context()):
        mailer = Mailer(
            smtp_config(server.port, security="tls"), tls_context=certificate.client_context()
        )
        assert statuses(send(mailer, [A])) == {A: ACCEPTED}
        assert server.handler.tls_messages == 1


@pytest.fixture
def auth_server() -> Iterator[SmtpServer]:
    handler = Handler()
    yield from serve(
        handler, authenticator=handler.authenticate, auth_required=True, auth_require_tls=False
    )


def test_auth_with_password_file(auth_server: SmtpServer, tmp_path: Path) -> None:
    (tmp_path / "password").write_text(PASSWORD + "\n")
    mailer = Mailer(
        smtp_config(auth_server.port, username=USER, password_file=str(tmp_path / "password"))
    )
    assert statuses(send(mailer, [A])) == {A: ACCEPTED}
    assert auth_server.handler.logins == [USER]


def test_auth_with_systemd_credential(auth_server: SmtpServer, tmp_path: Path) -> None:
    (tmp_path / "smtp-password").write_text(PASSWORD)
    mailer = Mailer(
        smtp_config(auth_server.port, username=USER, password_file="smtp-password"),
        environ={"CREDENTIALS_DIRECTORY": str(tmp_path)},
    )
    assert statuses(send(mailer, [A])) == {A: ACCEPTED}


def test_auth_over_starttls(certificate: Certificate, tmp_path: Path) -> None:
    (tmp_path / "password").write_text(PASSWORD)
    handler = Handler()
    for server in serve(
        handler,
        tls_context=certificate.server_context(),
        require_starttls=True,
        authenticator=handler.authenticate,
        auth_required=True,
    ):
        mailer = Mailer(
            smtp_config(
                server.port,
                security="starttls",
                username=USER,
                password_file=str(tmp_path / "password"),
            ),
            tls_context=certificate.client_context(),
        )
        assert statuses(send(mailer, [A])) == {A: ACCEPTED}
        assert handler.logins == [USER] and handler.tls_messages == 1


@pytest.mark.parametrize("password, what", [("wrong", "535"), (None, "cannot be read")])
def test_auth_failure_is_temporary(
    auth_server: SmtpServer, tmp_path: Path, password: str | None, what: str
) -> None:
    # A wrong or missing password is this box's setting: fixed, the mail must still go.
    if password is not None:
        (tmp_path / "password").write_text(password)
    mailer = Mailer(
        smtp_config(auth_server.port, username=USER, password_file=str(tmp_path / "password"))
    )
    outcomes = send(mailer, [A, B])
    assert statuses(outcomes) == {A: TEMPORARY, B: TEMPORARY}
    assert what in outcomes[A].reply and "during auth" in outcomes[A].reply


def test_read_password(tmp_path: Path) -> None:
    (tmp_path / "pw").write_text("two words \r\n")
    assert read_password(str(tmp_path / "pw"), {}) == "two words "
    assert read_password("pw", {"CREDENTIALS_DIRECTORY": str(tmp_path)}) == "two words "
    with pytest.raises(MailError, match="pw: cannot be read") as caught:
        read_password("pw", {})
    assert isinstance(caught.value, OSError)


def test_maildir_delivery(tmp_path: Path) -> None:
    maildir = tmp_path / "state" / "maildir"
    mailer = MaildirMailer(maildir)
    batches: list[dict[str, Outcome]] = []
    outcomes = send(mailer, [A, B], batches)
    path = mailer.last_path
    assert path is not None and path.parent == maildir / "new"
    assert outcomes == {A: Outcome(ACCEPTED, str(path)), B: Outcome(ACCEPTED, str(path))}
    assert batches == [outcomes]
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    for folder in (maildir, maildir / "new", maildir / "cur", maildir / "tmp"):
        assert stat.S_IMODE(folder.stat().st_mode) == 0o700
    [message] = list(mailbox.Maildir(maildir))
    assert message["Subject"] == "hi"
    parsed = email.message_from_bytes(path.read_bytes(), policy=email.policy.default)
    assert parsed.get_content().splitlines() == ["Hello there.", ".leading dot"]


def test_maildir_write_error_is_temporary(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("")
    outcomes = send(MaildirMailer(tmp_path / "file" / "maildir"), [A])
    assert outcomes[A].status == TEMPORARY


def test_mailer_for_picks_maildir_without_a_host(tmp_path: Path) -> None:
    config = config_module.parse({"storage": {"state_dir": str(tmp_path)}})
    mailer = mailer_for(config)
    assert isinstance(mailer, MaildirMailer) and mailer.path == tmp_path / "maildir"
    config = config_module.parse({"smtp": {"host": "mail.example.com"}})
    assert isinstance(mailer_for(config), Mailer)
