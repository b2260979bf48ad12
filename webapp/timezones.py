"""Clinic time: one source of zone rules, and the one place that turns an instant into clinic time.

Times are stored in UTC. Zone rules come only from the pinned `tzdata` package: `zoneinfo` would
read the operating system's copy first, which can be years old (IANA 2025b says Vancouver is
UTC-8 in December 2026; 2026f, which `tzdata==2026.6` carries, says UTC-7). The server renders
every time shown, labelled with its zone; browsers do not re-format them with their own zone data.
"""

from __future__ import annotations

import re
import zoneinfo
from datetime import UTC, date, datetime, time, timedelta
from functools import lru_cache
from importlib import resources
from zoneinfo import ZoneInfo

import tzdata

# The whole process reads zone rules from the package, never from the system's zone files:
# a ZoneInfo made anywhere else (a library, a test) agrees with the ones made here.
zoneinfo.reset_tzpath(to=[])
ZoneInfo.clear_cache()

RULES_VERSION: str = tzdata.IANA_VERSION  # "2026f"


@lru_cache(maxsize=1)
def choices() -> tuple[str, ...]:
    """Every IANA time zone name the package knows, sorted (for the clinic's setting)."""
    names = resources.files("tzdata").joinpath("zones").read_text(encoding="utf-8").split()
    return tuple(sorted(name for name in names if "/" in name or name == "UTC"))


@lru_cache(maxsize=1)
def _known() -> frozenset[str]:
    return frozenset(choices())


@lru_cache(maxsize=64)
def zone(name: str) -> ZoneInfo:
    """Return the zone with this IANA name, read from the pinned package (UTC for an unknown one:
    a page must still render)."""
    if name not in _known():
        name = "UTC"
    # Read the package's file by hand: right even if something resets zoneinfo's search path.
    with resources.files("tzdata.zoneinfo").joinpath(*name.split("/")).open("rb") as rules:
        return ZoneInfo.from_file(rules, key=name)


def is_valid(name: str) -> bool:
    """Return whether this is an IANA time zone name we can use."""
    return name in _known()


def to_utc(wall_time: datetime, name: str) -> datetime:
    """Read a wall-clock time (as typed, without a zone) in the named zone; return it in UTC."""
    return wall_time.replace(tzinfo=zone(name)).astimezone(UTC)


def exists(wall_time: datetime, name: str) -> bool:
    """Return whether the clocks of the named zone show this wall-clock time (not in a gap the
    clocks jump over when they go forward)."""
    back = to_utc(wall_time, name).astimezone(zone(name)).replace(tzinfo=None)
    return back == wall_time.replace(tzinfo=None)


def local(moment: datetime, name: str) -> datetime:
    """Return a UTC moment as the wall-clock time of the named zone."""
    return moment.astimezone(zone(name))


def today(now: datetime, name: str) -> date:
    """The date on the named zone's calendar at this moment (the clinic's "today")."""
    return local(now, name).date()


def day_start(day: date, name: str) -> datetime:
    """When this day of the named zone's calendar begins, in UTC."""
    return to_utc(datetime.combine(day, time()), name)


def day_starts(first: date, days: int, name: str) -> list[datetime]:
    """When each of `days` consecutive days from `first` begins, and when the last one ends (UTC)."""
    return [day_start(first + timedelta(days=offset), name) for offset in range(days + 1)]


# Formatting without strftime (slow, and its month names follow the process's locale): the log
# formats a time for every line of 200 timelines on every refresh.
_MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")
_MONTH_NAMES = (
    "January",
    "February",
    "March",
    "April",
    "May",
    "June",
    "July",
    "August",
    "September",
    "October",
    "November",
    "December",
)
_DAY_NAMES = ("Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday")
# IANA writes a zone without a common abbreviation as its offset ("-03", "+0530").
_NUMERIC = re.compile(r"^([+-])(\d\d)(\d\d)?$")


def label(local_moment: datetime) -> str:
    """The zone label of a local (zone-aware) moment: "PST", "UTC", or "UTC-03" / "UTC+05:30"."""
    name = local_moment.tzname() or "UTC"
    numeric = _NUMERIC.match(name)
    if numeric:
        sign, hours, minutes = numeric.groups()
        return f"UTC{sign}{hours}" + (f":{minutes}" if minutes else "")
    return name


def _clock(local_moment: datetime) -> str:
    return f"{local_moment.hour:02d}:{local_moment.minute:02d}"


def format_time(local_moment: datetime) -> str:
    """Format a local (zone-aware) moment as "09:14 PST"."""
    return f"{_clock(local_moment)} {label(local_moment)}"


def format_datetime(local_moment: datetime) -> str:
    """Format a local (zone-aware) moment as "12 Nov 09:14 PST"."""
    return f"{local_moment.day:02d} {_MONTHS[local_moment.month - 1]} {format_time(local_moment)}"


def format_full(local_moment: datetime) -> str:
    """Format a local (zone-aware) moment with its weekday and year: "Wed 9 Dec 2026 at 10:00 MST"
    (an appointment, a heading of the printed export)."""
    day = _DAY_NAMES[local_moment.weekday()][:3]
    return (
        f"{day} {local_moment.day} {_MONTHS[local_moment.month - 1]} {local_moment.year} at "
        f"{format_time(local_moment)}"
    )


def format_spoken(local_moment: datetime) -> str:
    """Format a local (zone-aware) moment as an email says it: "Wednesday 9 December 2026 at
    10:00 MST"."""
    return (
        f"{_DAY_NAMES[local_moment.weekday()]} {local_moment.day} {_MONTH_NAMES[local_moment.month - 1]} "
        f"{local_moment.year} at {format_time(local_moment)}"
    )


def format_record(local_moment: datetime) -> str:
    """Format a local (zone-aware) moment for an export: "2026-12-09 10:00:00 MST"."""
    return f"{local_moment:%Y-%m-%d %H:%M:%S} {label(local_moment)}"


def format_date(day: date) -> str:
    """Format a calendar day as "09 Dec 2026"."""
    return f"{day.day:02d} {_MONTHS[day.month - 1]} {day.year}"


def format_day(day: date) -> str:
    """Format a calendar day without its year, as "09 Dec"."""
    return f"{day.day:02d} {_MONTHS[day.month - 1]}"


# Sentences kept as text (the audit trail) name a moment in UTC, labelled, and are shown in the
# reader's zone: a clinic may change its zone after they were written.
_STAMP = re.compile(r"\b(\d\d) (" + "|".join(_MONTHS) + r") (\d{4}) (\d\d):(\d\d) UTC\b")


def utc_stamp(moment: datetime) -> str:
    """Name a moment in UTC inside a sentence kept as text: "09 Dec 2026 18:00 UTC"."""
    moment = moment.astimezone(UTC)
    return f"{format_date(moment.date())} {_clock(moment)} UTC"


def restamp(text: str, name: str) -> str:
    """Show the UTC moments a kept sentence names (utc_stamp) in the named zone, labelled."""

    def shown(match: re.Match[str]) -> str:
        day, month, year, hour, minute = (
            _MONTHS.index(part) + 1 if part in _MONTHS else int(part) for part in match.groups()
        )
        try:
            moment = datetime(year, month, day, hour, minute, tzinfo=UTC)
        except ValueError:  # not a moment after all ("31 Feb"): leave the words as written
            return match.group(0)
        at = local(moment, name)
        return f"{format_date(at.date())} {format_time(at)}"

    return _STAMP.sub(shown, text)


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
