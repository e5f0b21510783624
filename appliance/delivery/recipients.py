"""Who gets a transcript: `start --to`, else the room calendar's event, else the defaults."""

from __future__ import annotations

import datetime
import logging
import re
import time
import urllib.request
import zoneinfo
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import icalendar
import recurring_ical_events

from appliance.addresses import address_problem
from appliance.config import Config
from appliance.delivery.roomtime import room_time, room_zone
from appliance.errors import ApplianceError
from appliance.store import Meeting

_LOGGER = logging.getLogger(__name__)

FROM_TO, FROM_CALENDAR, FROM_DEFAULTS = "start --to", "calendar", "default_participants"
CALENDAR_TIMEOUT_S = 10.0
# A button pressed a few minutes before the booked start still belongs to that booking.
EARLY_START_S = 10 * 60.0
_MAX_CALENDAR_BYTES = 8 * 1024 * 1024
# Not people: the room itself and equipment booked with it.
_NOT_PEOPLE = ("ROOM", "RESOURCE")
_URL = re.compile(r"^https?://", re.IGNORECASE)


class CalendarError(ApplianceError, OSError):
    """The room calendar cannot be read or understood."""


@dataclass(frozen=True)
class Recipient:
    """One address the transcript is meant for; refused says why it will not get it."""

    address: str
    name: str = ""
    refused: str = ""


@dataclass(frozen=True)
class Resolution:
    """The recipients of one meeting and where they came from."""

    source: str  # FROM_TO, FROM_CALENDAR, FROM_DEFAULTS, or "" when nobody was named
    recipients: tuple[Recipient, ...]

    @property
    def accepted(self) -> tuple[Recipient, ...]:
        """Recipients that will be sent the transcript."""
        return tuple(r for r in self.recipients if not r.refused)

    @property
    def refused(self) -> tuple[Recipient, ...]:
        """Recipients that will not, each with its reason."""
        return tuple(r for r in self.recipients if r.refused)


def resolve(
    meeting: Meeting, config: Config, read_calendar: Callable[[str, float], bytes] | None = None
) -> Resolution:
    """The meeting's recipients in priority order, each checked against [delivery]."""
    named: list[Recipient] = []
    source = ""
    if meeting.recipients:
        source, named = FROM_TO, [Recipient(a) for a in meeting.recipients]
    if not named and config.room.calendar:
        try:
            named = calendar_attendees(
                config.room.calendar,
                meeting.started_at,
                room_zone(config.room.timezone),
                read_calendar,
            )
            source = FROM_CALENDAR
        except CalendarError as err:
            _LOGGER.warning("meeting %d: %s; using room.default_participants", meeting.id, err)
    if not named and config.room.default_participants:
        source = FROM_DEFAULTS
        named = [Recipient(a) for a in config.room.default_participants]
    resolution = Resolution(
        source if named else "", tuple(_checked(named, config.delivery.allowed_domains))
    )
    for recipient in resolution.refused:
        _LOGGER.warning(
            "meeting %d: not sending to %s: %s", meeting.id, recipient.address, recipient.refused
        )
    return resolution


def _checked(named: list[Recipient], allowed_domains: tuple[str, ...]) -> list[Recipient]:
    """Normalized, deduplicated (case-insensitively) and each refused or not, in order."""
    allowed = {d.lower() for d in allowed_domains}
    seen: set[str] = set()
    checked = []
    for recipient in named:
        address = _normalized(recipient.address)
        if address.lower() in seen:
            continue
        seen.add(address.lower())
        reason = address_problem(address)
        domain = address.rpartition("@")[2]
        if not reason and allowed and domain not in allowed:
            reason = f"domain {domain} is not in delivery.allowed_domains"
        checked.append(Recipient(address, " ".join(recipient.name.split()), reason))
    return checked


def _normalized(address: str) -> str:
    """Whitespace and a mailto: prefix stripped, the domain lower-cased."""
    address = address.strip()
    if address[:7].lower() == "mailto:":
        address = address[7:]
    local, at, domain = address.rpartition("@")
    return f"{local}@{domain.lower()}" if at else address


