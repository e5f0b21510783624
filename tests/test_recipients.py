"""Who gets the transcript: --to, else the calendar (recurring events too), else the defaults."""

from __future__ import annotations

import datetime
import http.server
import logging
import socket
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from appliance import config as config_module
from appliance.addresses import address_problem
from appliance.config import Config
from appliance.delivery.recipients import (
    FROM_CALENDAR,
    FROM_DEFAULTS,
    FROM_TO,
    Recipient,
    resolve,
)
from appliance.store import Meeting

STOCKHOLM = "Europe/Stockholm"
# A weekly Monday 10:00-11:00 Stockholm meeting from January; another booking on Tuesdays.
CALENDAR = """BEGIN:VCALENDAR
VERSION:2.0
PRODID:-//test//meeting-appliance//EN
BEGIN:VEVENT
UID:weekly@test
DTSTART;TZID=Europe/Stockholm:20260105T100000
DTEND;TZID=Europe/Stockholm:20260105T110000
RRULE:FREQ=WEEKLY;BYDAY=MO
SUMMARY:Weekly sync
ORGANIZER;CN=Olle Organizer:mailto:olle@example.com
ATTENDEE;CN="Andersson, Ann";PARTSTAT=ACCEPTED:MAILTO:Ann@Example.COM
ATTENDEE;PARTSTAT=DECLINED:mailto:dan@example.com
ATTENDEE;CUTYPE=ROOM;CN=Blue room:mailto:blue-room@example.com
ATTENDEE;CN=Eve Outsider:mailto:eve@partner.example
ATTENDEE:mailto:olle@example.com
END:VEVENT
BEGIN:VEVENT
UID:tuesday@test
DTSTART:20260303T140000
DTEND:20260303T150000
SUMMARY:Floating-time booking
ATTENDEE:mailto:tess@example.com
END:VEVENT
BEGIN:VEVENT
UID:allday@test
DTSTART;VALUE=DATE:20260302
SUMMARY:Room open
ATTENDEE:mailto:facilities@example.com
END:VEVENT
END:VCALENDAR
"""


def at(day: int, hour: int, minute: int = 0) -> float:
    """A March 2026 Stockholm wall-clock time as unix seconds."""
    when = datetime.datetime(
        2026, 3, day, hour, minute, tzinfo=datetime.timezone(datetime.timedelta(hours=1))
    )
    return when.timestamp()


def make_meeting(started_at: float, to: tuple[str, ...] = ()) -> Meeting:
    return Meeting(
        3, "t", "en", "delivering", started_at, started_at + 60, to, "microphone", 60.0, 60.0, ""
    )


def make_config(
    calendar: str = "",
    defaults: tuple[str, ...] = ("desk@example.com",),
    allowed: tuple[str, ...] = (),
) -> Config:
    return config_module.parse(
        {
            "room": {
                "calendar": calendar,
                "timezone": STOCKHOLM,
                "default_participants": list(defaults),
            },
            "delivery": {"allowed_domains": list(allowed)},
        }
    )


@pytest.fixture
def ics(tmp_path: Path) -> Path:
    path = tmp_path / "room.ics"
    path.write_text(CALENDAR.replace("\n", "\r\n"))
    return path


def addresses(recipients: tuple[Recipient, ...]) -> list[str]:
    return [r.address for r in recipients]


def test_start_to_wins_over_calendar_and_defaults(ics: Path) -> None:
    resolution = resolve(make_meeting(at(2, 10, 5), ("x@example.com",)), make_config(str(ics)))
    assert resolution.source == FROM_TO
    assert addresses(resolution.accepted) == ["x@example.com"]


def test_a_recurring_event_gives_its_people(ics: Path) -> None:
    # 2 March is the ninth occurrence of the weekly Monday meeting.
    resolution = resolve(make_meeting(at(2, 10, 20)), make_config(str(ics)))
    assert resolution.source == FROM_CALENDAR
    assert resolution.recipients == (
        Recipient("olle@example.com", "Olle Organizer"),
        Recipient("Ann@example.com", "Andersson, Ann"),
        Recipient("eve@partner.example", "Eve Outsider"),
    )


def test_a_meeting_started_a_little_early_belongs_to_the_booking(ics: Path) -> None:
    resolution = resolve(make_meeting(at(9, 9, 55)), make_config(str(ics)))
    assert resolution.source == FROM_CALENDAR
    assert "olle@example.com" in addresses(resolution.accepted)


def test_floating_times_are_the_rooms(ics: Path) -> None:
    resolution = resolve(make_meeting(at(3, 14, 30)), make_config(str(ics)))
    assert addresses(resolution.accepted) == ["tess@example.com"]


@pytest.mark.parametrize("started_at", [at(2, 11, 30), at(2, 9, 30), at(4, 10, 15)])
def test_no_event_then_the_defaults(ics: Path, started_at: float) -> None:
    # after the meeting, too early for it, and an all-day entry alone (Wednesday)
    resolution = resolve(make_meeting(started_at), make_config(str(ics)))
    assert resolution.source == FROM_DEFAULTS
    assert addresses(resolution.accepted) == ["desk@example.com"]


