"""The outbox against a real aiosmtpd: once per recipient, retries across restarts, reports."""

from __future__ import annotations

import asyncio
import email
import email.policy
import stat
import time
from collections.abc import Callable, Iterator, Sequence
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
from appliance.delivery.mail import Mailer, Outcome, Record
from appliance.delivery.outbox import (
    DELIVERED,
    FAILED,
    QUEUED,
    REFUSED,
    RETRYING,
    Outbox,
    retry_delay_s,
)
from appliance.store import DELIVERING, DONE, Database, Meeting
from appliance.transcript import Gap, Segment

A, B, C = "a@example.com", "b@example.com", "c@example.com"


class Clock:
    """Wall time the test moves by hand, so retries are due without sleeping."""

    def __init__(self) -> None:
        self.now = time.time()

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


class Box:
    """One test's state folder; each outbox() is the daemon (re)started on the same files."""

    def __init__(self, tmp_path: Path) -> None:
        self.tmp_path = tmp_path
        self.clock = Clock()
        self.settled: list[int] = []
        self.config = config_module.parse({"storage": {"state_dir": str(tmp_path / "state")}})
        self._databases: list[Database] = []

    def configure(self, port: int, **sections: dict[str, Any]) -> None:
        smtp = {
            "host": "127.0.0.1",
            "port": port,
            "security": "none",
            "timeout_s": 5.0,
            **sections.pop("smtp", {}),
        }
        self.config = config_module.parse(
            {"storage": {"state_dir": str(self.tmp_path / "state")}, "smtp": smtp, **sections}
        )

    def outbox(self, mailer: Any = None, then: Callable[[int], None] | None = None) -> Outbox:
        db = Database(self.config.database)
        self._databases.append(db)

        def settled(meeting_id: int) -> None:
            db.set_state(meeting_id, DONE)  # what the daemon does
            self.settled.append(meeting_id)
            if then is not None:
                then(meeting_id)

        return Outbox(
            db,
            self.config,
            mailer=mailer,
            templates_override=self.tmp_path / "templates",
            on_settled=settled,
            clock=self.clock,
        )

    def meeting(
        self, outbox: Outbox, to: Sequence[str] = (A, B, C), title: str = "Budget review"
    ) -> Meeting:
        db = outbox.db
        meeting = db.create(title, "en", tuple(to), "microphone", self.clock.now - 1800)
        db.add_segments(meeting.id, [Segment(1.0, 4.0, "We <b>agree</b> & move on.")], 4.0)
        db.add_gap(meeting.id, Gap(10.0, 20.0, "microphone lost"))
        db.set_audio(meeting.id, 1800.0)
        db.set_state(meeting.id, DELIVERING)
        return db.meeting(meeting.id)

    def close(self) -> None:
        for db in self._databases:
            db.close()


@pytest.fixture
def box(tmp_path: Path) -> Iterator[Box]:
    state = Box(tmp_path)
    yield state
    state.close()


def enqueue(outbox: Outbox, meeting: Meeting) -> int | None:
    return outbox.enqueue(meeting, outbox.db.transcript(meeting.id))


def eml_path(outbox: Outbox, meeting_id: int) -> Path:
    row = outbox.db.db.execute(
        "SELECT path FROM outbox_messages WHERE meeting_id = ?", (meeting_id,)
    ).fetchone()
    return Path(row[0])


def deliver(outbox: Outbox) -> None:
    asyncio.run(outbox.deliver_due())


def states(outbox: Outbox, meeting_id: int) -> dict[str, str]:
    return {r.address: r.state for r in outbox.recipients(meeting_id)}


def received_once(server: SmtpServer, *addresses: str) -> bool:
    return all(len(server.messages(a)) == 1 for a in addresses)


def test_enqueue_stores_the_message_before_any_attempt(box: Box, smtp: SmtpServer) -> None:
    box.configure(smtp.port)
    outbox = box.outbox()
    meeting = box.meeting(outbox)
    message = enqueue(outbox, meeting)
    assert message is not None and smtp.handler.received == {}
    eml = eml_path(outbox, meeting.id)
    assert eml.parent == box.config.outbox_dir and eml.suffix == ".eml"
    assert stat.S_IMODE(eml.stat().st_mode) == 0o600
    assert stat.S_IMODE(box.config.outbox_dir.stat().st_mode) == 0o700
    assert list(box.config.outbox_dir.iterdir()) == [eml]  # no temporary file left
    assert states(outbox, meeting.id) == {A: QUEUED, B: QUEUED, C: QUEUED}
    row = outbox.db.db.execute("SELECT message_id, path FROM outbox_messages").fetchone()
    parsed = email.message_from_bytes(eml.read_bytes(), policy=email.policy.default)
    assert (parsed["Message-ID"], Path(row[1])) == (row[0], eml)


