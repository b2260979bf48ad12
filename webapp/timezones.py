"""Clinic time zones: times are stored in UTC and read in the clinic's own zone."""

from __future__ import annotations

from datetime import UTC, datetime
from functools import lru_cache
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError, available_timezones


@lru_cache(maxsize=64)
def zone(name: str) -> ZoneInfo:
    """Return the zone with this IANA name (UTC for an unknown one: a page must still render)."""
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        return ZoneInfo("UTC")


def is_valid(name: str) -> bool:
    """Return whether this is an IANA time zone name we can use."""
    return name in choices()


@lru_cache(maxsize=1)
def choices() -> tuple[str, ...]:
    """Every IANA time zone name, sorted (for the clinic's setting)."""
    return tuple(sorted(name for name in available_timezones() if "/" in name or name == "UTC"))


def to_utc(wall_time: datetime, name: str) -> datetime:
    """Read a wall-clock time (as typed, without a zone) in the named zone; return it in UTC."""
    return wall_time.replace(tzinfo=zone(name)).astimezone(UTC)


def local(moment: datetime, name: str) -> datetime:
    """Return a UTC moment as the wall-clock time of the named zone."""
    return moment.astimezone(zone(name))