def test_allowed_domains_refuse_others_exactly(ics: Path) -> None:
    config = make_config(str(ics), allowed=("EXAMPLE.com",))
    resolution = resolve(make_meeting(at(2, 10, 20)), config)
    assert addresses(resolution.accepted) == ["olle@example.com", "Ann@example.com"]
    [eve] = resolution.refused
    assert eve.refused == "domain partner.example is not in delivery.allowed_domains"
    sub = resolve(make_meeting(at(2, 10, 20), ("a@mail.example.com",)), config)
    assert sub.accepted == () and "mail.example.com" in sub.refused[0].refused


def test_malformed_addresses_are_refused_with_a_reason() -> None:
    to = (
        "good@example.com",
        "no-at-sign",
        "a@b@example.com",
        "GOOD@EXAMPLE.COM",
        "=?utf-8?q?x?=@example.com",
    )
    resolution = resolve(make_meeting(at(2, 10), to), make_config())
    assert addresses(resolution.accepted) == ["good@example.com"]
    assert [(r.address, r.refused) for r in resolution.refused] == [
        ("no-at-sign", "not an email address (no user@domain)"),
        ("a@b@example.com", "the part before @ has characters or dots an address may not have"),
        ("=?utf-8?q?x?=@example.com", "looks like an encoded word (=?...?=)"),
    ]


def test_nobody_named_is_an_empty_resolution() -> None:
    resolution = resolve(make_meeting(at(2, 10)), make_config(defaults=()))
    assert resolution.source == "" and resolution.recipients == ()


@pytest.mark.parametrize(
    "address, problem",
    [
        ("a@example.com", ""),
        ("first.last+tag@sub.example.co", ""),
        ("root@localhost", ""),
        ("", "empty address"),
        ("åsa@example.com", "non-ASCII addresses are not supported"),
        ("@example.com", "not an email address (no user@domain)"),
        ("a..b@example.com", "the part before @ has characters or dots an address may not have"),
        ("a b@example.com", "the part before @ has characters or dots an address may not have"),
        ("a@exa_mple.com", "the part after @ is not a host name"),
        ("a@example.com.", "the part after @ is not a host name"),
        ("a@-example.com", "the part after @ is not a host name"),
        (
            "a@example.com\r\nBcc: e@x.com",
            "the part before @ has characters or dots an address may not have",
        ),
        ("a@example.com\r\n", "the part after @ is not a host name"),
        ("x" * 250 + "@example.com", "longer than 254 characters"),
    ],
)
def test_address_problem(address: str, problem: str) -> None:
    assert address_problem(address) == problem


class _Calendar(http.server.BaseHTTPRequestHandler):
    body = b""

    def do_GET(self) -> None:
        if self.path != "/room.ics":
            self.send_error(404)
            return
        self.send_response(200)
        self.send_header("Content-Type", "text/calendar")
        self.send_header("Content-Length", str(len(self.body)))
        self.end_headers()
        self.wfile.write(self.body)

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def calendar_url() -> Iterator[str]:
    _Calendar.body = CALENDAR.encode()
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Calendar)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/room.ics"
    finally:
        server.shutdown()
        server.server_close()


def test_a_calendar_url_on_the_lan(calendar_url: str) -> None:
    resolution = resolve(make_meeting(at(2, 10, 20)), make_config(calendar_url))
    assert resolution.source == FROM_CALENDAR
    assert addresses(resolution.accepted)[0] == "olle@example.com"


def test_a_calendar_url_answering_an_error_falls_back_to_defaults(
    calendar_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    missing = calendar_url.replace("room.ics", "gone.ics")
    with caplog.at_level(logging.WARNING, logger="appliance.delivery.recipients"):
        resolution = resolve(make_meeting(at(2, 10, 20)), make_config(missing))
    assert resolution.source == FROM_DEFAULTS
    assert f"calendar {missing}: cannot be read: HTTP Error 404" in caplog.text


def closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.mark.parametrize(
    "calendar, what",
    [
        (f"http://127.0.0.1:{closed_port()}/room.ics", "cannot be read"),
        ("/nonexistent/room.ics", "cannot be read"),
        ("ftp://calendar.example/room.ics", "only a file path or an http(s) URL"),
    ],
)
def test_an_unreachable_calendar_falls_back_to_defaults_with_a_warning(
    caplog: pytest.LogCaptureFixture, calendar: str, what: str
) -> None:
    with caplog.at_level(logging.WARNING, logger="appliance.delivery.recipients"):
        resolution = resolve(make_meeting(at(2, 10, 20)), make_config(calendar))
    assert resolution.source == FROM_DEFAULTS
    assert addresses(resolution.accepted) == ["desk@example.com"]
    assert f"calendar {calendar}: {what}" in caplog.text
    assert "using room.default_participants" in caplog.text


def test_a_malformed_calendar_falls_back_to_defaults_with_a_warning(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "broken.ics"
    path.write_text("BEGIN:VCALENDAR\nthis is not\niCalendar at all\n")
    with caplog.at_level(logging.WARNING, logger="appliance.delivery.recipients"):
        resolution = resolve(make_meeting(at(2, 10, 20)), make_config(str(path)))
    assert resolution.source == FROM_DEFAULTS
    assert f"calendar {path}: cannot be read as iCalendar" in caplog.text


def test_an_event_with_nobody_on_it_falls_through_to_defaults(tmp_path: Path) -> None:
    path = tmp_path / "bare.ics"
    path.write_text(CALENDAR.replace("ATTENDEE:mailto:tess@example.com\n", ""))
    resolution = resolve(make_meeting(at(3, 14, 30)), make_config(str(path)))
    assert resolution.source == FROM_DEFAULTS