def test_plain_delivery_once_per_recipient_and_settles_once(box: Box, smtp: SmtpServer) -> None:
    box.configure(smtp.port)
    outbox = box.outbox()
    meeting = box.meeting(outbox)
    enqueue(outbox, meeting)
    deliver(outbox)
    deliver(outbox)
    assert received_once(smtp, A, B, C)
    assert states(outbox, meeting.id) == {A: DELIVERED, B: DELIVERED, C: DELIVERED}
    assert box.settled == [meeting.id]
    assert outbox.counts() == {
        QUEUED: 0,
        RETRYING: 0,
        DELIVERED: 3,
        FAILED: 0,
        REFUSED: 0,
        "no_recipients": 0,
    }
    assert outbox.problems() == []


def test_enqueue_is_idempotent_across_restarts(box: Box, smtp: SmtpServer) -> None:
    box.configure(smtp.port)
    first = box.outbox()
    meeting = box.meeting(first)
    message = enqueue(first, meeting)
    eml = eml_path(first, meeting.id).read_bytes()
    # The daemon crashed during hand-off and hands the meeting over again after restart.
    second = box.outbox()
    assert enqueue(second, meeting) == message
    assert list(box.config.outbox_dir.iterdir()) == [eml_path(second, meeting.id)]
    assert eml_path(second, meeting.id).read_bytes() == eml
    deliver(second)
    third = box.outbox()
    assert enqueue(third, meeting) == message
    deliver(third)
    assert received_once(smtp, A, B, C)
    assert smtp.messages(A) == [eml]


def test_again_replaces_the_message_with_a_new_one(box: Box, smtp: SmtpServer) -> None:
    box.configure(smtp.port)
    outbox = box.outbox()
    meeting = box.meeting(outbox)
    enqueue(outbox, meeting)
    deliver(outbox)
    first = eml_path(outbox, meeting.id)
    transcript = outbox.db.transcript(meeting.id)
    message = asyncio.run(outbox.enqueue_async(meeting, transcript, again=True))
    second = eml_path(outbox, meeting.id)
    assert message is not None and not first.exists()
    assert list(box.config.outbox_dir.iterdir()) == [second]
    assert states(outbox, meeting.id) == {A: QUEUED, B: QUEUED, C: QUEUED}
    deliver(outbox)
    assert states(outbox, meeting.id) == {A: DELIVERED, B: DELIVERED, C: DELIVERED}
    assert box.settled == [meeting.id, meeting.id]
    sent = [email.message_from_bytes(m, policy=email.policy.default) for m in smtp.messages(A)]
    assert len(sent) == 2 and sent[0]["Message-ID"] != sent[1]["Message-ID"]


def test_racing_hand_offs_of_one_meeting_make_one_message(box: Box, smtp: SmtpServer) -> None:
    box.configure(smtp.port)
    outbox = box.outbox()
    meeting = box.meeting(outbox)
    transcript = outbox.db.transcript(meeting.id)

    async def scenario() -> tuple[int | None, int | None]:
        racing = asyncio.create_task(outbox.enqueue_async(meeting, transcript))
        await asyncio.sleep(0)  # a yield: the task is now rendering on a worker thread
        first = outbox.enqueue(meeting, transcript)
        return first, await racing

    first, second = asyncio.run(scenario())
    assert first == second is not None
    assert list(box.config.outbox_dir.iterdir()) == [eml_path(outbox, meeting.id)]
    deliver(outbox)
    assert received_once(smtp, A, B, C)


