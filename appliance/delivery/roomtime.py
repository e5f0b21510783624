"""The room's clock: its IANA time zone from [room] timezone, and times shown in it."""

from __future__ import annotations

import datetime
import logging
import zoneinfo

_LOGGER = logging.getLogger(__name__)


def room_zone(name: str) -> zoneinfo.ZoneInfo | None:
    """The room's IANA time zone, or None for the system's local time."""
    if not name:
        return None
    try:
        return zoneinfo.ZoneInfo(name)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError):
        _LOGGER.warning("room.timezone %r is not a known time zone; using the system's", name)
        return None


def room_time(timestamp: float, zone: zoneinfo.ZoneInfo | None) -> datetime.datetime:
    """A unix time as an aware datetime in the room's zone (system local when None)."""
    if zone is None:
        return datetime.datetime.fromtimestamp(timestamp).astimezone()
    return datetime.datetime.fromtimestamp(timestamp, zone)
