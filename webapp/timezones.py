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


# Formatting without strftime (slow, and its month names follow the process's locale): the log
# formats a time for every line of 200 timelines on every refresh.
_MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")


def format_time(local_moment: datetime) -> str:
    """Format a local (zone-aware) moment as "09:14 PST"."""
    return f"{local_moment.hour:02d}:{local_moment.minute:02d} {local_moment.tzname()}"


def format_datetime(local_moment: datetime) -> str:
    """Format a local (zone-aware) moment as "12 Nov 09:14 PST"."""
    return (
        f"{local_moment.day:02d} {_MONTHS[local_moment.month - 1]} "
        f"{local_moment.hour:02d}:{local_moment.minute:02d} {local_moment.tzname()}"
    )


def ago(moment: datetime, now: datetime) -> str:
    """Say how long ago something happened, in the words a person would use."""
    seconds = max(0, int((now - moment).total_seconds()))
    if seconds < 45:
        return "just now"
    if seconds < 3600:
        minutes = max(1, round(seconds / 60))
        return f"{minutes} min ago"
    if seconds < 86400:
        hours = round(seconds / 3600)
        return f"{hours} hour{'s' if hours != 1 else ''} ago"
    days = round(seconds / 86400)
    return f"{days} day{'s' if days != 1 else ''} ago"