def test_the_message_content_over_smtp(box: Box, smtp: SmtpServer) -> None:
    box.configure(smtp.port, room={"name": "Blue room", "timezone": "Europe/Stockholm"})
    outbox = box.outbox()
    meeting = box.meeting(outbox, to=(A,), title="Q3 <plans>\r\nBcc: evil@x.com")
    enqueue(outbox, meeting)
    deliver(outbox)
    [data] = smtp.messages(A)
    message = email.message_from_bytes(data, policy=email.policy.default)
    assert "Bcc" not in message and [a.addr_spec for a in message["To"].addresses] == [A]
    assert smtp.handler.received.keys() == {A}
    # Python may fold the whole subject onto a continuation line; the space is folding.
    subject = message["Subject"].lstrip()
    assert subject.startswith("Transcript: Q3 <plans> Bcc: evil@x.com (Blue room, ")
    text = message.get_body(("plain",)).get_content()
    html = message.get_body(("html",)).get_content()
    assert "[00:00:01] We <b>agree</b> & move on." in text and "microphone lost" in text
    assert "We &lt;b&gt;agree&lt;/b&gt; &amp; move on." in html
    assert "Q3 &lt;plans&gt; Bcc: evil@x.com" in html and "<plans>" not in html
    assert [p.get_filename() for p in message.iter_attachments()] == [
        "transcript.txt",
        "transcript.srt",
        "transcript.vtt",
    ]


def _reply(address: str, reply: str) -> Callable[[SmtpServer], None]:
    def misbehave(server: SmtpServer) -> None:
        server.handler.rcpt_replies[address] = reply

    return misbehave


def _set(name: str, value: Any) -> Callable[[SmtpServer], None]:
    return lambda server: setattr(server.handler, name, value)


def _heal(server: SmtpServer) -> None:
    server.handler.rcpt_replies.clear()
    server.handler.drop_data = 0
    server.handler.stall_data_s = 0.0
    if not server.running:
        server.start()


@pytest.mark.parametrize(
    "misbehave, first_pass",
    [
        (_reply(B, "451 4.2.0 greylisted"), {A: DELIVERED, B: RETRYING, C: DELIVERED}),
        (_reply(B, "421 4.3.2 shutting down"), {A: RETRYING, B: RETRYING, C: RETRYING}),
        (_set("drop_data", 1), {A: RETRYING, B: RETRYING, C: RETRYING}),
        (_set("stall_data_s", 3.0), {A: RETRYING, B: RETRYING, C: RETRYING}),
        (SmtpServer.stop, {A: RETRYING, B: RETRYING, C: RETRYING}),
    ],
    ids=["451-one", "421", "dropped-after-data", "stalled-past-deadline", "down-then-back"],
)
def test_temporary_failures_retry_after_a_restart_and_deliver_once(
    box: Box, smtp: SmtpServer, misbehave: Callable[[SmtpServer], None], first_pass: dict[str, str]
) -> None:
    box.configure(smtp.port, smtp={"timeout_s": 1.0})
    outbox = box.outbox()
    meeting = box.meeting(outbox)
    enqueue(outbox, meeting)
    misbehave(smtp)
    deliver(outbox)
    assert states(outbox, meeting.id) == first_pass
    assert box.settled == []
    _heal(smtp)
    restarted = box.outbox()
    box.clock.advance(retry_delay_s(1) - 1)
    deliver(restarted)
    assert states(restarted, meeting.id) == first_pass  # not due yet
    box.clock.advance(2)
    deliver(restarted)
    assert states(restarted, meeting.id) == {A: DELIVERED, B: DELIVERED, C: DELIVERED}
    assert received_once(smtp, A, B, C)
    assert box.settled == [meeting.id]


def test_a_permanent_failure_is_final_for_that_recipient_and_reported(
    box: Box, smtp: SmtpServer
) -> None:
    box.configure(smtp.port)
    smtp.handler.rcpt_replies[B] = "550 5.1.1 no such user"
    outbox = box.outbox()
    meeting = box.meeting(outbox)
    enqueue(outbox, meeting)
    deliver(outbox)
    box.clock.advance(7200)
    deliver(box.outbox())
    assert states(outbox, meeting.id) == {A: DELIVERED, B: FAILED, C: DELIVERED}
    assert received_once(smtp, A, C) and smtp.messages(B) == []
    assert box.settled == [meeting.id]
    assert outbox.counts()[FAILED] == 1
    assert outbox.problems() == [f"meeting {meeting.id}: {B} failed: 550 5.1.1 no such user"]