def calendar_attendees(
    source: str,
    started_at: float,
    zone: zoneinfo.ZoneInfo | None,
    read_calendar: Callable[[str, float], bytes] | None = None,
) -> list[Recipient]:
    """Organizer and attendees of the event under way at started_at; [] when there is none."""
    data = (read_calendar or read_calendar_source)(source, CALENDAR_TIMEOUT_S)
    at = room_time(started_at, zone)
    try:
        calendar = icalendar.Calendar.from_ical(data)
        window = (at - datetime.timedelta(days=1), at + datetime.timedelta(days=1))
        events = recurring_ical_events.of(calendar).between(*window)
        event = _event_at(events, at, zone)
    except Exception as err:  # a third-party parser of remote input: any failure means unusable
        raise CalendarError(f"calendar {source}: cannot be read as iCalendar: {err}") from err
    if event is None:
        _LOGGER.info("calendar %s has no event at %s", source, at.isoformat(timespec="minutes"))
        return []
    return _people(event)


def read_calendar_source(source: str, timeout_s: float) -> bytes:
    """The calendar's bytes from a file path or an http(s) URL, within timeout_s in total."""
    try:
        if not _URL.match(source):
            if "://" in source:
                raise CalendarError(
                    f"calendar {source}: only a file path or an http(s) URL is supported"
                )
            data = Path(source).read_bytes()
        else:
            data = _download(source, timeout_s)
    except OSError as err:
        if isinstance(err, CalendarError):
            raise
        raise CalendarError(f"calendar {source}: cannot be read: {err}") from err
    if len(data) > _MAX_CALENDAR_BYTES:
        raise CalendarError(f"calendar {source}: larger than {_MAX_CALENDAR_BYTES} bytes")
    return data


def _download(url: str, timeout_s: float) -> bytes:
    # No proxy: the calendar is on the LAN, and nothing about the room should go through one.
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    request = urllib.request.Request(url, headers={"User-Agent": "meeting-appliance"})
    deadline = time.monotonic() + timeout_s
    chunks = []
    size = 0
    with opener.open(request, timeout=timeout_s) as response:
        # The socket timeout is per read; a server trickling bytes must still end in time.
        while chunk := response.read(65536):
            chunks.append(chunk)
            size += len(chunk)
            if size > _MAX_CALENDAR_BYTES:
                break
            if time.monotonic() > deadline:
                raise TimeoutError(f"no complete answer within {timeout_s:g} s")
    return b"".join(chunks)


def _when(value: Any, zone: zoneinfo.ZoneInfo | None) -> datetime.datetime | None:
    """An event time as an aware datetime; floating times are the room's; None for dates."""
    if not isinstance(value, datetime.datetime):
        return None
    if value.tzinfo is None:
        return value.replace(tzinfo=zone) if zone else value.astimezone()
    return value


def _event_at(
    events: list[Any], at: datetime.datetime, zone: zoneinfo.ZoneInfo | None
) -> Any | None:
    """The event under way at `at` (the latest begun if several), else one starting soon."""
    under_way, upcoming = [], []
    for event in events:
        if str(event.get("STATUS", "")).upper() == "CANCELLED":
            continue
        start = _when(event.get("DTSTART").dt if event.get("DTSTART") else None, zone)
        if start is None:
            continue  # all-day entries (room closed, holidays) are not meetings
        end = _when(event.get("DTEND").dt if event.get("DTEND") else None, zone)
        if end is None:
            duration = event.get("DURATION")
            end = start + duration.dt if duration else start
        if start <= at < end:
            under_way.append((start, event))
        elif at < start <= at + datetime.timedelta(seconds=EARLY_START_S):
            upcoming.append((start, event))
    if under_way:
        return max(under_way, key=lambda item: item[0])[1]
    if upcoming:
        return min(upcoming, key=lambda item: item[0])[1]
    return None


def _people(event: Any) -> list[Recipient]:
    """The organizer and attendees who are people and have not declined."""
    attendees = event.get("ATTENDEE", [])
    if not isinstance(attendees, list):
        attendees = [attendees]
    organizer = event.get("ORGANIZER")
    people = []
    for person in ([organizer] if organizer else []) + attendees:
        params = getattr(person, "params", {})
        if str(params.get("CUTYPE", "")).upper() in _NOT_PEOPLE:
            continue
        if str(params.get("PARTSTAT", "")).upper() == "DECLINED":
            continue
        people.append(Recipient(str(person), str(params.get("CN", ""))))
    return people