def test_retries_back_off_to_an_hour_then_give_up(box: Box, smtp: SmtpServer) -> None:
    box.configure(smtp.port, delivery={"give_up_days": 0.5})
    outbox = box.outbox()
    meeting = box.meeting(outbox, to=(A,))
    enqueue(outbox, meeting)
    smtp.stop()
    waits = []
    for _ in range(30):
        deliver(outbox)
        [row] = outbox.db.db.execute("SELECT state, next_attempt_at FROM outbox_recipients")
        if row[0] != RETRYING:
            break
        waits.append(round(row[1] - box.clock.now))
        box.clock.now = row[1]
    assert waits[:7] == [300, 600, 1200, 2400, 3600, 3600, 3600]
    # The attempt that gives up is the first at least half a day after the first one.
    assert sum(waits[:-1]) < 43200 <= sum(waits)
    [status] = outbox.recipients(meeting.id)
    assert status.state == FAILED and status.reply.startswith("gave up after 0.5 days: ")
    assert box.settled == [meeting.id]
    assert outbox.problems()[0].startswith(f"meeting {meeting.id}: {A} failed: gave up")


def test_a_clock_jump_alone_does_not_give_up(box: Box, smtp: SmtpServer) -> None:
    # No RTC on the Pi: after a weekend off, NTP moves the clock days past the enqueue.
    box.configure(smtp.port, delivery={"give_up_days": 1.0})
    outbox = box.outbox()
    meeting = box.meeting(outbox, to=(A,))
    enqueue(outbox, meeting)
    smtp.stop()
    box.clock.advance(3 * 86400)
    deliver(outbox)
    assert states(outbox, meeting.id) == {A: RETRYING}
    smtp.start()
    box.clock.advance(retry_delay_s(1))
    deliver(outbox)
    assert states(outbox, meeting.id) == {A: DELIVERED} and received_once(smtp, A)


@pytest.mark.parametrize(
    "attempts, delay", [(1, 300), (2, 600), (3, 1200), (4, 2400), (5, 3600), (9, 3600)]
)
def test_retry_delay(attempts: int, delay: float) -> None:
    assert retry_delay_s(attempts) == delay


def test_a_meeting_nobody_may_receive_is_kept_and_reported(box: Box, smtp: SmtpServer) -> None:
    box.configure(smtp.port, delivery={"allowed_domains": ["example.com"]})
    outbox = box.outbox()
    meeting = box.meeting(outbox, to=("x@partner.example",))
    assert enqueue(outbox, meeting) is None
    assert enqueue(box.outbox(), meeting) is None
    assert not box.config.outbox_dir.exists()
    deliver(outbox)
    assert smtp.handler.received == {} and box.settled == [meeting.id]
    counts = outbox.counts()
    assert (counts["no_recipients"], counts[REFUSED]) == (1, 1)
    assert outbox.problems() == [
        f"meeting {meeting.id}: no valid recipient, transcript kept (x@partner.example: "
        "domain partner.example is not in delivery.allowed_domains)"
    ]
    assert outbox.db.transcript(meeting.id).segments  # kept


def test_refused_recipients_do_not_stop_the_allowed_ones(box: Box, smtp: SmtpServer) -> None:
    box.configure(smtp.port, delivery={"allowed_domains": ["example.com"]})
    outbox = box.outbox()
    meeting = box.meeting(outbox, to=(A, "eve@partner.example"))
    assert enqueue(outbox, meeting) is not None
    deliver(outbox)
    assert states(outbox, meeting.id) == {A: DELIVERED, "eve@partner.example": REFUSED}
    assert received_once(smtp, A) and smtp.handler.received.keys() == {A}
    assert outbox.problems() == [] and box.settled == [meeting.id]


def test_nobody_named_anywhere_is_reported(box: Box, smtp: SmtpServer) -> None:
    box.configure(smtp.port)
    outbox = box.outbox()
    meeting = box.meeting(outbox, to=())
    assert enqueue(outbox, meeting) is None
    assert outbox.problems() == [
        f"meeting {meeting.id}: no valid recipient, transcript kept (nobody named by start "
        "--to, the calendar or room.default_participants)"
    ]


class _PowerCut:
    """A real Mailer, and the process dies the moment its send returns."""

    def __init__(self, mailer: Mailer) -> None:
        self.mailer = mailer

    async def send(
        self, data: bytes, sender: str, recipients: Sequence[str], record: Record | None = None
    ) -> dict[str, Outcome]:
        await self.mailer.send(data, sender, recipients, record)
        raise SystemExit("power cut")


def test_acceptance_is_committed_before_send_returns(box: Box, smtp: SmtpServer) -> None:
    box.configure(smtp.port)
    outbox = box.outbox(mailer=_PowerCut(Mailer(box.config.smtp)))
    meeting = box.meeting(outbox)
    enqueue(outbox, meeting)
    with pytest.raises(SystemExit):
        deliver(outbox)
    restarted = box.outbox()
    box.clock.advance(86400)
    deliver(restarted)
    assert received_once(smtp, A, B, C)
    assert states(restarted, meeting.id) == {A: DELIVERED, B: DELIVERED, C: DELIVERED}


def test_run_delivers_when_enqueue_wakes_it_and_stops(box: Box, smtp: SmtpServer) -> None:
    box.configure(smtp.port)

    async def scenario() -> None:
        settled: dict[int, asyncio.Event] = {1: asyncio.Event(), 2: asyncio.Event()}
        outbox = box.outbox(then=lambda meeting_id: settled[meeting_id].set())
        first, second = box.meeting(outbox, to=(A,)), box.meeting(outbox, to=(B,))
        stop = asyncio.Event()
        enqueue(outbox, first)
        task = asyncio.create_task(outbox.run(stop))
        await asyncio.wait_for(settled[first.id].wait(), 5)
        # Now run() sleeps until the next retry (none: five minutes); enqueue must wake it,
        # even from a worker thread.
        await asyncio.to_thread(enqueue, outbox, second)
        await asyncio.wait_for(settled[second.id].wait(), 5)
        stop.set()
        await asyncio.wait_for(task, 5)

    asyncio.run(scenario())
    assert received_once(smtp, A, B)


def test_the_maildir_is_the_default_without_an_smtp_host(box: Box) -> None:
    outbox = box.outbox()
    meeting = box.meeting(outbox, to=(A, B))
    enqueue(outbox, meeting)
    deliver(outbox)
    replies = {r.reply for r in outbox.recipients(meeting.id)}
    [path] = [Path(reply) for reply in replies]
    assert path.parent == box.config.maildir / "new" and path.is_file()
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    message = email.message_from_bytes(path.read_bytes(), policy=email.policy.default)
    assert message["Subject"].startswith("Transcript: Budget review")
    assert box.settled == [meeting.id]


def test_starttls_and_auth_with_a_password_fixed_between_attempts(
    box: Box, certificate: Certificate
) -> None:
    handler = Handler()
    password = box.tmp_path / "password"
    password.write_text("wrong\n")
    for server in serve(
        handler,
        tls_context=certificate.server_context(),
        require_starttls=True,
        authenticator=handler.authenticate,
        auth_required=True,
    ):
        box.configure(
            server.port,
            smtp={"security": "starttls", "username": USER, "password_file": str(password)},
        )

        def outbox() -> Outbox:
            return box.outbox(Mailer(box.config.smtp, tls_context=certificate.client_context()))

        first = outbox()
        meeting = box.meeting(first, to=(A,))
        enqueue(first, meeting)
        deliver(first)
        [status] = first.recipients(meeting.id)
        assert status.state == RETRYING and "535" in status.reply
        password.write_text(PASSWORD + "\n")
        box.clock.advance(retry_delay_s(1))
        deliver(outbox())
        assert received_once(server, A) and handler.tls_messages == 1


def test_a_broken_override_template_still_sends_and_is_reported(box: Box, smtp: SmtpServer) -> None:
    box.configure(smtp.port)
    templates = box.tmp_path / "templates"
    templates.mkdir()
    (templates / "body.html.j2").write_text("<p>{{ title }}</p>\n<p>{{ nope }}</p>\n")
    outbox = box.outbox()
    meeting = box.meeting(outbox, to=(A,))
    enqueue(outbox, meeting)
    deliver(outbox)
    assert received_once(smtp, A)
    html = (
        email.message_from_bytes(smtp.messages(A)[0], policy=email.policy.default)
        .get_body(("html",))
        .get_content()
    )
    assert "Budget review" in html and "We &lt;b&gt;agree" in html  # the built-in
    assert outbox.problems() == [
        f"meeting {meeting.id}: template {templates / 'body.html.j2'}:2: "
        "'nope' is undefined (built-in used)"
    ]
